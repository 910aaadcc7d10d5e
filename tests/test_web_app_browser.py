"""The web page in a real browser: headless Chromium uploads the example and runs the swap to blue.

Needs the system's Chromium (Debian: ``apt-get install chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package (``pip install 'ddim-edit[browser]'``; its own browser download is
not used). Skipped, saying which is missing, otherwise. The screenshot is saved under pytest's
temporary folder (path printed; ``DDIM_EDIT_SCREENSHOT=FILE`` also writes it there).
"""

from __future__ import annotations

import io
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web page needs the web extra: pip install 'ddim-edit[web]'")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test drives Chromium with playwright: pip install 'ddim-edit[browser]'")


# Gradio's queue calls pandas APIs that pandas 3 deprecates; not ours to fix.
GRADIO_PANDAS_WARNINGS = [pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
                          pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated")]

def chromium_path() -> str | None:
    """The system Chromium (``DDIM_EDIT_CHROMIUM`` overrides)."""
    given = os.environ.get("DDIM_EDIT_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = chromium_path()
NO_CHROMIUM = ("no Chromium installed (Debian: apt-get install -y chromium; "
               "or set DDIM_EDIT_CHROMIUM to a Chromium binary)")
pytestmark = GRADIO_PANDAS_WARNINGS + [pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)]

from ddim_edit.model import assets_dir  # noqa: E402
from ddim_edit.web import Editor, EditorSettings  # noqa: E402
from ddim_edit.web.server import free_port, start  # noqa: E402

RED = assets_dir() / "examples" / "red-circle.png"
BLUE = "a solid blue circle on a white background"
TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    editor = Editor(EditorSettings(steps=8, workdir=tmp_path_factory.mktemp("web")))
    editor.load()
    with start(editor, port=free_port()) as running:
        yield running.url


def test_swap_to_blue_in_chromium(page_url, tmp_path):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(page_url)
            page.get_by_role("tab", name="Prompt swap").click()
            page.locator("#swap-image input[type=file]").set_input_files(str(RED))
            page.locator("#swap-image img").first.wait_for()
            hint = page.locator("#swap-hint").inner_text()
            hidden_before = not page.locator("#swap-png").is_visible()
            page.locator("#swap-target textarea").fill(BLUE)
            steps = page.locator("#swap-steps input[type=number]")
            steps.fill("8")
            steps.press("Enter")
            page.locator("#swap-run").click()
            result = page.locator("#swap-edit img").first
            result.wait_for(timeout=TIMEOUT_MS)
            page.locator("#swap-summary").get_by_text("model evaluations").wait_for(timeout=TIMEOUT_MS)
            page.locator("#swap-png").wait_for(state="visible")  # the downloads show once there is a result
            page.locator("#swap-trajectory").wait_for(state="visible")
            shot = tmp_path / "web-swap.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            extra = os.environ.get("DDIM_EDIT_SCREENSHOT")
            if extra:
                page.screenshot(path=extra)
            source = result.get_attribute("src")
            summary = page.locator("#swap-summary").inner_text()
            tiles = page.locator("#swap-attention img").count()
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    assert "PSNR" not in summary and tiles >= 10  # no PSNR "vs the source" for an edit
    assert "toy model knows captions like" in hint and hidden_before
    with urllib.request.urlopen(source, timeout=30) as response:  # the page's own server, 127.0.0.1
        edited = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB")).astype(int)
    original = np.asarray(Image.open(RED).convert("RGB")).astype(int)
    inside = (original[..., 0] > 150) & (original[..., 1] < 100)
    assert edited.shape == original.shape
    assert edited[inside][:, 2].mean() > edited[inside][:, 0].mean() + 60  # blue now, not red
