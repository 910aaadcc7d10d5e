"""Errors that the CLI turns into one-line messages with a hint and exit code 1."""


class DdimEditError(Exception):
    """Base class for user-facing errors: the message says what is wrong and how to fix it."""


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
