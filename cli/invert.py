"""``ddim-edit invert``: an image → a trajectory file."""

from __future__ import annotations

from pathlib import Path

import click

from ddim_edit.errors import PromptError
from ddim_edit.inversion import InversionOptions
from ddim_edit.model import load_model
from ddim_edit.workflow import invert_image, make_schedule, prepare_image

from .common import Timer, check_outputs, default_output, emit, handle_errors, inversion_options, model_options, run_options, schedule_options, seed_everything
from .common import SIZE


def inversion_settings(method, guidance, inversion_guidance, negative_prompt, fixed_point_iterations, tolerance,
                       null_text_steps) -> InversionOptions:
    return InversionOptions(method=method, guidance_scale=guidance, inversion_guidance=inversion_guidance,
                            negative_prompt=negative_prompt, fixed_point_iterations=fixed_point_iterations,
                            fixed_point_tolerance=tolerance, null_text_steps=null_text_steps)


def check_prompt(prompt: str | None, unconditional: bool = False, what: str = "--prompt") -> str:
    """A caption is needed unless the user asks for unconditional inversion."""
    if unconditional:
        return ""
    if prompt is None or not prompt.strip():
        raise PromptError(f'{what} is empty; describe the image, e.g. {what} "a red circle on a white background" (or --unconditional)')
    return prompt.strip()


@click.command("invert")
@click.argument("image")
@click.option("--prompt", "-p", default=None, help="Caption of the image (the source prompt).")
@click.option("--unconditional", is_flag=True, help="Invert with the empty prompt.")
@click.option("--output", "-o", default=None, help="Trajectory file (default: IMAGE stem + .traj.safetensors).")
@click.option("--size", default=None, type=SIZE, help="Longer image side to work at (default: the model's).")
@model_options()
@schedule_options
@inversion_options
@run_options
@handle_errors
def command(image, prompt, unconditional, output, size, model_name, model_config, device, dtype, allow_pickle, steps,
            spacing, timesteps, method, guidance, inversion_guidance, negative_prompt, fixed_point_iterations, tolerance,
            null_text_steps, force, quiet, output_format, seed):
    """Invert IMAGE to the model's noise x_T and save the whole trajectory.

    \b
    Example:
      ddim-edit invert cat.png --prompt "a cat on a sofa" --method exact -o cat.traj.safetensors
    """
    prompt = check_prompt(prompt, unconditional)
    output = Path(output) if output else default_output(image, ".traj.safetensors")
    check_outputs([("-o", output, "trajectory")], force, inputs=(image,))
    seed_everything(seed)
    model = load_model(model_name, device, dtype, allow_pickle, model_config)
    schedule = make_schedule(model, steps, spacing, timesteps)
    options = inversion_settings(method, guidance, inversion_guidance, negative_prompt, fixed_point_iterations,
                                 tolerance, null_text_steps)
    prepared = prepare_image(model, image, size)
    with Timer() as timer:
        traj = invert_image(model, prepared, prompt, schedule, options, progress=not quiet)
    traj.save(output, force=force)
    result = {"output": str(output), "method": method, "steps": schedule.num_steps, "size": prepared.source["size"],
              "unet_evaluations": traj.metadata["unet_evaluations"], "seconds": round(timer.seconds, 3)}
    unconverged = traj.metadata.get("fixed_point_unconverged")
    if unconverged:
        result["fixed_point_unconverged"] = unconverged
        click.echo(f"note: {len(unconverged)} of {schedule.num_steps} fixed-point steps stayed above --tolerance "
                   f"{tolerance} (also with damping); the closest iterate was kept", err=True)
    emit(result, output_format, f"wrote {output} ({method}, {schedule.num_steps} steps, "
                                f"{result['unet_evaluations']} UNet evaluations, {timer.seconds:.1f}s)")
