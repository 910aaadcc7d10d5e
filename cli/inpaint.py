"""``ddim-edit inpaint``: regenerate a masked region of a photo, keep the rest."""

from __future__ import annotations

from pathlib import Path

import click

from ddim_edit.edits.inpaint import InpaintOptions
from ddim_edit.jobs import InpaintRequest, JobSettings, run_request, write_result
from ddim_edit.masks import MaskOptions
from ddim_edit.options import from_values
from ddim_edit.trajectory import Trajectory

from .common import model_cache
from .common import check_outputs, default_output, emit, handle_errors, inversion_options, model_options, run_options, schedule_options
from .common import click_options, settings_from_command, grid_option, grid_outputs, refuse_schedule_options
from .common import TOY_EPILOG
from .invert import check_prompt


@click.command("inpaint", epilog=TOY_EPILOG)
@click.argument("image")
@click.option("--mask", "-m", "mask_path", required=True, help="Mask image, white = regenerate (any format OpenCV reads).")
@click.option("--prompt", "-p", default=None, help="What to fill the hole with (default: the source prompt, i.e. restore).")
@click.option("--source-prompt", default=None, help="Caption of IMAGE, to invert it (not needed with --trajectory).")
@click.option("--unconditional", is_flag=True, help="Invert IMAGE with the empty prompt.")
@click.option("--trajectory", default=None, help="Reuse the trajectory of IMAGE made by `ddim-edit invert`.")
@click_options(MaskOptions)
@click_options(InpaintOptions)
@click_options(JobSettings, "size", "keep_working_size")
@click.option("--output", "-o", default=None, help="PNG to write (default: IMAGE stem + .inpaint.png).")
@grid_option("input | mask | result")
@model_options(default_model=None)
@schedule_options
@inversion_options(default_method="ddim")
@run_options
@handle_errors
def command(image, mask_path, prompt, source_prompt, unconditional, trajectory, output, with_grid, device, dtype,
            allow_pickle, force, output_format, **flags):
    """Regenerate the masked region of IMAGE (white in MASK) and keep the rest of it.

    The known region follows IMAGE's own inverted trajectory; the hole is sampled from the same x_T
    with the source prompt (restore) or --prompt (replace). Outside the mask and its feather the
    output's pixels are IMAGE's exactly (unless --no-paste); the output has IMAGE's resolution
    (--keep-working-size: the model's working size).

    IMAGE is inverted with plain DDIM by default (--method): the blend never uses the exact
    method's corrections, so they would cost 2N UNet evaluations for the same result. With
    --trajectory, its own steps, method and guidance are used.

    \b
    Examples:
      ddim-edit inpaint photo.png --mask hole.png --source-prompt "a solid red circle on a white background" -o fixed.png
      ddim-edit inpaint photo.png --mask hole.png --trajectory photo.traj.safetensors \
          --prompt "a solid blue square on a white background" -o new.png
      ddim-edit inpaint photo.png --mask hole.png --source-prompt "…" --resample 4 --jump-length 5 -o harmonised.png
    """
    output = Path(output) if output else default_output(image, ".inpaint.png")
    check_outputs([("-o", output, "image"), *grid_outputs(output, with_grid)], force, inputs=(image, mask_path, trajectory))
    mask_options = from_values(MaskOptions, flags, cli=True)
    if trajectory:
        refuse_schedule_options(f"the trajectory {trajectory}", lambda: Trajectory.load(trajectory))
    else:
        source_prompt = check_prompt(source_prompt, unconditional, what="--source-prompt")
    # The blend never uses exact-inversion corrections: plain DDIM gives the same latents for N fewer
    # guided steps, unless --method is given.
    settings = settings_from_command()
    edit_options = from_values(InpaintOptions, flags, cli=True, prompt=prompt, seed=settings.seed,
                               guidance_scale=settings.guidance)
    # The job checks the mask, the image, the trajectory (made from this image) and the options
    # before it loads the model.
    request = InpaintRequest(image, mask_path, source_prompt, trajectory, mask_options, edit_options, settings)
    job = run_request(request, model_cache(device, dtype, allow_pickle))
    job.parameters["trajectory"] = trajectory
    write_result(job, output, force=force, with_grid=with_grid)
    record = job.record
    payload = {key: record[key] for key in ("prompt", "blend", "method", "steps", "start_index", "resample",
                                            "jump_length", "mask_coverage", "paste", "size", "unet_evaluations",
                                            "inpaint_unet_evaluations", "seconds")}
    payload["output"] = str(output)
    emit(payload, output_format, f"wrote {output} ({record['blend']} blending, {record['steps']} steps, "
                                 f"{record['unet_evaluations']} model evaluations, {record['seconds']:.1f}s)")
