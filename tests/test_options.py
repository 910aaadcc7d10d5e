"""Each option is declared once (ddim_edit.options); the CLI, batch manifests and the web page read it."""

from __future__ import annotations

import dataclasses
import json

import click
import pytest
from click.testing import CliRunner

from cli.common import click_options
from ddim_edit.edits.inpaint import InpaintOptions
from ddim_edit.edits.prompt_swap import SwapOptions
from ddim_edit.edits.style import StyleOptions
from ddim_edit.jobs import EDIT_SPECS, ReconstructRequest
from ddim_edit.jobs.manifest import ManifestError, edit_keys, manifest_keys, read_manifest
from ddim_edit.jobs.requests import DEFAULT_GUIDANCE
from ddim_edit.masks import MaskOptions
from ddim_edit.model import assets_dir
from ddim_edit.options import from_values, option, option_specs, spec_for

from tests.cli_helpers import one_line_error, run

SOURCE = "a solid red circle on a white background"
TARGET = "a solid blue circle on a white background"
EDIT_CLASSES = [(edit, cls) for edit, spec in EDIT_SPECS.items() for cls in spec.options]


def command(edit: str) -> click.Command:
    from cli.main import app

    return app.commands[edit]


REQUIRED_ARGS = {"reconstruct": ["a.traj.safetensors"], "swap": ["image.png", "-t", TARGET],
                 "inpaint": ["image.png", "-m", "mask.png"], "style": ["--content", "a.png", "--style", "b.png", "-o", "c.png"]}
REQUIRED_FIELDS = {ReconstructRequest: {"source": "a.traj.safetensors"}}  # fields without a default


def cli_defaults(edit: str) -> dict:
    """What the command's callback gets when no option flag is given."""
    return command(edit).make_context(edit, list(REQUIRED_ARGS[edit])).params


@pytest.mark.parametrize("edit, cls", EDIT_CLASSES, ids=[cls.__name__ for _, cls in EDIT_CLASSES])
def test_every_declared_option_is_a_flag_and_a_manifest_key_with_the_library_default(edit, cls):
    specs = option_specs(cls)
    assert specs, f"{cls.__name__} declares no option"
    params = {param.name: param for param in command(edit).params}
    for spec in specs:
        assert spec.flag in params[spec.key].opts and spec.key in edit_keys(EDIT_SPECS[edit])
        assert params[spec.key].help.startswith(spec.help.split("{default}")[0])
        if spec.off_key:
            assert spec.off_key in params and spec.off_key in edit_keys(EDIT_SPECS[edit])
    # no flag given: the CLI's values become the library's defaults; an empty manifest line too
    required = REQUIRED_FIELDS.get(cls, {})
    assert from_values(cls, cli_defaults(edit), cli=True, **required) == cls(**required)
    assert from_values(cls, {}, parsed=True, **required) == cls(**required)


def test_fields_without_a_declaration_are_not_options():
    names = {spec.name for spec in option_specs(SwapOptions)}
    assert "keep_maps" not in names and "self_max_tokens" not in names and "blend_words" in names
    assert "--keep-maps" not in {opt for param in command("swap").params for opt in param.opts}


def test_the_cli_guidance_default_is_the_job_layers():
    for edit in ("swap", "inpaint", "invert", "bench"):
        [guidance] = [param for param in command(edit).params if param.name == "guidance"]
        assert guidance.default == DEFAULT_GUIDANCE


@pytest.mark.parametrize("flag, value", [("--blend-change", "60,20"), ("--blend-change", "20"),
                                         ("--late-guidance", "0.5"), ("--mask-guidance", "x"),
                                         ("--reweight", "blue"), ("--cross-steps", "x"), ("--cross-steps", "red=z")])
def test_a_bad_value_gives_the_same_line_from_the_cli_and_from_a_manifest(tmp_path, flag, value):
    image = assets_dir() / "examples" / "red-circle.png"
    result = run("swap", image, "-s", SOURCE, "-t", TARGET, flag, value, "-o", tmp_path / "out.png", "-q")
    one_line_error(result)
    cli_line = result.stderr.strip().removeprefix("Error: ")
    key = flag[2:].replace("-", "_")
    line = {"edit": "swap", "image": str(image), "source_prompt": SOURCE, "target_prompt": TARGET, key: value}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(tmp_path / "jobs.jsonl", tmp_path / "out")
    assert str(caught.value) == "jobs.jsonl line 1: " + cli_line.replace(flag, key)
    assert not (tmp_path / "out.png").exists()


def test_an_option_and_its_off_flag_contradict_each_other_in_both_front_ends(tmp_path):
    image = assets_dir() / "examples" / "red-circle.png"
    result = run("swap", image, "-s", SOURCE, "-t", TARGET, "--blend", "circle", "--no-blend", "-o", tmp_path / "o.png")
    one_line_error(result, "--no-blend and --blend contradict each other")
    line = {"edit": "swap", "image": str(image), "target_prompt": TARGET, "blend": ["circle"], "no_blend": True}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(ManifestError, match="jobs.jsonl line 1: no_blend and blend contradict each other"):
        read_manifest(tmp_path / "jobs.jsonl", tmp_path / "out")


def test_the_cli_and_a_manifest_give_the_same_options():
    flags = ["--mode", "refine", "--blend", "circle", "--blend", "square", "--blend-change", "off", "--reweight",
             "blue=2", "--cross-steps", "0.7", "--cross-steps", "blue=0.2", "--late-guidance", "2",
             "--guidance-steps", "0.5", "--blend-latents"]
    seen = {}

    @click.command()
    @click_options(SwapOptions)
    def probe(**values):
        seen["options"] = from_values(SwapOptions, values, cli=True)

    result = CliRunner().invoke(probe, flags)
    assert result.exit_code == 0, result.output
    fields = {key: edit_keys(EDIT_SPECS["swap"])[key](value, key) for key, value in {
        "mode": "refine", "blend": "circle square", "blend_change": "off", "reweight": {"blue": 2},
        "cross_steps": "0.7,blue=0.2", "late_guidance": 2, "guidance_steps": 0.5, "blend_latents": True}.items()}
    assert from_values(SwapOptions, fields, parsed=True) == seen["options"] == SwapOptions(
        mode="refine", blend_words=("circle", "square"), blend_change=None, reweight={"blue": 2.0},
        cross_steps={"default": 0.7, "blue": 0.2}, late_guidance=2.0, guidance_steps=0.5, blend_latents=True)


def test_negated_flags_and_multi_field_options_map_to_their_fields():
    inpaint = from_values(InpaintOptions, {"no_paste": True, "blend": "fresh", "hole_noise": "fresh"}, cli=True)
    assert (inpaint.paste, inpaint.known, inpaint.hole_start) == (False, "fresh", "fresh")
    mask = from_values(MaskOptions, {"invert_mask": True, "mask_threshold": 0.25}, cli=True)
    assert (mask.invert, mask.threshold) == (True, 0.25)
    style = from_values(StyleOptions, {"injection_window": (0.1, 0.9), "no_adain": True, "structure_layers": "none",
                                       "layers": "styleid"}, cli=True)
    assert (style.injection_start, style.injection_end, style.adain, style.structure_layers, style.layers) == (
        0.1, 0.9, False, (), None)
    assert spec_for(StyleOptions, "injection_start").default == (0.0, 1.0)


def test_adding_an_option_is_one_field():
    """A new swap option declared on a dataclass reaches the CLI's flags, the manifest's keys and the options."""
    extended = dataclasses.make_dataclass(
        "ExtendedSwapOptions",
        [("blend_sharpness", float, option(2.0, minimum=0.0, help="Sharpen the blend mask by this factor."))],
        bases=(SwapOptions,), frozen=True)
    seen = {}

    @click.command()
    @click_options(extended)
    def probe(**values):
        seen["options"] = from_values(extended, values, cli=True)

    help_text = CliRunner().invoke(probe, ["--help"], terminal_width=200).output
    assert "--blend-sharpness NUMBER" in help_text and "Sharpen the blend mask by this factor.  [default: 2.0]" in help_text
    assert CliRunner().invoke(probe, ["--blend-sharpness", "3"]).exit_code == 0
    assert seen["options"].blend_sharpness == 3.0 and seen["options"].mode == "replace"
    refused = CliRunner().invoke(probe, ["--blend-sharpness", "-1"])
    assert refused.exit_code != 0 and "out of range" in refused.output

    keys = manifest_keys(extended)
    assert set(keys) == set(manifest_keys(SwapOptions)) | {"blend_sharpness"}
    assert from_values(extended, {"blend_sharpness": keys["blend_sharpness"]("4", "blend_sharpness")},
                       parsed=True).blend_sharpness == 4.0
    with pytest.raises(ManifestError, match="blend_sharpness must be ≥ 0"):
        keys["blend_sharpness"](-1, "blend_sharpness")


def test_the_web_page_reads_labels_and_defaults_from_the_declarations():
    gr = pytest.importorskip("gradio")
    from ddim_edit.web.app import _option_field

    with gr.Blocks():
        cross = _option_field(SwapOptions, "cross_steps", "probe-cross")
        mode = _option_field(SwapOptions, "mode", "probe-mode")
        adain = _option_field(StyleOptions, "adain", "probe-adain")
        dilate = _option_field(MaskOptions, "dilate", "probe-dilate")
    assert isinstance(cross, gr.Slider) and cross.value == SwapOptions.cross_steps
    assert cross.label == spec_for(SwapOptions, "cross_steps").web["label"]
    assert isinstance(mode, gr.Radio) and mode.value == SwapOptions.mode
    assert [choice[0] for choice in mode.choices] == list(spec_for(SwapOptions, "mode").choices)
    assert isinstance(adain, gr.Checkbox) and adain.value is StyleOptions.adain
    assert isinstance(dilate, gr.Number) and dilate.value == MaskOptions.dilate and dilate.minimum == 0
