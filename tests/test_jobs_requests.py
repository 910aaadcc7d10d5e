"""Job requests (ddim_edit/jobs/requests.py) take arrays as well as files."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.batch_helpers import photos  # noqa: F401 (pytest fixtures)
from tests.cli_helpers import SOURCE, TARGET


def test_the_job_layer_takes_arrays(photos):
    from ddim_edit.jobs import JobSettings, ModelCache, SwapRequest, run_request

    pixels = np.asarray(Image.open(photos / "photo.png").convert("RGB"))
    models = ModelCache(device="cpu")
    result = run_request(SwapRequest(pixels, TARGET, SOURCE, settings=JobSettings(steps=4)), models)
    assert result.image.shape == (300, 451, 3) and result.record["working_size"] == [64, 48]
    again = run_request(SwapRequest(pixels, TARGET, SOURCE, settings=JobSettings(steps=4)), models)
    assert models.loads == 1 and (again.image == result.image).all()


def test_the_guidance_of_a_job_is_resolved_in_one_place():
    from ddim_edit.inversion import InversionOptions
    from ddim_edit.jobs.requests import DEFAULT_GUIDANCE, JobSettings

    assert DEFAULT_GUIDANCE == InversionOptions().guidance_scale
    assert JobSettings().guidance_for(trajectory=False) == DEFAULT_GUIDANCE  # an image inverted now
    assert JobSettings().guidance_for(trajectory=True) is None  # a trajectory: its recorded guidance
    assert JobSettings(guidance=3.0).guidance_for(trajectory=True) == JobSettings(guidance=3.0).guidance_for(False) == 3.0
