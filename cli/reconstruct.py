"""``ddim-edit reconstruct``: a trajectory file → the regenerated image."""

from __future__ import annotations

from pathlib import Path

import click

from ddim_edit.jobs import JobSettings, ReconstructRequest, run_request, write_result
from ddim_edit.trajectory import Trajectory

from .common import model_cache
from .common import check_outputs, default_output, emit, handle_errors, model_options, run_options
from .common import click_options, settings_from_command, grid_option, grid_outputs


@click.command("reconstruct")
@click.argument("trajectory")
@click.option("--output", "-o", default=None, help="PNG to write (default: TRAJECTORY stem + .recon.png).")
@click_options(JobSettings, "guidance", guidance={"help": "Guidance (default: the trajectory's)."})
@click_options(ReconstructRequest)
@click.option("--source", default=None, help="Source image to report PSNR against (default: the one recorded, if unchanged).")
@grid_option("source | reconstruction")
@click_options(JobSettings, "keep_working_size")
@model_options(default_model=None)
@run_options
@handle_errors
def command(trajectory, output, eta, source, with_grid, device, dtype, allow_pickle, force, output_format,
            **settings):
    """Regenerate the image of TRAJECTORY through the DDIM sampler; report PSNR against the source.

    The image comes back at the source's resolution (recorded in the trajectory) unless
    --keep-working-size.

    \b
    Example:
      ddim-edit reconstruct cat.traj.safetensors -o cat.recon.png
    """
    traj = Trajectory.load(trajectory)
    output = Path(output) if output else default_output(trajectory, ".recon.png")
    check_outputs([("-o", output, "image"), *grid_outputs(output, with_grid)], force, inputs=(trajectory, source))
    settings = settings_from_command()
    result = run_request(ReconstructRequest(traj, eta=eta, reference=source, settings=settings),
                         model_cache(device, dtype, allow_pickle))
    result.parameters["trajectory"] = str(trajectory)
    write_result(result, output, force=force, with_grid=with_grid)
    score = result.record["psnr"]
    summary = {"output": str(output), "psnr": score, "method": traj.method, "size": result.record["size"],
               "seconds": result.record["seconds"]}
    detail = f", PSNR {score:.2f} dB vs source" if score is not None else ", no source image to compare"
    emit(summary, output_format, f"wrote {output}{detail}")
