"""The two-branch replay (ddim_edit/replay.py's KnownRows) in closed form."""

import torch

from ddim_edit.replay import KnownRows
from ddim_edit.sampler import StepInfo


def test_known_rows_follow_the_record_and_edited_rows_take_their_correction():
    gen = torch.Generator().manual_seed(0)
    recorded = torch.randn(4, 2, 3, generator=gen, dtype=torch.float64)  # [N + 1, …] for N = 3 steps
    stepped = torch.randn(3, 2, 3, generator=gen, dtype=torch.float64)  # rows 0 (known), 1 (edited), 2 (free)
    step = StepInfo(1, 500, 3)
    after = KnownRows({0: recorded}, {1: 0}).after_step(step, stepped)
    assert torch.equal(after[0], recorded[2])  # the known row is back on its record
    assert torch.equal(after[1], stepped[1] + (recorded[2] - stepped[0]))  # + the known row's correction
    assert torch.equal(after[2], stepped[2])  # a row neither known nor corrected is left alone
    assert torch.equal(KnownRows({}, {}).after_step(step, stepped), stepped)
