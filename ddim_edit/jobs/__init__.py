"""The job layer: one module per edit over a plain request, and batches of them.

Each edit's module (:mod:`.invert`, :mod:`.reconstruct`, :mod:`.swap`, :mod:`.inpaint`,
:mod:`.style`) declares its request, its runner and its manifest keys; :mod:`.registry` lists them
and :func:`run_request` runs any request. The single commands, ``ddim-edit batch`` and the web page
build a request and call it; :func:`write_result` writes what came back. :mod:`.manifest` reads
batch manifests, :mod:`.batch` runs them over processes.
"""

from .inpaint import InpaintRequest, run_inpaint  # noqa: F401
from .invert import InvertRequest, run_invert  # noqa: F401
from .reconstruct import ReconstructRequest, run_reconstruct  # noqa: F401
from .registry import EDIT_SPECS, EDITS, run_request  # noqa: F401
from .requests import JobResult, JobSettings  # noqa: F401
from .resolve import ModelCache, load_job_model  # noqa: F401
from .style import StyleRequest, run_style  # noqa: F401
from .swap import SwapRequest, run_swap  # noqa: F401
from .write import write_result  # noqa: F401
