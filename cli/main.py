"""Entry point: registers the commands, nothing else."""

from __future__ import annotations

import importlib

import click

from ddim_edit import __version__

# Each module defines one click command named ``command``.
COMMAND_MODULES = ("invert", "reconstruct", "swap", "inpaint", "style", "batch", "bench", "demo", "serve")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
