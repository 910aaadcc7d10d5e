"""Build hook: ship the bundled toy model and example images inside the wheel.

The model lives in ``assets/`` at the top of the source tree (where training writes it and the
README points). A regular (non-editable) install has no source tree, so ``build_py`` copies
``assets/toy-model``, ``assets/toy-flow-model`` and ``assets/examples`` into the package as ``ddim_edit/assets/``, where
:func:`ddim_edit.model.assets_dir` finds them. Everything else is configured in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("toy-model", "toy-flow-model", "examples")  # sub-folders of assets/ that installs need


class BuildWithAssets(build_py):
    """build_py that also copies the bundled assets into ``<build>/ddim_edit/assets``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # editable installs read assets/ from the checkout
            return
        for name in BUNDLED:
            source = Path("assets") / name
            if not source.is_dir():
                raise SystemExit(f"error: {source} is missing; build from a full checkout (the wheel must carry it)")
            self.copy_tree(str(source), str(Path(self.build_lib) / "ddim_edit" / "assets" / name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            for name in BUNDLED:
                for path in sorted((Path("assets") / name).rglob("*")):
                    if path.is_file():
                        outputs.append(str(Path(self.build_lib) / "ddim_edit" / path))
        return outputs


setup(cmdclass={"build_py": BuildWithAssets})
