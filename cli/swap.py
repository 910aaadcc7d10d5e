"""``ddim-edit swap``: prompt-to-prompt edit of an image (inverted first) or of a trajectory file."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ddim_edit.edits.local_blend import check_change_ramp
from ddim_edit.edits.prompt_swap import MODES, SwapOptions, attention_picture, check_guidance_options, parse_word_values
from ddim_edit.errors import PromptError
from ddim_edit.images import save_png
from ddim_edit.jobs import JobSettings, SwapRequest, run_request, write_result
from ddim_edit.jobs.resolve import check_input_file
from ddim_edit.trajectory import Trajectory
from ddim_edit.workflow import is_trajectory_path

from .common import model_cache
from .common import check_outputs, default_output, emit, handle_errors, inversion_options, model_options, run_options, schedule_options
from .common import SIZE, FiniteFloat, grid_option, grid_outputs, parse_finite, refuse_schedule_options
from .common import TOY_EPILOG
from .invert import check_prompt


def parse_blend_change(text: str) -> tuple[float, float] | None:
    """``--blend-change``: "LOW,HIGH" (RGB distances, 0–255) or "off"."""
    if text.strip().lower() == "off":
        return None
    parts = text.split(",")
    if len(parts) != 2:
        raise PromptError(f'--blend-change expects LOW,HIGH or off, got {text!r}; e.g. --blend-change 20,60')
    ramp = tuple(parse_finite(part, "--blend-change", "20,60") for part in parts)
    check_change_ramp(ramp)
    return ramp


def parse_guidance_or_off(text: str, flag: str, example: str) -> float | None:
    """``--late-guidance`` / ``--mask-guidance``: a guidance (≥ 1, checked by the library) or "off"."""
    if text.strip().lower() == "off":
        return None
    return parse_finite(text, flag, example)


def parse_cross_steps(values: tuple[str, ...]) -> float | dict[str, float]:
    """``--cross-steps 0.8 --cross-steps red=0.3`` → {"default": 0.8, "red": 0.3} (or just 0.8)."""
    per_word: dict[str, float] = {}
    for item in values:
        if "=" in item:
            per_word.update(parse_word_values((item,), "cross_steps", "blue=0.3"))
            continue
        try:
            per_word["default"] = float(item)
        except ValueError:
            raise PromptError(f"--cross-steps expects a fraction or WORD=FRACTION, got {item!r}") from None
        if not math.isfinite(per_word["default"]):
            raise PromptError(f"--cross-steps expects a finite fraction, got {item!r}; e.g. --cross-steps 0.8")
    per_word.setdefault("default", SwapOptions.cross_steps)
    return per_word["default"] if len(per_word) == 1 else per_word


@click.command("swap", epilog=TOY_EPILOG)
@click.argument("image_or_trajectory")
@click.option("--source", "-s", "source_prompt", default=None, help="Caption of the image (the trajectory's prompt).")
@click.option("--target", "-t", "target_prompt", required=True, help="Caption of the edited image.")
@click.option("--mode", default="replace", show_default=True, type=click.Choice(MODES),
              help="replace: swap words (same token count); refine: words added or removed.")
@click.option("--blend", "blend_words", multiple=True,
              help="Local blend: word whose attention marks what may change (repeatable; default: the words that "
                   "differ between --source and --target).")
@click.option("--no-blend", is_flag=True, help="No local blend: every pixel comes from the edit.")
@click.option("--blend-latents", is_flag=True,
              help="Also blend the latents at each step (prompt-to-prompt's LocalBlend); default: pixels only.")
@click.option("--blend-threshold", default=SwapOptions.blend_threshold, show_default=True, type=FiniteFloat(example="0.3"),
              help="Local blend: keep latent pixels whose accumulated, max-normalised map is above this.")
@click.option("--blend-change", default=",".join(f"{v:g}" for v in SwapOptions.blend_change), show_default=True,
              metavar="LOW,HIGH|off",
              help="Local blend: inside the mask, pixels the edit moved by at most LOW (RGB distance, 0-255) keep "
                   "the source's values, by HIGH or more the edit's; off: the edit everywhere inside the mask.")
@click.option("--reweight", multiple=True, help="Scale a target word's attention, WORD=SCALE (repeatable).")
@click.option("--cross-steps", multiple=True,
              help=f"Fraction of steps with cross-attention injection, or WORD=F per word [default: {SwapOptions.cross_steps}].")
@click.option("--self-steps", default=SwapOptions.self_steps, show_default=True, type=FiniteFloat(example="0.4"),
              help="Fraction of steps with self-attention injection (lower it for edits that change a shape).")
@click.option("--late-guidance", default="off", show_default=True, metavar="W|off",
              help="Guidance after the first --guidance-steps of an exact trajectory's edit, e.g. 2: the edited "
                   "object keeps the source's outline and background better, but edits are weaker; off: "
                   "--guidance at every step.")
@click.option("--mask-guidance", default="off", show_default=True, metavar="W|off",
              help="Guidance of the edit inside the blend mask of an exact trajectory, where the target then keeps "
                   "the inversion's own correction, e.g. 3: outlines and colours nearer the source's, but some "
                   "edits weaker; off: --guidance there, without correction.")
@click.option("--guidance-steps", default=SwapOptions.guidance_steps, show_default=True,
              type=FiniteFloat(example="0.3"), help="Fraction of the steps at full --guidance before --late-guidance.")
@click.option("--output", "-o", default=None, help="PNG to write (default: input stem + .swap.png).")
@click.option("--save-trajectory", default=None, help="Keep the inverted image's trajectory here (.safetensors).")
@click.option("--trajectory-storage", type=click.Choice(["float64", "float16"]), default="float64", show_default=True,
              help="How --save-trajectory stores the latents (float16: intermediate latents, ~2.6x smaller).")
@click.option("--save-attention", default=None, help="PNG grid of per-token cross-attention maps.")
@grid_option("source | reconstruction | edit")
@click.option("--size", default=None, type=SIZE, help="Longer image side to work at (default: the model's).")
@click.option("--keep-working-size", is_flag=True, help="Write the model's working size, not the source's resolution.")
@model_options(default_model=None)
@schedule_options
@inversion_options()
@run_options
@handle_errors
@click.pass_context
def command(ctx, image_or_trajectory, source_prompt, target_prompt, mode, blend_words, no_blend, blend_latents,
            blend_threshold, blend_change, reweight,
            cross_steps, self_steps, late_guidance, mask_guidance, guidance_steps, output, save_trajectory, trajectory_storage, save_attention, with_grid, size, keep_working_size,
            model_name, model_config,
            device, dtype, allow_pickle, steps, spacing, timesteps, method, guidance, inversion_guidance,
            negative_prompt, fixed_point_iterations, tolerance, null_text_steps, force, quiet, output_format, seed):
    """Edit IMAGE_OR_TRAJECTORY from --source to --target with prompt-to-prompt attention control.

    An image is inverted first (--method, default exact); a .safetensors trajectory is used as is.

    \b
    Examples:
      ddim-edit swap red.png -s "a red circle on a white background" -t "a blue circle on a white background" \\
          --blend circle -o blue.png --grid
      ddim-edit swap red.traj.safetensors -s "a red circle on a white background" \\
          -t "a red square on a white background" --blend circle --blend square -o square.png
    """
    from_trajectory = is_trajectory_path(image_or_trajectory)
    check_input_file(image_or_trajectory, "trajectory" if from_trajectory else "image")
    if from_trajectory:
        refuse_schedule_options(f"the trajectory {image_or_trajectory}", lambda: Trajectory.load(image_or_trajectory))
    if not from_trajectory:
        source_prompt = check_prompt(source_prompt, what="--source")
    if save_trajectory and from_trajectory:
        raise PromptError("--save-trajectory is for an image input; the trajectory file already exists")
    output = Path(output) if output else default_output(image_or_trajectory, ".swap.png")
    check_outputs([("-o", output, "image"), ("--save-trajectory", save_trajectory, "trajectory"),
                   ("--save-attention", save_attention, "image"), *grid_outputs(output, with_grid)], force, inputs=(image_or_trajectory,))
    options = SwapOptions(mode=mode, cross_steps=parse_cross_steps(cross_steps), self_steps=self_steps,
                          reweight=parse_word_values(reweight, "reweight", "blue=2"),
                          blend_words=() if no_blend else (tuple(blend_words) or None), blend_latents=blend_latents,
                          blend_threshold=blend_threshold, blend_change=parse_blend_change(blend_change),
                          late_guidance=parse_guidance_or_off(late_guidance, "--late-guidance", "2"),
                          mask_guidance=parse_guidance_or_off(mask_guidance, "--mask-guidance", "3"),
                          guidance_steps=guidance_steps,
                          keep_maps=bool(save_attention))
    check_guidance_options(options)
    if no_blend and blend_words:
        raise PromptError("--no-blend and --blend contradict each other; pass one of them")
    guidance_given = ctx.get_parameter_source("guidance") != click.core.ParameterSource.DEFAULT
    settings = JobSettings(model=model_name, model_config=model_config, steps=steps, spacing=spacing,
                           timesteps=timesteps, method=method, guidance=guidance if guidance_given else None,
                           inversion_guidance=inversion_guidance, negative_prompt=negative_prompt,
                           fixed_point_iterations=fixed_point_iterations, tolerance=tolerance,
                           null_text_steps=null_text_steps, size=size, seed=seed,
                           keep_working_size=keep_working_size, progress=not quiet,
                           trajectory_storage=trajectory_storage)
    request = SwapRequest(image_or_trajectory, target_prompt, source_prompt, options, save_trajectory=save_trajectory,
                          force=force, settings=settings)
    job = run_request(request, model_cache(device, dtype, allow_pickle))
    traj, record = job.trajectory, job.record
    job.parameters.update(reweight=list(reweight), cross_steps=list(cross_steps))
    write_result(job, output, force=force, with_grid=with_grid)
    if save_attention:
        save_png(save_attention, attention_picture(job.details, {"source": job.panels["reconstruction"],
                                                                  "target": job.image}),
                 job.parameters, force=force)
    inversion_evaluations = record["inversion_unet_evaluations"]
    summary = {"output": str(output), "method": traj.method, "steps": traj.num_steps, "size": record["size"],
               "unet_evaluations": record["unet_evaluations"], "inversion_unet_evaluations": inversion_evaluations,
               "seconds": record["seconds"], "trajectory": save_trajectory, "attention": save_attention,
               "blend_fraction": record["blend_fraction"]}
    emit(summary, output_format, f"wrote {output} ({traj.method}, {traj.num_steps} steps, "
                                 f"{record['unet_evaluations']} UNet evaluations for the edit"
                                 + (f" + {inversion_evaluations} for the inversion" if inversion_evaluations else "")
                                 + f", {record['seconds']:.1f}s)")
