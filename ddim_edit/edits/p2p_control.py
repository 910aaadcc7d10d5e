"""Prompt-to-prompt attention control (Hertz et al.) as attention processors installed by layer name.

Notation (per attention layer, per head; ``P = softmax(q kᵀ · scale)``):

- ``P_src``: the source branch's attention probabilities, ``P_tgt``: the target branch's own;
- ``V_tgt``: the target branch's values, ``L``: the number of text tokens (77 for CLIP).

Every cross-attention edit of the paper gives the target an attention matrix of the form

    P_edit = P_src · G + P_tgt · diag(d)

where ``G`` [L, L] moves source key tokens onto target key tokens (identity for *replace*, the
token alignment for *refine*) times the per-word injection weights α and the reweighting ``e``, and
``d`` keeps part of the target's own attention (1 - α outside the injection window, the words a
*refine* adds). Its output is linear in V:

    P_edit · V_tgt = SDPA(q_src, k_src, G · V_tgt) + SDPA(q_tgt, k_tgt, d ⊙ V_tgt),

so it runs as one or two ``scaled_dot_product_attention`` calls and ``P`` is never materialised.
Self-attention injection is ``SDPA(q_src, k_src, V_tgt)``. Probabilities are materialised only for
the maps that are kept (local blend, attention pictures).

State is keyed by layer name and sampler step (:class:`AttentionController`), never by counting
calls.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..attention import AttentionSite, EditAttnProcessor, processors_for
from ..joint_attention import JointEditProcessor, JointTokens
from ..errors import PromptError
from .local_blend import layer_grid

# ----------------------------------------------------------------------------- tokens


def token_positions(model, prompt: str, word: str) -> list[int]:
    """Positions in the encoded sequence (see ``model.FIRST_WORD_POSITION``) of ``word``'s pieces in ``prompt``.

    Every occurrence counts. Returns [] when the word is not in the prompt.
    """
    tokens = model.prompt_tokens(prompt)
    pieces = model.prompt_tokens(word)
    if not pieces:
        return []
    found: list[int] = []
    first = model.FIRST_WORD_POSITION
    for start in range(len(tokens) - len(pieces) + 1):
        if tokens[start:start + len(pieces)] == pieces:
            found.extend(range(first + start, first + start + len(pieces)))
    return found


def align_tokens(source: list[str], target: list[str]) -> list[int | None]:
    """Global (Needleman–Wunsch) alignment: for each target token the aligned source index or None.

    Scores: match +1, mismatch -1, gap 0 (as prompt-to-prompt's ``seq_aligner``); a mismatched pair is
    not aligned (the target word is new).
    """
    n, m = len(source), len(target)
    score = [[0.0] * (m + 1) for _ in range(n + 1)]
    move = [[""] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        move[i][0] = "up"
    for j in range(1, m + 1):
        move[0][j] = "left"
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diagonal = score[i - 1][j - 1] + (1.0 if source[i - 1] == target[j - 1] else -1.0)
            options = [(diagonal, "diag"), (score[i - 1][j], "up"), (score[i][j - 1], "left")]
            score[i][j], move[i][j] = max(options, key=lambda item: item[0])
    aligned: list[int | None] = [None] * m
    i, j = n, m
    while i > 0 or j > 0:
        step = move[i][j]
        if step == "diag":
            if source[i - 1] == target[j - 1]:
                aligned[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif step == "up":
            i -= 1
        else:
            j -= 1
    return aligned


@dataclass
class TokenMap:
    """How target key tokens take source attention: ``P_edit[:, j] = Σ_i P_src[:, i] A[i, j]``.

    ``mapped[j]`` is 1 where target token j copies a source token (``A`` is a 0/1 matrix), 0 for
    target tokens that are new (a *refine* keeps the target's own attention there).
    """

    matrix: torch.Tensor  # A, [L, L]
    mapped: torch.Tensor  # [L]


def replace_map(model, source: str, target: str, length: int) -> TokenMap:
    """Word swap: same token count, position i of the target takes position i of the source.

    Raises:
        PromptError: when the prompts have different token counts.
    """
    if len(model.prompt_tokens(source)) != len(model.prompt_tokens(target)):
        raise PromptError(f"replace swaps words one for one, but {word_difference(model, source, target)}; "
                          "use {field} refine for words that are added or removed", field="mode")
    return TokenMap(torch.eye(length), torch.ones(length))


def word_difference(model, source: str, target: str) -> str:
    """Why two prompts do not align token for token, in words: what was added or removed, or which
    swapped word the tokenizer splits into another number of pieces."""
    src_words, tgt_words = source.split(), target.split()
    if len(src_words) != len(tgt_words):
        matcher = difflib.SequenceMatcher(a=src_words, b=tgt_words, autojunk=False)
        changes = [_change(src_words[i1:i2], tgt_words[j1:j2]) for tag, i1, i2, j1, j2 in matcher.get_opcodes()
                   if tag != "equal"]
        return f"the target has {len(tgt_words)} words and the source {len(src_words)} ({', '.join(changes)})"
    for src_word, tgt_word in zip(src_words, tgt_words):
        src_pieces, tgt_pieces = len(model.prompt_tokens(src_word)), len(model.prompt_tokens(tgt_word))
        if src_pieces != tgt_pieces:
            return (f"{tgt_word!r} is {tgt_pieces} tokens for the model where {src_word!r} is {src_pieces}")
    return "the model splits the two prompts into different numbers of tokens"


def _change(removed: list[str], added: list[str]) -> str:
    """One difference between two word lists: "adds 'x'", "removes 'y'" or "'red' → 'blue striped'"."""
    if not removed:
        return f"adds {' '.join(added)!r}"
    if not added:
        return f"removes {' '.join(removed)!r}"
    return f"{' '.join(removed)!r} → {' '.join(added)!r}"


def refine_map(model, source: str, target: str, length: int) -> TokenMap:
    """Words added or removed: aligned tokens copy the source, new ones keep the target's attention.

    Tokens before the words (CLIP's start token) map to themselves, and the end/padding tokens after
    the prompts map in order.
    """
    src_tokens, tgt_tokens = model.prompt_tokens(source), model.prompt_tokens(target)
    aligned = align_tokens(src_tokens, tgt_tokens)
    matrix = torch.zeros(length, length)
    mapped = torch.zeros(length)
    first = model.FIRST_WORD_POSITION
    for position in range(first):
        matrix[position, position] = mapped[position] = 1.0
    for j, i in enumerate(aligned):
        if i is not None:
            matrix[first + i, first + j] = mapped[first + j] = 1.0
    tail_src, tail_tgt = first + len(src_tokens), first + len(tgt_tokens)
    for offset in range(length - tail_tgt):
        i = min(tail_src + offset, length - 1)
        matrix[i, tail_tgt + offset] = mapped[tail_tgt + offset] = 1.0
    return TokenMap(matrix, mapped)


# ----------------------------------------------------------------------------- edit schedule


def injected_steps(fraction: float | torch.Tensor, num_steps: int) -> int | torch.Tensor:
    """How many of the first sampling steps a ``fraction`` covers: ``int(fraction · N)``, as prompt-to-prompt."""
    if isinstance(fraction, torch.Tensor):
        return torch.floor(fraction.double() * num_steps + 1e-9).long()
    return math.floor(float(fraction) * num_steps + 1e-9)


@dataclass
class CrossEdit:
    """The cross-attention edit at one step: ``P_edit = P_src · G + P_tgt · diag(d)``."""

    G: torch.Tensor  # noqa: N815, [L, L]
    d: torch.Tensor  # [L]

    @property
    def keeps_target(self) -> bool:
        return bool((self.d != 0).any())


@dataclass
class AttentionEditSpec:
    """What the target branch borrows from the source branch, and when.

    Attributes:
        tokens: the token map (replace or refine).
        cross_steps: [L] per target token, the fraction of the steps during which its cross-attention
            column is injected from the source (prompt-to-prompt's ``cross_replace_steps``).
        self_steps: the fraction of the steps with self-attention injection.
        reweight: [L] scale per target token (1 = unchanged), applied while injecting.
        self_max_tokens: only self-attention layers with at most this many queries are injected
            (prompt-to-prompt: 32², i.e. not the finest resolution of SD).
    """

    tokens: TokenMap
    cross_steps: torch.Tensor
    self_steps: float
    reweight: torch.Tensor
    self_max_tokens: int = 32 ** 2

    def cross_edit(self, index: int, num_steps: int) -> CrossEdit | None:
        """The cross edit at sampling step ``index`` of ``num_steps`` (None when nothing is injected)."""
        alpha = (index < injected_steps(self.cross_steps, num_steps)).to(torch.float32)  # α per target token
        if not alpha.any():
            return None
        mapped = self.tokens.mapped
        weight = alpha * self.reweight
        G = self.tokens.matrix * (mapped * weight)[None, :]  # noqa: N806
        d = (1 - mapped) * weight + (1 - alpha)
        return CrossEdit(G, d)

    def self_injected(self, index: int, num_steps: int) -> bool:
        """Whether step ``index`` of ``num_steps`` injects self-attention (in layers that allow it)."""
        return index < injected_steps(self.self_steps, num_steps)

    def self_active(self, index: int, num_steps: int, queries: int) -> bool:
        return self.self_injected(index, num_steps) and queries <= self.self_max_tokens


# ----------------------------------------------------------------------------- controller


@dataclass
class BranchLayout:
    """Which rows of the UNet batch are controlled: target row ``targets[k]`` borrows from ``sources[k]``.

    ``map_rows`` maps a branch name ("source"/"target") to the conditional row whose cross-attention
    maps are kept, when maps are needed at this step.
    """

    sources: list[int]
    targets: list[int]
    map_rows: dict[str, int] = field(default_factory=dict)


class AttentionController:
    """Per-step state shared by the installed processors.

    The sampler hook sets the step (:meth:`begin_step`); the denoiser sets the batch layout before
    each UNet call. Processors read both. The blend words' maps of the voting layers are summed
    over those layers and over the steps so far (prompt-to-prompt's ``attention_store``), per branch.
    """

    def __init__(self, spec: AttentionEditSpec, map_tokens: dict[str, list[int]] | None = None,
                 blend_side: int | None = None, keep_maps: bool = False, latent_hw: tuple[int, int] | None = None):
        """
        Args:
            spec: the edit.
            map_tokens: per branch ("source"/"target"), the token positions whose maps make the
                local-blend mask; None or empty: none.
            blend_side: the side (in attention positions along the latent's width) of the
                cross-attention layers whose maps vote for the blend mask (see
                :func:`~ddim_edit.edits.local_blend.voting_side`).
            keep_maps: also accumulate every prompt token's map over the steps (attention pictures).
            latent_hw: the latent's (h, w), to place layers' positions on a grid (None: square).
        """
        self.spec = spec
        self.map_tokens = {k: v for k, v in (map_tokens or {}).items() if v}
        self.blend_side = blend_side
        self.keep_maps = keep_maps
        self.latent_hw = latent_hw
        self.step = 0
        self.num_steps = 1
        self.layout: BranchLayout | None = None
        self.cross: CrossEdit | None = None
        self.blend_sums: dict[str, torch.Tensor] = {}
        self.accumulated: dict[str, dict[str, torch.Tensor]] = {}
        self.accumulated_steps = 0

    # --- step state
    def begin_step(self, index: int, num_steps: int) -> None:
        self.step, self.num_steps = index, num_steps
        self.cross = self.spec.cross_edit(index, num_steps)
        if self.keep_maps:
            self.accumulated_steps += 1

    @property
    def needs_source(self) -> bool:
        """Whether the target borrows the source branch's attention (or maps) at this step."""
        return (self.cross is not None or self.spec.self_injected(self.step, self.num_steps)
                or bool(self.map_tokens.get("source")) or self.keep_maps)

    @property
    def needs_maps(self) -> bool:
        return bool(self.map_tokens) or self.keep_maps

    def grid(self, queries: int) -> tuple[int, int]:
        """(h, w) of a layer with ``queries`` positions."""
        if self.latent_hw is None:
            side = int(round(queries ** 0.5))
            return side, side
        return layer_grid(queries, self.latent_hw)

    def wants(self, branch: str, queries: int) -> bool:
        """Whether a branch's maps at a layer of ``queries`` positions are kept at this step."""
        votes = bool(self.map_tokens.get(branch)) and self.grid(queries)[1] == self.blend_side
        return votes or self.keep_maps

    # --- maps
    def store(self, layer: str, branch: str, probabilities: torch.Tensor) -> None:
        """Add a branch's head-averaged maps [queries, L] of one layer at the current step."""
        height, width = self.grid(probabilities.shape[0])
        tokens = self.map_tokens.get(branch)
        # Sums stay on the UNet's device and grow in place: no host sync inside the UNet call and
        # no new tensor per layer and step.
        if tokens and width == self.blend_side:
            word_map = probabilities[:, tokens].sum(-1).reshape(height, width).float()
            if branch in self.blend_sums:
                self.blend_sums[branch].add_(word_map)
            else:
                self.blend_sums[branch] = word_map
        if self.keep_maps:
            bucket = self.accumulated.setdefault(layer, {})
            if branch in bucket:
                bucket[branch].add_(probabilities)
            else:
                bucket[branch] = probabilities.float()

    def word_maps(self) -> dict[str, torch.Tensor]:
        """Per branch, the blend words' maps summed over the voting layers and the steps so far (on the UNet's device)."""
        return {branch: total.clone() for branch, total in self.blend_sums.items()}  # a snapshot: the sums grow in place


class P2PAttnProcessor(EditAttnProcessor):
    """One layer's prompt-to-prompt control; the maths is in :func:`cross_attention_edit` / :func:`self_attention_edit`."""

    def __init__(self, site: AttentionSite, controller: AttentionController):
        super().__init__(site)
        self.controller = controller

    def attend(self, query, key, value, attn, attention_mask):
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                             is_causal=False)
        control = self.controller
        layout = control.layout
        if layout is None or attention_mask is not None:
            return out
        scale = attn.scale
        queries = query.shape[2]
        if self.site.role == "cross":
            if control.needs_maps:
                for branch, row in layout.map_rows.items():
                    if not control.wants(branch, queries):
                        continue
                    probabilities = (query[row] @ key[row].transpose(-1, -2) * scale).softmax(-1).mean(0)
                    control.store(self.site.name, branch, probabilities)
            if control.cross is not None and layout.targets:
                s, t = layout.sources, layout.targets
                out[t] = cross_attention_edit(query[s], key[s], query[t], key[t], value[t], control.cross, scale)
        elif layout.targets and control.spec.self_active(control.step, control.num_steps, queries):
            s, t = layout.sources, layout.targets
            out[t] = self_attention_edit(query[s], key[s], value[t], scale)
        return out


def cross_attention_edit(q_src, k_src, q_tgt, k_tgt, v_tgt, edit: CrossEdit, scale: float) -> torch.Tensor:
    """(P_src · G + P_tgt · diag(d)) · V_tgt with at most two SDPA calls, [B, heads, Q, head_dim]."""
    G = edit.G.to(v_tgt)  # noqa: N806
    moved = torch.einsum("ij,bhjd->bhid", G, v_tgt)  # G · V_tgt
    out = F.scaled_dot_product_attention(q_src, k_src, moved, scale=scale)
    if edit.keeps_target:
        kept = v_tgt * edit.d.to(v_tgt)[None, None, :, None]
        out = out + F.scaled_dot_product_attention(q_tgt, k_tgt, kept, scale=scale)
    return out


def self_attention_edit(q_src, k_src, v_tgt, scale: float) -> torch.Tensor:
    """Self-attention injection: the target's values under the source's probabilities, P_src · V_tgt."""
    return F.scaled_dot_product_attention(q_src, k_src, v_tgt, scale=scale)


class P2PJointProcessor(JointEditProcessor):
    """One joint-attention layer's prompt-to-prompt control (SD3, FLUX): the image queries' attention
    over the text keys is edited as a UNet's cross-attention, over the image keys as its
    self-attention (:func:`joint_attention_edit`); the text tokens' own rows are the target's."""

    def __init__(self, site: AttentionSite, controller: AttentionController):
        super().__init__(site)
        self.controller = controller

    def attend(self, query, key, value, attn, tokens: JointTokens):
        out = F.scaled_dot_product_attention(query, key, value)
        control, layout = self.controller, self.controller.layout
        if layout is None:
            return out
        image, text = tokens.image, tokens.text
        has_text = text.stop > text.start  # SD3.5's attn2 is joint plumbing over the image tokens alone
        scale = query.shape[-1] ** -0.5  # SDPA's own, as both families' processors use
        queries = query[:, :, image].shape[2]
        if control.needs_maps and has_text:
            for branch, row in layout.map_rows.items():
                if control.wants(branch, queries):
                    control.store(self.site.name, branch, text_probabilities(query[row, :, image], key[row], text, scale))
        cross = control.cross if has_text else None
        inject_self = control.spec.self_injected(control.step, control.num_steps)
        if layout.targets and (cross is not None or inject_self):
            s, t = layout.sources, layout.targets
            out[t, :, image] = joint_attention_edit(query[s][:, :, image], key[s], query[t][:, :, image], key[t], value[t],
                                                    tokens, cross, inject_self, scale)
        return out


def text_probabilities(query: torch.Tensor, key: torch.Tensor, text: slice, scale: float) -> torch.Tensor:
    """The image queries' joint-softmax probabilities on the text keys, head-averaged: [queries, L]
    (``query`` [heads, queries, d], ``key`` [heads, tokens, d]; one head at a time)."""
    total = None
    for head in range(query.shape[0]):
        probabilities = (query[head] @ key[head].transpose(-1, -2) * scale).softmax(-1)[:, text]
        total = probabilities if total is None else total + probabilities
    return total / query.shape[0]


def joint_attention_edit(q_src, k_src, q_tgt, k_tgt, v_tgt, tokens: JointTokens, cross: CrossEdit | None,
                         inject_self: bool, scale: float) -> torch.Tensor:
    """The target's image rows of a joint attention, P_edit · V_tgt, with two SDPA calls.

    P_edit takes the source's probabilities on the image keys when ``inject_self`` (else the target's)
    and P_src · G + P_tgt · diag(d) on the text keys under a ``cross`` edit (else the target's). Each
    block of a joint softmax is that softmax with the other block's values zeroed, so
    P_edit · V = SDPA(q_src, k_src, V_src) + SDPA(q_tgt, k_tgt, V_tgt') where V_src holds the values
    the source's probabilities weigh and V_tgt' the rest.
    """
    image, text = tokens.image, tokens.text
    from_source, from_target = torch.zeros_like(v_tgt), torch.zeros_like(v_tgt)
    (from_source if inject_self else from_target)[:, :, image] = v_tgt[:, :, image]
    if cross is None:
        from_target[:, :, text] = v_tgt[:, :, text]
    else:
        from_source[:, :, text] = torch.einsum("ij,bhjd->bhid", cross.G.to(v_tgt), v_tgt[:, :, text])
        from_target[:, :, text] = v_tgt[:, :, text] * cross.d.to(v_tgt)[None, None, :, None]
    return (F.scaled_dot_product_attention(q_src, k_src, from_source, scale=scale)
            + F.scaled_dot_product_attention(q_tgt, k_tgt, from_target, scale=scale))


def make_processors(model, controller: AttentionController) -> dict[str, object]:
    """A processor for every attention site of ``model`` (name → processor), sharing ``controller``."""
    def make(site: AttentionSite):
        return (P2PAttnProcessor if site.layout == "unet" else P2PJointProcessor)(site, controller)

    return processors_for(model.attention_sites(), make)
