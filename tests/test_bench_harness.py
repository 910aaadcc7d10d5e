"""The bench harness (ddim_edit/bench/harness.py): suites by name, --out and its grids, suite options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from ddim_edit.bench.harness import load_suite
from ddim_edit.errors import DdimEditError
from tests.cli_helpers import run
from tests.output_helpers import refused


def test_unknown_suite_is_a_clear_error():
    with pytest.raises(DdimEditError, match="unknown bench suite"):
        load_suite("nope")


def test_suite_option_lists_match_the_suites():
    from ddim_edit.bench import harness

    for name in harness.SUITES:
        source = Path(harness.__file__).with_name(f"{name}.py").read_text()
        read = set(re.findall(r"\b(?:opts|options|ctx\.options)\.get\(\"(\w+)\"", source))
        assert read == set(harness.SUITE_OPTIONS[name]), (name, read)


# ---------------------------------------------------------------------- 1. bench --out
def test_bench_does_not_overwrite_grids_without_force(tmp_path):
    out = tmp_path / "grids"
    out.mkdir()
    earlier = out / "recon-0000-ddim.png"
    earlier.write_bytes(b"results of an earlier run")
    args = ("bench", "recon", "--n", "1", "--steps", "4", "--method", "ddim", "--out", out, "-q")
    refused(tmp_path, args, "recon-0000-ddim.png", "already exist", "--force")
    forced = run(*args, "--force")
    assert forced.exit_code == 0, forced.output
    assert Image.open(earlier).format == "PNG"  # replaced by this run's grid


def test_bench_out_that_is_a_file(tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    refused(tmp_path, ("bench", "recon", "--n", "1", "--steps", "4", "--out", existing, "-q"),
            "is a file, not a folder")
