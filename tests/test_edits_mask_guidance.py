"""Mask guidance (ddim_edit/edits/mask_guidance.py): DDIM coefficients and the correction in closed form."""

import pytest
import torch


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_coefficients_and_the_mask_correction_in_closed_form(prediction_type):
    """x_s = A x_t + B ε is the DDIM step; the lag is ε_inv − ε_c,src; the target's guided step plus the
    mask correction is the step with ε_c,tgt + λ + (g − 1)(ε_c,tgt − ε_u,tgt) (float64)."""
    from ddim_edit.edits.mask_guidance import inversion_lag, mask_correction
    from ddim_edit.schedule import Schedule, ddim_coefficients, ddim_step, split_prediction

    gen = torch.Generator().manual_seed(3)
    z_t, x_t, eps_inv, src, cond, uncond = (torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64) for _ in range(6))
    alpha_t, alpha_prev = 0.3, 0.55
    schedule = Schedule((1,), torch.tensor([0.9, alpha_t], dtype=torch.float64), alpha_prev, prediction_type)
    a, b = ddim_coefficients(alpha_t, alpha_prev)
    z_s = ddim_step(eps_inv, z_t, alpha_t, alpha_prev, "epsilon")
    assert torch.allclose(z_s, a * z_t + b * eps_inv, atol=1e-12) and b < 0
    eps_src, _ = split_prediction(src, z_t, alpha_t, prediction_type)
    lag = inversion_lag(z_t, z_s, src, schedule, 0)
    assert torch.allclose(lag, eps_inv - eps_src, atol=1e-10)
    w, g = 7.5, 3.0
    guided = ddim_step(uncond + w * (cond - uncond), x_t, alpha_t, alpha_prev, prediction_type)
    corrected = guided + mask_correction(lag, cond, uncond, x_t, w, g, schedule, 0)
    eps_c, _ = split_prediction(cond, x_t, alpha_t, prediction_type)
    eps_u, _ = split_prediction(uncond, x_t, alpha_t, prediction_type)
    expected = a * x_t + b * (eps_c + lag + (g - 1) * (eps_c - eps_u))
    assert torch.allclose(corrected, expected, atol=1e-10)
    # g above the step's guidance is capped at it: the lag alone; no guidance: the lag alone
    assert torch.allclose(mask_correction(lag, cond, uncond, x_t, 2.0, g, schedule, 0), b * lag)
    assert torch.allclose(mask_correction(lag, cond, None, x_t, 1.0, g, schedule, 0), b * lag)
