from __future__ import annotations

import socket

from tests.cli_helpers import one_line_error, run


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
