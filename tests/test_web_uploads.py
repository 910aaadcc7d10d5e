"""Uploads to the web page (ddim_edit/web/uploads.py): a size limit, and removed when the server stops."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ddim_edit.model import assets_dir


@pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")
@pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated")
def test_uploads_have_a_size_limit_and_are_removed_when_the_server_stops(tmp_path):
    pytest.importorskip("gradio")
    import httpx
    import numpy as np

    from ddim_edit.errors import ImageError
    from ddim_edit.web import Editor, EditorSettings
    from ddim_edit.web.server import free_port, start

    editor = Editor(EditorSettings(steps=2))
    running = start(editor, port=free_port(), max_upload_mb=1)
    uploads, workdir = running.uploads, editor.workdir
    try:
        big, small = tmp_path / "big.bin", tmp_path / "small.png"
        big.write_bytes(os.urandom(2 * 2**20))
        shutil.copy(assets_dir() / "examples" / "red-circle.png", small)
        url = running.url + "gradio_api/upload"
        with open(big, "rb") as handle:
            assert httpx.post(url, files={"files": handle}, timeout=60).status_code == 413
        with open(small, "rb") as handle:
            response = httpx.post(url, files={"files": handle}, timeout=60)
        assert response.status_code == 200 and Path(response.json()[0]).is_relative_to(uploads)
        noise = np.random.default_rng(0).integers(0, 256, (800, 800, 3), dtype=np.uint8)  # ~1.9 MB as PNG
        with pytest.raises(ImageError, match="upload limit of 1 MB"):
            editor.uploads.keep(noise)
        assert not list((uploads / "images").iterdir())
        editor.uploads.keep(noise[:64, :64])
        assert len(list((uploads / "images").iterdir())) == 1
    finally:
        running.close()
    assert not uploads.exists() and not workdir.exists()
