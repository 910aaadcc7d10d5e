"""Mask guidance: how the target branch steps inside the local-blend mask of an ``exact`` edit.

An ``exact`` trajectory is inverted conditionally (guidance 1 unless ``inversion_guidance`` says
otherwise) and its source branch replays it exactly: with known latents z_t → z_s, the inversion's
noise is ε_inv = (z_s − A·z_t)/B (:meth:`~ddim_edit.schedule.Schedule.coefficients`). Outside the mask
the target takes the source's whole correction and follows the source. Inside it, that correction
would undo the *source prompt's* guidance, (w − 1)(ε_u − ε_c,src), and so pull the edited content
back to the source. Without any correction the target samples at the edit's guidance w from the
inverted noise, which plain DDIM does not reconstruct: on the bundled model even an identical prompt
then moves the object's outline (measured: the docs' tuning page).

Mask guidance splits the source's correction. The target keeps its part that is the inversion's
own error, the **lag** λ = ε_inv − ε_c,src(z_t) (after an inversion at guidance 1, the exact
correction of a guidance-1 replay), and takes its *own* guidance g instead of w:

    ε_target = ε_c,tgt + λ + (g − 1)(ε_c,tgt − ε_u,tgt),

i.e. the correction B·(λ + (g − w)(ε_c,tgt − ε_u,tgt)) added to the target's guided step. With g = 1
and an identical prompt this is the source's exact step.
"""

from __future__ import annotations

import torch

from ..schedule import Schedule


def inversion_lag(known_t: torch.Tensor, known_s: torch.Tensor, source_cond: torch.Tensor, schedule: Schedule,
                  index: int) -> torch.Tensor:
    """λ = ε_inv − ε_c,src: the inversion's noise for step ``index`` (z_t → z_s) minus the source's
    conditional prediction at z_t (``source_cond``: the UNet output, any prediction type)."""
    a, b = schedule.coefficients(index)
    eps_inversion = (known_s - a * known_t) / b
    eps_source, _ = schedule.split(source_cond, known_t, index)
    return eps_inversion - eps_source


def mask_correction(lag: torch.Tensor, target_cond: torch.Tensor, target_uncond: torch.Tensor | None,
                    target_latents: torch.Tensor, guidance: float, mask_guidance: float, schedule: Schedule,
                    index: int) -> torch.Tensor:
    """What to add to the target's guided DDIM step inside the mask: B·(λ + (g − w)(ε_c − ε_u)).

    ``guidance`` is the step's w; g is ``min(mask_guidance, w)``. Without guidance (w ≤ 1,
    ``target_uncond`` None) the target gets the lag alone.
    """
    _, b = schedule.coefficients(index)
    if guidance <= 1.0 or target_uncond is None:
        return b * lag
    eps_cond, _ = schedule.split(target_cond, target_latents, index)
    eps_uncond, _ = schedule.split(target_uncond, target_latents, index)
    g = min(float(mask_guidance), guidance)
    return b * (lag + (g - guidance) * (eps_cond - eps_uncond))
