"""The bench harness: `bench recon` on the bundled model through the CLI, JSON and grids."""

import pytest

from ddim_edit.bench.harness import load_suite
from ddim_edit.errors import DdimEditError


def test_unknown_suite_is_a_clear_error():
    with pytest.raises(DdimEditError, match="unknown bench suite"):
        load_suite("nope")
