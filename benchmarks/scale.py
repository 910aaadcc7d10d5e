"""Real-size cost of the engine and the edits against a plain diffusers pipeline, in one run.

Builds the real SD 1.5, SDXL, SD3-medium or FLUX.1-dev architecture with random weights
(:mod:`benchmarks.scale_configs`, no hub; ``sd3`` without T5-XXL, ``flux`` at reduced depth, see
there), shares the components between the family's diffusers pipeline (the reference:
``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` with ``DDIMScheduler``,
``StableDiffusion3Pipeline`` / ``FluxPipeline`` with their flow-matching Euler scheduler) and
ddim-edit's model adapter (:meth:`~ddim_edit.model.EditModel.from_pipeline`), and for each edit
runs the reference and ours interleaved (ref, ours, ref, ours … ``--repeats`` times) on the same
device:

- ``invert-ddim``, ``invert-exact`` (plain inversion; + the corrections' record pass),
  ``reconstruct`` (exact replay), ``swap`` (replace + local blend + every layer's attention maps
  kept, from the exact trajectory), ``inpaint`` (mask blending on the shared trajectory),
  ``style`` (StyleID injection, three branches, no guidance), and ``decode`` (the VAE, tiled for
  images above its tile size) against ``pipe.vae.decode``;
- **time per UNet batch item**: wall time / UNet batch items (ours: ``model.unet_evaluations``;
  the reference: 2 × steps, one guided pipeline call of ``--steps`` steps, latents out). Prompt
  embeddings are computed once for the reference (``prompt_embeds=…``), as our prompt cache does;
- the flow families (``sd3``, ``flux``): every edit at the model's default guidance (SD3: 7.0, classifier-free, 2 transformer items per step;
  FLUX: 3.5, embedded, 1 item per step), against the pipeline from the same x_T (FLUX: packed),
  with precomputed prompt embeddings, at the same steps (the pipeline's sigmas, FLUX's shifted for
  the image size). Targets are issue #28's: peak memory ≤ 1.3× for inversion, reconstruction and
  inpainting, and process CPU time per transformer item ≤ 1.05× (#28 names none
  for decode, swap and style: #13's, 1.1×, 1.3×, 1.5×);
- **peak memory**: CUDA: ``torch.cuda.max_memory_allocated`` (reset before each run). CPU: the
  process's resident-set high-water mark ``VmHWM``, reset before each run by writing 5 to
  ``/proc/self/clear_refs`` after ``gc.collect()`` and glibc ``malloc_trim(0)`` (so memory freed
  by the previous run is returned first). "peak" includes the weights (what the issue's targets
  are about); "working" is the peak above the resident size at the start of the run;
- the trajectory file's size (float64 and ``storage="float16"``), for these steps and for 50
  steps at this size, and the change of an exact replay read from a float16 file.

    python -m benchmarks.scale --arch sd15 --size 512 --steps 2 --device cpu --format table
    python -m benchmarks.scale --arch sdxl --size 1024 --steps 10 --device cuda --dtype fp16 --out sdxl.json
    python -m benchmarks.scale --arch sd3 --size 512 --format json
    python -m benchmarks.scale --arch flux --size 512 --format json

Outputs are meaningless (random weights); only cost is measured.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.scale_configs import ARCH_NOTES, ARCHES, FLOW_ARCHES, build_pipeline, parameter_count

EDITS = ("invert-ddim", "invert-exact", "reconstruct", "swap", "inpaint", "style", "decode")
TIME_TARGET = 1.05
# peak-memory targets of issue #13 (inpaint is one guided branch like reconstruct: same target;
# decode is the same VAE call: same target)
MEMORY_TARGETS = {"invert-ddim": 1.1, "invert-exact": 1.1, "reconstruct": 1.1, "swap": 1.3, "inpaint": 1.1,
                  "style": 1.5, "decode": 1.1}
# targets of issue #28 for the flow families (SD3, FLUX): peak memory ≤ 1.3× for inversion, reconstruction and
# inpainting; process CPU time per transformer batch item ≤ 1.05× (FLOW_TIME_ON). #28 names none for decode (the
# same VAE call as the pipeline's), swap and style: #13's
FLOW_MEMORY_TARGETS = dict(MEMORY_TARGETS, **{"invert-ddim": 1.3, "invert-exact": 1.3, "reconstruct": 1.3,
                                              "inpaint": 1.3})
FLOW_TIME_ON = "cpu_time_ratio"
TRAJECTORY_EDITS = ("reconstruct", "swap", "inpaint", "style")
SOURCE_PROMPT = "a red circle on a white background"
TARGET_PROMPT = "a blue circle on a white background"
GUIDANCE = 7.5


# ----------------------------------------------------------------------------- memory
def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of one run: CUDA allocator peak, or the process's RSS high-water mark on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0
        if device.type == "cpu":
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")
                _status_bytes("VmHWM")
            except OSError as exc:
                raise SystemExit(f"peak memory on the CPU needs Linux /proc/self/clear_refs ({exc})")
        elif device.type != "cuda":
            raise SystemExit(f"peak memory is measured on cpu and cuda devices, not {device.type}")

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            _malloc_trim()
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # VmHWM := VmRSS
            self.base = _status_bytes("VmRSS")

    def stop(self) -> tuple[int, int]:
        """(peak bytes, peak bytes above the start)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_bytes("VmHWM")
        return peak, peak - self.base


# ----------------------------------------------------------------------------- the runs
def test_image(size: int) -> np.ndarray:
    """A red disc on a white background with a soft gradient, uint8 [size, size, 3]."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.9 + 0.1 * x, 0.9 + 0.1 * y, np.full_like(x, 0.95)], -1)
    disc = (x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.09
    image[disc] = (0.85, 0.1, 0.1)
    return (image * 255).astype(np.uint8)


class Bench:
    """The shared components, the reference pipeline, our model and the state the edits share."""

    def __init__(self, args):
        from diffusers.utils import logging as diffusers_logging

        from ddim_edit.model import EditModel, MemoryOptions, resolve_device, resolve_dtype
        from ddim_edit.workflow import make_schedule

        diffusers_logging.set_verbosity_error()
        self.args = args
        self.device = resolve_device(args.device)
        self.dtype = resolve_dtype(args.dtype, self.device)
        start = time.perf_counter()
        pipe = build_pipeline(args.arch, self.device, self.dtype)
        memory = MemoryOptions(vae_tiling=not args.no_vae_tiling, vae_slicing=args.vae_slicing,
                               cpu_offload=args.cpu_offload)
        self.model = EditModel.from_pipeline(pipe, name=f"random-{args.arch}", device=self.device, dtype=self.dtype,
                                             memory=memory)
        self.build_seconds = time.perf_counter() - start
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.family = self.model.family
        self.flow = args.arch in FLOW_ARCHES
        # the guidance both sides run at: SD's 7.5; a flow model's own default (SD3 7.0, FLUX 3.5 embedded)
        self.guidance = self.model.DEFAULT_GUIDANCE if self.flow else GUIDANCE
        # the pipeline's denoiser batch items per step: classifier-free guidance 2, embedded guidance 1
        self.reference_per_step = 2 if self.model.classifier_free else 1
        multiple = self.model.size_multiple
        if args.size % multiple:
            raise SystemExit(f"--size must be a multiple of {multiple} for {args.arch}")
        self.size = args.size
        self.image_size = (self.size, self.size)
        self.schedule = make_schedule(self.model, args.steps, image_size=self.image_size)
        self.memory = PeakMemory(self.device)
        self.parameters = {name: parameter_count(module) for name, module in self.model.components().items()}
        self._reference_inputs()
        from ddim_edit.images import to_tensor

        self.z0 = self.model.encode_image(to_tensor(test_image(self.size)))
        self.latent_hw = tuple(self.z0.shape[-2:])
        mask = torch.zeros(self.latent_hw, dtype=torch.float64)
        h, w = self.latent_hw
        mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
        self.mask = mask
        self.traj = None

    def _reference_inputs(self) -> None:
        pipe, device = self.pipe, self.device
        with torch.no_grad():
            if self.family == "sd3":
                embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
                    prompt=SOURCE_PROMPT, prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=1,
                    do_classifier_free_guidance=True, max_sequence_length=self.model.MAX_SEQUENCE_LENGTH)
                self.reference_kwargs = dict(prompt_embeds=embeds, negative_prompt_embeds=negative,
                                             pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=negative_pooled)
            elif self.family == "flux":
                embeds, pooled, _ = pipe.encode_prompt(prompt=SOURCE_PROMPT, prompt_2=None, device=device,
                                                       num_images_per_prompt=1,
                                                       max_sequence_length=self.model.MAX_SEQUENCE_LENGTH)
                self.reference_kwargs = dict(prompt_embeds=embeds, pooled_prompt_embeds=pooled)
            elif self.family == "sdxl":
                embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
                    prompt=SOURCE_PROMPT, device=device, num_images_per_prompt=1, do_classifier_free_guidance=True)
                self.reference_kwargs = dict(prompt_embeds=embeds, negative_prompt_embeds=negative,
                                             pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=negative_pooled)
            else:
                embeds, negative = pipe.encode_prompt(SOURCE_PROMPT, device, 1, True, "")
                self.reference_kwargs = dict(prompt_embeds=embeds, negative_prompt_embeds=negative)
        latent = self.size // self.model.vae_scale_factor
        channels = int(pipe.vae.config.latent_channels)
        generator = torch.Generator("cpu").manual_seed(0)
        self.x_T = torch.randn((1, channels, latent, latent), generator=generator).to(device, self.dtype)
        # FLUX's pipeline takes its latents packed 2×2 into tokens (ours packs inside the denoiser call)
        self.reference_latents = (pipe._pack_latents(self.x_T, 1, channels, latent, latent) if self.family == "flux"
                                  else self.x_T)

    def reference_call(self, steps: int) -> None:
        """One guided pipeline call of ``steps`` steps from x_T, latents out."""
        extra = {} if self.flow else {"eta": 0.0}  # the flow pipelines' Euler scheduler takes no η
        with torch.no_grad():
            self.pipe(**self.reference_kwargs, num_inference_steps=steps, guidance_scale=self.guidance,
                      latents=self.reference_latents, output_type="latent", height=self.size, width=self.size,
                      **extra)

    # --- the reference
    def reference(self, edit: str) -> int:
        """One reference run for ``edit``; returns its UNet batch items."""
        if edit == "decode":
            vae = self.pipe.vae
            z = self.z0.to(self.device, next(vae.parameters()).dtype) / vae.config.scaling_factor
            shift = getattr(vae.config, "shift_factor", None)
            if shift:  # SD3's and FLUX's VAEs: the pipelines' (z / scale) + shift
                z = z + shift
            with torch.no_grad():
                vae.decode(z).sample.float().cpu()
            return 0
        self.reference_call(self.args.steps)
        return self.reference_per_step * self.args.steps

    # --- ours
    def ours(self, edit: str):
        from ddim_edit.edits.inpaint import InpaintOptions, inpaint_latents
        from ddim_edit.edits.prompt_swap import SwapOptions, swap
        from ddim_edit.edits.style import StyleOptions, style_transfer
        from ddim_edit.inversion import InversionOptions, invert
        from ddim_edit.replay import reconstruct

        model = self.model
        if edit == "invert-ddim":
            return invert(model, self.schedule, self.z0, SOURCE_PROMPT, InversionOptions(method="ddim",
                          guidance_scale=self.guidance), progress=False)
        if edit == "invert-exact":
            traj = invert(model, self.schedule, self.z0, SOURCE_PROMPT,
                          InversionOptions(method="exact", guidance_scale=self.guidance), progress=False)
            self.traj = traj
            return traj
        if edit == "reconstruct":
            return reconstruct(model, self.traj, progress=False)
        if edit == "swap":
            return swap(model, self.traj, TARGET_PROMPT, SwapOptions(keep_maps=True), progress=False)
        if edit == "inpaint":
            return inpaint_latents(model, self.traj, self.mask, InpaintOptions(), progress=False)
        if edit == "style":
            return style_transfer(model, self.traj, self.traj, StyleOptions(), progress=False)
        if edit == "decode":
            return model.decode_latents(self.z0)
        raise ValueError(edit)

    def measure(self, run) -> dict:
        before = self.model.unet_evaluations
        self.memory.start()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = run()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        peak, working = self.memory.stop()
        items = result if isinstance(result, int) else self.model.unet_evaluations - before
        del result
        return {"seconds": seconds, "cpu_seconds": cpu_seconds, "items": items, "peak": peak, "working": working}

    def warm_up(self) -> None:
        """One untimed reference step and one of ours: first calls allocate and pick kernels. Our prompt cache
        gets swap's target prompt too (the reference's embeddings are precomputed: neither side times encoding)."""
        from ddim_edit.inversion import InversionOptions, invert
        from ddim_edit.workflow import make_schedule

        with torch.no_grad():
            self.pipe(**self.reference_kwargs, num_inference_steps=1, guidance_scale=self.guidance,
                      latents=self.reference_latents, output_type="latent", height=self.size, width=self.size)
        invert(self.model, make_schedule(self.model, 1, image_size=self.image_size), self.z0, SOURCE_PROMPT,
               InversionOptions(method="ddim", guidance_scale=self.guidance), progress=False)
        if "swap" in self.args.edits:
            self.model.encode([TARGET_PROMPT], self.image_size)


def targets(arch: str) -> dict:
    """The targets an arch's ratios are held to: issue #13's for SD 1.5 / SDXL (wall time per UNet item, peak
    memory per edit), issue #28's for the flow families (process CPU time per transformer item, peak memory)."""
    if arch in FLOW_ARCHES:
        return {"issue": "#28", "time": TIME_TARGET, "time_on": FLOW_TIME_ON, "memory": dict(FLOW_MEMORY_TARGETS),
                "memory_on": "peak_ratio"}
    return {"issue": "#13", "time": TIME_TARGET, "time_on": "time_ratio", "memory": dict(MEMORY_TARGETS),
            "memory_on": "peak_ratio"}


def summarise(runs: list[dict]) -> dict:
    items = runs[0]["items"]
    per_item = [run["seconds"] / max(items, 1) for run in runs]
    per_item_cpu = [run["cpu_seconds"] / max(items, 1) for run in runs]
    return {"items": items, "seconds": [round(run["seconds"], 4) for run in runs],
            "cpu_seconds": [round(run["cpu_seconds"], 4) for run in runs],
            "per_item_s": statistics.median(per_item), "per_item_cpu_s": statistics.median(per_item_cpu), "peak_bytes": max(run["peak"] for run in runs),
            "working_bytes": max(run["working"] for run in runs)}


def trajectory_sizes(bench: Bench, tmp: Path) -> dict:
    """File sizes of the exact trajectory (float64 / float16 storage) and of a 50-step one at this size,
    and how far an exact replay from the float16 file lands from the one from memory."""
    from ddim_edit.replay import reconstruct
    from ddim_edit.trajectory import Trajectory
    from ddim_edit.workflow import make_schedule

    traj = bench.traj
    sizes = {}
    for storage in ("float64", "float16"):
        path = traj.save(tmp / f"traj-{storage}.safetensors", storage=storage)
        sizes[storage] = path.stat().st_size
    schedule50 = make_schedule(bench.model, 50, image_size=bench.image_size)
    shape = traj.latents.shape[1:]
    generator = torch.Generator("cpu").manual_seed(1)
    meta = dict(traj.metadata, schedule=schedule50.to_json())
    long = Trajectory(schedule50.timesteps, torch.randn((51, *shape), generator=generator, dtype=torch.float64), meta,
                      torch.randn((50, *shape), generator=generator, dtype=torch.float64) * 0.01)
    sizes50 = {storage: long.save(tmp / f"traj50-{storage}.safetensors", storage=storage).stat().st_size
               for storage in ("float64", "float16")}
    with torch.no_grad():
        from_memory = reconstruct(bench.model, traj, progress=False)
        from_half = reconstruct(bench.model, Trajectory.load(tmp / "traj-float16.safetensors"), progress=False)
    difference = float((from_memory - from_half).abs().max())
    return {"steps": traj.num_steps, "latent_shape": list(shape), "bytes": sizes, "bytes_50_steps": sizes50,
            "replay_max_abs_difference_float16_file": difference}


def run(args) -> dict:
    torch.manual_seed(0)
    bench = Bench(args)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if not args.quiet else (lambda *a: None)
    log(f"built {args.arch} in {bench.build_seconds:.1f} s: " +
        ", ".join(f"{name} {count / 1e6:.1f} M" for name, count in bench.parameters.items()) +
        (f" ({ARCH_NOTES[args.arch]})" if args.arch in ARCH_NOTES else ""))
    bench.warm_up()
    edits = [edit for edit in EDITS if edit in args.edits]
    if any(edit in TRAJECTORY_EDITS for edit in edits) and "invert-exact" not in edits:
        edits.insert(0, "invert-exact")
    measured: dict[str, dict[str, list]] = {edit: {"reference": [], "ours": []} for edit in edits}
    for repeat in range(args.repeats):
        for edit in edits:
            measured[edit]["reference"].append(bench.measure(lambda: bench.reference(edit)))
            measured[edit]["ours"].append(bench.measure(lambda: bench.ours(edit)))
            ours, ref = measured[edit]["ours"][-1], measured[edit]["reference"][-1]
            log(f"[{repeat + 1}/{args.repeats}] {edit}: ours {ours['seconds']:.2f} s / {ours['items']} items, "
                f"reference {ref['seconds']:.2f} s / {ref['items']} items")
    goals = targets(args.arch)
    results = {}
    for edit in edits:
        ours, ref = summarise(measured[edit]["ours"]), summarise(measured[edit]["reference"])
        time_ratio = ours["per_item_s"] / ref["per_item_s"]
        cpu_time_ratio = ours["per_item_cpu_s"] / ref["per_item_cpu_s"] if ref["per_item_cpu_s"] > 0 else math.nan
        peak_ratio = ours["peak_bytes"] / ref["peak_bytes"]
        working_ratio = ours["working_bytes"] / ref["working_bytes"] if ref["working_bytes"] > 0 else math.nan
        timed = cpu_time_ratio if goals["time_on"] == "cpu_time_ratio" else time_ratio
        results[edit] = {"ours": ours, "reference": ref, "time_ratio": time_ratio, "cpu_time_ratio": cpu_time_ratio,
                         "peak_ratio": peak_ratio,
                         "working_ratio": working_ratio, "time_target": goals["time"],
                         "memory_target": goals["memory"][edit], "time_met": bool(timed <= goals["time"]),
                         "memory_met": peak_ratio <= goals["memory"][edit]}
    with tempfile.TemporaryDirectory() as tmp:
        trajectory = trajectory_sizes(bench, Path(tmp)) if bench.traj is not None else None
    return {"arch": args.arch, "size": args.size, "steps": args.steps, "device": str(bench.device),
            "dtype": str(bench.dtype).replace("torch.", ""), "repeats": args.repeats,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "family": bench.family, "arch_note": ARCH_NOTES.get(args.arch),
            "reference_pipeline": type(bench.pipe).__name__, "denoiser": type(bench.model).DENOISER,
            "guidance": bench.guidance, "reference_items_per_step": bench.reference_per_step,
            "parameters": bench.parameters, "build_seconds": bench.build_seconds,
            "targets": goals,
            "targets_met": {"time": all(row["time_met"] for row in results.values()),
                            "memory": all(row["memory_met"] for row in results.values())},
            "memory_measure": ("torch.cuda.max_memory_allocated" if bench.device.type == "cuda"
                               else "VmHWM after clear_refs (RSS high-water mark)"),
            "memory_options": {"vae_tiling": not args.no_vae_tiling, "vae_slicing": args.vae_slicing,
                               "cpu_offload": args.cpu_offload},
            "edits": results, "trajectory": trajectory}


def storage_cost(n: int, steps: int, seed: int = 2026, quiet: bool = False) -> dict:
    """What ``storage="float16"`` costs on the bundled toy model (real weights, meaningful pixels).

    For ``n`` toy-world scenes: invert (exact, guidance 7.5, ``steps`` steps), save the trajectory
    as float64 and as float16, load both, and run reconstruct, a colour swap (defaults: blend,
    pixel composite), inpainting (the shape's box, restore) and style (scene i in the style of
    scene i + 1) from each. Reports the PSNR of each float16 result against the float64 one (∞:
    identical pixels), and the reconstruction PSNR against the source for both.
    """
    from ddim_edit.edits.inpaint import InpaintOptions, inpaint
    from ddim_edit.edits.prompt_swap import SwapOptions, edited_image, swap
    from ddim_edit.edits.style import StyleOptions, style_transfer
    from ddim_edit.inversion import InversionOptions
    from ddim_edit.metrics import psnr
    from ddim_edit.model import load_model
    from ddim_edit.toy.world import COLORS, caption, render, sample_scenes, shape_mask
    from ddim_edit.trajectory import Trajectory
    from ddim_edit.workflow import decode, invert_image, make_schedule, prepare_pixels, reconstruct_image

    model = load_model("toy", device="cpu")
    schedule = make_schedule(model, steps)
    scenes = sample_scenes(seed, n + 1)
    rows: dict[str, list[float]] = {}
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        loaded = []
        for index, scene in enumerate(scenes):
            pixels = render(scene, image_size=model.native_size)
            prepared = prepare_pixels(model, pixels)
            traj = invert_image(model, prepared, caption(scene), schedule,
                                InversionOptions(method="exact", guidance_scale=GUIDANCE), progress=False)
            pair = {}
            for storage in ("float64", "float16"):
                path = traj.save(Path(tmp) / f"{index}-{storage}.safetensors", storage=storage)
                sizes[storage] = path.stat().st_size
                pair[storage] = Trajectory.load(path)
            loaded.append((scene, pixels, pair))
        for index, (scene, pixels, pair) in enumerate(loaded[:n]):
            other = next(colour for colour in COLORS if colour != scene.color)
            target = caption(scene).replace(f" {scene.color} ", f" {other} ")
            box = np.zeros(pixels.shape[:2], dtype=np.uint8)
            ys, xs = np.nonzero(shape_mask(scene, image_size=pixels.shape[0]))
            box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 255
            out = {}
            for storage, traj in pair.items():
                style_traj = loaded[index + 1][2][storage]
                result = swap(model, traj, target, SwapOptions(), progress=False)
                style = style_transfer(model, traj, style_traj, StyleOptions(), progress=False)
                out[storage] = {
                    "reconstruct": reconstruct_image(model, traj, progress=False),
                    "swap": edited_image(model, result, pixels),
                    "inpaint": inpaint(model, traj, pixels, box, InpaintOptions(), progress=False).image,
                    "style": decode(model, style.output),
                }
            for edit in out["float64"]:
                rows.setdefault(edit, []).append(psnr(out["float16"][edit], out["float64"][edit]))
            rows.setdefault("reconstruct_vs_source_float64", []).append(psnr(out["float64"]["reconstruct"], pixels))
            rows.setdefault("reconstruct_vs_source_float16", []).append(psnr(out["float16"]["reconstruct"], pixels))
            if not quiet:
                print(f"scene {index + 1}/{n}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows.items()),
                      file=sys.stderr, flush=True)

    def mean_db(values: list[float]) -> float:
        finite = [v for v in values if math.isfinite(v)]
        return statistics.mean(finite) if finite else math.inf

    return {"model": "toy", "steps": steps, "n": n, "seed": seed, "bytes": sizes,
            "psnr_float16_vs_float64_db": {edit: {"mean_finite": mean_db(values),
                                                  "identical": sum(not math.isfinite(v) for v in values),
                                                  "min": min(values)}
                                           for edit, values in rows.items() if not edit.startswith("reconstruct_vs")},
            "reconstruct_vs_source_db": {"float64": statistics.mean(rows["reconstruct_vs_source_float64"]),
                                         "float16": statistics.mean(rows["reconstruct_vs_source_float16"])}}


def _ratio(value) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _gb(value: int) -> str:
    return f"{value / 2 ** 30:.2f}"


def _mb(value: int) -> str:
    return f"{value / 2 ** 20:.0f}"


def table(report: dict) -> str:
    goals = report.get("targets") or targets(report["arch"])
    on_cpu = goals["time_on"] == "cpu_time_ratio"  # the flow families' time target is on process CPU time
    target = f" (≤ {goals['time']})"
    denoiser = "UNet" if report.get("denoiser", "unet") == "unet" else report["denoiser"]
    note = f" · {report['arch_note']}" if report.get("arch_note") else ""
    lines = [f"{report['arch']} at {report['size']}² · {report['steps']} steps · {report['device']} {report['dtype']} · "
             f"{report['repeats']} repeat(s) · torch {report['torch']}, {report['torch_threads']} threads · "
             f"peak: {report['memory_measure']}{note}",
             f"| edit | {denoiser} items ours / ref | s per item ours / ref | time ratio{'' if on_cpu else target} | "
             f"process CPU-time ratio{target if on_cpu else ''} | "
             "peak GB ours / ref | peak ratio (target) | working MB ours / ref | working ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for edit, row in report["edits"].items():
        ours, ref = row["ours"], row["reference"]
        unit = " (s per call)" if edit == "decode" else ""
        time_mark = "✓" if row["time_met"] else "✗"
        memory_mark = "✓" if row["memory_met"] else "✗"
        wall = f"{row['time_ratio']:.3f}" + ("" if on_cpu else f" {time_mark}")
        cpu = _ratio(row.get("cpu_time_ratio")) + (f" {time_mark}" if on_cpu else "")
        lines.append(
            f"| {edit} | {ours['items']} / {ref['items']} | {ours['per_item_s']:.3f} / {ref['per_item_s']:.3f}{unit} | "
            f"{wall} | {cpu} | {_gb(ours['peak_bytes'])} / {_gb(ref['peak_bytes'])} | "
            f"{row['peak_ratio']:.3f} (≤ {row['memory_target']}) {memory_mark} | "
            f"{_mb(ours['working_bytes'])} / {_mb(ref['working_bytes'])} | {_ratio(row['working_ratio'])} |")
    met = report.get("targets_met")
    if met:
        verdict = {True: "met", False: "NOT met"}
        lines.append(f"targets (issue {goals['issue']}): {'process CPU' if on_cpu else 'wall'} time per {denoiser} item "
                     f"≤ {goals['time']}× — {verdict[met['time']]}; peak memory "
                     + ", ".join(f"{edit} ≤ {value}×" for edit, value in goals["memory"].items()
                                 if edit in report["edits"])
                     + f" — {verdict[met['memory']]}")
    traj = report.get("trajectory")
    if traj:
        b, b50 = traj["bytes"], traj["bytes_50_steps"]
        lines.append(f"trajectory file ({traj['steps']} steps, latents {'×'.join(map(str, traj['latent_shape']))}): "
                     f"float64 {b['float64'] / 1e6:.2f} MB, float16 storage {b['float16'] / 1e6:.2f} MB; "
                     f"50 steps: {b50['float64'] / 1e6:.2f} MB / {b50['float16'] / 1e6:.2f} MB; exact replay from the "
                     f"float16 file vs from memory: max |Δz_0| = {traj['replay_max_abs_difference_float16_file']:.2e}")
    return "\n".join(lines)


def finite_json(value):
    """Strict JSON: non-finite floats as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHES, default="sd15")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the arch's native)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (auto: cuda when there is one)")
    parser.add_argument("--dtype", default="auto", help="auto, fp32, fp16, bf16 (GPU only for fp16/bf16)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--edits", nargs="+", default=list(EDITS), choices=EDITS)
    parser.add_argument("--vae-slicing", action="store_true")
    parser.add_argument("--no-vae-tiling", action="store_true")
    parser.add_argument("--cpu-offload", action="store_true",
                        help="model CPU offload (accelerate hooks on the shared modules: applies to both sides)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--storage-cost", type=int, default=0, metavar="N",
                        help="instead: what float16 trajectory storage costs, on N scenes with the bundled toy model")
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = {"sd15": 512, "sdxl": 1024, "sd3": 1024, "flux": 1024, "tiny": 32, "tiny-xl": 32, "tiny-sd3": 64,
                     "tiny-flux": 64}[args.arch]
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.storage_cost:
        report = finite_json(storage_cost(args.storage_cost, args.steps, quiet=args.quiet))
        print(json.dumps(report, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        return report
    report = finite_json(run(args))
    text = table(report)
    if args.format == "json":
        print(json.dumps(report, indent=2))
        if not args.quiet:
            print(text, file=sys.stderr)
    else:
        print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
