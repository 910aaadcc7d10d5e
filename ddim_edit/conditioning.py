"""Text conditioning as one object the model makes and the sampler passes to the UNet.

Like k-diffusion's ``extra_args``, an edit never needs to know what a model family conditions on:
:class:`PromptEmbeds` holds, for each batch row, the token embeddings (``encoder_hidden_states``)
and any *added* UNet inputs (SDXL: the pooled text embedding ``text_embeds`` and the size
conditioning ``time_ids``). Branches are built by selecting rows (:meth:`PromptEmbeds.rows`) and
concatenating (:meth:`PromptEmbeds.cat`); :meth:`PromptEmbeds.unet_kwargs` turns it into the
keyword arguments of ``UNet2DConditionModel.forward``.

:class:`Conditioning` is what the sampler takes for guided sampling: the conditional rows, the
unconditional (negative) rows and, for null-text inversion, per-step replacements of the
unconditional token embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

RowIndex = int | slice | Sequence[int] | torch.Tensor


def as_row_index(index: RowIndex) -> slice | Sequence[int] | torch.Tensor:
    """An int becomes a one-row slice (the batch dimension is kept); anything else is as given."""
    if isinstance(index, int):
        return slice(index, index + 1 if index != -1 else None)
    return index


@dataclass(frozen=True)
class PromptEmbeds:
    """Per-row UNet conditioning.

    Attributes:
        hidden: [B, L, D] token embeddings (``encoder_hidden_states``).
        added: name → [B, …] added conditioning (``added_cond_kwargs``; empty for SD 1.x/2.x).
    """

    hidden: torch.Tensor
    added: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.hidden.shape[0])

    @property
    def device(self) -> torch.device:
        return self.hidden.device

    def rows(self, index: RowIndex) -> "PromptEmbeds":
        """The rows ``index`` (an int keeps the batch dimension: one row)."""
        index = as_row_index(index)
        return PromptEmbeds(self.hidden[index], {name: value[index] for name, value in self.added.items()})

    def repeat(self, times: int) -> "PromptEmbeds":
        """Every row repeated ``times`` (row order: all rows, then all rows again, …)."""
        return PromptEmbeds.cat([self] * times)

    def with_hidden(self, hidden: torch.Tensor) -> "PromptEmbeds":
        """The same added conditioning with other token embeddings (null-text's fitted ones).

        ``hidden`` may have one row for a many-row object or as many rows; it is broadcast.
        """
        if hidden.ndim == 2:
            hidden = hidden[None]
        if hidden.shape[0] != len(self):
            hidden = hidden.expand(len(self), *hidden.shape[1:])
        return PromptEmbeds(hidden, dict(self.added))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "PromptEmbeds":
        """Move to ``device``; floating tensors are cast to ``dtype`` (ids and sizes keep theirs)."""
        def move(tensor: torch.Tensor) -> torch.Tensor:
            cast = dtype if dtype is not None and tensor.is_floating_point() else None
            return tensor.to(device=device, dtype=cast)

        return PromptEmbeds(move(self.hidden), {name: move(value) for name, value in self.added.items()})

    def unet_kwargs(self) -> dict:
        """``encoder_hidden_states`` and, when there is any, ``added_cond_kwargs`` for the UNet."""
        kwargs: dict = {"encoder_hidden_states": self.hidden}
        if self.added:
            kwargs["added_cond_kwargs"] = dict(self.added)
        return kwargs

    @staticmethod
    def cat(parts: Sequence["PromptEmbeds"]) -> "PromptEmbeds":
        """Rows of ``parts`` one after another (they must carry the same added names)."""
        if not parts:
            raise ValueError("PromptEmbeds.cat needs at least one part")
        names = set(parts[0].added)
        if any(set(part.added) != names for part in parts):
            raise ValueError("cannot concatenate conditioning of different model families")
        return PromptEmbeds(torch.cat([part.hidden for part in parts]),
                            {name: torch.cat([part.added[name] for part in parts]) for name in parts[0].added})


@dataclass
class Conditioning:
    """The conditioning of a batch of branches for guided sampling.

    Attributes:
        cond: one row per branch (the prompts).
        uncond: one row per branch (negative prompts); None when guidance ≤ 1.
        uncond_per_step: [N, B or 1, L, D] token embeddings replacing ``uncond``'s at each step
            (null-text inversion's fitted null embeddings), or None.
    """

    cond: PromptEmbeds
    uncond: PromptEmbeds | None = None
    uncond_per_step: torch.Tensor | None = None

    def uncond_at(self, index: int) -> PromptEmbeds | None:
        """The unconditional rows at sampling step ``index``."""
        if self.uncond_per_step is not None and self.uncond is not None:
            return self.uncond.with_hidden(self.uncond_per_step[index].to(self.uncond.hidden))
        return self.uncond

    def rows(self, index: RowIndex) -> "Conditioning":
        """The branches ``index`` (conditional, unconditional and per-step rows alike)."""
        index = as_row_index(index)
        per_step = self.uncond_per_step
        if per_step is not None and per_step.shape[1] > 1:
            per_step = per_step[:, index]
        return Conditioning(self.cond.rows(index), None if self.uncond is None else self.uncond.rows(index), per_step)

    def steps(self, start: int, stop: int) -> "Conditioning":
        """The same branches for sampling steps ``start`` to ``stop`` (a segment of the schedule)."""
        per_step = None if self.uncond_per_step is None else self.uncond_per_step[start:stop]
        return Conditioning(self.cond, self.uncond, per_step)

    @staticmethod
    def cat(parts: Sequence["Conditioning"]) -> "Conditioning":
        """Branches of ``parts`` one after another."""
        has_uncond = [part.uncond is not None for part in parts]
        if any(has_uncond) and not all(has_uncond):
            raise ValueError("cannot concatenate guided and unguided conditioning")
        per_steps = [part.uncond_per_step for part in parts]
        per_step = None
        if any(p is not None for p in per_steps):
            if not all(p is not None for p in per_steps):
                raise ValueError("cannot concatenate branches with and without per-step null embeddings")
            per_step = torch.cat([p.expand(-1, len(part.cond), -1, -1) for p, part in zip(per_steps, parts)], dim=1)
        uncond = PromptEmbeds.cat([part.uncond for part in parts]) if all(has_uncond) else None
        return Conditioning(PromptEmbeds.cat([part.cond for part in parts]), uncond, per_step)
