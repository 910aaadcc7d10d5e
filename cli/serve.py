"""``ddim-edit serve``: the web page (Gradio) for editing, on this machine only by default."""

from __future__ import annotations

import signal
import time

import click

from ddim_edit.errors import DdimEditError

from .common import STEPS, BoundedInt, handle_errors, model_extras, model_options, quiet_libraries
from .common import TOY_EPILOG

PORT = BoundedInt(min=0, max=65535, example="7860")


@click.command("serve", epilog=TOY_EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 lets other machines reach the page (no public share links).")
@click.option("--port", default=7860, show_default=True, type=PORT, help="TCP port (0: any free port).")
@click.option("--steps", default=50, show_default=True, type=STEPS, help="Steps the page offers first.")
@click.option("--cache-size", default=8, show_default=True, type=BoundedInt(min=1, example="8"),
              help="Inverted trajectories kept in memory (per image, prompt, method, steps, guidance).")
@click.option("--workdir", default=None,
              help="Folder for trajectories and outputs (default: a temporary one, removed when the server stops).")
@click.option("--max-upload-mb", default=50, show_default=True, type=BoundedInt(min=1, example="50"),
              help="Largest upload accepted, in MB; uploads live in a temporary folder removed when the server stops.")
@model_options(default_model="toy")
@handle_errors
def command(host, port, steps, cache_size, workdir, max_upload_mb, model_name, model_config, device, dtype,
            allow_pickle):
    """Serve a web page for editing: invert & reconstruct, prompt swap, inpaint, style.

    One model is loaded and shared; requests queue and run one at a time. An image is inverted once
    per (image, prompt, method, steps, guidance): another target prompt or mask reuses it. Needs the
    web extra: pip install "ddim-edit[web]".

    \b
    Examples:
      ddim-edit serve                       # bundled toy model on http://127.0.0.1:7860/
      ddim-edit serve --model stable-diffusion-v1-5/stable-diffusion-v1-5 --port 8000
    """
    quiet_libraries()
    try:
        from ddim_edit.web import server
        from ddim_edit.web.editor import Editor, EditorSettings
        import gradio  # noqa: F401
    except ImportError as exc:
        raise DdimEditError(f"the web page needs Gradio ({exc.name} is not installed); "
                            "install it with: pip install \"ddim-edit[web]\"") from None
    port = server.check_address(host, port)  # a bad --host or a taken --port: one line, before the model loads
    extras = model_extras()
    editor = Editor(EditorSettings(model=model_name, model_config=model_config, device=device, dtype=dtype,
                                   allow_pickle=allow_pickle, loras=extras["loras"], memory=extras["memory"],
                                   workdir=workdir, cache_size=cache_size, steps=steps))
    try:
        editor.load()  # a bad --model fails here, as one Error: line, before anything is served
        if not server.is_loopback(host):
            click.echo(f"Warning: listening on {host}: anyone who can reach this machine can use the page and its "
                       "model.", err=True)
        running = server.start(editor, host, port, block=False, max_upload_mb=max_upload_mb)
    except BaseException:
        editor.close()
        raise
    signal.signal(signal.SIGTERM, stop_on_terminate)
    try:
        try:
            click.echo(f"Serving ddim-edit ({editor.model_name}) on {running.url} — Ctrl-C to stop.", err=True)
            while True:  # the server runs in its own threads until Ctrl-C
                time.sleep(0.5)
        finally:
            running.close()  # also removes the uploads and a temporary workdir
    except KeyboardInterrupt:  # the ordinary way to stop a server: not an error
        click.echo("Stopped.", err=True)


def stop_on_terminate(signum: int, frame: object) -> None:
    """SIGTERM (``kill``, ``docker stop``, systemd) stops the server as Ctrl-C does, cleaning up on the way."""
    raise KeyboardInterrupt
