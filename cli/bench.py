"""``ddim-edit bench``: run a benchmark suite on toy-world scenes with ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ddim_edit.bench.harness import SUITES, BenchContext, check_out_dir, format_table, run_suite
from ddim_edit.bench.harness import check_suite_methods, check_suite_options, default_methods
from ddim_edit.edits.flowedit import FLOWEDIT
from ddim_edit.bench.recon import DEFAULT_METHODS as RECON_METHODS, SLOW_METHODS
from ddim_edit.errors import DdimEditError
from ddim_edit.inversion import METHODS
from ddim_edit.model import load_model
from ddim_edit.schedule import SPACINGS

from .common import model_extras
from .common import emit, handle_errors, model_options
from .common import SEED, STEPS, POSITIVE_INT, guidance_option


def parse_options(pairs: tuple[str, ...]) -> dict:
    """``--set key=value`` pairs (values parsed as JSON when they can be)."""
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise DdimEditError(f"--set takes key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@click.command("bench")
@click.argument("suite", type=click.Choice(SUITES))
@click.option("--seed", default=1000, show_default=True, type=SEED, help="Scenes are drawn from this seed (training used others).")
@click.option("--n", "count", default=10, show_default=True, type=POSITIVE_INT, help="Number of scenes (pairs for style).")
@click.option("--steps", default=50, show_default=True, type=STEPS, help="DDIM steps.")
@click.option("--spacing", default=None, type=click.Choice(SPACINGS), help="Timestep spacing (default: the model's).")
@guidance_option()
@click.option("--method", "methods", multiple=True, type=click.Choice((*METHODS, FLOWEDIT)),
              help=f"Inversion method(s) to compare; repeat the option (default: the suite's; recon: "
                   f"{', '.join(RECON_METHODS)}; the slow {' and '.join(SLOW_METHODS)} only when named); "
                   f"swap also takes {FLOWEDIT} (no inversion).")
@click.option("--set", "settings", multiple=True, help="Suite option key=value (JSON values), repeatable.")
@click.option("--out", "out_dir", default=None, help="Folder for per-scene grids (source | result | ground truth).")
@click.option("--force", is_flag=True, help="Overwrite grids already in --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress (a bar of scenes done, on stderr).")
@click.option("--format", "output_format", default="text", type=click.Choice(["text", "json"]),
              help="json: the summary (mean of every metric per variant) on stdout.")
@model_options()
@handle_errors
def command(suite, seed, count, steps, spacing, guidance, methods, settings, out_dir, force, quiet, output_format, model_name,
            model_config, device, dtype, allow_pickle):
    """Run benchmark SUITE (recon, swap, inpaint, style) on scenes from --seed.

    Prints a table to stderr and, with --format json, the mean of every metric per variant on stdout.

    \b
    Example:
      ddim-edit bench recon --seed 1000 --n 50 --steps 50 --method ddim --method exact --format json
    """
    if count <= 0:
        raise DdimEditError("--n must be at least 1")
    if out_dir:
        check_out_dir(suite, out_dir, count, force)
    check_suite_options(suite, parse_options(settings))
    check_suite_methods(suite, tuple(methods))
    model = load_model(model_name, device, dtype, allow_pickle, model_config, **model_extras())
    ctx = BenchContext(model=model, steps=steps, spacing=spacing, guidance=guidance, seed=seed, n=count,
                       out_dir=Path(out_dir) if out_dir else None, force=force, quiet=quiet, options=parse_options(settings))
    ctx.methods = tuple(methods) or default_methods(suite)
    summary = run_suite(suite, ctx)
    click.echo(format_table(summary), err=True)
    emit(summary, output_format, f"bench {suite}: {count} scene{'' if count == 1 else 's'} in {summary['seconds']}s")
