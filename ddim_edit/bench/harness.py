"""The bench harness: draw scenes from a seed, run a suite, average its metrics per variant.

A suite is a module ``ddim_edit.bench.<name>`` with a function
``run(ctx: BenchContext, scenes: list[Scene]) -> Iterator[SceneResult]``. It must call the same
library functions as the CLI command it measures. The harness prints a table to stderr, returns
a JSON-ready summary (the mean of every metric per variant) and, with ``out_dir``, writes each
scene's comparison grid (source | result | ground truth).
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import DdimEditError, OutputError
from ..images import grid, save_png
from ..inversion import InversionOptions
from ..workflow import PreparedImage

SUITES = ("recon", "swap", "inpaint", "style")
# The ``options`` keys (``bench --set KEY=VALUE``) each suite reads; a suite that reads a new key
# must be listed here too (tests/test_bench_harness.py compares this with the suites' code).
SUITE_OPTIONS: dict[str, tuple[str, ...]] = {
    "recon": ("inversion",),
    "swap": ("by_kind", "flowedit", "inversion", "swap"),
    "inpaint": ("dilate", "feather", "jump_length", "kinds", "method", "resample", "start_step", "variants"),
    "style": ("guidance", "method", "prompt", "variants"),
}


@dataclass
class BenchContext:
    """Settings every suite reads.

    Attributes:
        model: the loaded EditModel.
        steps: DDIM steps; spacing: timestep spacing (None: the model's).
        guidance: guidance scale of replays and edits.
        methods: inversion methods to compare (suites that compare methods read this).
        seed, n: which scenes.
        out_dir: where per-scene grids go (None: nowhere).
        force: overwrite grids already in ``out_dir`` (else :func:`check_out_dir` refuses them).
        progress: inner progress bars (per inversion / sampling).
        quiet: no bars at all (the harness shows a per-scene bar otherwise).
        options: suite-specific settings (e.g. ``gamma`` for style).
    """

    model: Any
    steps: int = 50
    spacing: str | None = None
    guidance: float = 7.5
    methods: tuple[str, ...] = ("ddim", "exact")
    seed: int = 1000
    n: int = 10
    out_dir: Path | None = None
    force: bool = False
    progress: bool = False
    quiet: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def schedule(self):
        from ..workflow import make_schedule

        return make_schedule(self.model, self.steps, self.spacing)

    def inversion_options(self, method: str, **changes: Any) -> InversionOptions:
        return InversionOptions(method=method, guidance_scale=self.guidance, **changes)


@dataclass
class SceneResult:
    """One scene's outcome for one variant: metrics and the panels of its comparison grid."""

    scene_index: int
    variant: str
    metrics: dict[str, float]
    panels: list[tuple[str, np.ndarray]] = field(default_factory=list)


def prepared(pixels: np.ndarray, label: str) -> PreparedImage:
    """Wrap in-memory pixels as the CLI's prepared image (same inversion path, no file)."""
    height, width = pixels.shape[:2]
    return PreparedImage(pixels, (width, height), {"path": None, "sha256": None, "scene": label,
                                                   "original_size": [width, height], "size": [width, height]})


def default_methods(name: str) -> tuple[str, ...]:
    """The inversion methods suite ``name`` compares when none are given (its ``DEFAULT_METHODS``)."""
    return getattr(load_suite(name), "DEFAULT_METHODS", BenchContext.methods)


def check_suite_methods(name: str, methods: tuple[str, ...]) -> None:
    """Refuse methods suite ``name`` cannot run: inversion methods, and its own ``EDIT_METHODS`` (swap's flowedit)."""
    from ..trajectory import METHODS

    known = (*METHODS, *getattr(load_suite(name), "EDIT_METHODS", ()))
    unknown = [method for method in methods if method not in known]
    if unknown:
        raise DdimEditError(f"the {name} suite cannot run --method {', '.join(unknown)}; choose from {', '.join(known)}")


def load_suite(name: str):
    if name not in SUITES:
        raise DdimEditError(f"unknown bench suite {name!r}; choose one of {', '.join(SUITES)}")
    try:
        return importlib.import_module(f"ddim_edit.bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"ddim_edit.bench.{name}":
            raise DdimEditError(f"bench suite {name!r} is not available in this version") from exc
        raise


def mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return float("nan")
    if any(math.isinf(v) for v in finite):
        return float("inf") if all(v > 0 for v in finite if math.isinf(v)) else float("nan")
    return float(np.mean(finite))


def grid_name(suite: str, scene_index: int, variant: str) -> str:
    """The file name of one scene's comparison grid in ``out_dir``."""
    return f"{suite}-{scene_index:04d}-{variant}.png"


def check_out_dir(suite: str, out_dir: str | Path, n: int, force: bool = False, label: str = "--out") -> Path:
    """Refuse, before any work, an ``out_dir`` that is a file, cannot be written, or already holds a
    grid this run would write (any ``<suite>-<index>-*.png`` for its scenes) unless ``force``.

    Raises:
        OutputError: with the first clashing file and how to fix it.
    """
    from ..io import check_output_path

    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{label} {folder} is a file, not a folder; give a folder name (it is created if missing)")
    if folder.is_dir():
        if not force:
            clashes = sorted(path for index in range(n) for path in folder.glob(grid_name(suite, index, "*")))
            if clashes:
                more = f" and {len(clashes) - 1} more" if len(clashes) > 1 else ""
                raise OutputError(f"{clashes[0]}{more} already exist(s) in {label} {folder}; "
                                  "pass --force to overwrite or choose another folder")
        check_output_path(folder / grid_name(suite, 0, "probe"), force=True, label=label)  # writable?
    else:  # it will be made: the nearest existing ancestor must be a writable folder
        ancestor = folder.absolute().parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        check_output_path(ancestor / f".{folder.name}.probe", force=True, label=label)
    return folder


def check_suite_options(name: str, options: dict[str, Any]) -> None:
    """Raise :class:`DdimEditError` (field ``options``) for keys suite ``name`` does not read."""
    known = SUITE_OPTIONS.get(name, ())
    unknown = sorted(key for key in options if key not in known)
    if unknown:
        raise DdimEditError(f"the {name} suite has no option {', '.join(repr(key) for key in unknown)} in {{field}}; "
                            f"its keys are: {', '.join(known) or 'none'}", field="options", value=unknown)


def run_suite(name: str, ctx: BenchContext) -> dict[str, Any]:
    """Run suite ``name`` over ``ctx.n`` scenes from ``ctx.seed``; return the summary."""
    from ..toy.world import sample_scenes

    suite = load_suite(name)
    check_suite_options(name, ctx.options)
    check_suite_methods(name, ctx.methods)
    if ctx.out_dir is not None:
        check_out_dir(name, ctx.out_dir, ctx.n, ctx.force)
    scenes = sample_scenes(ctx.seed, ctx.n)
    collected: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[str, int] = defaultdict(int)
    if ctx.out_dir is not None:
        try:
            ctx.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create folder {ctx.out_dir} ({exc.strerror or exc}); choose another folder") from None
    start = time.perf_counter()
    seen: set[int] = set()
    bar = tqdm(total=len(scenes), desc=f"bench {name}", unit="scene", file=sys.stderr, disable=ctx.quiet)
    for result in suite.run(ctx, scenes):
        if result.scene_index not in seen:
            seen.add(result.scene_index)
            bar.update(len(seen) - 1 - bar.n)  # the scenes before this one are done
        bar.set_postfix_str(f"scene {result.scene_index + 1}: {result.variant} done")
        counts[result.variant] += 1
        for metric, value in result.metrics.items():
            collected[result.variant][metric].append(float(value))
        if ctx.out_dir is not None and result.panels:
            labels, images = zip(*result.panels)
            save_png(ctx.out_dir / grid_name(name, result.scene_index, result.variant),
                     grid(list(images), list(labels)), {"suite": name, **result.metrics}, force=ctx.force)
    bar.update(len(seen) - bar.n)
    bar.close()
    variants = {variant: {metric: mean(values) for metric, values in metrics.items()}
                for variant, metrics in collected.items()}
    summary = {"suite": name, "seed": ctx.seed, "n": ctx.n, "steps": ctx.steps, "guidance": ctx.guidance,
               "model": ctx.model.name, "variants": variants, "counts": dict(counts),
               "seconds": round(time.perf_counter() - start, 2), "options": ctx.options}
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table: one row per variant, one column per metric."""
    variants = summary["variants"]
    metrics = list(dict.fromkeys(m for values in variants.values() for m in values))
    header = ["variant"] + metrics
    rows = [[variant] + [_fmt(values.get(m)) for m in metrics] for variant, values in variants.items()]
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = [f"{summary['suite']}: {summary['n']} scenes from seed {summary['seed']}, {summary['steps']} steps, "
             f"guidance {summary['guidance']}, model {summary['model']}"]
    lines.append("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows)
    lines.extend(getattr(load_suite(summary["suite"]), "tables", lambda _: [])(summary))  # a suite's own tables
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value) or math.isnan(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"

