"""What the bundled toy model cannot do, said in one warning line rather than in silent colour blobs.

The toy model (``--model toy``) was trained on one caption grammar over a few dozen words and on
rendered shapes only (:mod:`ddim_edit.toy.world`). Two things tell a user that an edit left that
world: prompt words it never saw (or a prompt outside its grammar), and an image that its VAE cannot
reproduce (a photo: its round trip falls far below what the model card measured on unseen scenes).
Each is a :class:`ToyModelWarning`: the CLI prints it as one ``Warning:`` line, batch records keep
it, the web page shows it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import warnings
from typing import Iterable, Iterator

import numpy as np

from ..images import to_tensor
from ..metrics import psnr
from ..model import TOY_MODELS, toy_model_path
from ..toy.vocabulary import GRAMMAR_HINT, unknown_words
from ..toy.world import all_captions
from ..workflow import decode, prepare_pixels

ROUND_TRIP_MARGIN_DB = 6.0  # below the card's worst unseen-scene round trip by this much: not a toy scene


class ToyModelWarning(UserWarning):
    """An input the bundled toy model was not trained for (unknown words, a photo)."""


def is_toy(model) -> bool:
    """True for the bundled toy models (the only models whose vocabulary and image world are known)."""
    return getattr(model, "name", None) in TOY_MODELS


def prompt_advice(prompts: Iterable[str]) -> str | None:
    """One line on what in ``prompts`` the toy model does not know: the words it never saw, else the
    prompts outside its caption grammar ("" and its own captions are fine: None)."""
    texts = [text for text in dict.fromkeys(p.strip() for p in prompts) if text and text.lower() not in _captions()]
    unknown = list(dict.fromkeys(word for text in texts for word in unknown_words(text)))
    if unknown:
        return (f"the bundled toy model knows coloured shapes only: {', '.join(map(repr, unknown))} "
                f"{'is' if len(unknown) == 1 else 'are'} unknown to it; pass --model for photos")
    if texts:
        return (f"{', '.join(map(repr, texts))} {'is' if len(texts) == 1 else 'are'} outside the toy model's "
                f"caption grammar, so edits may go wrong; {GRAMMAR_HINT}")
    return None


@functools.lru_cache(maxsize=1)
def _captions() -> frozenset[str]:
    return frozenset(all_captions())


@functools.lru_cache(maxsize=1)
def usual_round_trip_db() -> float | None:
    """The worst VAE round trip its model card measured on unseen scenes (None without the card)."""
    try:
        return float(json.loads((toy_model_path() / "evaluation.json").read_text())["vae_psnr_min_db"])
    except (OSError, ValueError, KeyError):
        return None


def round_trip_db(model, pixels: np.ndarray) -> float:
    """PSNR of ``pixels``, fitted to the model's size, through its VAE and back (what any
    reconstruction is bounded by)."""
    fitted = prepare_pixels(model, pixels).pixels
    return psnr(decode(model, model.encode_image(to_tensor(fitted))), fitted)


def image_advice(model, pixels: np.ndarray) -> str | None:
    """One line when ``pixels`` are far outside the toy model's world (its VAE cannot reproduce them)."""
    usual = usual_round_trip_db()
    if usual is None:
        return None
    measured = round_trip_db(model, pixels)
    if measured >= usual - ROUND_TRIP_MARGIN_DB:
        return None
    return (f"the bundled toy model reproduces this image at {measured:.1f} dB (its own scenes: ≥ {usual:.1f} dB): "
            "it knows coloured shapes only, so edits of this image will be colour blobs; pass --model for photos")


def warn_toy_model(model, prompts: Iterable[str | None] = (), pixels: Iterable[np.ndarray | None] = ()) -> None:
    """Warn (:class:`ToyModelWarning`) once about the prompts and once about each image the toy model
    does not know; other models: nothing."""
    if not is_toy(model):
        return
    advice = [prompt_advice(p for p in prompts if p is not None)]
    advice += [image_advice(model, image) for image in pixels if image is not None]
    for line in advice:
        if line is not None:
            warnings.warn(ToyModelWarning(line), stacklevel=2)


@contextlib.contextmanager
def collected_advice() -> Iterator[list[str]]:
    """Collect the :class:`ToyModelWarning` lines raised inside (each once, in order) into the
    yielded list instead of printing them; other warnings are shown as usual afterwards."""
    advice: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ToyModelWarning)
        yield advice
    advice.extend(dict.fromkeys(str(item.message) for item in caught if issubclass(item.category, ToyModelWarning)))
    for item in caught:
        if not issubclass(item.category, ToyModelWarning):
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)
