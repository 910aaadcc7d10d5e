"""Metrics (ddim_edit/metrics.py): the centroid shift tells a moved mask from a misshapen one."""

import numpy as np
import pytest


def test_centroid_shift_tells_a_moved_mask_from_a_misshapen_one():
    from ddim_edit.metrics import centroid_shift, iou

    square = np.zeros((32, 32), bool)
    square[8:16, 8:16] = True
    moved = np.roll(square, (3, 4), axis=(0, 1))
    assert centroid_shift(square, moved) == pytest.approx(5.0)
    assert centroid_shift(square, square) == 0.0
    grown = np.zeros_like(square)
    grown[6:18, 6:18] = True  # same centre, larger: low IoU, no shift
    assert iou(square, grown) < 0.5 and centroid_shift(square, grown) == pytest.approx(0.0)
    assert np.isnan(centroid_shift(square, np.zeros_like(square)))
