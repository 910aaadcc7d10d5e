"""The ``ddim-edit`` app (cli/main.py): help with examples and the toy grammar, usage errors in one line."""

from __future__ import annotations

import pytest

from tests.cli_helpers import run


def test_help_has_examples():
    for name in ("invert", "reconstruct", "bench"):
        result = run(name, "--help")
        assert result.exit_code == 0 and "Example" in result.output


@pytest.mark.parametrize("name", ["invert", "swap", "inpaint", "style", "demo", "batch"])
def test_help_names_the_toy_model_grammar(name):
    from ddim_edit.toy.vocabulary import GRAMMAR_HINT

    assert GRAMMAR_HINT[1:] in " ".join(run(name, "--help").output.split())


@pytest.mark.parametrize("args, fragment", [
    (["swap", "--foo"], "see 'ddim-edit swap --help'"), (["batch", "jobs.jsonl"], "Missing option '--out'"),
    (["nosuch"], "see 'ddim-edit --help'"), (["swap", "a.png", "--mode", "bogus"], "'--mode'"),
])
def test_usage_errors_are_one_line_with_exit_code_2(args, fragment):
    result = run(*args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert fragment in lines[0] and "--help'" in lines[0]
