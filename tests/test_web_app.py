"""The web page (issue #14: ``ddim_edit/web/app.py`` over its ``Editor``) driven through ``gradio_client``
on the toy model.

A server is started in this process on a free 127.0.0.1 port and stopped at the end; every request is
bounded in time. The ``serve`` command itself is tested in test_cli_serve.py.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web page needs the web extra: pip install 'ddim-edit[web]'")
pytest.importorskip("gradio_client", reason="the web tests need gradio_client: pip install 'ddim-edit[web]'")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from ddim_edit.images import read_parameters  # noqa: E402
from ddim_edit.metrics import psnr  # noqa: E402
from ddim_edit.model import assets_dir  # noqa: E402
from ddim_edit.trajectory import Trajectory  # noqa: E402
from ddim_edit.web import Editor, EditorSettings  # noqa: E402
from ddim_edit.web.server import free_port, start  # noqa: E402
from tests.cli_helpers import one_line_error, run  # noqa: E402

EXAMPLES = assets_dir() / "examples"
RED = EXAMPLES / "red-circle.png"
MASK = EXAMPLES / "red-circle-mask.png"
SOURCE = "a solid red circle on a white background"
BLUE = "a solid blue circle on a white background"
GREEN = "a solid green circle on a white background"
STEPS = 8
TIMEOUT = 240  # seconds for one request on a busy 2-core CI machine


# Gradio's queue calls pandas APIs that pandas 3 deprecates; not ours to fix.
GRADIO_PANDAS_WARNINGS = [pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
                          pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated")]
pytestmark = GRADIO_PANDAS_WARNINGS


def swap_args(target=BLUE, blend_words="", guidance=7.5, image=RED, source=SOURCE, method="exact",
              flowedit=(None, 0, 1, None, None)):
    return (handle_file(str(image)), source, target, "replace", True, blend_words, "", 0.4, 0.6, method, STEPS,
            guidance, *flowedit)


def inpaint_args(mask=MASK, layers=(), prompt=BLUE):
    image = handle_file(str(RED))
    editor = {"background": image, "layers": [handle_file(str(layer)) for layer in layers], "composite": image}
    return (editor, handle_file(str(mask)) if mask else None, SOURCE, prompt, 0, None, 0, "ddim", STEPS, 7.5)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def circle_of(image: np.ndarray) -> np.ndarray:
    """Where the example's red circle is."""
    return (image[..., 0] > 150) & (image[..., 1] < 100) & (image[..., 2] < 100)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    editor = Editor(EditorSettings(steps=STEPS, workdir=tmp_path_factory.mktemp("web")))
    editor.load()
    with start(editor, port=free_port()) as page:
        client = Client(page.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
        yield page, client
        client.close()


def call(client, args, api_name):
    return client.submit(*args, api_name=api_name).result(timeout=TIMEOUT)


# ---------------------------------------------------------------------- through the server
def test_swap_through_client_returns_the_edit_maps_numbers_and_downloads(served):
    page, client = served
    source, reconstruction, edit, gallery, summary, numbers, png, trajectory = call(client, swap_args(), "/swap")
    original = pixels(RED)
    assert np.array_equal(pixels(source), original)
    edited = pixels(edit)
    assert edited.shape == original.shape and pixels(reconstruction).shape == original.shape
    inside = circle_of(original)
    blue, red = edited[inside][:, 2].mean(), edited[inside][:, 0].mean()
    assert blue > red + 60, (blue, red)  # the red circle became blue
    assert circle_of(pixels(reconstruction)).mean() > 0.5 * inside.mean()  # the reconstruction is still red
    captions = [tile["caption"] for tile in gallery]
    assert "target · blue" in captions and "source · red" in captions
    assert all(Path(tile["image"]).is_file() for tile in gallery)
    assert numbers["inversion"] == "new" and numbers["steps"] == STEPS and numbers["unet_evaluations"] > 0
    assert "model evaluations" in summary and " s" in summary
    assert "psnr" not in numbers and "PSNR" not in summary  # an edit is meant to differ from the source
    assert np.array_equal(pixels(png), edited)  # the download is the shown edit, parameters embedded
    parameters = read_parameters(png)
    assert parameters["command"] == "swap" and parameters["target"] == BLUE
    traj = Trajectory.load(trajectory)
    assert traj.metadata["prompt"] == SOURCE and traj.num_steps == STEPS and traj.method == "exact"


def test_flowedit_through_client_edits_without_an_inversion(served):
    page, client = served
    source, reconstruction, edit, gallery, summary, numbers, png, trajectory = call(
        client, swap_args(method="flowedit", flowedit=(6, 0, 1, None, 9)), "/swap")
    original, edited = pixels(RED), pixels(edit)
    inside = circle_of(original)
    assert edited[inside][:, 2].mean() > edited[inside][:, 0].mean() + 60  # the red circle became blue
    assert reconstruction is None and trajectory is None and not gallery
    assert numbers["method"] == "flowedit" and numbers["unet_evaluations"] == 6 * 4 and "inversion" not in numbers
    parameters = read_parameters(png)
    assert parameters["method"] == "flowedit" and parameters["n_max"] == 6 and parameters["target_guidance"] == 9
    with pytest.raises(AppError, match="less than minimum value 1"):  # the field refuses it
        call(client, swap_args(method="flowedit", flowedit=(0, 0, 1, None, None)), "/swap")


def test_another_target_reuses_the_inversion_and_another_guidance_does_not(served):
    page, client = served
    call(client, swap_args(BLUE), "/swap")
    misses = page.editor.trajectories.misses
    *_, numbers, _, first = call(client, swap_args(BLUE), "/swap")
    _, _, green, _, summary, numbers, _, second = call(client, swap_args(GREEN), "/swap")
    assert numbers["inversion"] == "cached" and numbers["inversion_unet_evaluations"] == 0
    assert "reused" in summary and page.editor.trajectories.misses == misses
    assert Path(first).read_bytes() == Path(second).read_bytes()  # the same trajectory
    edited = pixels(green)
    inside = circle_of(pixels(RED))
    assert edited[inside][:, 1].mean() > edited[inside][:, 0].mean() + 40  # green now
    *_, numbers, _, _ = call(client, swap_args(BLUE, guidance=5.0), "/swap")
    assert numbers["inversion"] == "new" and page.editor.trajectories.misses == misses + 1


def test_inpaint_through_client_with_an_uploaded_mask_keeps_the_rest(served):
    page, client = served
    source, mask, inpainted, summary, numbers, png, trajectory = call(client, inpaint_args(), "/inpaint")
    original, result = pixels(RED), pixels(inpainted)
    masked = np.asarray(Image.open(MASK).convert("L")) > 127
    assert result.shape == original.shape
    grown = np.zeros_like(masked)  # the mask and its feather (one latent cell = 4 px on the toy), plus a margin
    for dy in range(-8, 9):
        for dx in range(-8, 9):
            grown |= np.roll(np.roll(masked, dy, axis=0), dx, axis=1)
    assert np.array_equal(result[~grown], original[~grown])  # outside: the photo's own pixels
    assert np.abs(result[masked].astype(int) - original[masked]).mean() > 10  # inside: regenerated
    assert (pixels(mask)[..., 0] > 127).mean() == pytest.approx(masked.mean(), abs=0.02)
    assert numbers["edit"] == "inpaint" and numbers["method"] == "ddim" and "psnr" not in numbers
    kept = psnr(result, original, ~masked)  # PSNR of the kept region only
    assert numbers["kept_psnr"] == pytest.approx(kept, abs=0.01) and kept > psnr(result, original) + 3
    assert f"PSNR {kept:.2f} dB outside the mask vs the source" in summary
    assert read_parameters(png)["command"] == "inpaint"
    assert Trajectory.load(trajectory).num_steps == STEPS


def test_reconstruction_reports_its_psnr_vs_the_source(served):
    page, client = served
    source, reconstruction, summary, numbers, png, trajectory = call(
        client, (handle_file(str(RED)), SOURCE, "exact", STEPS, 7.5), "/invert")
    score = psnr(pixels(reconstruction), pixels(RED))
    assert numbers["psnr"] == pytest.approx(score, abs=0.01) and score > 20
    assert f"PSNR {score:.2f} dB vs the source" in summary
    assert np.array_equal(pixels(png), pixels(reconstruction)) and Trajectory.load(trajectory).method == "exact"
    assert "warnings" not in numbers and "⚠" not in summary


def test_words_the_toy_model_never_saw_are_named(served):
    page, client = served
    *_, summary, numbers, _, _ = call(client, (handle_file(str(RED)), "a solid red Cat on a white sofa.", "exact", 2,
                                               7.5), "/invert")
    assert len(numbers["warnings"]) == 1 and "'cat', 'sofa' are unknown" in numbers["warnings"][0]
    assert summary.startswith(f"⚠ {numbers['warnings'][0]} · PSNR")


def test_inpaint_with_a_painted_mask(served, tmp_path):
    page, client = served
    layer = np.zeros((64, 64, 4), np.uint8)
    layer[8:24, 36:60] = (255, 0, 255, 255)  # brush strokes on the editor's layer
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    _, mask, inpainted, *_ = call(client, inpaint_args(mask=None, layers=[tmp_path / "layer.png"]), "/inpaint")
    shown = pixels(mask)[..., 0] > 127
    assert shown[8:24, 36:60].all() and shown.mean() == pytest.approx(16 * 24 / 64 / 64, abs=0.02)
    outside = np.ones((64, 64), bool)
    outside[0:32, 28:64] = False
    assert np.array_equal(pixels(inpainted)[outside], pixels(RED)[outside])


def test_bad_input_shows_the_clis_one_line(served, tmp_path):
    page, client = served
    with pytest.raises(AppError) as caught:
        call(client, swap_args(blend_words="dog"), "/swap")
    message = str(caught.value)
    assert "\n" not in message and "dog" in message
    cli = run("swap", RED, "-s", SOURCE, "-t", BLUE, "--blend", "dog", "--steps", STEPS, "-o", tmp_path / "x.png",
              "--quiet")
    one_line_error(cli)
    assert cli.stderr.strip() == f"Error: {message}"
    with pytest.raises(AppError, match="no mask: paint the region"):
        call(client, inpaint_args(mask=None), "/inpaint")
    with pytest.raises(AppError, match="target prompt is empty"):
        call(client, swap_args(target="  "), "/swap")


def test_requests_queue_and_never_interleave(served):
    """Two requests at once run one after the other, each counting only its own UNet evaluations."""
    page, client = served
    editor = page.editor
    alone = {"swap": call(client, swap_args(), "/swap")[5]["unet_evaluations"],
             "inpaint": call(client, inpaint_args(), "/inpaint")[4]["unet_evaluations"]}
    active, most = [0], [0]
    original = editor._run

    def watched(work):
        active[0] += 1
        most[0] = max(most[0], active[0])
        try:
            time.sleep(0.3)  # widen the window in which a second request could slip in
            return original(work)
        finally:
            active[0] -= 1

    editor._run = watched
    try:
        jobs = {"swap": client.submit(*swap_args(), api_name="/swap"),
                "inpaint": client.submit(*inpaint_args(), api_name="/inpaint")}
        results = {name: job.result(timeout=TIMEOUT) for name, job in jobs.items()}
    finally:
        editor._run = original
    assert most[0] == 1
    assert results["swap"][5]["unet_evaluations"] == alone["swap"]
    assert results["inpaint"][4]["unet_evaluations"] == alone["inpaint"]


def test_the_editor_lock_serialises_direct_callers(served, monkeypatch):
    """Without Gradio's queue (two threads calling the editor), the model lock still serialises."""
    import ddim_edit.web.editor as editor_module

    page, _ = served
    image = pixels(RED)
    active, most = [0], [0]
    original = editor_module.run_request

    def watched(request, models):
        active[0] += 1
        most[0] = max(most[0], active[0])
        try:
            time.sleep(0.2)  # widen the window in which the other thread could slip in
            return original(request, models)
        finally:
            active[0] -= 1

    monkeypatch.setattr(editor_module, "run_request", watched)
    results = []
    threads = [threading.Thread(target=lambda t=t: results.append(page.editor.swap(image, SOURCE, t, steps=5)))
               for t in (BLUE, GREEN)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert len(results) == 2
    assert most[0] == 1


def page_components(page) -> list[dict]:
    """The served page's components as the browser receives them (``/config``)."""
    import json

    with urllib.request.urlopen(page.url + "config", timeout=30) as response:
        return json.loads(response.read())["components"]


def test_downloads_are_hidden_until_there_is_a_result(served):
    from ddim_edit.web.app import shown_if_set

    page, _ = served
    buttons = {c["props"]["elem_id"]: c["props"] for c in page_components(page)
               if str(c["props"].get("elem_id", "")).endswith(("-png", "-trajectory"))}
    assert len(buttons) == 8 and not any(props["visible"] for props in buttons.values())
    assert [update["visible"] for update in shown_if_set(str(RED), None)] == [True, False]
    assert all(set(update) == {"__type__", "visible"} for update in shown_if_set(str(RED)))  # the file stays


def test_the_toy_models_grammar_is_under_the_prompts(served, tmp_path):
    from ddim_edit.toy.vocabulary import GRAMMAR_HINT

    page, _ = served
    assert page.editor.prompt_hint == GRAMMAR_HINT
    hints = [c["props"]["value"] for c in page_components(page) if "prompt-hint" in c["props"].get("elem_classes", [])]
    assert len(hints) == 3 and all(GRAMMAR_HINT[1:] in hint for hint in hints)  # invert, swap, inpaint
    other = Editor(EditorSettings(model=str(tmp_path / "some-model"), workdir=tmp_path))
    assert other.prompt_hint is None
