"""Running a manifest: sharded over processes with accelerate, resumable, one record per job.

``accelerate launch --num_processes N ddim-edit batch …`` starts N copies; each takes every N-th
job (round robin over the manifest's order, by :class:`accelerate.PartialState`'s process index),
loads its model once and runs its jobs one after another. A job's result depends only on the job
(each is seeded with its own seed), so one process and N give the same bytes.

One batch at a time per output folder: the main process holds ``DIR/.ddim-edit-batch.lock`` from
before it reads the records until it has merged them, so a second ``ddim-edit batch`` on the same
``--out`` waits for the first and then finds its jobs done. (Under accelerate the waiting run's other
processes wait at its first barrier meanwhile, which the process group's timeout bounds: 30 minutes
unless configured otherwise.)

Records: each process appends one JSON line per job to ``DIR/.ddim-edit-records/process-K.jsonl``
as the job ends (a crash loses nothing); after all processes are done the main one merges them
with the previous ``DIR/results.jsonl`` and writes it atomically: this manifest's jobs in its order,
then the records of other manifests run into the same folder. A record names its output (relative
to DIR), the job's key (a hash of its manifest line) and the output's SHA-256 and size.

A rerun skips a job whose output is there with the recorded key, size and SHA-256; it redoes (and
overwrites) an output that is missing, changed on disk, or made by an older version of the line.
An existing file no record claims, or one another manifest's job made, is left alone unless
``force``. A failing job is recorded with its one-line error and the batch goes on.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import DdimEditError, OutputError
from ..io import atomic_write, file_sha256, make_output_folder
from ..json_output import json_safe, strict_json
from ..metrics import psnr
from .advice import collected_advice
from .build import build_request
from .registry import run_request
from .manifest import Job
from .requests import JobSettings
from ..model import MemoryOptions
from .resolve import ModelCache
from .write import write_result

RESULTS_NAME = "results.jsonl"
RECORDS_FOLDER = ".ddim-edit-records"
LOCK_NAME = ".ddim-edit-batch.lock"


@dataclass
class BatchOptions:
    """How a batch runs (the jobs bring their own edit options).

    Attributes:
        defaults: settings of jobs that do not set them (a job's keys win).
        device, dtype, allow_pickle, model_config: how models load; ``device`` ``auto`` under
            accelerate with several processes means the process's own device (``cuda:K``).
        loras, memory: LoRAs fused into every model, memory options (see ``ModelCache``).
        on_wait: told (one line) when another batch holds the output folder and this one waits.
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
    on_wait: Callable[[str], None] | None = None


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


RecordId = tuple[str, str]  # (output relative to the folder, job key)


def output_name(output: str | Path, out_dir: Path) -> str:
    """An output's path relative to the batch's folder (as records name it)."""
    try:
        return Path(output).relative_to(out_dir).as_posix()
    except ValueError:
        return str(output)


def record_id(record: dict[str, Any], out_dir: Path) -> RecordId:
    return record.get("name") or output_name(record.get("output", ""), out_dir), record["key"]


def add_record(records: dict[RecordId, dict[str, Any]], record: dict[str, Any], out_dir: Path) -> None:
    """Put ``record`` in ``records``; a finished one drops the other jobs' records of its output
    (the file is now this job's)."""
    name, key = record_id(record, out_dir)
    if record.get("status") == "ok":
        for other in [ident for ident in records if ident[0] == name and ident[1] != key]:
            del records[other]
    records[(name, key)] = record


def known_records(out_dir: Path) -> dict[RecordId, dict[str, Any]]:
    """The latest record per (output, job key): ``results.jsonl``, then the per-process files (newer)."""
    latest: dict[RecordId, dict[str, Any]] = {}
    paths = [out_dir / RESULTS_NAME] + sorted(records_folder(out_dir).glob("process-*.jsonl"))
    for path in paths:
        for record in read_records(path):
            add_record(latest, record, out_dir)
    return latest


def owner(job: Job, records: dict[RecordId, dict[str, Any]], out_dir: Path) -> dict[str, Any] | None:
    """The finished record of the job that wrote ``job``'s output (this job or another), if any."""
    name = output_name(job.output, out_dir)
    return next((r for (n, _), r in records.items() if n == name and r.get("status") == "ok"), None)


def output_digest(path: Path) -> dict[str, Any]:
    """``sha256`` and ``bytes`` of a written output (what a rerun compares)."""
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def is_finished(job: Job, records: dict[RecordId, dict[str, Any]], out_dir: Path) -> bool:
    """This job (same key) made the output, and the file is still what it wrote (size and SHA-256)."""
    record = owner(job, records, out_dir)
    if record is None or record["key"] != job.key or not job.output.is_file():
        return False
    if "sha256" not in record:  # a record from before digests were kept: the file's presence is all it says
        return True
    return record.get("bytes") == job.output.stat().st_size and record["sha256"] == file_sha256(job.output)


def may_overwrite(job: Job, records: dict[RecordId, dict[str, Any]], out_dir: Path, force: bool) -> bool:
    """Whether writing ``job``'s output replaces a file; an :class:`OutputError` when that file is not
    this manifest's to replace (no record made it, or another manifest's job did) and ``force`` is off."""
    if not job.output.exists():
        return False
    if force:
        return True
    record = owner(job, records, out_dir)
    if record is None:
        raise OutputError(f"{job.output} already exists and no finished record says this job made it; "
                          "pass --force to overwrite it")
    if record["key"] != job.key and record.get("manifest", job.manifest) != job.manifest:
        raise OutputError(f"{job.output} was made by line {record.get('line')} of {record.get('manifest')}; "
                          "give this job another output, or pass --force to replace it")
    return True


def records_of(jobs: list[Job], records: dict[RecordId, dict[str, Any]], out_dir: Path) -> list[dict[str, Any]]:
    """The record of each job that has one, in the manifest's order."""
    ids = [(output_name(job.output, out_dir), job.key) for job in jobs]
    return [records[ident] for ident in ids if ident in records]


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and push it to disk (a crash after a job keeps its record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(strict_json(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def merge_records(jobs: list[Job], out_dir: Path) -> list[dict[str, Any]]:
    """Fold the per-process files into ``results.jsonl`` (this manifest's jobs first, in its order, then
    every other job's record in the folder) and remove them; returns this manifest's records."""
    folder = records_folder(out_dir)
    files = sorted(folder.glob("process-*.jsonl"))
    latest = known_records(out_dir)
    mine = records_of(jobs, latest, out_dir)
    taken = {id(record) for record in mine}
    others = [record for record in latest.values() if id(record) not in taken]
    text = "".join(strict_json(record) + "\n" for record in mine + others)
    atomic_write(out_dir / RESULTS_NAME, text.encode("utf-8"), force=True)
    for path in files:
        path.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return mine


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
    from .output_size import size_of, to_size

    size = size_of(image)
    outside = ~cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return psnr(image, to_size(load_image(source_path), size), outside)


def run_job(job: Job, models: ModelCache, options: BatchOptions, process: int,
            records: dict[RecordId, dict[str, Any]]) -> dict[str, Any]:
    """Run one job and write its output; never raises for a job's own failure (the record says it).

    ``records``: what the folder's records said when the batch started (whose output may be replaced)."""
    start = time.perf_counter()
    before = models.unet_evaluations()
    record: dict[str, Any] = {"key": job.key, "index": job.index, "line": job.line, "edit": job.edit,
                              "output": str(job.output), "name": output_name(job.output, options.out_dir),
                              "manifest": job.manifest, "process": process}
    try:
        overwrite = may_overwrite(job, records, options.out_dir, options.force)
        job.output.parent.mkdir(parents=True, exist_ok=True)
        request = build_request(job, options.defaults, options.force or overwrite)
        with collected_advice() as advice:
            result = run_request(request, models)
        write_result(result, job.output, force=overwrite)
        if advice:
            record["warnings"] = advice
        record.update(status="ok", psnr=result.record.get("psnr"), size=result.record.get("size"),
                      working_size=result.record.get("working_size"), method=result.record.get("method"),
                      **output_digest(job.output))
        if job.evaluation_mask is not None and result.image is not None:
            record["background_psnr"] = background_psnr(result.image, job.fields["image"], job.evaluation_mask)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a bad image, mask, prompt or option: record it and go on
        record.update(status="failed", error=one_line(exc))
    record.update(seconds=round(time.perf_counter() - start, 3), unet_evaluations=models.unet_evaluations() - before)
    return json_safe(record)


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
    """Run ``jobs`` on this process's shard; every process returns the merged report (this manifest's records)."""
    state = process_state(options.device)
    start = time.perf_counter()
    out_dir = options.out_dir
    lock = None
    if state.is_main_process:
        make_output_folder(out_dir, "out_dir")
        lock = hold_folder(out_dir, options.on_wait)
    try:
        state.wait_for_everyone()
        previous = known_records(out_dir)
        state.wait_for_everyone()  # every process has read the old records before any writes new ones
        run_shard(jobs, options, state, previous)
        state.wait_for_everyone()
        if state.is_main_process:
            merge_records(jobs, out_dir)
        state.wait_for_everyone()
    finally:
        if lock is not None:
            lock.release()
    records = records_of(jobs, {record_id(r, out_dir): r for r in read_records(out_dir / RESULTS_NAME)}, out_dir)
    return BatchReport(records, time.perf_counter() - start, state.num_processes)


def hold_folder(out_dir: Path, on_wait: Callable[[str], None] | None):
    """The folder's batch lock, acquired (waiting, and saying so once, while another batch holds it)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(out_dir / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait(f"another ddim-edit batch is writing to {out_dir}; waiting for it to finish")
        lock.acquire()
    return lock


def run_shard(jobs: list[Job], options: BatchOptions, state, previous: dict[RecordId, dict[str, Any]]) -> None:
    """This process's jobs, one record each appended to its file as the job ends."""
    out_dir = options.out_dir
    device = options.device
    if device == "auto" and state.num_processes > 1:
        device = str(state.device)
    models = ModelCache(device=device, dtype=options.dtype, allow_pickle=options.allow_pickle,
                        config=options.model_config, default=options.defaults.model, loras=tuple(options.loras),
                        memory=options.memory)
    record_path = records_folder(out_dir) / f"process-{state.process_index}.jsonl"
    bar = progress_bar(len(jobs), state.is_main_process and options.progress)
    try:
        for job in shard(jobs, state.process_index, state.num_processes):
            if not options.force and is_finished(job, previous, out_dir):
                record = dict(owner(job, previous, out_dir), skipped=True, process=state.process_index, seconds=0.0,
                              unet_evaluations=0)
            else:
                record = run_job(job, models, options, state.process_index, previous)
                record.pop("skipped", None)
            append_record(record_path, record)
            if bar is not None:
                bar.n = count_lines(records_folder(out_dir))
                bar.refresh()
    finally:
        if bar is not None:
            bar.n = bar.total if bar.n >= bar.total else bar.n
            bar.close()


def count_lines(folder: Path) -> int:
    """Records written so far by every process (for the progress bar)."""
    return sum(len(read_records(path)) for path in folder.glob("process-*.jsonl"))


def progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="batch", unit="job", dynamic_ncols=True)
