"""A manifest job's fields → the request of its edit (the same defaults as the single commands)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..options import given_values
from .manifest import Job
from .registry import EDIT_SPECS
from .requests import JobSettings


def job_settings(fields: dict[str, Any], defaults: JobSettings = JobSettings()) -> JobSettings:
    """The job's shared settings: its own keys over the batch's defaults."""
    return dataclasses.replace(defaults, **given_values(JobSettings, fields, parsed=True))


def build_request(job: Job, defaults: JobSettings = JobSettings(), force: bool = False) -> Any:
    """The request for ``job`` (options the job leaves out keep the single command's defaults);
    ``force`` lets a swap's saved trajectory replace an existing file."""
    return EDIT_SPECS[job.edit].build(job.fields, job_settings(job.fields, defaults), force)
