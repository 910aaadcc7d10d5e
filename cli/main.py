"""Entry point: registers the commands, nothing else."""

from __future__ import annotations

import importlib
from typing import Any

import click

from ddim_edit import __version__

from .common import InvalidNumber

# Each module defines one click command named ``command``.
COMMAND_MODULES = ("invert", "reconstruct", "swap", "inpaint", "style", "batch", "bench", "demo", "serve")


class OneLineUsageError(click.UsageError):
    """A click usage error shown as one ``Error:`` line that points at the command's --help."""

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(error.format_message(), error.ctx)
        self.exit_code = error.exit_code

    def show(self, file: Any = None) -> None:
        where = f"{self.ctx.command_path} --help" if self.ctx is not None else "ddim-edit --help"
        click.echo(f"Error: {self.format_message().rstrip('.')}; see '{where}'", err=True, file=file)


def one_line_usage(error: click.UsageError) -> click.UsageError:
    """``error`` as one line, unless it already shows itself as one (our own number types)."""
    return error if isinstance(error, (InvalidNumber, OneLineUsageError)) else OneLineUsageError(error)


class App(click.Group):
    """The command group: usage errors of the group and of every command are one line (exit code 2)."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as error:
            raise one_line_usage(error) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise one_line_usage(error) from None


@click.group("ddim-edit", cls=App, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ddim-edit")
def app() -> None:
    """Edit real images with Stable Diffusion through exact DDIM inversion.

    \b
    Quick start (bundled toy model, offline):
      ddim-edit demo -o demo.png
      ddim-edit invert photo.png --prompt "a red circle on a white background" -o photo.traj.safetensors
      ddim-edit reconstruct photo.traj.safetensors -o recon.png
    """


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"cli.{_name}")
    except ModuleNotFoundError as _exc:  # a command not written yet: skip only that one
        if _exc.name != f"cli.{_name}":
            raise
        continue
    app.add_command(_module.command)


def main() -> None:
    app(prog_name="ddim-edit")


if __name__ == "__main__":
    main()
