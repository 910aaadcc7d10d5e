"""Starting the page on a local port and stopping it.

The page binds to 127.0.0.1 unless told otherwise and never opens a public share link. Gradio
serves only its own cache and the editor's working folder (trajectories, outputs). Uploads (Gradio's
and the editor's copies) go to a temporary folder of the running page, removed when it stops, and
are refused above a size limit.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import DdimEditError
from .editor import Editor
from .uploads import UploadStore

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 50


def check_address(host: str, port: int = 0) -> int:
    """The port to serve on (a free one for 0), once ``host:port`` was bound and released.

    Raises:
        DdimEditError: about field ``host`` (no such address on this machine) or ``port`` (taken, or
            privileged).
    """
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise DdimEditError(f"{{field}} {host!r} is not an address or known host name ({exc}); e.g. {{field}} 127.0.0.1 "
                            "(this machine only) or {field} 0.0.0.0 (every interface)", field="host") from None
    with socket.socket(family, kind) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise DdimEditError(f"{{field}} {host} is not an address of this machine; e.g. {{field}} 127.0.0.1 "
                                    "or {field} 0.0.0.0", field="host") from None
            raise port_error(host, port, exc) from None
        return int(probe.getsockname()[1])


def port_error(host: str, port: int, exc: OSError) -> DdimEditError:
    """The error for a port the page cannot listen on (about field ``port``)."""
    return DdimEditError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another {{field}}, "
                         "or {field} 0 for a free one", field="port")


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port free on ``host`` now (for tests and ``--port 0``)."""
    return check_address(host, 0)


@contextlib.contextmanager
def gradio_temp_dir(folder: Path) -> Iterator[None]:
    """Gradio's upload cache is ``folder`` inside (Gradio reads the variable when it builds the page and again
    for each upload, so it stays set while the page runs: one page per process at a time)."""
    before = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before


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
    """A started page: its address, its uploads folder, and :meth:`close` to stop it (removing the
    uploads and the editor's temporary working folder)."""

    page: Any
    editor: Editor
    url: str
    uploads: Path
    cleanup: contextlib.ExitStack

    def close(self) -> None:
        try:
            self.page.close()
        finally:
            self.cleanup.close()
            self.editor.close()

    def __enter__(self) -> "RunningPage":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start(editor: Editor, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, block: bool = False,
          quiet: bool = True, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> RunningPage:
    """Serve the page for ``editor`` on ``host:port`` (port 0: a free one).

    ``block=False`` returns once the page answers (the server runs in a thread until
    :meth:`RunningPage.close`); ``block=True`` serves until Ctrl-C. Uploads larger than
    ``max_upload_mb`` are refused.
    """
    from .app import CSS, build_app
    from .offline import system_fonts_theme

    port = check_address(host, port)
    uploads = Path(tempfile.mkdtemp(prefix="ddim-edit-uploads-"))
    max_bytes = int(max_upload_mb * 2**20)
    cleanup = contextlib.ExitStack()
    cleanup.callback(shutil.rmtree, uploads, ignore_errors=True)
    try:
        cleanup.enter_context(gradio_temp_dir(uploads / "gradio"))
        editor.uploads = UploadStore(uploads / "images", max_bytes)
        page = build_app(editor)
        page.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
                    show_error=True, quiet=quiet, allowed_paths=[str(editor.workdir)], ssr_mode=False,
                    mcp_server=False, footer_links=[], theme=system_fonts_theme(), css=CSS, max_file_size=max_bytes)
    except BaseException as exc:
        cleanup.close()
        if isinstance(exc, OSError):  # the port was taken between the check and the launch
            raise port_error(host, port, exc) from None
        raise
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"
    running = RunningPage(page, editor, url, uploads, cleanup)
    if block:
        try:
            page.block_thread()
        finally:
            running.close()
    return running
