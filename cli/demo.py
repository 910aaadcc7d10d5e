"""``ddim-edit demo``: a prompt swap on the bundled example image with the bundled model."""

from __future__ import annotations

from pathlib import Path

import click

from ddim_edit.edits.prompt_swap import SwapOptions, edited_image, swap
from ddim_edit.errors import PromptError
from ddim_edit.images import grid, save_png
from ddim_edit.inversion import InversionOptions
from ddim_edit.metrics import psnr
from ddim_edit.model import assets_dir, load_model
from ddim_edit.workflow import decode, invert_image, make_schedule, prepare_image

from .common import Timer, check_outputs, emit, handle_errors
from .common import STEPS

SOURCE = "a solid red circle on a white background"


@click.command("demo")
@click.option("--output", "-o", default="demo.png", show_default=True, help="Grid PNG: source | reconstruction | edit.")
@click.option("--target", default="a solid blue circle on a white background", show_default=True, help="Target prompt.")
@click.option("--steps", default=50, show_default=True, type=STEPS, help="DDIM steps.")
@click.option("--force", is_flag=True, help="Overwrite the output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--format", "output_format", default="text", type=click.Choice(["text", "json"]))
@handle_errors
def command(output, target, steps, force, quiet, output_format):
    """Invert the bundled example (a red circle) with the bundled model and swap its colour.

    Runs the real path end to end — load model, invert (exact), prompt-to-prompt swap, decode —
    offline, in seconds on a CPU.

    \b
    Example:
      ddim-edit demo -o demo.png
      ddim-edit demo --target "a solid red square on a white background" -o square.png
    """
    check_outputs([("-o", output, "image")], force)
    model = load_model("toy")
    schedule = make_schedule(model, steps)
    image = prepare_image(model, assets_dir() / "examples" / "red-circle.png")
    with Timer() as timer:
        traj = invert_image(model, image, SOURCE, schedule, InversionOptions(method="exact", record_corrections=False),
                            progress=not quiet)
        try:
            result = swap(model, traj, target, SwapOptions(), progress=not quiet)
        except PromptError as exc:  # the demo has no --mode: say what the demo can do instead
            if exc.field != "mode":
                raise
            raise PromptError(f"the demo swaps word for word: --target needs as many tokens as {SOURCE!r}; "
                              "change words one for one, e.g. --target \"a solid blue square on a white background\", or use 'ddim-edit swap' to "
                              "add or remove words") from None
    reconstruction = decode(model, result.source_latents)
    edit = edited_image(model, result, image.pixels)
    picture = grid([image.pixels, reconstruction, edit], ["source", "reconstruction", "edit"])
    save_png(Path(output), picture, {"command": "demo", "source": SOURCE, "target": target, "steps": steps}, force=force)
    info = {"output": str(output), "source": SOURCE, "target": target, "reconstruction_psnr": psnr(reconstruction, image.pixels),
            "unet_evaluations": traj.metadata["unet_evaluations"] + result.unet_evaluations, "seconds": round(timer.seconds, 2)}
    emit(info, output_format, f"wrote {output}: '{SOURCE}' → '{target}' "
                              f"({info['unet_evaluations']} UNet evaluations, {timer.seconds:.1f}s)")
