"""Library errors (ddim_edit/errors.py): fields rendered per caller, and messages that name no CLI flag."""

from __future__ import annotations

import re
from pathlib import Path

from ddim_edit.errors import DdimEditError, ScheduleError


# ---------------------------------------------------------------------- 12. fields → flags
def test_errors_carry_fields_rendered_per_caller():
    error = ScheduleError("{field} must be a positive integer, got 0; e.g. {field}=50", field="num_steps")
    assert str(error) == "num_steps must be a positive integer, got 0; e.g. num_steps=50"
    assert error.render("--steps") == "--steps must be a positive integer, got 0; e.g. --steps=50"
    assert str(DdimEditError("plain {field} text")) == "plain {field} text"  # no field: untouched


def test_library_messages_of_these_modules_name_no_cli_flags():
    import ddim_edit

    root = Path(ddim_edit.__file__).parent
    for name in ("schedule.py", "trajectory.py", "workflow.py", "inversion.py", "replay.py", "edits/prompt_swap.py",
                 "edits/p2p_control.py", "edits/local_blend.py", "edits/style.py", "edits/inpaint.py"):
        text = (root / name).read_text()
        messages = re.findall(r"(?:Error|Error\w*)\(\s*(f?\"[^\n]*)", text)
        flagged = [m for m in messages if re.search(r"--[a-z]", m)]
        assert not flagged, (name, flagged)
