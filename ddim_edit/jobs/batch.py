"""Running a manifest: sharded over processes with accelerate, resumable, one record per job.

``accelerate launch --num_processes N ddim-edit batch …`` starts N copies; each takes every N-th
job (round robin over the manifest's order, by :class:`accelerate.PartialState`'s process index),
loads its model once and runs its jobs one after another. A job's result depends only on the job
(each is seeded with its own seed), so one process and N give the same bytes.

Records: each process appends one JSON line per job to ``DIR/.ddim-edit-records/process-K.jsonl``
as the job ends (a crash loses nothing); after all processes are done the main one merges them
with the previous ``DIR/results.jsonl`` (one record per job of the manifest, in its order) and
writes it atomically. A job whose record says ``ok`` and whose output exists is skipped on a
rerun; ``force`` redoes it. A failing job is recorded with its one-line error and the batch goes on.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DdimEditError, OutputError
from ..io import atomic_write
from ..metrics import psnr
from .build import build_request
from .edits import run_request
from .manifest import Job
from .requests import JobSettings
from ..model import MemoryOptions
from .resolve import ModelCache
from .write import write_result

RESULTS_NAME = "results.jsonl"
RECORDS_FOLDER = ".ddim-edit-records"


@dataclass
class BatchOptions:
    """How a batch runs (the jobs bring their own edit options).

    Attributes:
        defaults: settings of jobs that do not set them (a job's keys win).
        device, dtype, allow_pickle, model_config: how models load; ``device`` ``auto`` under
            accelerate with several processes means the process's own device (``cuda:K``).
        loras, memory: LoRAs fused into every model, memory options (see ``ModelCache``).
    """

    out_dir: Path
    force: bool = False
    progress: bool = True
    defaults: JobSettings = field(default_factory=JobSettings)
    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    model_config: str | None = None
    loras: tuple[str, ...] = ()
    memory: MemoryOptions = field(default_factory=MemoryOptions)


@dataclass
class BatchReport:
    """What a batch did, over all processes (read back from ``results.jsonl``)."""

    records: list[dict[str, Any]]
    seconds: float
    processes: int

    @property
    def failed(self) -> int:
        return sum(record["status"] == "failed" for record in self.records)

    @property
    def skipped(self) -> int:
        return sum(bool(record.get("skipped")) for record in self.records)

    def summary(self) -> dict[str, Any]:
        """Per edit and in total: jobs, ok, skipped, failed, seconds per job, UNet evaluations, PSNR."""
        groups: dict[str, list[dict]] = defaultdict(list)
        for record in self.records:
            groups[record["edit"]].append(record)
        rows = {edit: summarise(records) for edit, records in sorted(groups.items())}
        done = sum(row["ran"] for row in rows.values())
        return {"edits": rows, "total": summarise(self.records), "seconds": round(self.seconds, 2),
                "processes": self.processes,
                "images_per_minute": round(60.0 * done / self.seconds, 2) if self.seconds > 0 and done else None}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and means of one group of records (means over the jobs that ran now and finished)."""
    ran = [r for r in records if r["status"] == "ok" and not r.get("skipped")]
    scores = [r["psnr"] for r in records if r["status"] == "ok" and isinstance(r.get("psnr"), (int, float))]
    return {"jobs": len(records), "ok": sum(r["status"] == "ok" for r in records),
            "skipped": sum(bool(r.get("skipped")) for r in records),
            "failed": sum(r["status"] == "failed" for r in records), "ran": len(ran),
            "seconds_per_job": round(sum(r["seconds"] for r in ran) / len(ran), 3) if ran else None,
            "unet_evaluations_per_job": round(sum(r["unet_evaluations"] for r in ran) / len(ran), 1) if ran else None,
            "psnr": round(sum(scores) / len(scores), 2) if scores else None}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small text table."""
    header = f"{'edit':<12}{'jobs':>6}{'ok':>6}{'skipped':>9}{'failed':>8}{'s/job':>8}{'UNet/job':>10}{'PSNR':>8}"
    lines = [header, "-" * len(header)]
    rows = list(summary["edits"].items()) + [("total", summary["total"])]
    for name, row in rows:
        def cell(value: Any, width: int, form: str = "{:.2f}") -> str:
            return f"{'-' if value is None else form.format(value):>{width}}"
        lines.append(f"{name:<12}{row['jobs']:>6}{row['ok']:>6}{row['skipped']:>9}{row['failed']:>8}"
                     f"{cell(row['seconds_per_job'], 8)}{cell(row['unet_evaluations_per_job'], 10, '{:.0f}')}"
                     f"{cell(row['psnr'], 8)}")
    rate = summary["images_per_minute"]
    lines.append(f"{summary['seconds']:.1f}s on {summary['processes']} process(es)"
                 + (f", {rate:.1f} images/min" if rate else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------- records on disk
def records_folder(out_dir: Path) -> Path:
    return out_dir / RECORDS_FOLDER


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON records of a file, one a line (a torn last line from a crash is ignored)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "key" in record:
            records.append(record)
    return records


def known_records(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The latest record per job key: ``results.jsonl``, then the per-process files (newer)."""
    latest: dict[str, dict[str, Any]] = {}
    paths = [out_dir / RESULTS_NAME] + sorted(records_folder(out_dir).glob("process-*.jsonl"))
    for path in paths:
        for record in read_records(path):
            latest[record["key"]] = record
    return latest


def is_finished(job: Job, records: dict[str, dict[str, Any]]) -> bool:
    """The job's record says it finished, and its output is still there."""
    record = records.get(job.key)
    return bool(record) and record.get("status") == "ok" and job.output.exists()


def json_ready(value: Any) -> Any:
    """``value`` with non-finite floats as None and numpy/torch scalars as numbers (strict JSON)."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and push it to disk (a crash after a job keeps its record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(json_ready(record), sort_keys=True, allow_nan=False, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def merge_records(jobs: list[Job], out_dir: Path, previous: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per job of the manifest (this run's, else the previous one), written to ``results.jsonl``;
    the per-process files are removed."""
    latest = dict(previous)
    folder = records_folder(out_dir)
    files = sorted(folder.glob("process-*.jsonl"))
    for path in files:
        for record in read_records(path):
            latest[record["key"]] = record
    merged = [latest[job.key] for job in jobs if job.key in latest]
    text = "".join(json.dumps(record, sort_keys=True, allow_nan=False, default=str) + "\n" for record in merged)
    atomic_write(out_dir / RESULTS_NAME, text.encode("utf-8"), force=True)
    for path in files:
        path.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return merged


# ---------------------------------------------------------------------- one job
def one_line(exc: BaseException) -> str:
    """An exception as one line: a user error's message, else its type and first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, DdimEditError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def background_psnr(image, source_path: str, mask) -> float:
    """PSNR outside PIE-Bench's annotated edit region (``mask``, any size), against the source, at the
    output's size."""
    import cv2
    import numpy as np

    from ..images import load_image
    from .resolution import size_of, to_size

    size = size_of(image)
    outside = ~cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return psnr(image, to_size(load_image(source_path), size), outside)


def run_job(job: Job, models: ModelCache, options: BatchOptions, process: int) -> dict[str, Any]:
    """Run one job and write its output; never raises for a job's own failure (the record says it)."""
    start = time.perf_counter()
    before = models.unet_evaluations()
    record: dict[str, Any] = {"key": job.key, "index": job.index, "line": job.line, "edit": job.edit,
                              "output": str(job.output), "process": process}
    try:
        if job.output.exists() and not options.force:
            raise OutputError(f"{job.output} already exists and no finished record says this job made it; "
                              "pass --force to overwrite it")
        job.output.parent.mkdir(parents=True, exist_ok=True)
        request = build_request(job, options.defaults, options.force)
        result = run_request(request, models)
        write_result(result, job.output, force=options.force)
        record.update(status="ok", psnr=result.record.get("psnr"), size=result.record.get("size"),
                      working_size=result.record.get("working_size"), method=result.record.get("method"))
        if job.evaluation_mask is not None and result.image is not None:
            record["background_psnr"] = background_psnr(result.image, job.fields["image"], job.evaluation_mask)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a bad image, mask, prompt or option: record it and go on
        record.update(status="failed", error=one_line(exc))
    record.update(seconds=round(time.perf_counter() - start, 3), unet_evaluations=models.unet_evaluations() - before)
    return json_ready(record)


# ---------------------------------------------------------------------- the batch
def shard(jobs: list[Job], process_index: int, num_processes: int) -> list[Job]:
    """The jobs of one process: every ``num_processes``-th, starting at its index (round robin)."""
    return jobs[process_index::num_processes]


def process_state(device: str = "auto"):
    """accelerate's view of this process (index, count, device; one process without a launcher).

    Without CUDA (or with ``device`` ``cpu``) the processes a launcher started join over gloo on
    the CPU: ``accelerate launch --multi_gpu --num_processes N`` (torchrun) on a CPU-only machine.
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def run_batch(jobs: list[Job], options: BatchOptions) -> BatchReport:
    """Run ``jobs`` on this process's shard; every process returns the merged report."""
    state = process_state(options.device)
    start = time.perf_counter()
    out_dir = options.out_dir
    if state.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    previous = known_records(out_dir)
    state.wait_for_everyone()  # every process has read the old records before any writes new ones
    device = options.device
    if device == "auto" and state.num_processes > 1:
        device = str(state.device)
    models = ModelCache(device=device, dtype=options.dtype, allow_pickle=options.allow_pickle,
                        config=options.model_config, default=options.defaults.model, loras=tuple(options.loras),
                        memory=options.memory)
    mine = shard(jobs, state.process_index, state.num_processes)
    record_path = records_folder(out_dir) / f"process-{state.process_index}.jsonl"
    bar = progress_bar(len(jobs), state.is_main_process and options.progress)
    try:
        for job in mine:
            if is_finished(job, previous) and not options.force:
                record = dict(previous[job.key], skipped=True, process=state.process_index, seconds=0.0,
                              unet_evaluations=0)
            else:
                record = run_job(job, models, options, state.process_index)
                record.pop("skipped", None)
            append_record(record_path, record)
            if bar is not None:
                bar.n = count_lines(records_folder(out_dir))
                bar.refresh()
    finally:
        if bar is not None:
            bar.n = bar.total if bar.n >= bar.total else bar.n
            bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        merge_records(jobs, out_dir, previous)
    state.wait_for_everyone()
    records = [record for record in read_records(out_dir / RESULTS_NAME)]
    return BatchReport(records, time.perf_counter() - start, state.num_processes)


def count_lines(folder: Path) -> int:
    """Records written so far by every process (for the progress bar)."""
    return sum(len(read_records(path)) for path in folder.glob("process-*.jsonl"))


def progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="batch", unit="job", dynamic_ncols=True)
