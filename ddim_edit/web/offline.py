"""Keep Gradio private and offline: no analytics, no telemetry, no share links, no web fonts.

Call :func:`quiet_gradio` before the first ``import gradio``: Gradio reads its analytics switch
from the environment, and an offline machine would otherwise wait on requests that cannot go out.
"""

from __future__ import annotations

import os

# Gradio and huggingface_hub phone home unless told not to; a served page never should.
PRIVATE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_SHARE": "False",
}


def quiet_gradio() -> None:
    """Set the environment that keeps Gradio from contacting anything but the page's browser."""
    os.environ.update(PRIVATE_ENVIRONMENT)


def system_fonts_theme():
    """Gradio's default look with the system's fonts (the default theme loads Google Fonts)."""
    import gradio as gr

    sans = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Default(font=sans, font_mono=mono)
