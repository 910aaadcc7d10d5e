"""``ddim-edit batch``: run a manifest of jobs (one process, or many through accelerate)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# MKL's conditional numerical reproducibility: without it, CPU matrix products may round differently
# with the memory alignment of their operands, which differs between processes, so one process and
# N would not give the same bytes. Set before MKL's first call.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import click

from ddim_edit.jobs.batch import BatchOptions, format_summary, run_batch
from ddim_edit.jobs.manifest import read_manifest
from ddim_edit.jobs.requests import JobSettings

from .common import click_options, emit, handle_errors, model_extra_options, model_extras, settings_from_command
from .common import TOY_EPILOG

MAX_EXIT_CODE = 100  # exit codes wrap at 256; more failures than this still exit with 100


@click.command("batch", epilog=TOY_EPILOG)
@click.argument("manifest")
@click.option("--out", "out_dir", required=True, help="Folder for the outputs and results.jsonl (created if missing).")
@click.option("--force", is_flag=True, help="Redo finished jobs and overwrite their outputs.")
@click_options(JobSettings, "keep_working_size",
               keep_working_size={"help": "Outputs at the model's working size (default: the source's)."})
@click.option("--model", "model_name", default=None,
              help="Model of jobs that name none (default: a trajectory's own model, else 'toy').")
@click.option("--model-config", default=None, help="Config folder for a single-file checkpoint (offline use).")
@click.option("--device", default="auto", show_default=True,
              help="auto (under accelerate: each process's own GPU), cpu, cuda, cuda:N, mps.")
@click.option("--dtype", default="auto", show_default=True, help="auto, fp32, fp16 or bf16 (fp16/bf16 on GPU only).")
@click.option("--allow-pickle", is_flag=True, help="Allow .ckpt/.bin/.pt checkpoints (they can run code).")
@model_extra_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--format", "output_format", default="text", type=click.Choice(["text", "json"]),
              help="json: the summary on stdout (the table goes to stderr either way).")
@handle_errors
def command(manifest, out_dir, force, model_name, model_config, device, dtype, allow_pickle, quiet, output_format,
            **settings):
    """Run every job of MANIFEST and write the outputs and DIR/results.jsonl.

    MANIFEST is JSON Lines (one job a line), CSV with the same columns, or PIE-Bench's
    mapping_file.json. A job names its edit (invert, reconstruct, swap, inpaint, style), its
    inputs (relative to the manifest's folder), its output (relative to --out) and any option of
    the single command as a key; every output must lie inside --out. Finished jobs are skipped on a
    rerun (a missing, changed or out-of-date output is made again); a failing job is recorded and the
    others go on; the exit code is the number of failed jobs. A second batch on the same --out waits
    for the first; results.jsonl keeps the records of every manifest run into the folder.

    \b
    Example:
      ddim-edit batch jobs.jsonl --out results/
      accelerate launch --num_processes 2 $(which ddim-edit) batch jobs.jsonl --out results/
    jobs.jsonl:
      {"edit": "swap", "image": "a.png", "source_prompt": "a red circle", "target_prompt": "a blue circle"}
    """
    out = Path(out_dir)
    jobs = read_manifest(manifest, out)
    options = BatchOptions(out_dir=out.resolve(), force=force, progress=not quiet,
                           defaults=settings_from_command(progress=False),
                           device=device, dtype=dtype, allow_pickle=allow_pickle, model_config=model_config,
                           on_wait=lambda line: click.echo(line, err=True), **model_extras())
    report = run_batch(jobs, options)
    from accelerate import PartialState

    if PartialState().is_main_process:
        summary = report.summary()
        click.echo(format_summary(summary), err=True)
        for record in [r for r in report.records if r["status"] == "failed"][:5]:
            click.echo(f"failed: line {record['line']} ({record['edit']}): {record.get('error')}", err=True)
        if report.failed > 5:
            click.echo(f"… and {report.failed - 5} more failures in {out / 'results.jsonl'}", err=True)
        emit(dict(summary, failed=report.failed, results=str(out / "results.jsonl")), output_format,
             f"{len(jobs)} jobs: {summary['total']['ok']} ok ({report.skipped} skipped), {report.failed} failed; "
             f"records in {out / 'results.jsonl'}")
    if report.failed:
        sys.exit(min(report.failed, MAX_EXIT_CODE))
