"""Options and error handling shared by the commands."""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click

from ddim_edit.errors import DdimEditError
from ddim_edit.jobs.advice import collected_advice
from ddim_edit.jobs.requests import DEFAULT_GUIDANCE, JobSettings
from ddim_edit.options import from_values
from ddim_edit.trajectory import METHODS
from ddim_edit.toy.vocabulary import GRAMMAR_HINT
from ddim_edit.io import check_outputs as io_check_outputs
from ddim_edit.io import default_output as io_default_output
from ddim_edit.io import grid_output
from ddim_edit.json_output import strict_json
from ddim_edit.io import reset_written, written_paths


def quiet_libraries() -> None:
    """Keep diffusers/transformers chatter off stderr (progress bars stay ours).

    Their ``logger.error`` lines ("An error occurred while trying to fetch …") are silenced too:
    a failure reaches the user as the exception, turned into one ``Error:`` line.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity(transformers_logging.CRITICAL)
    transformers_logging.disable_progress_bar()


MODEL_EXTRAS_KEY = "ddim_edit.model_extras"
TOY_EPILOG = f"{GRAMMAR_HINT[:1].upper()}{GRAMMAR_HINT[1:]} (it is the default --model; pass another for photos)."


def _remember(name: str) -> Callable:
    """A click callback that keeps an option's value in the context (options every command shares
    but only the model cache reads: ``--lora`` and the memory switches)."""
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        ctx.meta.setdefault(MODEL_EXTRAS_KEY, {})[name] = value
        return value
    return callback


def model_extras(ctx: click.Context | None = None) -> dict[str, Any]:
    """``loras`` and ``memory`` (a MemoryOptions) from the running command's --lora / memory flags."""
    from ddim_edit.model import MemoryOptions

    ctx = ctx or click.get_current_context(silent=True)
    given = (ctx.meta.get(MODEL_EXTRAS_KEY, {}) if ctx is not None else {})
    return {"loras": tuple(given.get("lora") or ()),
            "memory": MemoryOptions(vae_tiling=not given.get("no_vae_tiling", False),
                                    vae_slicing=bool(given.get("vae_slicing", False)),
                                    cpu_offload=bool(given.get("cpu_offload", False)))}


def model_cache(device: str, dtype: str, allow_pickle: bool, **kwargs: Any):
    """The job layer's ModelCache with the running command's --lora and memory flags."""
    from ddim_edit.jobs.resolve import ModelCache

    return ModelCache(device, dtype, allow_pickle, **kwargs, **model_extras())


def model_options(default_model: str | None = "toy") -> Callable:
    """--model, --model-config, --device, --dtype, --allow-pickle, --lora and the memory switches
    (the last two kept in the click context: read them with :func:`model_extras`)."""
    def decorate(func: Callable) -> Callable:
        for option in reversed([
            click.option("--model", "model_name", default=default_model, show_default=default_model is not None,
                         help="Hub id, local diffusers folder, .safetensors file, or 'toy' / 'toy-flow' (bundled)"
                              + ("." if default_model else "; default: a trajectory's own model, else 'toy'.")),
            click.option("--model-config", default=None, help="Config folder for a single-file checkpoint (offline use)."),
            click.option("--device", default="auto", show_default=True, help="auto (cuda → mps → cpu), cpu, cuda, cuda:N, mps."),
            click.option("--dtype", default="auto", show_default=True, help="auto, fp32, fp16 or bf16 (fp16/bf16 on GPU only)."),
            click.option("--allow-pickle", is_flag=True, help="Allow .ckpt/.bin/.pt checkpoints (they can run code)."),
        ]):
            func = option(func)
        return model_extra_options(func)
    return decorate


def model_extra_options(func: Callable) -> Callable:
    """--lora, --cpu-offload, --vae-slicing, --no-vae-tiling (kept in the click context)."""
    for option in reversed([
        click.option("--lora", multiple=True, expose_value=False, callback=_remember("lora"), metavar="FILE[:SCALE]",
                         help="LoRA .safetensors fused into the model at SCALE (default 1); repeatable. A trajectory's "
                              "own LoRAs are used when its model is."),
        click.option("--cpu-offload", is_flag=True, expose_value=False, callback=_remember("cpu_offload"),
                         help="Keep each component on the CPU until it runs (GPU memory: the largest component)."),
        click.option("--vae-slicing", is_flag=True, expose_value=False, callback=_remember("vae_slicing"),
                         help="Run the VAE on one image at a time."),
        click.option("--no-vae-tiling", is_flag=True, expose_value=False, callback=_remember("no_vae_tiling"),
                         help="Do not tile VAE encodes/decodes of images larger than the VAE's tile size."),
    ]):
        func = option(func)
    return func


def schedule_options(func: Callable) -> Callable:
    """--steps, --spacing, --timesteps."""
    return click_options(JobSettings, "steps", "spacing", "timesteps")(func)


def inversion_options(default_method: str = "exact", edit_methods: tuple[str, ...] = ()) -> Callable:
    """--method (default ``default_method``; an inversion method, or one of the command's ``edit_methods``)
    and its settings, --guidance, --inversion-guidance, --negative-prompt."""
    method = {"default": default_method, "show_default": True, "type": click.Choice((*METHODS, *edit_methods))}
    if not edit_methods:
        method["help"] = "Inversion method."
    return click_options(JobSettings, "method", "guidance", "inversion_guidance", "negative_prompt",
                         "fixed_point_iterations", "tolerance", "null_text_steps", method=method, guidance=JOB_GUIDANCE)


def settings_from_command(**fixed: Any) -> JobSettings:
    """The running command's :class:`JobSettings`: its setting flags (declared on JobSettings), --model,
    progress bars unless --quiet; ``fixed`` overrides."""
    params = click.get_current_context().params
    values = dict(params, model=params.get("model_name"))
    return from_values(JobSettings, values, cli=True, **{"progress": not params.get("quiet"), **fixed})


def click_options(cls: type, *names: str, **overrides: dict[str, Any]) -> Callable:
    """The flags of the options declared on dataclass ``cls`` (see :mod:`ddim_edit.options`).

    ``names``: only those fields, in that order (default: every CLI option, in field order).
    ``overrides``: click settings per field where a command words or defaults a shared option its
    own way (``method={"default": "ddim", "show_default": True}``). Each flag's value reaches the
    command under the option's key; build the object with :func:`ddim_edit.options.from_values` (``cli=True``).
    """
    from ddim_edit.options import option_specs

    specs = {spec.name: spec for spec in option_specs(cls) if spec.cli}
    options = []
    for spec in [specs[name] for name in names] if names else specs.values():
        flags = [spec.flag, *([spec.short] if spec.short else [])]
        settings: dict[str, Any] = {"help": spec.help.replace("{default}", spec.shown_default())}
        if spec.metavar:
            settings["metavar"] = spec.metavar
        if spec.kind is bool:
            settings["is_flag"] = True
        elif spec.multiple:
            settings["multiple"] = True
        elif spec.parse is not None and spec.nargs == 1:  # text the option's parser reads
            settings.update(default=spec.shown_default() or None, show_default=bool(spec.shown_default()))
        else:
            settings.update(default=spec.default, show_default=spec.default not in (None, ""), nargs=spec.nargs,
                            type=_click_type(spec))
        settings.update(overrides.get(spec.name, {}))
        options.append(click.option(*flags, **settings))
        if spec.off_flag:
            options.append(click.option(spec.off_flag, is_flag=True, help=spec.off_help))
    return functools.partial(_add_options, options)


def _click_type(spec: Any) -> Any:
    """The click type of a declared option without a parser of its own (or a pair of numbers)."""
    if spec.choices:
        return click.Choice(spec.choices)
    if spec.kind is float:
        return FiniteFloat(min=spec.minimum, max=spec.maximum, example=spec.example)
    if spec.kind is int:
        if spec.minimum is None and spec.maximum is None:
            return int
        return BoundedInt(min=None if spec.minimum is None else int(spec.minimum),
                          max=None if spec.maximum is None else int(spec.maximum), example=spec.example, what=spec.what)
    return str


def guidance_option() -> Callable:
    """``--guidance``, by default the job layer's :data:`~ddim_edit.jobs.requests.DEFAULT_GUIDANCE`."""
    return click_options(JobSettings, "guidance", guidance={"default": DEFAULT_GUIDANCE, "show_default": True})


def _none_unless_given(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback: the value given on the command line, None when the option was left at its default."""
    return value if explicit(param.name, ctx) else None


JOB_GUIDANCE = {"default": DEFAULT_GUIDANCE, "show_default": True, "callback": _none_unless_given}
"""--guidance shown with :data:`~ddim_edit.jobs.requests.DEFAULT_GUIDANCE` but None unless given, so the job
decides (a trajectory's own guidance, or that default for an image: :meth:`JobSettings.guidance_for`)."""


def grid_option(panels: str) -> Callable:
    """``--grid``: the comparison grid (``panels``, e.g. "source | edit") beside the output."""
    return click.option("--grid", "with_grid", is_flag=True,
                        help=f"Also write {panels} side by side, beside the output as OUTPUT.grid.png.")


def grid_outputs(output: Any, with_grid: bool) -> list[tuple[str, Any, str]]:
    """The ``--grid`` output for :func:`check_outputs` (none without ``--grid``)."""
    return [("--grid", grid_output(output) if with_grid and output else None, "image")]


def _add_options(options: list[Callable], func: Callable) -> Callable:
    for option in reversed(options):
        func = option(func)
    return func


def run_options(func: Callable) -> Callable:
    """--force, --quiet, --format, --seed."""
    func = click_options(JobSettings, "seed")(func)
    for option in reversed([
        click.option("--force", is_flag=True, help="Overwrite existing outputs."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
        click.option("--format", "output_format", default="text", type=click.Choice(["text", "json"]),
                     help="json: print a machine-readable result on stdout."),
    ]):
        func = option(func)
    return func


def handle_errors(func: Callable) -> Callable:
    """Known errors → 'Error: …' on stderr and exit 1, no traceback.

    Library warnings (Pillow, diffusers, …) are held back while the command runs: after an error
    they are dropped, so the ``Error:`` line stands alone; after success they are shown as usual, and
    the toy model's advice (:class:`~ddim_edit.jobs.advice.ToyModelWarning`) as one ``Warning:`` line each.
    An error or Ctrl-C after some outputs were written names those files.
    """
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet_libraries()
        reset_written()
        with collected_advice() as advice:  # other warnings: shown after success, dropped after an error
            try:
                value = func(*args, **kwargs)
            except DdimEditError as exc:
                written = written_note()
                click.echo(f"Error: {cli_message(exc)}" + (f" ({written})" if written else ""), err=True)
                sys.exit(1)
            except KeyboardInterrupt:
                written = written_note()
                click.echo(f"Interrupted; {written}." if written else "Interrupted; no output was written.", err=True)
                sys.exit(130)
        for line in advice:
            click.echo(f"Warning: {line}", err=True)
        return value
    return wrapper


def written_note() -> str:
    """'already wrote a.png, b.safetensors' for the files written so far ('' when none)."""
    paths = list(dict.fromkeys(str(path) for path in written_paths()))
    if len(paths) > 3:  # bench grids: keep the line short
        return f"already wrote {', '.join(paths[:3])} and {len(paths) - 3} more"
    return f"already wrote {', '.join(paths)}" if paths else ""


def check_outputs(outputs: list[tuple[str, Any, str]], force: bool, inputs: tuple[Any, ...] = ()) -> list[Path | None]:
    """Check every output of a command before any work (see :func:`ddim_edit.io.check_outputs`).

    ``outputs`` holds ``(flag, path or None, kind)`` with kind ``image`` or ``trajectory``; no two
    outputs, and no output and input, may be the same file.
    """
    return io_check_outputs(outputs, force, inputs=[path for path in inputs if path])


def default_output(source: Any, suffix: str) -> Path:
    """The default output name beside ``source`` (dotted stems kept: ``scene.a.png`` → ``scene.a.swap.png``)."""
    return io_default_output(source, suffix)


def emit(result: dict[str, Any], output_format: str, text: str) -> None:
    """The command's result: JSON on stdout, or a short human line."""
    if output_format == "json":
        click.echo(strict_json(result))
    else:
        click.echo(text)


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


# ---------------------------------------------------------------------- numbers at the door
class InvalidNumber(click.BadParameter):
    """A bad number for an option: one ``Error:`` line and exit code 1, like every other bad input."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        """Only the ``Error:`` line (click would print the usage above it)."""
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


class FiniteFloat(click.ParamType):
    """A float that is finite (no nan/inf), optionally within [min, max]."""

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None, example: str = "1.0") -> None:
        self.min, self.max, self.example = min, max, example

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self._fail(f"{value!r} is not a number", param, ctx)
            if not math.isfinite(number):
                self._fail(f"{value!r} is not a finite number", param, ctx)
        if (self.min is not None and number < self.min) or (self.max is not None and number > self.max):
            low = "" if self.min is None else f"{self.min:g} ≤ "
            high = "" if self.max is None else f" ≤ {self.max:g}"
            self._fail(f"{number:g} is out of range; need {low}x{high}", param, ctx)
        return number

    def _fail(self, problem: str, param: click.Parameter | None, ctx: click.Context | None) -> None:
        flag = param.opts[0] if param is not None and param.opts else "the value"
        raise InvalidNumber(f"{problem}; e.g. {flag} {self.example}", ctx=ctx, param=param)


class BoundedInt(click.ParamType):
    """An integer within [min, max] (either side open when None), with a hint."""

    name = "integer"

    def __init__(self, min: int | None = None, max: int | None = None, example: str = "1",
                 what: str | None = None) -> None:
        self.min, self.max, self.example, self.what = min, max, example, what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        flag = param.opts[0] if param is not None and param.opts else "the value"
        try:
            number = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value).strip())
        except ValueError:
            raise InvalidNumber(f"{value!r} is not an integer; e.g. {flag} {self.example}", ctx=ctx, param=param) from None
        if (self.min is not None and number < self.min) or (self.max is not None and number > self.max):
            if self.what:
                need = self.what
            elif self.max is None:
                need = "a positive integer" if self.min == 1 else f"an integer ≥ {self.min}"
            else:
                need = f"an integer in [{self.min}, {self.max}]"
            raise InvalidNumber(f"{number} is not {need}; e.g. {flag} {self.example}", ctx=ctx, param=param)
        return number


POSITIVE_INT = BoundedInt(min=1, example="10")
STEPS = BoundedInt(min=1, example="50")
SEED = BoundedInt(min=0, max=2**64 - 1, example="0", what="a seed in [0, 2^64 - 1]")


def explicit(name: str, ctx: click.Context | None = None) -> bool:
    """True when the running command's parameter ``name`` was given on the command line (or env)."""
    source = (ctx or click.get_current_context()).get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def refuse_schedule_options(what: str, trajectory: Callable[[], Any]) -> None:
    """Schedule flags given with a trajectory input are an error unless they agree with it.

    A trajectory has its own timesteps; an explicit --steps, --spacing or --timesteps that differs
    from them would be silently ignored. ``trajectory`` returns the Trajectory; it is called only
    when one of the flags was given.
    """
    given = [name for name in ("steps", "spacing", "timesteps") if explicit(name)]
    if not given:
        return
    from ddim_edit.errors import ScheduleError
    from ddim_edit.schedule import parse_custom_timesteps

    traj = trajectory()
    values = click.get_current_context().params
    recorded = {"steps": traj.num_steps, "spacing": (traj.metadata.get("schedule") or {}).get("spacing"),
                "timesteps": list(traj.timesteps)}
    conflicting = []
    for name in given:
        value = values.get(name)
        if name == "timesteps":
            try:
                value = parse_custom_timesteps(value or "")
            except ScheduleError:
                value = None
        if value != recorded[name]:
            conflicting.append(f"--{name}")
    if conflicting:
        raise DdimEditError(f"{what} has {traj.num_steps} steps of its own ({recorded['spacing']} spacing); "
                            f"{'/'.join(conflicting)} applies only to images to invert: drop it, or pass the image "
                            "instead")


# ---------------------------------------------------------------------- library errors → flags
# Library field → flag, for every command (when the command has that flag) …
FIELD_FLAGS: dict[str, str] = {
    "num_steps": "--steps", "guidance_scale": "--guidance", "fixed_point_tolerance": "--tolerance",
    "model_name": "--model", "options": "--set", "count": "--n",
}
# … and per command, where the same library field has another flag there.
COMMAND_FIELD_FLAGS: dict[str, dict[str, str]] = {
    "batch": {"out_dir": "--out"},
    "swap": {"prompt": "--source", "source_prompt": "--source", "target_prompt": "--target"},
    "inpaint": {"source_prompt": "--source-prompt"},
    "demo": {"target_prompt": "--target"},
    "style": {"style_prompt": "--style-prompt"},
}


def flag_for(field: str, ctx: click.Context | None = None) -> str | None:
    """The running command's flag for library ``field``, or None when the command has no such flag."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return None
    flags = {opt for param in ctx.command.params for opt in param.opts if opt.startswith("--")}
    candidates = (COMMAND_FIELD_FLAGS.get(ctx.command.name or "", {}).get(field), FIELD_FLAGS.get(field),
                  "--" + field.replace("_", "-"))
    return next((flag for flag in candidates if flag and flag in flags), None)


def cli_message(exc: DdimEditError) -> str:
    """The error's message with its field named as the running command's flag (see ddim_edit.errors)."""
    field = getattr(exc, "field", None)
    if field is None or not hasattr(exc, "render"):
        return str(exc)
    return exc.render(flag_for(field))
