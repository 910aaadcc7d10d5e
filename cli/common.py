"""Options and error handling shared by the commands."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from typing import Any, Callable

import click

from ddim_edit.errors import DdimEditError
from ddim_edit.inversion import METHODS
from ddim_edit.schedule import SPACINGS


def quiet_libraries() -> None:
    """Keep diffusers/transformers chatter off stderr (progress bars stay ours)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def model_options(default_model: str | None = "toy") -> Callable:
    """--model, --model-config, --device, --dtype, --allow-pickle."""
    def decorate(func: Callable) -> Callable:
        for option in reversed([
            click.option("--model", "model_name", default=default_model, show_default=True,
                         help="Hub id, local diffusers folder, .safetensors file, or 'toy' (bundled)."),
            click.option("--model-config", default=None, help="Config folder for a single-file checkpoint (offline use)."),
            click.option("--device", default="auto", show_default=True, help="auto (cuda → mps → cpu), cpu, cuda, cuda:N, mps."),
            click.option("--dtype", default="auto", show_default=True, help="auto, fp32, fp16 or bf16 (fp16/bf16 on GPU only)."),
            click.option("--allow-pickle", is_flag=True, help="Allow .ckpt/.bin/.pt checkpoints (they can run code)."),
        ]):
            func = option(func)
        return func
    return decorate


def schedule_options(func: Callable) -> Callable:
    """--steps, --spacing, --timesteps."""
    for option in reversed([
        click.option("--steps", default=50, show_default=True, type=int, help="Number of DDIM steps."),
        click.option("--spacing", default=None, type=click.Choice(SPACINGS),
                     help="Timestep spacing (default: the model's scheduler config)."),
        click.option("--timesteps", default=None, help="Custom descending list, e.g. '999,750,500,250,100,20'."),
    ]):
        func = option(func)
    return func


def inversion_options(func: Callable) -> Callable:
    """--method and its settings, --guidance, --inversion-guidance, --negative-prompt."""
    for option in reversed([
        click.option("--method", default="exact", show_default=True, type=click.Choice(METHODS), help="Inversion method."),
        click.option("--guidance", default=7.5, show_default=True, type=float, help="Guidance of replays and edits."),
        click.option("--inversion-guidance", default=None, type=float,
                     help="Guidance while inverting (default 1; fixed-point: --guidance)."),
        click.option("--negative-prompt", default="", help="Negative prompt for guided replay."),
        click.option("--fixed-point-iterations", default=10, show_default=True, type=int, help="fixed-point: most iterations per step."),
        click.option("--tolerance", default=1e-5, show_default=True, type=float, help="fixed-point: relative change to stop at."),
        click.option("--null-text-steps", default=10, show_default=True, type=int, help="null-text: most Adam steps per timestep."),
    ]):
        func = option(func)
    return func


def run_options(func: Callable) -> Callable:
    """--force, --quiet, --format, --seed."""
    for option in reversed([
        click.option("--force", is_flag=True, help="Overwrite existing outputs."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
        click.option("--format", "output_format", default="text", type=click.Choice(["text", "json"]),
                     help="json: print a machine-readable result on stdout."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed for anything random (eta > 0)."),
    ]):
        func = option(func)
    return func


def handle_errors(func: Callable) -> Callable:
    """Known errors → 'Error: …' on stderr and exit 1, no traceback."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet_libraries()
        try:
            return func(*args, **kwargs)
        except DdimEditError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted; no output was written.", err=True)
            sys.exit(130)
    return wrapper


def emit(result: dict[str, Any], output_format: str, text: str) -> None:
    """The command's result: JSON on stdout, or a short human line."""
    if output_format == "json":
        click.echo(json.dumps(result, sort_keys=True, default=str))
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
