"""Starting the page on a local port and stopping it.

The page binds to 127.0.0.1 unless told otherwise and never opens a public share link. Gradio
serves only its own cache and the editor's working folder (uploads, trajectories, outputs).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from .editor import Editor

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port free on ``host`` now (for tests and ``--port 0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class RunningPage:
    """A started page: its address, and :meth:`close` to stop it."""

    page: Any
    editor: Editor
    url: str

    def close(self) -> None:
        self.page.close()

    def __enter__(self) -> "RunningPage":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start(editor: Editor, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, block: bool = False,
          quiet: bool = True) -> RunningPage:
    """Serve the page for ``editor`` on ``host:port`` (port 0: a free one).

    ``block=False`` returns once the page answers (the server runs in a thread until
    :meth:`RunningPage.close`); ``block=True`` serves until Ctrl-C.
    """
    from .app import CSS, build_app
    from .offline import system_fonts_theme

    page = build_app(editor)
    port = port or free_port(host)
    page.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
                show_error=True, quiet=quiet, allowed_paths=[str(editor.workdir)], ssr_mode=False, mcp_server=False,
                footer_links=[], theme=system_fonts_theme(), css=CSS)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"
    running = RunningPage(page, editor, url)
    if block:
        try:
            page.block_thread()
        finally:
            running.close()
    return running
