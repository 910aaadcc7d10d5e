"""A library error → the one line the page shows (what the CLI prints after ``Error:``).

The CLI names an error's field by the running command's flag; the page has no flags, so it shows
the library's own wording, ``str(error)``, on one line and without a traceback, in Gradio's error
toast.
"""

from __future__ import annotations

from ..errors import DdimEditError


def one_line(exc: DdimEditError) -> str:
    """The error's message on one line, its field named as the library names it."""
    return " ".join(str(exc).split())
