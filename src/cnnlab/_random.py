"""The one check for injected randomness (STYLE.md rule 15: the library never seeds
globally; anything random takes an ``np.random.Generator``). NumPy only, so every layer of
the package may use it."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_rng(rng: Any, owner: str, default_seed: int | None = None,
              required: bool = False) -> np.random.Generator:
    """``rng`` itself, or for ``None`` a new ``default_rng(default_seed)`` (unseeded when
    ``default_seed`` is None); a TypeError naming ``owner`` for anything else."""
    if rng is None and not required:
        return np.random.default_rng(default_seed)
    if not isinstance(rng, np.random.Generator):
        allowed = "a numpy.random.Generator" + ("" if required else " or None")
        raise TypeError(f"{owner}: rng must be {allowed}, got {type(rng).__name__}")
    return rng
