"""Fitting the cost model's constants (``cnnlab.ops.dispatch``) to measured times, shared by
``bench_conv.py --fit`` (the layers) and ``bench_signal.py --fit`` (``cnnlab.signal``).

Each benchmark times both algorithms on a grid of shapes and reads, for each constant of an
algorithm's cost function, the count that multiplies it (flops for a rate, 1 for a
per-call time; see each script's ``cost_terms``). The model is then linear in the
coefficients (1/rate, seconds per call), which non-negative least squares fits on the
relative error, using only the shapes where the two algorithms are within
:data:`CONTESTED_RATIO` of each other: where the choice matters.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from scipy.optimize import nnls

from cnnlab.ops import dispatch

# Shapes where one algorithm is more than 10x faster teach the fit nothing about the
# crossover, and their large errors would dominate it.
CONTESTED_RATIO = 10.0


@contextmanager
def dispatch_constants(**values: float) -> Iterator[None]:
    """Temporarily set cost constants in ``cnnlab.ops.dispatch`` (restored on exit)."""
    saved = {name: getattr(dispatch, name) for name in values}
    try:
        for name, value in values.items():
            setattr(dispatch, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(dispatch, name, value)


def as_constant(name: str, coefficient: float) -> float:
    """A fitted coefficient as dispatch.py spells it: a rate (1/coef) or seconds."""
    if name.endswith("_SECONDS"):
        return coefficient
    return 1.0 / coefficient if coefficient > 0 else math.inf


def fit_constants(algorithm: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fit ``algorithm``'s constants on the contested rows; predict every row.

    Each row holds ``terms[algorithm]``: the count behind each fitted constant, and
    optionally ``"fixed"``, the seconds of the constants held fixed; ``f"{algorithm}_ms"``,
    the measured time; ``contested``. Minimises the relative error of (measured - fixed).
    """
    names = [name for name in rows[0]["terms"][algorithm] if name != "fixed"]
    features = np.array([[r["terms"][algorithm][name] for name in names] for r in rows])
    fixed = np.array([r["terms"][algorithm].get("fixed", 0.0) for r in rows])
    seconds = np.array([r[f"{algorithm}_ms"] for r in rows]) / 1e3
    contested = np.array([r["contested"] for r in rows])
    if contested.sum() <= len(names):  # too few near the crossover: use every row
        contested[:] = True
    scale = seconds[contested, None]
    target = np.maximum(seconds - fixed, 0.0)[contested]
    coef, _ = nnls(features[contested] / scale, target / scale[:, 0])
    predicted = features @ coef + fixed
    error = np.abs(predicted / seconds - 1)
    return {"constants": {name: as_constant(name, c) for name, c in zip(names, coef,
                                                                         strict=True)},
            "predicted_s": predicted, "rows_used": int(contested.sum()),
            "error_median": float(np.median(error[contested])),
            "error_max": float(np.max(error[contested]))}


def report_fit(fits: dict[str, dict[str, Any]], rows: Sequence[dict[str, Any]],
               alternatives: tuple[str, str], what: str) -> dict[str, Any]:
    """Print the suggested constants and how many choices they get right; return them.

    ``alternatives``: the two algorithms' names, the second the one chosen when its
    predicted time is lower (e.g. ``("gemm", "fft")``).
    """
    slow, fast = alternatives
    picks = np.where(fits[fast]["predicted_s"] < fits[slow]["predicted_s"], fast, slow)
    right_now = sum(r["faster"] == r["picks"] for r in rows)
    right_fit = sum(r["faster"] == pick for r, pick in zip(rows, picks, strict=True))
    slowdown = [max(r[f"{pick}_ms"] / r[f"{r['faster']}_ms"], 1.0)
                for r, pick in zip(rows, picks, strict=True)]
    print(f"\nSuggested constants for src/cnnlab/ops/dispatch.py (non-negative least "
          f"squares on relative error; {what}; not applied):")
    suggested: dict[str, float] = {}
    for algorithm, fit in fits.items():
        print(f"  {algorithm}: fitted on {fit['rows_used']} of {len(rows)} cases (within "
              f"{CONTESTED_RATIO:g}x of the other); |predicted/measured - 1| median "
              f"{fit['error_median']:.0%}, max {fit['error_max']:.0%}")
        for name, value in fit["constants"].items():
            print(f"    {name} = {value:.3g}    # now {getattr(dispatch, name):.3g}")
        suggested |= fit["constants"]
    print(f"choices right: current constants {right_now}/{len(rows)}, suggested "
          f"{right_fit}/{len(rows)} (worst wrong pick {max(slowdown):.2f}x slower)")
    return {"suggested": suggested,
            "current": {name: getattr(dispatch, name) for name in suggested},
            "choices_right": {"current": right_now, "suggested": right_fit, "of": len(rows)},
            "fit_error": {algorithm: {key: fit[key] for key in ("rows_used", "error_median",
                                                                "error_max")}
                          for algorithm, fit in fits.items()}}
