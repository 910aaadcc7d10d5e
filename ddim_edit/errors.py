"""Errors that the CLI turns into one-line messages with a hint and exit code 1.

Structured fields
-----------------
A library error about one parameter names that parameter through ``field`` — the *library*
parameter name (``guidance_scale``, ``num_steps``, ``target_prompt``, …) — and writes the
placeholder ``{field}`` where the parameter's name belongs in the message::

    raise ScheduleError("{field} must be a positive integer, got 0; e.g. {field}=50", field="num_steps")

``str(error)`` is the library wording (``num_steps must be … e.g. num_steps=50``), right for a
Python or UI user. The CLI (``cli.common.handle_errors``) renders the same error with the flag of
the running command instead (``--steps must be … e.g. --steps=50``): through a per-command mapping
(``cli.common.FIELD_FLAGS``), else ``--`` + the field with dashes, and only when the command has
that flag; otherwise the library wording is kept. So library messages never name CLI flags, and
a hint never names a flag the command lacks. ``value`` optionally carries the offending value.
"""

from __future__ import annotations

from typing import Any

FIELD_PLACEHOLDER = "{field}"


class DdimEditError(Exception):
    """Base class for user-facing errors: the message says what is wrong and how to fix it.

    Args:
        message: the message; ``{field}`` in it stands for the parameter's name.
        field: the library parameter the error is about (None: not about one parameter).
        value: the offending value, when useful to callers.
    """

    def __init__(self, message: str = "", field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.value = value

    def render(self, name: str | None = None) -> str:
        """The message with ``{field}`` replaced by ``name`` (default: the library field name)."""
        if self.field is None:
            return self.message
        return self.message.replace(FIELD_PLACEHOLDER, name or self.field)

    def __str__(self) -> str:
        return self.render()


class ImageError(DdimEditError):
    """An image or mask file cannot be read or has an unusable size."""


class ModelLoadError(DdimEditError):
    """A model cannot be found or loaded."""


class ScheduleError(DdimEditError):
    """A timestep schedule is invalid for the model."""


class PromptError(DdimEditError):
    """A prompt is missing or does not fit the edit."""


class TrajectoryError(DdimEditError):
    """A trajectory file is corrupt or does not match the model or schedule."""


class OutputError(DdimEditError):
    """An output path cannot be written (exists without --force, unwritable folder)."""


class NonFiniteError(DdimEditError):
    """A latent or image became NaN or infinite (numeric overflow, e.g. fp16 or extreme guidance)."""
