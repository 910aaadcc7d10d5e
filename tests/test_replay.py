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


def test_the_record_pass_is_the_guided_step_against_the_record(tiny_model):
    """c_i = z_{i+1} − step(z_i) with the guided model, each step from the recorded z_i (float64)."""
    from ddim_edit.replay import record_corrections
    from ddim_edit.schedule import Schedule

    schedule = Schedule.from_scheduler_config(tiny_model.scheduler_config, num_steps=3)
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(4, 2, 4, 8, 8, generator=gen, dtype=torch.float64)  # [N + 1, B, C, h, w]
    cond, uncond = tiny_model.encode(["a red circle", "a blue square"]), tiny_model.encode_negative(["", ""])
    corrections = record_corrections(tiny_model, schedule, latents, cond, uncond, 3.0)
    for i in range(3):
        output = tiny_model.denoise(latents[i], schedule.timesteps[i], cond, uncond, 3.0).double()
        assert torch.equal(corrections[i], latents[i + 1] - schedule.step(output, latents[i], i))
