"""Packaging (setup.py, MANIFEST.in): the wheel carries the bundled model and a non-editable install runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from PIL import Image

from ddim_edit.model import assets_dir


ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- 9. packaging
def _build_wheel(tmp_path: Path) -> Path:
    """Build the project's wheel from a copy of the sources (no build/ or egg-info in the checkout)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ddim_edit", "cli", "benchmarks", "assets"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    dist = tmp_path / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", ".", "-w", str(dist)], cwd=source, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = dist.glob("ddim_edit-*.whl")
    return wheel


def test_the_wheel_carries_the_bundled_model_and_examples(tmp_path):
    import zipfile

    names = set(zipfile.ZipFile(_build_wheel(tmp_path)).namelist())
    for folder in ("toy-model", "toy-flow-model"):
        model = assets_dir() / folder
        files = [path for path in model.rglob("*") if path.is_file()]
        assert any(path.name == "model_index.json" for path in files)
        for path in files:
            assert f"ddim_edit/assets/{folder}/{path.relative_to(model).as_posix()}" in names
    assert "ddim_edit/assets/examples/red-circle.png" in names
    assert "ddim_edit/model.py" in names and "cli/main.py" in names


@pytest.mark.slow
def test_a_non_editable_install_runs_the_demo(tmp_path):
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # The dependencies come from the running environment (itself often a venv, which
    # --system-site-packages would skip): its site-packages as a plain path, so its .pth files (an
    # editable ddim-edit among them) stay inactive and only the wheel provides ddim_edit.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "parent-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DDIM_EDIT_ASSETS", "PYTHONPATH")}
    env["HF_HUB_OFFLINE"] = "1"
    where = subprocess.run([str(python), "-c", "import ddim_edit.model as m; print(m.__file__); print(m.assets_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    module, assets = where.stdout.split()
    assert module.startswith(str(venv)) and assets.startswith(str(venv)), where.stdout  # the installed copy
    done = subprocess.run([str(venv / "bin" / "ddim-edit"), "demo", "-o", str(elsewhere / "d.png"), "--steps", "4", "-q"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert Image.open(elsewhere / "d.png").format == "PNG"
