"""``ddim-edit demo``: a prompt swap on the bundled example image with the bundled model."""

from __future__ import annotations

from pathlib import Path

import click

from ddim_edit.errors import PromptError
from ddim_edit.io import grid_output
from ddim_edit.jobs import JobSettings, SwapRequest, run_request, write_result
from ddim_edit.model import assets_dir

from .common import STEPS, TOY_EPILOG, check_outputs, emit, grid_outputs, handle_errors, model_cache

SOURCE = "a solid red circle on a white background"


@click.command("demo", epilog=TOY_EPILOG)
@click.option("--output", "-o", default="demo.png", show_default=True,
              help="The edit (PNG); source | reconstruction | edit go beside it as OUTPUT.grid.png.")
@click.option("--target", default="a solid blue circle on a white background", show_default=True, help="Target prompt.")
@click.option("--steps", default=50, show_default=True, type=STEPS, help="DDIM steps.")
@click.option("--force", is_flag=True, help="Overwrite the outputs.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--format", "output_format", default="text", type=click.Choice(["text", "json"]))
@handle_errors
def command(output, target, steps, force, quiet, output_format):
    """Invert the bundled example (a red circle) with the bundled model and swap its colour.

    Runs the real path end to end — load model, invert (exact), prompt-to-prompt swap, decode —
    offline, in seconds on a CPU: the same job as `ddim-edit swap` on that image.

    \b
    Example:
      ddim-edit demo -o demo.png
      ddim-edit demo --target "a solid red square on a white background" -o square.png
    """
    output = Path(output)
    check_outputs([("-o", output, "image"), *grid_outputs(output, True)], force)
    settings = JobSettings(model="toy", steps=steps, progress=not quiet)
    request = SwapRequest(assets_dir() / "examples" / "red-circle.png", target, SOURCE, settings=settings)
    try:
        job = run_request(request, model_cache("auto", "auto", False))
    except PromptError as exc:  # the demo has no --mode: say what the demo can do instead
        if exc.field != "mode":
            raise
        raise PromptError(f"the demo swaps word for word: --target needs as many words as {SOURCE!r}; change "
                          "words one for one, e.g. --target \"a solid blue square on a white background\", or use "
                          "'ddim-edit swap' to add or remove words") from None
    write_result(job, output, force=force, with_grid=True)
    record = job.record
    evaluations = record["unet_evaluations"] + record["inversion_unet_evaluations"]
    info = {"output": str(output), "grid": str(grid_output(output)),
            "source": SOURCE, "target": target, "unet_evaluations": evaluations, "seconds": record["seconds"]}
    emit(info, output_format, f"wrote {output} and {info['grid']}: '{SOURCE}' → '{target}' "
                              f"({evaluations} model evaluations, {record['seconds']:.1f}s)")
