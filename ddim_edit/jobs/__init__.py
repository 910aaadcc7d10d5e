"""The job layer: one function per edit over a plain request, and batches of them.

The single commands, ``ddim-edit batch`` and a UI build a request (:mod:`.requests`) and call
:func:`run_request` (or the edit's own function in :mod:`.edits`); :func:`write_result` writes what
came back. :mod:`.manifest` reads batch manifests, :mod:`.batch` runs them over processes.
"""

from .edits import run_inpaint, run_invert, run_reconstruct, run_request, run_style, run_swap  # noqa: F401
from .requests import (EDITS, InpaintRequest, InvertRequest, JobResult, JobSettings, ReconstructRequest,  # noqa: F401
                       StyleRequest, SwapRequest)
from .resolve import ModelCache, load_job_model  # noqa: F401
from .write import write_result  # noqa: F401
