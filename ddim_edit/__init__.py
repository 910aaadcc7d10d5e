"""ddim-edit: edit real images with Stable Diffusion through exact DDIM inversion."""

__version__ = "0.1.0"

from .errors import DdimEditError  # noqa: F401
