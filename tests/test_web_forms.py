"""The web page's text fields turned into edit options (no Gradio needed); and the loopback check of the server."""

import numpy as np
import pytest

from ddim_edit.errors import PromptError
from ddim_edit.masks import MaskError
from ddim_edit.web import forms
from ddim_edit.web.server import is_loopback


def test_forms():
    assert forms.words("red, circle  blue") == ("red", "circle", "blue")
    assert forms.word_values("blue=2, red=0.5", "reweight", "blue=2") == {"blue": 2.0, "red": 0.5}
    with pytest.raises(PromptError, match="WORD=NUMBER"):
        forms.word_values("blue", "reweight", "blue=2")
    with pytest.raises(PromptError, match="finite"):
        forms.word_values("blue=inf", "reweight", "blue=2")
    assert forms.blend_choice(True, "") is None and forms.blend_choice(False, "red") == ()
    assert forms.blend_choice(True, "red circle") == ("red", "circle")
    layer = np.zeros((4, 4, 4), np.uint8)
    layer[1, 2, 3] = 200
    assert forms.painted_mask({"layers": [layer]}).nonzero() == (np.array([1]), np.array([2]))
    with pytest.raises(MaskError, match="no mask"):
        forms.painted_mask({"layers": []})
    uploaded = np.zeros((4, 4, 3), np.uint8)
    uploaded[0, 0] = 255
    assert forms.painted_mask({"layers": [layer]}, uploaded)[0, 0] == 255
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
