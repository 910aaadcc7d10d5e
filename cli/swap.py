"""``ddim-edit swap``: prompt-to-prompt edit of an image (inverted first) or of a trajectory file."""

from __future__ import annotations

from pathlib import Path

import click

from ddim_edit.edits.flowedit import FLOWEDIT, FlowEditOptions
from ddim_edit.edits.prompt_swap import SwapOptions, attention_picture, check_guidance_options
from ddim_edit.errors import PromptError
from ddim_edit.images import save_png
from ddim_edit.jobs import JobSettings, SwapRequest, run_request, write_result
from ddim_edit.jobs.resolve import check_input_file
from ddim_edit.options import from_values
from ddim_edit.trajectory import Trajectory
from ddim_edit.workflow import is_trajectory_path

from .common import model_cache
from .common import check_outputs, default_output, emit, handle_errors, inversion_options, model_options, run_options, schedule_options
from .common import click_options, settings_from_command, grid_option, grid_outputs, refuse_schedule_options
from .common import TOY_EPILOG
from .invert import check_prompt


@click.command("swap", epilog=TOY_EPILOG)
@click.argument("image_or_trajectory")
@click.option("--source", "-s", "source_prompt", default=None, help="Caption of the image (the trajectory's prompt).")
@click.option("--target", "-t", "target_prompt", required=True, help="Caption of the edited image.")
@click_options(SwapOptions)
@click_options(FlowEditOptions)
@click.option("--output", "-o", default=None, help="PNG to write (default: input stem + .swap.png).")
@click.option("--save-trajectory", default=None, help="Keep the inverted image's trajectory here (.safetensors).")
@click_options(JobSettings, "trajectory_storage", trajectory_storage={
    "help": "How --save-trajectory stores the latents (float16: intermediate latents, ~2.6x smaller)."})
@click.option("--save-attention", default=None, help="PNG grid of per-token cross-attention maps.")
@grid_option("source | reconstruction | edit")
@click_options(JobSettings, "size", "keep_working_size")
@model_options(default_model=None)
@schedule_options
@inversion_options(edit_methods=(FLOWEDIT,))
@run_options
@handle_errors
def command(image_or_trajectory, source_prompt, target_prompt, output, save_trajectory, save_attention, with_grid,
            device, dtype, allow_pickle, force, output_format, **flags):
    """Edit IMAGE_OR_TRAJECTORY from --source to --target with prompt-to-prompt attention control,
    or with FlowEdit (--method flowedit: no inversion, no attention control; the --n-* options).

    An image is inverted first (--method, default exact); a .safetensors trajectory is used as is
    (FlowEdit starts from its z_0).

    \b
    Examples:
      ddim-edit swap red.png -s "a red circle on a white background" -t "a blue circle on a white background" \\
          --blend circle -o blue.png --grid
      ddim-edit swap red.traj.safetensors -s "a red circle on a white background" \\
          -t "a red square on a white background" --blend circle --blend square -o square.png
      ddim-edit swap red.png -s "a red circle on a white background" -t "a red square on a white background" \\
          --method flowedit -o square.png
    """
    from_trajectory = is_trajectory_path(image_or_trajectory)
    check_input_file(image_or_trajectory, "trajectory" if from_trajectory else "image")
    if from_trajectory:
        refuse_schedule_options(f"the trajectory {image_or_trajectory}", lambda: Trajectory.load(image_or_trajectory))
    if not from_trajectory:
        source_prompt = check_prompt(source_prompt, what="--source")
    if flags["method"] == FLOWEDIT and save_attention:
        raise PromptError("--save-attention shows prompt-to-prompt's maps; FlowEdit uses none: drop it")
    if save_trajectory and from_trajectory:
        raise PromptError("--save-trajectory is for an image input; the trajectory file already exists")
    output = Path(output) if output else default_output(image_or_trajectory, ".swap.png")
    check_outputs([("-o", output, "image"), ("--save-trajectory", save_trajectory, "trajectory"),
                   ("--save-attention", save_attention, "image"), *grid_outputs(output, with_grid)], force, inputs=(image_or_trajectory,))
    options = from_values(SwapOptions, flags, cli=True, keep_maps=bool(save_attention))
    check_guidance_options(options)
    settings = settings_from_command()
    request = SwapRequest(image_or_trajectory, target_prompt, source_prompt, options,
                          from_values(FlowEditOptions, flags, cli=True), save_trajectory=save_trajectory,
                          force=force, settings=settings)
    job = run_request(request, model_cache(device, dtype, allow_pickle))
    record = job.record
    if record["method"] != FLOWEDIT:
        job.parameters.update(reweight=list(flags["reweight"]), cross_steps=list(flags["cross_steps"]))
    write_result(job, output, force=force, with_grid=with_grid)
    if save_attention:
        save_png(save_attention, attention_picture(job.details, {"source": job.panels["reconstruction"],
                                                                  "target": job.image}),
                 job.parameters, force=force)
    inversion_evaluations = record["inversion_unet_evaluations"]
    method, steps = record["method"], record["steps"]
    summary = {"output": str(output), "method": method, "steps": steps, "size": record["size"],
               "unet_evaluations": record["unet_evaluations"], "inversion_unet_evaluations": inversion_evaluations,
               "seconds": record["seconds"], "trajectory": save_trajectory, "attention": save_attention,
               "blend_fraction": record["blend_fraction"]}
    emit(summary, output_format, f"wrote {output} ({method}, {steps} steps, "
                                 f"{record['unet_evaluations']} model evaluations for the edit"
                                 + (f" + {inversion_evaluations} for the inversion" if inversion_evaluations else "")
                                 + f", {record['seconds']:.1f}s)")
