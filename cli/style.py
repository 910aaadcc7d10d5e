"""``ddim-edit style``: the content of one image in the style of another (StyleID through inversion)."""

from __future__ import annotations

from pathlib import Path

import click

from ddim_edit.edits.style import StyleOptions, structure_spec
from ddim_edit.images import load_image
from ddim_edit.inversion import METHODS
from ddim_edit.io import file_sha256
from ddim_edit.jobs import JobSettings, StyleRequest, run_request, write_result
from ddim_edit.jobs.resolve import check_input_file
from ddim_edit.trajectory import Trajectory
from ddim_edit.workflow import is_trajectory_path

from .common import model_cache
from .common import check_outputs, emit, handle_errors, model_options, run_options, schedule_options
from .common import FiniteFloat, grid_option, grid_outputs, refuse_schedule_options
from .common import TOY_EPILOG


def read_side(path: str):
    """A trajectory file as is, or an image file as uint8 RGB with its source record."""
    if is_trajectory_path(path):
        return Trajectory.load(path), None
    pixels = load_image(path)
    return pixels, {"path": str(Path(path).resolve()), "sha256": file_sha256(path)}


def parse_layers(text: str | None) -> tuple[str, ...] | None:
    """``--layers up_blocks.2,up_blocks.3`` → a tuple; None or ``styleid`` → StyleID's default."""
    if text is None or text.strip() in ("", "styleid"):
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


@click.command("style", epilog=TOY_EPILOG)
@click.option("--content", required=True, help="Content image, or its trajectory file (.safetensors).")
@click.option("--style", "style_path", required=True, help="Style image, or its trajectory file (.safetensors).")
@click.option("--output", "-o", required=True, help="PNG to write.")
@click.option("--gamma", default=StyleOptions.gamma, show_default=True, type=FiniteFloat(example="0.5"),
              help="Query preservation γ in [0, 1]: higher keeps more content (StyleID: 0.75; here the "
                   "structure layers keep the layout).")
@click.option("--temperature", default=1.5, show_default=True, type=FiniteFloat(example="1.5"),
              help="Attention temperature T > 0 on the injected layers' logits.")
@click.option("--layers", default=None,
              help="Decoder self-attention layers to inject into: comma-separated names or prefixes "
                   "(e.g. up_blocks.2,up_blocks.3), 'all', or 'styleid' (default: all but the lowest-resolution "
                   "attention block).")
@click.option("--structure-layers", default="encoder", show_default=True,
              help="Self-attention layers where the output takes the content's attention maps (Plug-and-Play): "
                   "comma-separated names or prefixes (e.g. down_blocks.0), 'all' (every one outside --layers), "
                   "'encoder', or 'none' (StyleID).")
@click.option("--injection-window", nargs=2, type=FiniteFloat(example="0 1"), default=(0.0, 1.0), show_default=True,
              help="Inject at steps whose fraction i/N lies in [START, END).")
@click.option("--no-adain", is_flag=True, help="Start from the content's x_T without the style's statistics.")
@click.option("--no-kv-injection", is_flag=True, help="Ablation: keep the output's own keys/values.")
@click.option("--output-corrections", default="content", show_default=True, type=click.Choice(["content", "none"]),
              help="The output branch gets the content branch's per-step corrections, or none.")
@click.option("--prompt", "-p", default=None,
              help="Prompt of the three branches while sampling, and caption to invert images with "
                   "(default: '' as in StyleID).")
@click.option("--style-prompt", default=None, help="Caption to invert the style image with (default: --prompt).")
@click.option("--method", default="exact", show_default=True, type=click.Choice(METHODS),
              help="Inversion method for images given as pixels.")
@click.option("--guidance", default=None, type=FiniteFloat(example="1"),
              help="Guidance while sampling (default 1: StyleID samples without text guidance). Trajectories "
                   "made with any guidance work.")
@grid_option("content | style | output")
@click.option("--keep-working-size", is_flag=True, help="Write the model's working size, not the content's resolution.")
@model_options(default_model=None)
@schedule_options
@run_options
@handle_errors
def command(content, style_path, output, gamma, temperature, layers, structure_layers, injection_window, no_adain,
            no_kv_injection, output_corrections, prompt, style_prompt, method, guidance, with_grid, keep_working_size, model_name, model_config, device,
            dtype, allow_pickle, steps, spacing, timesteps, force, quiet, output_format, seed):
    """Render the layout of --content in the colours and textures of --style.

    Both images are inverted (or read from trajectory files) and sampled as one batch; in the
    decoder's self-attention the output takes the style's keys and values at each step (StyleID,
    CVPR 2024). The content image is fitted to the model's size; the style image is resized to it; the
    output comes back at the content's resolution (--keep-working-size: the working size).

    \b
    Example:
      ddim-edit style --content photo.png --style painting.png -o stylised.png --grid
    """
    options = StyleOptions(gamma=gamma, temperature=temperature, layers=parse_layers(layers),
                           structure_layers=structure_spec(structure_layers),
                           injection_start=injection_window[0], injection_end=injection_window[1],
                           adain=not no_adain, inject_key_value=not no_kv_injection,
                           output_corrections=output_corrections, prompt=prompt or "", guidance_scale=guidance)
    output = check_outputs([("-o", output, "image"), *grid_outputs(output, with_grid)], force,
                           inputs=(content, style_path))[0]
    sides = [Trajectory.load(side) if is_trajectory_path(side) else check_input_file(side)
             for side in (content, style_path)]
    recorded = next((side for side in sides if isinstance(side, Trajectory)), None)
    if recorded is not None:
        refuse_schedule_options("the trajectory given", lambda: recorded)
    settings = JobSettings(model=model_name, model_config=model_config, steps=steps, spacing=spacing,
                           timesteps=timesteps, method=method, guidance=guidance, seed=seed,
                           keep_working_size=keep_working_size, progress=not quiet)
    request = StyleRequest(sides[0], sides[1], options, prompt or "", style_prompt, settings)
    job = run_request(request, model_cache(device, dtype, allow_pickle))
    job.parameters.update(content=str(content), style=str(style_path))
    write_result(job, output, force=force, with_grid=with_grid)
    record = job.record
    result = {key: value for key, value in record.items() if key not in ("psnr", "working_size")}
    result["output"] = str(output)
    emit(result, output_format,
         f"wrote {output} (γ={gamma}, T={temperature}, {len(record['layers'])} + {len(record['structure_layers'])} layers, {record['steps']} steps, "
         f"{record['unet_evaluations']} + {record['inversion_unet_evaluations']} UNet evaluations, "
         f"{record['seconds']:.1f}s)")
