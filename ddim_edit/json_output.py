"""Strict JSON (RFC 8259) for everything ddim-edit prints or records: no ``NaN`` or ``Infinity``.

A PSNR of two identical images is +∞; JSON has no such number, so it is written as ``null``.
numpy and torch scalars become plain numbers.
"""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None, recursively."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) or type(value).__name__ in ("float16", "float32", "float64", "longdouble"):
        number = float(value)
        return number if math.isfinite(number) else None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return json_safe(value.item())  # numpy / torch scalars
    return value


def strict_json(value: Any) -> str:
    """``value`` as standard JSON: non-finite numbers become null, keys sorted, unknown objects as text."""
    return json.dumps(json_safe(value), sort_keys=True, default=str, allow_nan=False)
