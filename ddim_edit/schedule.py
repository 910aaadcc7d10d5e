"""Timesteps and the DDIM update as pure functions.

Notation (DDIM paper, Song et al. 2021; diffusers' names):

- ``alpha_prod_t``   ᾱ_t, the cumulative product of (1 - β) up to timestep t;
- ``sample``         x_t (here a latent z_t);
- ``pred_epsilon``   ε_θ(x_t, t);
- ``pred_original_sample``  x̂_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t;
- the deterministic (η = 0) step from t to s < t (eq. 12):
  x_s = √ᾱ_s x̂_0 + √(1-ᾱ_s) ε, and its inverse (s → t) uses the same ε.

A :class:`Schedule` is an explicit, strictly descending list of timesteps. Sampling step ``i``
moves from ``timesteps[i]`` to ``timesteps[i + 1]``; the last step moves to the "final" state,
whose ᾱ is ``final_alpha_prod`` (1, or ᾱ_0 when the model was configured with
``set_alpha_to_one=False``). Neighbours are always read from the list, never computed as
``t - T // n``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .errors import ScheduleError

SPACINGS = ("leading", "trailing", "linspace", "quadratic")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def make_timesteps(
    num_steps: int,
    num_train_timesteps: int = 1000,
    spacing: str = "leading",
    steps_offset: int = 0,
) -> list[int]:
    """Return ``num_steps`` strictly descending integer timesteps in ``[0, num_train_timesteps)``.

    Args:
        num_steps: number of DDIM steps (1 … ``num_train_timesteps``).
        num_train_timesteps: T, the number of training timesteps of the model.
        spacing: ``leading`` / ``trailing`` / ``linspace`` (as diffusers' DDIMScheduler) or
            ``quadratic`` (the DDIM paper's: t_i = ⌊(i · √(0.8 T) / (n − 1))²⌋, denser near t = 0).
            Truncating the paper's formula repeats small timesteps once n ≳ 25 (0, 0, 1, 3, … at
            n = 50; the paper's code keeps the repeats); here each timestep is raised to one past
            its predecessor where needed, so the list is distinct for every n ≤ T.
        steps_offset: added to ``leading`` timesteps (SD 1.x uses 1), as diffusers does.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps <= 0:
        raise ScheduleError(f"{{field}} must be a positive integer, got {num_steps!r}; e.g. {{field}}=50",
                            field="num_steps", value=num_steps)
    if num_steps > num_train_timesteps:
        raise ScheduleError(
            f"{{field}}={num_steps} exceeds the model's {num_train_timesteps} training timesteps; "
            f"use {{field}}={num_train_timesteps} or fewer", field="num_steps", value=num_steps
        )
    if spacing == "leading":
        ratio = num_train_timesteps // num_steps
        ts = np.arange(num_steps) * ratio + steps_offset
    elif spacing == "trailing":
        ratio = num_train_timesteps / num_steps
        ts = np.round(np.arange(num_train_timesteps, 0, -ratio)).astype(np.int64)[::-1] - 1
    elif spacing == "linspace":
        ts = np.linspace(0, num_train_timesteps - 1, num_steps).round()
    elif spacing == "quadratic":
        ts = (np.linspace(0, math.sqrt(num_train_timesteps * 0.8), num_steps) ** 2).astype(np.int64)
        # t'_i = max(t_i, t'_{i-1} + 1), i.e. a running maximum of t_i − i: distinct, and ≤ max(0.8 T, n − 1).
        ramp = np.arange(num_steps, dtype=np.int64)
        ts = np.maximum.accumulate(ts - ramp) + ramp
    else:
        raise ScheduleError(f"unknown {{field}} {spacing!r}; choose one of {', '.join(SPACINGS)}", field="spacing",
                            value=spacing)
    ts = np.asarray(ts, dtype=np.int64)[::-1]
    ts = np.clip(ts, 0, num_train_timesteps - 1)
    # Clipping can repeat the top timestep (leading with steps_offset 1 at n = T gives 1 … 1000):
    # t'_i = min(t_i, t'_{i-1} − 1), a running minimum of t_i + i, keeps the list distinct.
    ramp = np.arange(num_steps, dtype=np.int64)
    ts = np.minimum.accumulate(ts + ramp) - ramp
    result = [int(t) for t in ts]
    check_timesteps(result, num_train_timesteps)
    return result


def check_timesteps(timesteps: Sequence[int], num_train_timesteps: int) -> None:
    """Raise :class:`ScheduleError` unless ``timesteps`` is strictly descending within [0, T)."""
    if len(timesteps) == 0:
        raise ScheduleError("the {field} list is empty; give at least one timestep", field="timesteps")
    for t in timesteps:
        if not 0 <= int(t) < num_train_timesteps:
            raise ScheduleError(f"timestep {t} is outside [0, {num_train_timesteps}); fix the {{field}} list",
                                field="timesteps", value=t)
    if any(int(a) <= int(b) for a, b in zip(timesteps, timesteps[1:])):
        raise ScheduleError(
            f"{{field}} must be strictly descending without repeats, got {list(timesteps)[:8]}…; "
            "remove the repeated timesteps", field="timesteps"
        )


def parse_custom_timesteps(text: str) -> list[int]:
    """Parse ``"999,800,600,…"`` into a list of ints (sorted descending, as given)."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError as exc:
        raise ScheduleError(f"custom {{field}} must be comma-separated integers, got {text!r}; "
                            "e.g. {field}=999,750,500,250,100,20", field="timesteps") from exc
    return sorted(values, reverse=True)


@dataclass(frozen=True)
class Schedule:
    """A DDIM schedule: explicit descending timesteps and the model's ᾱ table, and the stepper of
    the η = 0 DDIM ODE on them (step, inverse step, prediction split, re-noising, step coefficients).

    Attributes:
        timesteps: strictly descending timesteps t_0 > t_1 > … > t_{N-1}.
        alphas_cumprod: ᾱ for every training timestep (float64, length T).
        final_alpha_prod: ᾱ of the state after the last step (1.0 or ᾱ_0).

    The final state: diffusers' DDIMScheduler steps from the last timestep to ᾱ = 1 when the model
    sets ``set_alpha_to_one``, else to ᾱ_0 (SD 1.x: its last ``leading`` timestep is 1, so that step
    goes from t = 1 to t = 0). When the last timestep is itself 0 (``linspace``, ``quadratic``,
    ``leading`` without offset, a custom list ending in 0), going to ᾱ_0 would leave the latent
    unchanged: diffusers spends a UNet call on that identity step. :meth:`from_scheduler_config`
    instead sends a last step from t = 0 to ᾱ = 1 (x̂_0), the final step of the DDIM paper, so every
    step does work; schedules whose last timestep is above 0 match diffusers exactly.
        prediction_type: what the model predicts: ``epsilon``, ``v_prediction`` or ``sample``.
        spacing: how the timesteps were made (``custom`` for a given list); informational.
    """

    timesteps: tuple[int, ...]
    alphas_cumprod: torch.Tensor
    final_alpha_prod: float
    prediction_type: str = "epsilon"
    spacing: str = "custom"

    def __post_init__(self) -> None:
        check_timesteps(self.timesteps, len(self.alphas_cumprod))
        if self.prediction_type not in PREDICTION_TYPES:
            raise ScheduleError(
                f"unsupported prediction_type {self.prediction_type!r}; expected one of {PREDICTION_TYPES}"
            )

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def alpha_prod(self, index: int) -> float:
        """ᾱ of the state at position ``index`` of the trajectory (``index == num_steps``: final)."""
        if index == self.num_steps:
            return self.final_alpha_prod
        return float(self.alphas_cumprod[self.timesteps[index]])

    def step_pair(self, index: int) -> tuple[float, float]:
        """(ᾱ_t, ᾱ_s) for sampling step ``index``: from ``timesteps[index]`` to its neighbour."""
        return self.alpha_prod(index), self.alpha_prod(index + 1)

    # ------------------------------------------------------------------ the stepper of the DDIM ODE
    # What the sampler, the inversions and the edits ask of a schedule; nothing outside this class
    # reads ᾱ. Positions are trajectory states: 0 = x_T … num_steps = the final state.
    def split(self, output: torch.Tensor, sample: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε, x̂_0) from the model's ``output`` at the state ``sample`` of position ``index``."""
        return split_prediction(output, sample, self.alpha_prod(index), self.prediction_type)

    def step(self, output: torch.Tensor, sample: torch.Tensor, index: int, eta: float = 0.0,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sampling step ``index``: the state at ``index`` → the state at ``index + 1`` (:func:`ddim_step`)."""
        alpha_prod_t, alpha_prod_prev = self.step_pair(index)
        return ddim_step(output, sample, alpha_prod_t, alpha_prod_prev, self.prediction_type, eta, noise)

    def inverse_step(self, output: torch.Tensor, sample: torch.Tensor, index: int,
                     evaluated_at: torch.Tensor) -> torch.Tensor:
        """Step ``index`` backwards: the state at ``index + 1`` → the state at ``index``
        (:func:`ddim_inverse_step`), with the noise ε split from the model's ``output`` at the latents it
        was evaluated at (x_{i+1} for plain inversion, the estimate of x_i for fixed-point) and ᾱ of
        position ``index``, the timestep the model was told."""
        eps, _ = self.split(output, evaluated_at, index)
        return ddim_inverse_step(eps, sample, self.alpha_prod(index + 1), self.alpha_prod(index))

    def coefficients(self, index: int) -> tuple[float, float]:
        """(A, B) of the η = 0 step ``index`` written as x_s = A·x_t + B·ε (:func:`ddim_coefficients`)."""
        return ddim_coefficients(*self.step_pair(index))

    def state_scale(self, index: int) -> float:
        """√ᾱ at position ``index``: a state is √ᾱ·X, X = x/√ᾱ being the state of the DDIM ODE as a flow
        (dX/dσ = ε, σ = √(1 − ᾱ)/√ᾱ), in which FlowEdit couples its branches."""
        return math.sqrt(self.alpha_prod(index))

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        """The state at position ``index`` of ``x0`` under ``noise``: √ᾱ x_0 + √(1 − ᾱ) ε."""
        alpha_prod = self.alpha_prod(index)
        return math.sqrt(alpha_prod) * x0 + math.sqrt(1.0 - alpha_prod) * noise

    def forward_noised(self, sample: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
        """The forward process one position back: the state at ``index`` → a state at ``index − 1``,
        √(ᾱ_{k−1}/ᾱ_k) z_k + √(1 − ᾱ_{k−1}/ᾱ_k) ε (q(x_t | x_s) of DDPM)."""
        ratio = self.alpha_prod(index - 1) / self.alpha_prod(index)
        return math.sqrt(ratio) * sample + math.sqrt(max(1.0 - ratio, 0.0)) * noise

    def segment(self, start: int, stop: int) -> "Schedule":
        """Steps ``start … stop − 1`` as a schedule whose final state is position ``stop``."""
        return Schedule(self.timesteps[start:stop], self.alphas_cumprod, self.alpha_prod(stop), self.prediction_type,
                        self.spacing)

    def fingerprint(self) -> str:
        """A short hash of ᾱ and the prediction type: equal iff the schedule maths is equal."""
        digest = hashlib.sha256()
        digest.update(self.alphas_cumprod.to(torch.float64).numpy().tobytes())
        digest.update(repr((self.final_alpha_prod, self.prediction_type)).encode())
        return digest.hexdigest()[:16]

    @classmethod
    def from_scheduler_config(
        cls,
        config: Mapping[str, Any],
        num_steps: int | None = None,
        spacing: str | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> "Schedule":
        """Build a schedule from any diffusers scheduler config (DDIM maths, the model's betas).

        Args:
            config: a scheduler config (``pipe.scheduler.config``), whatever scheduler class.
            num_steps: number of steps, used with ``spacing``.
            spacing: overrides the config's ``timestep_spacing`` (default ``leading``).
            timesteps: a custom descending list; overrides ``num_steps`` and ``spacing``.
        """
        from diffusers import DDIMScheduler

        known = {k: v for k, v in dict(config).items() if not k.startswith("_")}
        ddim = DDIMScheduler.from_config(known)
        alphas = ddim.alphas_cumprod.to(torch.float64).clone()
        final = 1.0 if ddim.config.set_alpha_to_one else float(alphas[0])
        total = int(ddim.config.num_train_timesteps)
        if timesteps is not None:
            ts = [int(t) for t in timesteps]
            used_spacing = "custom"
        else:
            if num_steps is None:
                raise ScheduleError("give either num_steps or a custom timestep list")
            used_spacing = spacing or ddim.config.get("timestep_spacing", "leading")
            ts = make_timesteps(num_steps, total, used_spacing, int(ddim.config.get("steps_offset", 0)))
        if ts and int(ts[-1]) == 0:
            final = 1.0  # a last step from t = 0 goes to x̂_0 (see the class docstring)
        return cls(tuple(ts), alphas, final, ddim.config.prediction_type, used_spacing)

    def to_json(self) -> dict[str, Any]:
        return {
            "timesteps": list(self.timesteps),
            "spacing": self.spacing,
            "prediction_type": self.prediction_type,
            "final_alpha_prod": self.final_alpha_prod,
            "fingerprint": self.fingerprint(),
        }


def work_dtype(device: torch.device) -> torch.dtype:
    """The precision of latent updates: float64 (MPS has none: float32 there).

    The UNet runs in the model's dtype; keeping z_t in float64 between its calls means a replayed
    latent rounds back to exactly the UNet input it was recorded from, so per-step round-off is not
    amplified by guidance along the trajectory.
    """
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def split_prediction(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: float, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (pred_epsilon, pred_original_sample) from a model output of any prediction type."""
    a = math.sqrt(alpha_prod_t)
    b = math.sqrt(1.0 - alpha_prod_t)
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (sample - b * eps) / a
    elif prediction_type == "v_prediction":
        x0 = a * sample - b * model_output
        eps = a * model_output + b * sample
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - a * x0) / b
    else:
        raise ScheduleError(f"unsupported prediction_type {prediction_type!r}")
    return eps, x0


def ddim_step(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    alpha_prod_t: float,
    alpha_prod_prev: float,
    prediction_type: str = "epsilon",
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DDIM step x_t → x_s (s < t), eq. 12 of the DDIM paper.

    With ``eta > 0`` the step is stochastic: σ = η √((1-ᾱ_s)/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_s), and
    ``noise`` (standard normal, same shape) must be given.
    """
    eps, x0 = split_prediction(model_output, sample, alpha_prod_t, prediction_type)
    std = 0.0
    if eta > 0:
        variance = (1 - alpha_prod_prev) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_prev)
        std = eta * math.sqrt(max(variance, 0.0))
        if noise is None:
            raise ValueError("eta > 0 needs a noise tensor")
    direction = math.sqrt(max(1.0 - alpha_prod_prev - std**2, 0.0)) * eps
    prev = math.sqrt(alpha_prod_prev) * x0 + direction
    if std > 0:
        prev = prev + std * noise
    return prev


def ddim_coefficients(alpha_prod_t: float, alpha_prod_prev: float) -> tuple[float, float]:
    """(A, B) of the η = 0 DDIM step written as x_s = A·x_t + B·ε, for ε from any prediction type.

    From eq. 12: x_s = √ᾱ_s (x_t − √(1-ᾱ_t) ε)/√ᾱ_t + √(1-ᾱ_s) ε, so A = √(ᾱ_s/ᾱ_t) and
    B = √(1-ᾱ_s) − √(ᾱ_s (1-ᾱ_t)/ᾱ_t) (negative: the step removes noise).
    """
    a = math.sqrt(alpha_prod_prev / alpha_prod_t)
    b = math.sqrt(1.0 - alpha_prod_prev) - math.sqrt(alpha_prod_prev * (1.0 - alpha_prod_t) / alpha_prod_t)
    return a, b


def ddim_inverse_step(
    pred_epsilon: torch.Tensor,
    sample: torch.Tensor,
    alpha_prod_s: float,
    alpha_prod_t: float,
) -> torch.Tensor:
    """The inverse of the η = 0 DDIM step, x_s → x_t (t > s), with a given ε ≈ ε_θ(x_t, t).

    Solving eq. 12 for x_t: x̂_0 = (x_s - √(1-ᾱ_s) ε) / √ᾱ_s, x_t = √ᾱ_t x̂_0 + √(1-ᾱ_t) ε.
    Plain DDIM inversion evaluates ε at x_s; fixed-point inversion at the current estimate of x_t.
    """
    x0 = (sample - math.sqrt(1.0 - alpha_prod_s) * pred_epsilon) / math.sqrt(alpha_prod_s)
    return math.sqrt(alpha_prod_t) * x0 + math.sqrt(1.0 - alpha_prod_t) * pred_epsilon
