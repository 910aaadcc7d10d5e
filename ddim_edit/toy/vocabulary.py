"""The bundled toy model's vocabulary and grammar, read from :mod:`.world` (one source for the CLI's
warnings and ``--help`` epilogs and for the web page's hint).

The toy model was trained only on captions ``"a {fill} {colour} {shape} on a {background} background"``
(``"an"`` before a fill that starts with a vowel); a word outside them means nothing to it.
"""

from __future__ import annotations

import string

from .world import BACKGROUNDS, COLORS, FILLS, SHAPES, Scene, caption, caption_words

__all__ = ["GRAMMAR_HINT", "known_words", "unknown_words"]


def known_words() -> frozenset[str]:
    """Every word of every training caption, lower-case."""
    return frozenset(word.lower() for word in caption_words())


def _prompt_words(prompt: str) -> list[str]:
    """The prompt's words, lower-case, punctuation stripped from their ends, empty ones dropped."""
    stripped = (word.strip(string.punctuation).lower() for word in prompt.split())
    return [word for word in stripped if word]


def unknown_words(prompt: str) -> list[str]:
    """The prompt's words the toy model never saw, in order, each once: ``"a cat on a sofa"`` →
    ``["cat", "sofa"]``."""
    known = known_words()
    return list(dict.fromkeys(word for word in _prompt_words(prompt) if word not in known))


def _grammar_hint() -> str:
    example = caption(Scene(shape=SHAPES[0], color=next(iter(COLORS)), fill=FILLS[0],
                            background=next(iter(BACKGROUNDS))))
    groups = (("fill", FILLS), ("colour", tuple(COLORS)), ("shape", SHAPES), ("background", tuple(BACKGROUNDS)))
    slots = ", ".join(f"{name} {'|'.join(words)}" for name, words in groups)
    return f'the bundled toy model knows captions like "{example}": {slots}'


GRAMMAR_HINT: str = _grammar_hint()
"""One line: an example caption and the words of each slot, e.g. ``fill solid|striped|outlined``."""
