"""The README and the documentation site: the site builds with ``mkdocs build --strict``, and every
command the pages show runs as written on the bundled toy model.

How the pages are read (``doc_blocks``):

- a ```` ```bash ```` block's ``ddim-edit …`` lines (``\\`` continuations joined, ``# comments``
  dropped) run through the click application in-process, in a temporary folder holding a copy of
  ``assets/examples``; other lines (``pip``, ``bash scripts/…``) are not run here;
- a ```` ```python ```` block is executed in that folder;
- a block preceded by ``<!-- file: NAME -->`` is written to NAME in that folder first (a manifest);
- a block preceded by ``<!-- not-run: REASON -->`` (real weights, a server, hour-long benchmarks) is
  not run, but each of its ``ddim-edit`` lines must parse: the subcommand exists and click accepts
  its options, so a misspelt flag still fails.

The only change made to a command is ``--steps 20`` where it inverts an image and names no steps
(the fewest that keep the README's swap blue on the toy model: 15 and under drift to magenta or
change the background at guidance 7.5), so the file runs in about a minute on two CPU cores.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README] + sorted(DOCS.rglob("*.md"))

FEW_STEPS = "20"
# Subcommands that invert an image given as pixels (and take --steps).
INVERTING = {"invert", "swap", "inpaint", "style", "demo"}

_MARK = re.compile(r"<!--\s*(not-run|file):\s*(.*?)\s*-->")
_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    text: str
    not_run: str | None = None  # the reason
    file: str | None = None  # write the block to this name

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


@dataclass
class Command:
    block: Block
    text: str
    args: list[str] = field(default_factory=list)  # after `ddim-edit`


def doc_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` with the marker comment on the line before each, if any."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or not m.group(2):
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        block = Block(page, start + 1, lang, "\n".join(body) + "\n")
        mark = _MARK.search(prev)
        if mark and mark.group(1) == "not-run":
            block.not_run = mark.group(2)
        elif mark:
            block.file = mark.group(2)
        blocks.append(block)
        i += 1
    return blocks


def shell_commands(block: Block) -> list[Command]:
    """The ``ddim-edit`` command lines of a bash block, continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block.text)
    commands = []
    for line in joined.splitlines():
        line = line.replace("$(which ddim-edit)", "ddim-edit")
        words = shlex.split(line, comments=True)
        if "ddim-edit" not in words:
            continue
        commands.append(Command(block, line.strip(), words[words.index("ddim-edit") + 1:]))
    return commands


def _option_value(args: list[str], *names: str) -> str | None:
    for k, a in enumerate(args):
        for name in names:
            if a == name and k + 1 < len(args):
                return args[k + 1]
            if name.startswith("--") and a.startswith(name + "="):
                return a.split("=", 1)[1]
    return None


def _positionals(cmd_args: list[str]) -> list[str]:
    """Arguments that are not options or option values (good enough for our commands)."""
    from cli.main import app

    sub = app.commands[cmd_args[0]]
    flags = {o for p in sub.params if getattr(p, "is_flag", False) or getattr(p, "count", False) for o in p.opts}
    takes_value = {o: p.nargs for p in sub.params if p.param_type_name == "option"
                   for o in p.opts if o not in flags}
    out, k, args = [], 0, cmd_args[1:]
    while k < len(args):
        a = args[k]
        if a in takes_value:
            k += 1 + max(takes_value[a], 1)
            continue
        if not a.startswith("-") or a == "-":
            out.append(a)
        k += 1
    return out


def as_run(args: list[str]) -> list[str]:
    """The command as the test runs it: ``--steps 20`` added where it inverts an image without a
    step count; nothing else changes."""
    sub = args[0]
    if sub not in INVERTING or "--steps" in args or "--timesteps" in args:
        return args
    if sub == "style":
        image_input = not str(_option_value(args, "--content")).endswith(".safetensors")
    elif sub == "inpaint":
        image_input = _option_value(args, "--trajectory") is None
    elif sub == "demo":
        image_input = True
    else:
        image_input = not _positionals(args)[0].endswith(".safetensors")
    return args + ["--steps", FEW_STEPS] if image_input else args


def expected_outputs(args: list[str]) -> list[str]:
    """Files (or folders) the command says it writes."""
    sub, out = args[0], []
    output = _option_value(args, "-o", "--output")
    if sub == "demo":
        output = output or "demo.png"
    if output:
        out.append(output)
        if "--grid" in args or sub == "demo":  # the grid is written beside the output: x.png → x.grid.png
            stem, suffix = os.path.splitext(output)
            out.append(stem + ".grid" + suffix)
    for name in ("--save-trajectory", "--save-attention"):
        if _option_value(args, name):
            out.append(_option_value(args, name))
    if sub == "batch":
        out.append(os.path.join(_option_value(args, "--out"), "results.jsonl"))
    return out


def parse_only(args: list[str]) -> None:
    """Resolve the subcommand and let click parse the options (no work is done)."""
    import click

    from cli.main import app

    sub = app.commands.get(args[0])
    assert sub is not None, f"no command `ddim-edit {args[0]}`"
    if isinstance(sub, click.Group):  # not used today; keeps nested groups parseable
        sub.make_context(args[0], args[1:], resilient_parsing=False)
        return
    sub.make_context(args[0], list(args[1:]), resilient_parsing=False)


def _workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "assets" / "examples", tmp_path / "assets" / "examples")
    return tmp_path


def run_page(page: Path, folder: Path) -> list[tuple[Command, list[str]]]:
    """Run every runnable block of ``page`` in ``folder``; return the commands run."""
    from cli.main import app

    blocks = doc_blocks(page)
    for block in blocks:
        if block.file:
            (folder / block.file).write_text(block.text, encoding="utf-8")
    ran = []
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for block in blocks:
            if block.not_run is not None or block.file:
                continue
            if block.lang in ("bash", "sh", "shell"):
                for command in shell_commands(block):
                    args = as_run(command.args)
                    result = CliRunner().invoke(app, args, prog_name="ddim-edit")
                    assert result.exit_code == 0, (
                        f"{block.where}: `{command.text}` exited {result.exit_code}\n{result.output}"
                        f"{getattr(result, 'stderr', '')}\n{result.exception!r}")
                    for path in expected_outputs(args):
                        assert (folder / path).exists(), f"{block.where}: `{command.text}` did not write {path}"
                    ran.append((command, args))
            elif block.lang == "python":
                code = compile(block.text, block.where, "exec")
                exec(code, {"__name__": "__docs__"})  # noqa: S102 - the documentation's own example
    finally:
        os.chdir(cwd)
    return ran


def read(path: Path):
    from ddim_edit.toy.reader import read_scene

    return read_scene(np.asarray(Image.open(path).convert("RGB")))


# --- the site ------------------------------------------------------------------------------------


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install '.[docs]')")
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    assert (site / "index.html").exists()
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for name in ("invert", "reconstruct", "swap", "inpaint", "style", "batch", "serve"):
        assert f"ddim-edit {name}" in cli, f"the CLI reference lacks `ddim-edit {name}`"
    assert "run_request" in (site / "reference" / "api" / "jobs" / "index.html").read_text(encoding="utf-8")


def test_every_page_in_the_nav_exists():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for rel in re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, flags=re.M):
        assert (DOCS / rel).exists(), rel


# --- the README ----------------------------------------------------------------------------------


def test_readme_is_a_newcomers_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 16 * 1024, f"README.md is {len(text.encode())} bytes (at most 16 KB)"
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    for sub in ("invert", "reconstruct", "swap", "inpaint", "style", "batch", "serve"):
        assert f"ddim-edit {sub}" in text, f"the README has no `ddim-edit {sub}` example"
    for family in ("SD 1.x", "v-prediction", "SDXL", "SD 3.x", "FLUX"):
        assert family in text


def test_pictures_and_links_exist():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_readme_commands_run_as_written(tmp_path):
    folder = _workdir(tmp_path)
    ran = run_page(README, folder)
    subs = {args[0] for _, args in ran}
    assert {"invert", "reconstruct", "swap", "inpaint", "style", "batch"} <= subs, subs

    # The swap example's output is the circle, blue; the rest of the scene unchanged.
    swapped = read(folder / "blue.png")
    assert (swapped.color, swapped.shape, swapped.fill, swapped.background) == ("blue", "circle", "solid", "white")
    # The inpaint example restores the solid red circle.
    restored = read(folder / "restored.png")
    assert (restored.color, restored.shape, restored.fill, restored.background) == ("red", "circle", "solid", "white")
    # The style example: the content's circle in the style image's blue.
    styled = read(folder / "styled.png")
    assert (styled.shape, styled.color) == ("circle", "blue")
    # The Python example's swap, and the batch's.
    assert read(folder / "red-circle-blue.png").color == "blue"
    assert read(folder / "results" / "blue-circle.png").color == "blue"
    assert read(folder / "results" / "yellow-square.png").color == "yellow"


def _runs_something(page: Path) -> bool:
    return any(b.not_run is None and not b.file and (b.lang == "python" or (b.lang in ("bash", "sh", "shell")
               and shell_commands(b))) for b in doc_blocks(page))


DOC_PAGES = [p for p in PAGES if p != README and _runs_something(p)]


@pytest.mark.parametrize("page", DOC_PAGES, ids=[str(p.relative_to(DOCS)) for p in DOC_PAGES])
def test_docs_commands_run_as_written(page, tmp_path):
    ran = run_page(page, _workdir(tmp_path))
    blocks = [b for b in doc_blocks(page) if b.not_run is None and not b.file and b.lang != "python"]
    assert len(ran) == sum(len(shell_commands(b)) for b in blocks)


def test_not_run_commands_parse():
    """Blocks that need weights, a server or hours are not run, but their commands must parse."""
    import click

    checked = 0
    for page in PAGES:
        for block in doc_blocks(page):
            if block.lang not in ("bash", "sh", "shell"):
                continue
            for command in shell_commands(block):
                try:
                    parse_only(command.args)
                except click.UsageError as exc:
                    pytest.fail(f"{block.where}: `{command.text}`: {exc.format_message()}")
                checked += 1
    assert checked >= 10


def test_not_run_blocks_say_why():
    for page in PAGES:
        for block in doc_blocks(page):
            if block.not_run is not None:
                assert block.not_run, f"{block.where}: say why the block is not run"


def test_parser_of_the_pages(tmp_path):
    """The helpers themselves: continuations, markers and the few-steps rule."""
    page = tmp_path / "probe.md"
    page.write_text('<!-- not-run: weights -->\n```bash\nddim-edit swap a.png -t "x y" \\\n    -o b.png --grid\n```\n'
                    '\n```bash\nddim-edit reconstruct a.traj.safetensors -o r.png\n```\n', encoding="utf-8")
    blocks = doc_blocks(page)
    assert [b.not_run for b in blocks] == ["weights", None]
    (cmd,) = shell_commands(blocks[0])
    assert cmd.args == ["swap", "a.png", "-t", "x y", "-o", "b.png", "--grid"]
    assert as_run(cmd.args)[-2:] == ["--steps", FEW_STEPS]
    assert expected_outputs(cmd.args) == ["b.png", "b.grid.png"]
    (rec,) = shell_commands(blocks[1])
    assert as_run(rec.args) == rec.args
    assert as_run(["swap", "t.traj.safetensors", "-t", "x"]) == ["swap", "t.traj.safetensors", "-t", "x"]


# --- behaviour the pages describe ----------------------------------------------------------------


def test_toy_model_warns_about_words_it_never_saw(tmp_path):
    """docs/toy-model.md: an unknown word gives one warning line on stderr (the edit still runs)."""
    from cli.main import app

    folder = _workdir(tmp_path)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(app, ["invert", "assets/examples/red-circle.png", "--prompt", "a cat on a sofa",
                                          "-o", "cat.traj.safetensors", "--steps", "4", "-q"], prog_name="ddim-edit")
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    stderr = result.stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "'cat'" in warnings[0] and "'sofa'" in warnings[0], stderr


def test_help_shows_the_toy_grammar():
    from cli.main import app

    result = CliRunner().invoke(app, ["swap", "--help"], prog_name="ddim-edit")
    assert result.exit_code == 0
    assert "striped" in result.output and "background" in result.output, result.output
