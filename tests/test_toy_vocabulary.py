"""The toy model's vocabulary and grammar (ddim_edit.toy.vocabulary), read from the toy world."""

from ddim_edit.toy import world
from ddim_edit.toy.vocabulary import GRAMMAR_HINT, known_words, unknown_words


def test_unknown_words_are_the_prompts_new_words_in_order_once():
    assert unknown_words("a cat on a sofa") == ["cat", "sofa"]
    assert unknown_words("A Cat, a CAT! on the sofa.") == ["cat", "the", "sofa"]
    assert unknown_words("a solid red circle on a white background") == []
    assert unknown_words("  ") == [] and unknown_words("...") == []


def test_every_caption_of_the_world_is_known():
    for caption in world.all_captions():
        assert unknown_words(caption) == [], caption
    for scene in world.sample_scenes(0, 50):
        assert unknown_words(world.caption(scene)) == []
    words = {word for caption in world.all_captions() for word in caption.split()}
    assert known_words() == words  # no word that no caption uses


def test_known_words_come_from_the_worlds_constants():
    known = known_words()
    assert isinstance(known, frozenset)
    for group in (world.FILLS, world.COLORS, world.SHAPES, world.BACKGROUNDS):
        assert set(group) <= known
    assert {"a", "an", "on", "background"} <= known and "cat" not in known


def test_grammar_hint_is_one_line_naming_every_slot_word():
    assert "\n" not in GRAMMAR_HINT
    assert '"a solid red circle on a white background"' in GRAMMAR_HINT
    assert "fill " + "|".join(world.FILLS) in GRAMMAR_HINT
    assert "colour " + "|".join(world.COLORS) in GRAMMAR_HINT
    assert "shape " + "|".join(world.SHAPES) in GRAMMAR_HINT
    assert "background " + "|".join(world.BACKGROUNDS) in GRAMMAR_HINT
