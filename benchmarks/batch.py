"""Batch throughput and the job layer's overhead, on the CPU with the bundled model.

1. Images per minute of ``ddim-edit batch`` on a manifest of prompt swaps (toy scenes rendered at
   451×300, outputs at that size), in one process and in two through accelerate (torchrun, gloo).
   Two rates: the wall clock of the whole command (start-up and model load included) and the
   batch's own (jobs only, as in its summary).
2. The per-job overhead outside the UNet, model load excluded: in one process, with the model
   loaded first, each job's time against the time spent inside ``unet.forward`` (measured with
   forward hooks): the fraction ``(job − UNet) / job`` is what the job layer, the VAE, the text
   encoder, image resizing and PNG writing cost.

    python -m benchmarks.batch --n 8 --steps 20 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ddim_edit.toy.world import COLORS, caption, render, sample_scenes, with_changes

ROOT = Path(__file__).resolve().parents[1]
SIZE = (451, 300)


def write_scenes(folder: Path, n: int, steps: int, seed: int) -> Path:
    """``n`` swap jobs (one colour changed each) on toy scenes at 451×300; returns the manifest."""
    jobs = []
    for index, scene in enumerate(sample_scenes(seed, n)):
        pixels = render(scene, 256)
        Image.fromarray(pixels).resize(SIZE, Image.LANCZOS).save(folder / f"scene-{index}.png")
        colour = next(name for name in COLORS if name != scene.color)
        jobs.append({"edit": "swap", "image": f"scene-{index}.png", "source_prompt": caption(scene),
                     "target_prompt": caption(with_changes(scene, color=colour)), "steps": steps})
    manifest = folder / "jobs.jsonl"
    manifest.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return manifest


def run_batch_command(manifest: Path, out: Path, processes: int, threads: int) -> dict:
    """Run the command; the summary it prints, with the wall-clock seconds of the whole run."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    args = ["-m", "cli.main", "batch", str(manifest), "--out", str(out), "-q", "--format", "json"]
    if processes > 1:
        args = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"batch failed ({processes} processes): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    jobs = summary["total"]["ran"]
    return {"processes": processes, "jobs": jobs, "wall_seconds": round(wall, 2),
            "images_per_minute_wall": round(60 * jobs / wall, 1),
            "batch_seconds": summary["seconds"], "images_per_minute_batch": summary["images_per_minute"]}


def overhead(manifest: Path, out: Path, threads: int) -> dict:
    """Per-job time and UNet time in this process, the model loaded before the first job."""
    import torch

    from ddim_edit.jobs.batch import BatchOptions, run_job
    from ddim_edit.jobs.manifest import read_manifest
    from ddim_edit.jobs.resolve import ModelCache

    torch.set_num_threads(threads)
    jobs = read_manifest(manifest, out)
    models = ModelCache(device="cpu")
    model = models.get()  # loaded here: not part of any job
    inside = {"seconds": 0.0, "start": 0.0}

    def before(module, args, kwargs=None):
        inside["start"] = time.perf_counter()

    def after(module, args, output):
        inside["seconds"] += time.perf_counter() - inside["start"]

    handles = [model.denoiser.register_forward_pre_hook(before), model.denoiser.register_forward_hook(after)]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for job in jobs:
            inside["seconds"] = 0.0
            start = time.perf_counter()
            record = run_job(job, models, BatchOptions(out_dir=out), process=0)
            total = time.perf_counter() - start
            if record["status"] != "ok":
                raise SystemExit(f"job {job.index} failed: {record.get('error')}")
            rows.append((total, inside["seconds"], record["unet_evaluations"]))
    finally:
        for handle in handles:
            handle.remove()
    totals = np.array([row[0] for row in rows])
    unet = np.array([row[1] for row in rows])
    fractions = (totals - unet) / totals
    return {"jobs": len(rows), "seconds_per_job": round(float(totals.mean()), 3),
            "unet_seconds_per_job": round(float(unet.mean()), 3),
            "unet_evaluations_per_job": float(np.mean([row[2] for row in rows])),
            "overhead_seconds_per_job": round(float((totals - unet).mean()), 3),
            "overhead_fraction": round(float(fractions.mean()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="Swap jobs in the manifest.")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps per job.")
    parser.add_argument("--seed", type=int, default=2026, help="Scenes are drawn from this seed.")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="Process counts to compare.")
    parser.add_argument("--threads", type=int, default=1,
                        help="Torch threads per process (1: no oversubscription when processes share the cores).")
    parser.add_argument("--json", default=None, help="Also write the results here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ddim-edit-bench-batch-") as tmp:
        folder = Path(tmp)
        manifest = write_scenes(folder, args.n, args.steps, args.seed)
        throughput = [run_batch_command(manifest, folder / f"out-{count}", count, args.threads)
                      for count in args.processes]
        cost = overhead(manifest, folder / "out-overhead", args.threads)
    result = {"n": args.n, "steps": args.steps, "size": list(SIZE), "cpu_count": os.cpu_count(), "threads": args.threads,
              "throughput": throughput, "overhead": cost}
    for row in throughput:
        print(f"{row['processes']} process(es): {row['images_per_minute_wall']:.1f} images/min wall "
              f"({row['wall_seconds']:.1f}s for {row['jobs']} jobs, start-up and model load included), "
              f"{row['images_per_minute_batch']:.1f} images/min in the batch", file=sys.stderr)
    print(f"per job: {cost['seconds_per_job']:.3f}s, UNet {cost['unet_seconds_per_job']:.3f}s "
          f"({cost['unet_evaluations_per_job']:.0f} evaluations); outside the UNet "
          f"{cost['overhead_seconds_per_job']:.3f}s = {100 * cost['overhead_fraction']:.1f}% of the job", file=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
