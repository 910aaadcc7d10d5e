"""A library error → the one line the CLI prints after ``Error:``.

The CLI renders a :class:`~ddim_edit.errors.DdimEditError` through ``cli.common.cli_message``,
which names the error's field by the running command's flag; with no command running (as here)
that is the library wording, ``str(error)``. The page shows exactly that line, without a
traceback, in Gradio's error toast.
"""

from __future__ import annotations

from ..errors import DdimEditError


def one_line(exc: DdimEditError) -> str:
    """The error's message on one line (what follows ``Error:`` in the CLI)."""
    try:
        from cli.common import cli_message  # the CLI's own rendering, when the CLI is installed
    except ImportError:  # pragma: no cover - the wheel always carries cli/
        text = str(exc)
    else:
        text = cli_message(exc)
    return " ".join(text.split())
