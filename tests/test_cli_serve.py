"""The ``serve`` command: its options, refusals, and the real command started and stopped in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the web page needs the web extra: pip install 'ddim-edit[web]'")

from ddim_edit.web.server import free_port  # noqa: E402
from tests.cli_helpers import one_line_error, run  # noqa: E402

# Gradio's queue calls pandas APIs that pandas 3 deprecates; not ours to fix.
pytestmark = [pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
              pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated")]


def test_serve_bad_host_port_or_workdir_is_one_line(tmp_path):
    one_line_error(run("serve", "--host", "999.1.1.1"), "--host '999.1.1.1'", "127.0.0.1")
    one_line_error(run("serve", "--host", "192.0.2.1", "--port", "0"), "--host 192.0.2.1", "not an address of this")
    (tmp_path / "file.txt").write_text("x")
    one_line_error(run("serve", "--workdir", tmp_path / "file.txt", "--port", "0"), "--workdir", "is a file")
    one_line_error(run("serve", "--port", "70000"), "--port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        one_line_error(run("serve", "--port", taken.getsockname()[1]), "--port", "cannot listen")


def as_from_a_terminal() -> None:
    """Ctrl-C's default action in the child: a shell's background job (or CI's) starts with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_command_binds_to_localhost_and_stops(tmp_path, stop):
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    process = subprocess.Popen([sys.executable, "-c", "from cli.main import main; main()", "serve", "--port", str(port),
                                "--steps", "5", "--workdir", str(tmp_path)],
                               cwd=Path(__file__).resolve().parents[1], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and not any("Serving" in line for line in lines):
            time.sleep(0.2)
        assert any(url in line for line in lines), "".join(lines) or "no 'Serving' line in 120 s"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200 and "ddim-edit" in response.read().decode()
    finally:
        process.send_signal(stop)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(5)
    assert process.returncode == 0 and lines[-1].strip() == "Stopped.", "".join(lines)
    assert not any("Error" in line or "Traceback" in line for line in lines), "".join(lines)



def test_serve_refuses_a_bad_model_with_one_line():
    one_line_error(run("serve", "--model", "no/such-model-here", "--port", "0"), "no/such-model-here")



def test_serve_has_no_share_option():
    result = run("serve", "--help")
    assert result.exit_code == 0 and "--share" not in result.output and "127.0.0.1" in result.output
