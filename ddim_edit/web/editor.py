"""The page's work, without Gradio: one model shared behind a lock, one method per tab.

Every method takes what the page's fields hold (pixel arrays, text, numbers), runs the job layer's
request functions (:mod:`ddim_edit.jobs`) and returns a :class:`PageResult`: the pictures to show
side by side, the numbers, and the files to download (the PNG, with its parameters embedded, and
the trajectory). Images are inverted through a :class:`~.trajectory_cache.TrajectoryCache`, so a
second edit of the same photo with the same prompt, method, steps and guidance does not invert again.

One lock covers each request from its inversion to its last decode: two requests never share the
model's attention processors or its UNet evaluation counter, whatever the web server's threads do
(Gradio's queue also runs one request at a time; the lock holds for any other caller).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..edits.flowedit import FLOWEDIT, FlowEditOptions
from ..edits.inpaint import InpaintOptions
from ..edits.prompt_swap import SwapOptions
from ..edits.style import StyleOptions
from ..inversion import require_caption
from ..io import make_output_folder
from ..jobs.advice import collected_advice
from ..jobs import (InpaintRequest, InvertRequest, JobResult, JobSettings, ModelCache, ReconstructRequest, StyleRequest,
                    SwapRequest, run_request, write_result)
from ..jobs.resolve import DEFAULT_MODEL
from ..masks import MaskOptions
from ..metrics import psnr
from ..model import TOY_ALIASES, MemoryOptions
from ..toy.vocabulary import GRAMMAR_HINT
from . import forms
from .attention_gallery import attention_tiles
from .trajectory_cache import CachedTrajectory, TrajectoryCache, TrajectoryKey
from .uploads import UploadStore, as_rgb

PSNR_MEANINGS = {"psnr": "vs the source", "kept_psnr": "outside the mask vs the source"}
"""The PSNRs a page may report (numbers key → what it compares); an edit meant to change the image has none."""


def kept_psnr(result: np.ndarray, source: np.ndarray, mask: np.ndarray) -> float:
    """PSNR of the region inpainting keeps (outside ``mask``, H×W bool or 0/255) against the source."""
    return psnr(result, source, ~np.asarray(mask, dtype=bool))


@dataclass(frozen=True)
class EditorSettings:
    """How the shared model is loaded and where the page keeps its files.

    Attributes:
        model: the model every tab uses (None: the bundled toy).
        workdir: uploads, cached trajectories and outputs (None: a new temporary folder).
        cache_size: inversions kept (see :class:`~.trajectory_cache.TrajectoryCache`).
        steps: the steps the page offers first.
    """

    model: str | None = None
    model_config: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    loras: tuple[str, ...] = ()
    memory: MemoryOptions = MemoryOptions()
    workdir: str | Path | None = None
    cache_size: int = 8
    steps: int = 50
    progress: bool = True


@dataclass
class PageResult:
    """What one tab shows after a run.

    Attributes:
        pictures: label → uint8 RGB image, in display order (source first, the result last).
        numbers: UNet evaluations, seconds, whether the inversion was cached, sizes, …; ``psnr`` (a
            reconstruction) or ``kept_psnr`` (inpaint, outside the mask); ``warnings``: what the toy
            model does not know (:class:`~ddim_edit.jobs.advice.ToyModelWarning`, one line each).
        image_file: the result PNG (parameters embedded), None for pure inversions.
        trajectory_file: the trajectory used, as ``.safetensors``.
        attention: (heat-map overlay, "branch · token") per token (prompt swaps only).
    """

    pictures: dict[str, np.ndarray]
    numbers: dict[str, Any]
    image_file: Path | None = None
    trajectory_file: Path | None = None
    attention: list[tuple[np.ndarray, str]] = field(default_factory=list)

    @property
    def result(self) -> np.ndarray:
        """The last picture: the edit (or reconstruction)."""
        return list(self.pictures.values())[-1]

    def summary(self) -> str:
        """One line of the main numbers for the page."""
        numbers = self.numbers
        parts = []
        parts.extend(f"⚠ {warning}" for warning in numbers.get("warnings", ()))
        parts.extend(f"PSNR {numbers[key]:.2f} dB {meaning}" for key, meaning in PSNR_MEANINGS.items()
                     if numbers.get(key) is not None)
        parts.append(f"{numbers['unet_evaluations']} model evaluations")
        inversion = numbers.get("inversion")
        if inversion == "cached":
            parts.append("inversion reused from the cache")
        elif inversion == "new":
            parts.append(f"+ {numbers['inversion_unet_evaluations']} for the inversion")
        parts.append(f"{numbers['seconds']:.2f} s")
        return " · ".join(parts)


class Editor:
    """The shared model, the trajectory cache and one method per tab of the page."""

    def __init__(self, settings: EditorSettings = EditorSettings(), models: Any = None) -> None:
        self.settings = settings
        self.models = models if models is not None else ModelCache(
            settings.device, settings.dtype, settings.allow_pickle, settings.model_config, default=settings.model,
            capacity=1, loras=tuple(settings.loras), memory=settings.memory)
        self.temporary = not settings.workdir  # a folder of our own, removed by close()
        root = make_output_folder(settings.workdir, "workdir") if settings.workdir else Path(
            tempfile.mkdtemp(prefix="ddim-edit-web-"))
        self.workdir = root
        self.uploads = UploadStore(root / "uploads")
        self.trajectories = TrajectoryCache(root / "trajectories", settings.cache_size)
        self.outputs = root / "outputs"
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._numbers = itertools.count(1)
        self.requests = 0

    def close(self) -> None:
        """Remove the working folder when it is a temporary one of our own (a given workdir is kept)."""
        if self.temporary:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ shared pieces
    @property
    def model_name(self) -> str:
        return self.settings.model or DEFAULT_MODEL

    @property
    def prompt_hint(self) -> str | None:
        """The toy model's grammar and words, for the prompt fields (None for any other model)."""
        return GRAMMAR_HINT if self.model_name in TOY_ALIASES else None

    def load(self):
        """Load the model now (a server checks it before it serves)."""
        with self.lock:
            return self.models.get(None)

    @property
    def default_guidance(self) -> float:
        """The model's guidance when a job names none (its family's: FLUX's embedded 3.5, SD3's 7, …)."""
        return float(self.load().DEFAULT_GUIDANCE)

    def job_settings(self, steps: Any = None, method: str | None = None, guidance: Any = None) -> JobSettings:
        steps = forms.positive_int(self.settings.steps if steps is None else steps, "steps", 50)
        return JobSettings(steps=steps, method=method or None,
                           guidance=None if guidance is None else float(guidance), progress=self.settings.progress)

    def _inverted(self, image: np.ndarray, prompt: str | None, settings: JobSettings, default_method: str
                  ) -> tuple[Path, CachedTrajectory, bool]:
        """(the kept image file, its trajectory, whether that came from the cache)."""
        prompt = require_caption(prompt, "source_prompt")
        path, digest = self.uploads.keep(image)
        guidance = settings.guidance_for(trajectory=False, model=self.load())
        method = settings.method or default_method
        key = TrajectoryKey(self.model_name, digest, prompt, method, settings.steps, float(guidance),
                            settings.size, settings.negative_prompt)

        def invert():
            job = run_request(InvertRequest(path, prompt, JobSettings(
                steps=settings.steps, method=method, guidance=guidance, size=settings.size,
                negative_prompt=settings.negative_prompt, progress=settings.progress)), self.models)
            return job.trajectory, job.record

        entry, cached = self.trajectories.get(key, invert)
        return path, entry, cached

    def _output(self, job: JobResult) -> Path:
        path = self.outputs / f"{next(self._numbers):05d}-{job.edit}.png"
        return write_result(job, path)

    def _numbers_for(self, job: JobResult, entry: CachedTrajectory | None, cached: bool, started: float
                     ) -> dict[str, Any]:
        record = job.record
        numbers = {"edit": job.edit, "unet_evaluations": record["unet_evaluations"],
                   "seconds": round(time.perf_counter() - started, 3), "edit_seconds": record.get("seconds"),
                   "method": record.get("method"),
                   "steps": job.trajectory.num_steps if job.trajectory else record.get("steps"),
                   "size": record.get("size"), "working_size": record.get("working_size")}
        if entry is not None:
            numbers.update(inversion="cached" if cached else "new",
                           inversion_unet_evaluations=0 if cached else entry.record.get("unet_evaluations", 0),
                           inversion_seconds=0.0 if cached else entry.record.get("seconds"))
        return numbers

    def _run(self, work) -> PageResult:
        """``work()`` under the lock, with the toy model's warnings (each once) in its numbers."""
        with self.lock, collected_advice() as advice:
            self.requests += 1
            result = work()
        if advice:
            result.numbers["warnings"] = advice
        return result

    # ------------------------------------------------------------------ tabs
    def invert_reconstruct(self, image: np.ndarray, prompt: str | None, method: str = "exact", steps: Any = None,
                           guidance: Any = None) -> PageResult:
        """Invert (or reuse the cached inversion) and regenerate: the reconstruction and its PSNR."""
        def work():
            started = time.perf_counter()
            settings = self.job_settings(steps, method, guidance)
            _, entry, cached = self._inverted(image, prompt, settings, "exact")
            job = run_request(ReconstructRequest(entry.trajectory, settings=JobSettings(progress=settings.progress)),
                              self.models)
            numbers = self._numbers_for(job, entry, cached, started)
            numbers["psnr"] = job.record.get("psnr")
            return PageResult({"source": as_rgb(image), "reconstruction": job.image}, numbers, self._output(job),
                              self.trajectories.file_for(entry))
        return self._run(work)

    def swap(self, image: np.ndarray, source_prompt: str | None, target_prompt: str, mode: str = SwapOptions.mode,
             local_blend: bool = True, blend_words: str = "", reweight: str = "",
             cross_steps: float = SwapOptions.cross_steps, self_steps: float = SwapOptions.self_steps,
             guidance: Any = None, method: str = "exact", steps: Any = None, n_max: Any = None,
             n_min: Any = FlowEditOptions.n_min, n_avg: Any = FlowEditOptions.n_avg, source_guidance: Any = None,
             target_guidance: Any = None) -> PageResult:
        """Prompt-to-prompt from ``source_prompt`` to ``target_prompt``, with per-token attention maps;
        FlowEdit (``method`` flowedit, with the ``n_*`` and branch guidance settings) without inverting."""
        def work():
            started = time.perf_counter()
            settings = self.job_settings(steps, method, guidance)
            options = SwapOptions(mode=mode, cross_steps=float(cross_steps), self_steps=float(self_steps),
                                  reweight=forms.word_values(reweight, "reweight", "blue=2"),
                                  blend_words=forms.blend_choice(local_blend, blend_words), keep_maps=True)
            flowedit = forms.declared(FlowEditOptions, n_max=n_max, n_min=n_min, n_avg=n_avg,
                                      source_guidance=source_guidance, target_guidance=target_guidance)
            if settings.method == FLOWEDIT:
                path, _ = self.uploads.keep(image)
                job = run_request(SwapRequest(path, target_prompt or "", source_prompt, flowedit=flowedit,
                                              settings=settings), self.models)
                return PageResult({"source": as_rgb(image), "edit": job.image},
                                  self._numbers_for(job, None, False, started), self._output(job))
            _, entry, cached = self._inverted(image, source_prompt, settings, "exact")
            job = run_request(SwapRequest(entry.trajectory, target_prompt or "", entry.trajectory.metadata["prompt"],
                                          options, settings=JobSettings(guidance=settings.guidance,
                                                                        progress=settings.progress)), self.models)
            reconstruction = job.panels["reconstruction"]
            tiles = attention_tiles(job.details, {"source": reconstruction, "target": job.image})
            numbers = self._numbers_for(job, entry, cached, started)
            numbers.update(blend_words=list(job.details.blend_words), blend_fraction=job.record.get("blend_fraction"))
            return PageResult({"source": as_rgb(image), "reconstruction": reconstruction, "edit": job.image}, numbers,
                              self._output(job), self.trajectories.file_for(entry), tiles)
        return self._run(work)

    def inpaint(self, image: np.ndarray, mask: np.ndarray, source_prompt: str | None, prompt: str | None = None,
                dilate: Any = MaskOptions.dilate, feather: Any = MaskOptions.feather, method: str = "ddim", steps: Any = None,
                guidance: Any = None, seed: Any = 0) -> PageResult:
        """Regenerate the masked region (white/painted) with ``prompt`` (empty: restore); keep the rest."""
        def work():
            started = time.perf_counter()
            settings = self.job_settings(steps, method, guidance)
            mask_options = MaskOptions(dilate=int(dilate or 0), feather=None if feather in (None, "") else int(feather))
            path, entry, cached = self._inverted(image, source_prompt, settings, "ddim")
            options = InpaintOptions(prompt=forms.optional_text(prompt), seed=int(seed or 0))
            job = run_request(InpaintRequest(path, mask, trajectory=entry.trajectory, mask_options=mask_options,
                                             options=options, settings=JobSettings(progress=settings.progress,
                                                                                   seed=int(seed or 0))), self.models)
            numbers = self._numbers_for(job, entry, cached, started)
            numbers["kept_psnr"] = kept_psnr(job.image, job.panels["input"], job.panels["mask"][..., 0])
            return PageResult({"source": job.panels["input"], "mask": job.panels["mask"], "inpainted": job.image},
                              numbers, self._output(job), self.trajectories.file_for(entry))
        return self._run(work)

    def style(self, content: np.ndarray, style: np.ndarray, gamma: float = StyleOptions.gamma,
              temperature: float = StyleOptions.temperature, adain: bool = StyleOptions.adain,
              steps: Any = None) -> PageResult:
        """StyleID: the content image with the style image's colours and textures."""
        def work():
            started = time.perf_counter()
            settings = self.job_settings(steps)
            content_path, _ = self.uploads.keep(content, "content image")
            style_path, _ = self.uploads.keep(style, "style image")
            options = StyleOptions(gamma=float(gamma), temperature=float(temperature), adain=bool(adain))
            job = run_request(StyleRequest(content_path, style_path, options, settings=settings), self.models)
            trajectory = self.outputs / f"{next(self._numbers):05d}-content.traj.safetensors"
            job.trajectory.save(trajectory)
            numbers = self._numbers_for(job, None, False, started)
            numbers["inversion_unet_evaluations"] = job.record.get("inversion_unet_evaluations")
            return PageResult(dict(job.panels), numbers, self._output(job), trajectory)
        return self._run(work)
