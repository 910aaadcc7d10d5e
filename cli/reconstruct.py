"""``ddim-edit reconstruct``: a trajectory file → the regenerated image."""

from __future__ import annotations

from pathlib import Path

import click

from ddim_edit.errors import DdimEditError
from ddim_edit.images import grid, load_image, resize_rgb, save_png
from ddim_edit.metrics import psnr
from ddim_edit.model import load_model
from ddim_edit.trajectory import Trajectory
from ddim_edit.workflow import reconstruct_image, source_image_for

from .common import Timer, check_outputs, default_output, emit, handle_errors, model_options, run_options
from .common import FiniteFloat


@click.command("reconstruct")
@click.argument("trajectory")
@click.option("--output", "-o", default=None, help="PNG to write (default: TRAJECTORY stem + .recon.png).")
@click.option("--guidance", default=None, type=FiniteFloat(example="7.5"), help="Guidance (default: the trajectory's).")
@click.option("--eta", default=0.0, show_default=True, type=FiniteFloat(min=0.0, example="0"), help="DDIM η (0: deterministic; > 0 uses --seed).")
@click.option("--source", default=None, help="Source image to report PSNR against (default: the one recorded, if unchanged).")
@click.option("--grid", "with_grid", is_flag=True, help="Write source | reconstruction side by side.")
@model_options(default_model=None)
@run_options
@handle_errors
def command(trajectory, output, guidance, eta, source, with_grid, model_name, model_config, device, dtype, allow_pickle,
            force, quiet, output_format, seed):
    """Regenerate the image of TRAJECTORY through the DDIM sampler; report PSNR against the source.

    \b
    Example:
      ddim-edit reconstruct cat.traj.safetensors -o cat.recon.png
    """
    if eta < 0:
        raise DdimEditError(f"--eta must be ≥ 0, got {eta}")
    traj = Trajectory.load(trajectory)
    output = Path(output) if output else default_output(trajectory, ".recon.png")
    check_outputs([("-o", output, "image")], force, inputs=(trajectory, source))
    model = load_model(model_name or traj.metadata["model"], device, dtype, allow_pickle, model_config)
    with Timer() as timer:
        image = reconstruct_image(model, traj, guidance, progress=not quiet, eta=eta, seed=seed)
    reference = None
    if source:
        reference = resize_rgb(load_image(source), (image.shape[1], image.shape[0]))
    else:
        reference = source_image_for(traj, (image.shape[1], image.shape[0]))
    score = None if reference is None else psnr(image, reference)
    picture = grid([reference, image], ["source", "reconstruction"]) if with_grid and reference is not None else image
    save_png(output, picture, {"command": "reconstruct", "trajectory": str(trajectory), "method": traj.method,
                               "guidance": guidance, "eta": eta, "seed": seed}, force=force)
    result = {"output": str(output), "psnr": score, "method": traj.method, "seconds": round(timer.seconds, 3)}
    detail = f", PSNR {score:.2f} dB vs source" if score is not None else ", no source image to compare"
    emit(result, output_format, f"wrote {output}{detail}")
