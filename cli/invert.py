"""``ddim-edit invert``: an image → a trajectory file."""

from __future__ import annotations

from pathlib import Path

import click

from ddim_edit.errors import ImageError, PromptError
from ddim_edit.jobs import InvertRequest, JobSettings, run_request, write_result
from ddim_edit.jobs.resolve import check_input_file

from .common import model_cache
from .common import check_outputs, default_output, emit, handle_errors, inversion_options, model_options, run_options, schedule_options
from .common import click_options, flag_for, settings_from_command
from .common import TOY_EPILOG


def check_prompt(prompt: str | None, unconditional: bool = False, what: str = "--prompt") -> str:
    """A caption is needed unless the user asks for unconditional inversion."""
    if unconditional:
        return ""
    if prompt is None or not prompt.strip():
        alternative = " (or --unconditional)" if flag_for("unconditional") else ""
        raise PromptError(f'{what} is {"missing" if prompt is None else "empty"}; describe the image, e.g. '
                          f'{what} "a solid red circle on a white background"{alternative}')
    return prompt.strip()


@click.command("invert", epilog=TOY_EPILOG)
@click.argument("image", nargs=-1, required=True)
@click.option("--prompt", "-p", default=None, help="Caption of the image (the source prompt).")
@click.option("--unconditional", is_flag=True, help="Invert with the empty prompt.")
@click.option("--output", "-o", default=None, help="Trajectory file (default: IMAGE stem + .traj.safetensors).")
@click_options(JobSettings, "size", "trajectory_storage")
@model_options()
@schedule_options
@inversion_options()
@run_options
@handle_errors
def command(image, prompt, unconditional, output, device, dtype, allow_pickle, force, output_format, **settings):
    """Invert IMAGE to the model's noise x_T and save the whole trajectory.

    For a folder or many images, write a manifest and use `ddim-edit batch`.

    \b
    Example:
      ddim-edit invert cat.png --prompt "a cat on a sofa" --method exact -o cat.traj.safetensors
    """
    image = single_input(image)
    prompt = check_prompt(prompt, unconditional)
    output = Path(output) if output else default_output(image, ".traj.safetensors")
    check_outputs([("-o", output, "trajectory")], force, inputs=(image,))
    settings = settings_from_command()
    result = run_request(InvertRequest(image, prompt, settings), model_cache(device, dtype, allow_pickle))
    write_result(result, output, force=force)
    record = result.record
    summary = {"output": str(output), "method": settings.method, "steps": record["steps"], "size": record["size"],
               "unet_evaluations": record["unet_evaluations"], "seconds": record["seconds"]}
    unconverged = record.get("fixed_point_unconverged")
    if unconverged:
        summary["fixed_point_unconverged"] = unconverged
        click.echo(f"note: {len(unconverged)} of {record['steps']} fixed-point steps stayed above --tolerance "
                   f"{settings.tolerance} (also with damping); the closest iterate was kept", err=True)
    emit(summary, output_format, f"wrote {output} ({settings.method}, {record['steps']} steps, "
                                 f"{record['unet_evaluations']} model evaluations, {record['seconds']:.1f}s)")


def single_input(images: tuple[str, ...]) -> str:
    """The one image a single command takes; a folder or several images point at ``batch``."""
    if len(images) > 1:
        raise ImageError(f"invert takes one image, got {len(images)}; for many, list them in a manifest (one JSON "
                         'line each: {"edit": "invert", "image": "a.png", "prompt": "…"}) and run '
                         "`ddim-edit batch MANIFEST --out DIR`")
    check_input_file(images[0])
    return images[0]
