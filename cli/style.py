"""``ddim-edit style``: the content of one image in the style of another (StyleID through inversion)."""

from __future__ import annotations

import click

from ddim_edit.edits.style import StyleOptions
from ddim_edit.jobs import JobSettings, StyleRequest, run_request, write_result
from ddim_edit.jobs.resolve import check_input_file
from ddim_edit.options import from_values
from ddim_edit.trajectory import Trajectory
from ddim_edit.workflow import is_trajectory_path

from .common import model_cache
from .common import check_outputs, emit, handle_errors, model_options, run_options, schedule_options
from .common import FiniteFloat, click_options, settings_from_command, grid_option, grid_outputs, refuse_schedule_options
from .common import TOY_EPILOG


@click.command("style", epilog=TOY_EPILOG)
@click.option("--content", required=True, help="Content image, or its trajectory file (.safetensors).")
@click.option("--style", "style_path", required=True, help="Style image, or its trajectory file (.safetensors).")
@click.option("--output", "-o", required=True, help="PNG to write.")
@click_options(StyleOptions)
@click.option("--prompt", "-p", default=None,
              help="Prompt of the three branches while sampling, and caption to invert images with "
                   "(default: '' as in StyleID).")
@click.option("--style-prompt", default=None, help="Caption to invert the style image with (default: --prompt).")
@click_options(JobSettings, "method", "guidance",
               method={"default": "exact", "show_default": True, "help": "Inversion method for images given as pixels."},
               guidance={"type": FiniteFloat(example="1"),
                         "help": "Guidance while sampling (default 1: StyleID samples without text guidance). "
                                 "Trajectories made with any guidance work."})
@grid_option("content | style | output")
@click_options(JobSettings, "keep_working_size",
               keep_working_size={"help": "Write the model's working size, not the content's resolution."})
@model_options(default_model=None)
@schedule_options
@run_options
@handle_errors
def command(content, style_path, output, prompt, style_prompt, with_grid, device, dtype, allow_pickle, force,
            output_format, **flags):
    """Render the layout of --content in the colours and textures of --style.

    Both images are inverted (or read from trajectory files) and sampled as one batch; in the
    decoder's self-attention the output takes the style's keys and values at each step (StyleID,
    CVPR 2024). The content image is fitted to the model's size; the style image is resized to it; the
    output comes back at the content's resolution (--keep-working-size: the working size).

    \b
    Example:
      ddim-edit style --content photo.png --style painting.png -o stylised.png --grid
    """
    options = from_values(StyleOptions, flags, cli=True, prompt=prompt or "", guidance_scale=flags["guidance"])
    output = check_outputs([("-o", output, "image"), *grid_outputs(output, with_grid)], force,
                           inputs=(content, style_path))[0]
    sides = [Trajectory.load(side) if is_trajectory_path(side) else check_input_file(side)
             for side in (content, style_path)]
    recorded = next((side for side in sides if isinstance(side, Trajectory)), None)
    if recorded is not None:
        refuse_schedule_options("the trajectory given", lambda: recorded)
    settings = settings_from_command()
    request = StyleRequest(sides[0], sides[1], options, prompt or "", style_prompt, settings)
    job = run_request(request, model_cache(device, dtype, allow_pickle))
    job.parameters.update(content=str(content), style=str(style_path))
    write_result(job, output, force=force, with_grid=with_grid)
    record = job.record
    result = {key: value for key, value in record.items() if key not in ("psnr", "working_size")}
    result["output"] = str(output)
    emit(result, output_format,
         f"wrote {output} (γ={options.gamma}, T={options.temperature}, {len(record['layers'])} + {len(record['structure_layers'])} layers, {record['steps']} steps, "
         f"{record['unet_evaluations']} + {record['inversion_unet_evaluations']} model evaluations, "
         f"{record['seconds']:.1f}s)")
