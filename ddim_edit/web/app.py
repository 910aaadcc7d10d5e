"""The Gradio page over an :class:`~.editor.Editor`: one tab per edit, results beside the source.

Tabs: *Invert & reconstruct*, *Prompt swap* (with per-token cross-attention heat maps), *Inpaint*
(paint the mask on the image, or upload one) and *Style*. Each shows the pictures side by side,
the numbers (UNet evaluations, seconds, whether the inversion came from the cache; PSNR where it
means something: the reconstruction's, and inpaint's outside the mask) and, once there is a result,
downloads of the PNG and of the trajectory. With the bundled toy model, the tabs with prompts say
which captions it knows.

Every event shares one queue slot (``concurrency_id="model"``, limit 1), so requests run one after
another on the shared model; a library error becomes a one-line ``gr.Error`` — the line the CLI
prints after ``Error:``. Progress bars of the sampler show in the page (``track_tqdm``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from ..edits.flowedit import FLOWEDIT, FlowEditOptions
from ..edits.prompt_swap import SwapOptions
from ..edits.style import StyleOptions
from ..errors import DdimEditError
from ..inversion import METHODS
from ..json_output import json_safe
from ..masks import MaskOptions
from ..model import assets_dir
from ..options import spec_for
from . import forms
from .editor import Editor, PageResult
from .messages import one_line
from .offline import quiet_gradio

quiet_gradio()
import gradio as gr  # noqa: E402  (after the environment that keeps it offline)

PROGRESS = gr.Progress(track_tqdm=True)
"""Sampler progress bars (tqdm) shown in the page."""
QUEUE = "model"
"""The one concurrency group of every event: the shared model runs one request at a time."""

CSS = """
.pixels img { image-rendering: pixelated; object-fit: contain; width: 100%; height: 100%; }
"""

SOURCE_EXAMPLE = "a solid red circle on a white background"
TARGET_EXAMPLE = "a solid blue circle on a white background"


def _page_error(exc: DdimEditError) -> gr.Error:
    return gr.Error(one_line(exc), title="Error", duration=None, print_exception=False)  # stays until closed


def _guarded(work: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """Run ``work``; a library error → the CLI's one line in the page's error toast.

    ``work``'s signature is kept (Gradio reads its ``gr.Progress`` default from it).
    """
    @functools.wraps(work)
    def run(*args: Any, **kwargs: Any) -> list[Any]:
        try:
            return work(*args, **kwargs)
        except DdimEditError as exc:
            raise _page_error(exc) from None
    return run


def _picture(label: str, elem_id: str, height: int = 224) -> gr.Image:
    return gr.Image(label=label, type="numpy", format="png", interactive=False, height=height, elem_id=elem_id,
                    elem_classes=["pixels"], buttons=["download", "fullscreen"])


def _upload(label: str, elem_id: str) -> gr.Image:
    """An RGB image input (upload or paste), shown pixel-exact."""
    return gr.Image(label=label, type="numpy", image_mode="RGB", format="png", sources=["upload", "clipboard"],
                    height=224, elem_classes=["pixels"], elem_id=elem_id)


def _settings_row(prefix: str, editor: Editor, method: str, edit_methods: tuple[str, ...] = ()
                  ) -> tuple[gr.Dropdown, gr.Slider, gr.Number]:
    """The method (an inversion method, or one of ``edit_methods``), steps and guidance of a tab."""
    with gr.Row():
        chosen = gr.Dropdown([*METHODS, *edit_methods], value=method,
                             label="Method" if edit_methods else "Inversion method", elem_id=f"{prefix}-method")
        steps = gr.Slider(1, max(200, editor.settings.steps), value=editor.settings.steps, step=1, label="Steps",
                          elem_id=f"{prefix}-steps")
        guidance = gr.Number(value=editor.default_guidance, label="Guidance", minimum=0, elem_id=f"{prefix}-guidance")
    return chosen, steps, guidance


def _option_field(options: type, name: str, elem_id: str, **changes: Any) -> gr.components.Component:
    """The widget of a declared option (:mod:`ddim_edit.options`): its label, range and placeholder from
    the declaration's ``web``, its default and choices from the field (``changes`` override them)."""
    spec = spec_for(options, name)
    plain = isinstance(spec.default, (bool, int, float, str))  # not None, a word list or a dict
    settings = {"value": spec.default if plain else "", "elem_id": elem_id,
                **(spec.web or {}), **changes}
    if spec.default is None and spec.kind in (int, float):  # blank: the default the help names
        return gr.Number(**{**settings, "value": None}, minimum=spec.minimum,
                         precision=0 if spec.kind is int else None, info=spec.help)
    if spec.choices:
        return gr.Radio(list(spec.choices), **settings)
    if spec.kind is bool:
        return gr.Checkbox(**settings)
    if spec.kind is float:
        return gr.Slider(**settings)
    if spec.kind is int:
        return gr.Number(minimum=spec.minimum, precision=0, **settings)
    return gr.Textbox(**settings)


def _prompt_hint(editor: Editor, prefix: str) -> None:
    """The model's caption grammar under the prompt fields (the toy model only)."""
    hint = editor.prompt_hint
    if hint:
        gr.Markdown(f"<small>{hint[0].upper()}{hint[1:]}.</small>", elem_id=f"{prefix}-hint",
                    elem_classes=["prompt-hint"])


def shown_if_set(*files: str | None) -> list[dict[str, Any]]:
    """Each download button shown when a run gave it a file, else hidden."""
    return [gr.update(visible=bool(path)) for path in files]


class ResultPanel:
    """Pictures side by side, the numbers and the two downloads of one tab."""

    def __init__(self, prefix: str, labels: tuple[str, ...], attention: bool = False) -> None:
        with gr.Row(equal_height=True):
            self.pictures = [_picture(label.capitalize(), f"{prefix}-{label}") for label in labels]
        self.summary = gr.Markdown(label="Summary", elem_id=f"{prefix}-summary")
        with gr.Row():
            # hidden until a run gives them a file (see run_on)
            self.png = gr.DownloadButton("Download PNG", elem_id=f"{prefix}-png", size="md", visible=False)
            self.trajectory = gr.DownloadButton("Download trajectory (.safetensors)", elem_id=f"{prefix}-trajectory",
                                                size="md", visible=False)
        self.attention = None
        if attention:
            self.attention = gr.Gallery(label="Cross-attention per token (source row, then target row)", columns=8,
                                        height="auto", format="png", elem_id=f"{prefix}-attention",
                                        elem_classes=["pixels"], object_fit="contain")
        with gr.Accordion("Numbers", open=False):
            self.numbers = gr.JSON(label="Numbers", elem_id=f"{prefix}-numbers")
        self.labels = labels

    @property
    def outputs(self) -> list[gr.components.Component]:
        extra = [self.attention] if self.attention is not None else []
        return [*self.pictures, *extra, self.summary, self.numbers, self.png, self.trajectory]

    def values(self, result: PageResult) -> list[Any]:
        extra = [result.attention] if self.attention is not None else []
        return [*(result.pictures.get(label) for label in self.labels), *extra, result.summary(),
                json_safe(result.numbers), str(result.image_file) if result.image_file else None,
                str(result.trajectory_file) if result.trajectory_file else None]

    def run_on(self, button: gr.Button, work: Callable[..., list[Any]], inputs: list[Any], api_name: str) -> None:
        """``button`` runs ``work`` (one request at a time on the model) into this panel; then the downloads
        that got a file show (a page-only step, not part of the API)."""
        downloads = [self.png, self.trajectory]
        run = button.click(_guarded(work), inputs, self.outputs, api_name=api_name, concurrency_limit=1,
                           concurrency_id=QUEUE)
        run.success(shown_if_set, downloads, downloads, api_visibility="private", queue=False)


def _examples_dir():
    return assets_dir() / "examples"


def build_app(editor: Editor) -> gr.Blocks:
    """The page (call ``.queue()``/``.launch()``, or use :func:`ddim_edit.web.server.start`)."""
    examples = _examples_dir()
    with gr.Blocks(title="ddim-edit", analytics_enabled=False) as page:
        gr.Markdown(f"## ddim-edit — edit real images through exact DDIM inversion\n"
                    f"Model **{editor.model_name}**. An image is inverted once per (image, prompt, method, steps, "
                    f"guidance); trying another target, mask or guidance on the same inversion reuses it.")
        with gr.Tabs():
            # -------------------------------------------------------------- invert & reconstruct
            with gr.Tab("Invert & reconstruct", id="invert"):
                with gr.Row():
                    with gr.Column():
                        image = _upload("Image", "invert-image")
                    with gr.Column():
                        prompt = gr.Textbox(label="Prompt (the image's caption; empty: unconditional)",
                                            value=SOURCE_EXAMPLE, elem_id="invert-prompt")
                        _prompt_hint(editor, "invert")
                        method, steps, guidance = _settings_row("invert", editor, "exact")
                        run = gr.Button("Invert & reconstruct", variant="primary", elem_id="invert-run")
                panel = ResultPanel("invert", ("source", "reconstruction"))

                def invert(image, prompt, method, steps, guidance, progress=PROGRESS):
                    return panel.values(editor.invert_reconstruct(image, prompt, method, steps, guidance))
                panel.run_on(run, invert, [image, prompt, method, steps, guidance], "invert")
                if examples.is_dir():
                    gr.Examples([[str(examples / "red-circle.png"), SOURCE_EXAMPLE],
                                 [str(examples / "striped-blue-star.png"),
                                  "a striped blue star on a white background"]],
                                [image, prompt], label="Examples")

            # -------------------------------------------------------------- prompt swap
            with gr.Tab("Prompt swap", id="swap"):
                with gr.Row():
                    with gr.Column():
                        image = _upload("Image", "swap-image")
                    with gr.Column():
                        source = gr.Textbox(label="Source prompt (the image's caption)", value=SOURCE_EXAMPLE,
                                            elem_id="swap-source")
                        target = gr.Textbox(label="Target prompt", value=TARGET_EXAMPLE, elem_id="swap-target")
                        _prompt_hint(editor, "swap")
                        with gr.Row():
                            mode = _option_field(SwapOptions, "mode", "swap-mode")
                            local_blend = gr.Checkbox(True, label="Local blend (keep the source outside the edit)",
                                                      elem_id="swap-local-blend")
                        with gr.Row():
                            blend_words = _option_field(SwapOptions, "blend_words", "swap-blend")
                            reweight = _option_field(SwapOptions, "reweight", "swap-reweight")
                        with gr.Row():
                            cross = _option_field(SwapOptions, "cross_steps", "swap-cross")
                            self_steps = _option_field(SwapOptions, "self_steps", "swap-self")
                        method, steps, guidance = _settings_row("swap", editor, "exact", (FLOWEDIT,))
                        with gr.Accordion("FlowEdit (method flowedit: no inversion, no attention control)",
                                          open=False, elem_id="swap-flowedit"):
                            with gr.Row():
                                flowedit = [_option_field(FlowEditOptions, name, f"swap-{name.replace('_', '-')}")
                                            for name in ("n_max", "n_min", "n_avg")]
                            with gr.Row():
                                flowedit += [_option_field(FlowEditOptions, name, f"swap-{name.replace('_', '-')}")
                                             for name in ("source_guidance", "target_guidance")]
                        run = gr.Button("Swap", variant="primary", elem_id="swap-run")
                panel_swap = ResultPanel("swap", ("source", "reconstruction", "edit"), attention=True)

                def swap(image, source, target, mode, local_blend, blend_words, reweight, cross, self_steps,
                         method, steps, guidance, n_max, n_min, n_avg, source_guidance, target_guidance,
                         progress=PROGRESS):
                    return panel_swap.values(editor.swap(image, source, target, mode, local_blend, blend_words,
                                                         reweight, cross, self_steps, guidance, method, steps,
                                                         n_max, n_min, n_avg, source_guidance, target_guidance))
                panel_swap.run_on(run, swap, [image, source, target, mode, local_blend, blend_words, reweight, cross,
                                              self_steps, method, steps, guidance, *flowedit], "swap")
                if examples.is_dir():
                    gr.Examples([[str(examples / "red-circle.png"), SOURCE_EXAMPLE, TARGET_EXAMPLE],
                                 [str(examples / "red-circle.png"), SOURCE_EXAMPLE,
                                  "a solid red square on a white background"]],
                                [image, source, target], label="Examples")

            # -------------------------------------------------------------- inpaint
            with gr.Tab("Inpaint", id="inpaint"):
                with gr.Row():
                    with gr.Column():
                        canvas = gr.ImageEditor(label="Image — paint the region to regenerate", type="numpy",
                                                image_mode="RGBA", format="png", sources=["upload", "clipboard"],
                                                brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"),
                                                layers=False, transforms=(), height=320, elem_id="inpaint-editor")
                        mask = gr.Image(label="…or upload a mask (white = regenerate; replaces the painting)",
                                        type="numpy", image_mode="L", format="png", sources=["upload"], height=160,
                                        elem_id="inpaint-mask")
                    with gr.Column():
                        source = gr.Textbox(label="Source prompt (the image's caption)", value=SOURCE_EXAMPLE,
                                            elem_id="inpaint-source")
                        fill = gr.Textbox(label="Prompt for the region (empty: restore with the source prompt)",
                                          value="",
                                          elem_id="inpaint-prompt")
                        _prompt_hint(editor, "inpaint")
                        with gr.Row():
                            dilate = _option_field(MaskOptions, "dilate", "inpaint-dilate")
                            # the library's default (None) is one latent cell; a blank browser field would send 0
                            feather = _option_field(MaskOptions, "feather", "inpaint-feather",
                                                    value=editor.load().vae_scale_factor)
                            seed = gr.Number(0, label="Seed", precision=0, elem_id="inpaint-seed")
                        method, steps, guidance = _settings_row("inpaint", editor, "ddim")
                        run = gr.Button("Inpaint", variant="primary", elem_id="inpaint-run")
                panel_inpaint = ResultPanel("inpaint", ("source", "mask", "inpainted"))

                def inpaint(canvas, mask, source, fill, dilate, feather, seed, method, steps, guidance,
                            progress=PROGRESS):
                    painted = forms.painted_mask(canvas, mask)
                    background = forms.editor_background(canvas)
                    return panel_inpaint.values(editor.inpaint(background, painted, source, fill, dilate, feather,
                                                               method, steps, guidance, seed))
                panel_inpaint.run_on(run, inpaint, [canvas, mask, source, fill, dilate, feather, seed, method, steps,
                                                    guidance], "inpaint")
                if examples.is_dir():
                    gr.Examples([[str(examples / "red-circle.png"), str(examples / "red-circle-mask.png"),
                                  SOURCE_EXAMPLE, TARGET_EXAMPLE]], [canvas, mask, source, fill], label="Examples")

            # -------------------------------------------------------------- style
            with gr.Tab("Style", id="style"):
                with gr.Row():
                    content = _upload("Content", "style-content")
                    style = _upload("Style", "style-style")
                    with gr.Column():
                        gamma = _option_field(StyleOptions, "gamma", "style-gamma")
                        temperature = _option_field(StyleOptions, "temperature", "style-temperature")
                        adain = _option_field(StyleOptions, "adain", "style-adain")
                        steps = gr.Slider(1, max(200, editor.settings.steps), value=editor.settings.steps, step=1,
                                          label="Steps", elem_id="style-steps")
                        run = gr.Button("Transfer style", variant="primary", elem_id="style-run")
                panel_style = ResultPanel("style", ("content", "style", "output"))

                def transfer(content, style, gamma, temperature, adain, steps, progress=PROGRESS):
                    return panel_style.values(editor.style(content, style, gamma, temperature, adain, steps))
                panel_style.run_on(run, transfer, [content, style, gamma, temperature, adain, steps], "style")
                if examples.is_dir():
                    gr.Examples([[str(examples / "red-circle.png"), str(examples / "striped-blue-star.png")]],
                                [content, style], label="Examples")
    page.queue(default_concurrency_limit=1, max_size=32)
    return page
