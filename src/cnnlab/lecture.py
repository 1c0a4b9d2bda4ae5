"""``cnnlab lecture``: the lecture's claims, each run as a small experiment on real data,
printed as a checklist with the measured numbers and written as one self-contained page.

Every claim is a function returning a :class:`Claim`: what the lecture says, whether the
measurement holds it up, the numbers, and a picture where one helps. ``quick`` runs each
on less data and fewer steps (the tests use it); the full run trains the networks with
their papers' recipes.
"""

from __future__ import annotations

import base64
import html
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import functional as F
from ._files import atomic_write

# The lecture's worked example ("Pooling" slide): 6x6 input, 3x3 filter, same-size output.
LECTURE_INPUT = np.array(
    [[3, 3, 2, 1, 0, 0],
     [3, 3, 2, 1, 0, 0],
     [3, 3, 2, 1, 0, 0],
     [3, 3, 3, 2, 0, 0],
     [3, 3, 2, 1, 0, 0],
     [3, 2, 1, 1, 0, 0]], dtype=np.float32)
LECTURE_FILTER = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=np.float32)


@dataclass(frozen=True)
class Claim:
    """One claim: ``title`` (what the lecture says), ``holds`` (the measurement agrees),
    ``measured`` (the numbers, one line), ``picture`` (PNG bytes or None)."""

    title: str
    holds: bool
    measured: str
    picture: bytes | None = None


def _continuous(quick: bool) -> Claim:
    from .analysis import periodic_convolution

    n = 256
    t = -np.pi + 2 * np.pi * np.arange(n) / n
    f, g, h = np.exp(-4 * t ** 2), np.where(np.abs(t) < 1, 1.0, 0.0), np.cos(3 * t)
    fg, gf = periodic_convolution(f, g), periodic_convolution(g, f)
    commute = float(np.abs(fg - gf).max())
    linear = float(np.abs(periodic_convolution(2 * f + h, g) - 2 * fg
                          - periodic_convolution(h, g)).max())
    shift = float(np.abs(periodic_convolution(np.roll(f, 17), g) - np.roll(fg, 17)).max())
    worst = max(commute, linear, shift)
    return Claim("Convolution on [-pi, pi] commutes, is linear and shift-equivariant",
                 worst < 1e-10, f"f*g - g*f {commute:.1e}, linearity {linear:.1e}, "
                                f"shift {shift:.1e} (max abs, 256 samples)")


def _worked_example(quick: bool) -> Claim:
    feature = F.conv2d(LECTURE_INPUT[None, None], LECTURE_FILTER[None, None], padding="same")
    pooled = F.max_pool2d(feature, 2)[0, 0]
    one_d = F.conv1d(np.arange(6.0)[None, None], np.array([[[1.0, 0.0, -1.0]]]))[0, 0]
    expected_1d = np.arange(6.0)[:-2] - np.arange(6.0)[2:]
    holds = pooled.tolist() == [[13, 10, 2], [14, 11, 3], [13, 10, 3]] and np.allclose(
        one_d, expected_1d)
    return Claim("The discrete sum in 1-D and 2-D; the worked 6x6 example and its pooling",
                 holds, f"pooled 3x3 = {pooled.astype(int).tolist()} (the slide's "
                        f"[[13, 10, 2], [14, 11, 3], [13, 10, 3]]); 1-D [1, 0, -1] on 0..5 "
                        f"= {one_d.astype(int).tolist()}")


def _boundaries(quick: bool) -> Claim:
    x = np.random.default_rng(0).standard_normal((1, 1, 20))
    w = np.random.default_rng(1).standard_normal((1, 1, 5))
    sizes = {mode: F.conv1d(x, w, padding=mode).shape[-1] for mode in ("valid", "full",
                                                                       "same")}
    strided = F.conv1d(x, w, stride=3, padding=2)
    kept = F.conv1d(x, w, stride=1, padding=2)[..., ::3]
    holds = sizes == {"valid": 16, "full": 24, "same": 20} and np.allclose(strided, kept)
    return Claim("Boundary conditions: valid n-k+1, full n+k-1, same n; stride s = stride "
                 "1, then every s-th output", holds,
                 f"n=20, k=5: valid {sizes['valid']}, full {sizes['full']}, same "
                 f"{sizes['same']}; stride 3 vs every 3rd of stride 1: max difference "
                 f"{float(np.abs(strided - kept).max()):.1e}")


def _black_box(quick: bool) -> Claim:
    from scipy import ndimage

    from .analysis import kernel_of

    weights = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0], [2.0, 0.0, -1.0]])
    found = kernel_of(lambda a: ndimage.correlate(a, weights[None], mode="wrap"),
                      (1, 16, 16), rng=np.random.default_rng(0))
    holds = (found.linear and found.shift_equivariant and found.kernel is not None
             and np.allclose(found.kernel[0, 0], weights) and found.boundary == "circular")
    return Claim("Any linear shift-equivariant operator is a convolution (kernel_of on a "
                 "black box)", holds,
                 f"scipy.ndimage.correlate(mode='wrap'): linear (error "
                 f"{found.linearity_error:.1e}), equivariant (error "
                 f"{found.equivariance_error:.1e}), kernel recovered, boundary "
                 f"{found.boundary}")


def _matrix(quick: bool) -> Claim:
    from .analysis import conv_matrix_stats
    from .viz.pictures import plot_conv_matrix

    weight = np.random.default_rng(0).standard_normal((4, 1, 3, 3))
    stats = conv_matrix_stats(weight, (1, 16, 16), padding=1)
    picture = plot_conv_matrix(weight[:1], (1, 8, 8), padding=1)
    holds = stats.distinct_values <= weight.size and stats.nonzeros < stats.dense_params / 20
    return Claim("A convolution is a sparse, weight-shared matrix; an MLP's is dense", holds,
                 f"4 3x3 filters on 16x16: {stats.nonzeros:,} nonzeros, "
                 f"{stats.distinct_values} distinct values, {stats.weight_params} "
                 f"parameters; the dense layer: {stats.dense_params:,}", picture.png)


def _pooling(quick: bool) -> Claim:
    from .data import load_dataset

    _, test = load_dataset("digits")
    x = test.x[:200].astype(np.float64)
    w = np.random.default_rng(0).standard_normal((4, 1, 3, 3))
    shifted = np.roll(x, 1, axis=3)
    conv, conv_s = F.conv2d(x, w, padding=1), F.conv2d(shifted, w, padding=1)
    pool, pool_s = F.max_pool2d(conv, 2), F.max_pool2d(conv_s, 2)
    unchanged_conv = float(np.mean(np.isclose(conv, conv_s)))
    unchanged_pool = float(np.mean(np.isclose(pool, pool_s)))
    return Claim("Pooling buys approximate invariance to small shifts", unchanged_pool >
                 unchanged_conv, f"a 1-pixel shift of 200 digits leaves {unchanged_conv:.0%}"
                                 f" of conv outputs unchanged, {unchanged_pool:.0%} after "
                                 f"2x2 max pooling")


def _fields(quick: bool) -> Claim:
    from . import nn
    from .analysis import effective_receptive_field, receptive_fields

    sizes, sigmas = [], []
    for n in (5, 10, 20):
        model = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1, bias=False)
                                for _ in range(n)])
        for p in model.parameters():
            p.data[...] = 1 / 9
        sizes.append(receptive_fields(model, (1, 4 * n + 3, 4 * n + 3)).rows[-1].size[0])
        sigmas.append(effective_receptive_field(model, (1, 4 * n + 3, 4 * n + 3),
                                                samples=1).sigma[0])
    expected = [np.sqrt(2 * n / 3) for n in (5, 10, 20)]
    holds = sizes == [11, 21, 41] and np.allclose(sigmas, expected, rtol=1e-4)
    return Claim("Receptive fields grow with depth (2n+1); the effective field as sqrt(n)",
                 holds, f"n = 5, 10, 20 uniform 3x3 layers: fields {sizes}, ERF sigma "
                        f"{[round(float(s), 2) for s in sigmas]} (sqrt(2n/3) = "
                        f"{[round(float(s), 2) for s in expected]})")


# While run_lecture runs, each (data, model, quick, settings) is trained once and shared by
# the claims that need it (LeNet-5 on mnist5k serves three): training is deterministic
# given the recipe's seed, so sharing changes no number and saves about a third of the run.
_TRAINED: dict[tuple[Any, ...], Any] | None = None


def _train(data: str, model: str, quick: bool, **overrides: Any) -> Any:
    from .train import default_config, train

    if quick:
        overrides.setdefault("steps", 300 if data.startswith("mnist1d") else 250)
    key = (data, model, quick, tuple(sorted(overrides.items())))
    if _TRAINED is not None and key in _TRAINED:
        return _TRAINED[key]
    result = train(default_config(data, model, progress=False, **overrides))
    if _TRAINED is not None:
        _TRAINED[key] = result
    return result


def _cnn_vs_mlp(quick: bool) -> Claim:
    from .analysis import shift_robustness
    from .train import count_parameters
    from .viz.pictures import plot_shift_robustness

    rows, curves = [], {}
    holds = True
    for data, cnn in (("mnist1d", "mnist1d-cnn"), ("mnist5k", "lenet5")):
        c, m = _train(data, cnn, quick), _train(data, "mlp", quick)
        ca, ma = c.metrics["test_accuracy"], m.metrics["test_accuracy"]
        holds &= ca > ma
        rows.append(f"{data}: CNN {ca:.1%} ({count_parameters(c.model):,} parameters) vs "
                    f"MLP {ma:.1%} ({count_parameters(m.model):,})")
        if data == "mnist5k":
            from .data import load_dataset

            _, test = load_dataset("mnist5k")
            x, y = test.x[:300], test.y[:300]
            blur = _train(data, cnn, quick, pool="blur")
            curves = {"MLP": shift_robustness(m.model, x, y, max_shift=3),
                      "CNN (LeNet-5)": shift_robustness(c.model, x, y, max_shift=3),
                      "CNN with BlurPool": shift_robustness(blur.model, x, y, max_shift=3)}
    picture = plot_shift_robustness(curves)
    shifted = ", ".join(f"{k} {v.accuracy[-1]:.0%}" for k, v in curves.items())
    return Claim("A CNN beats an MLP with fewer parameters", holds,
                 "; ".join(rows) + f"; at a 3-pixel shift: {shifted}", picture.png)


def _shuffled(quick: bool) -> Claim:
    plain = _train("mnist1d", "mnist1d-cnn", quick).metrics["test_accuracy"]
    shuffled = _train("mnist1d-shuffled", "mnist1d-cnn", quick).metrics["test_accuracy"]
    return Claim("The prior is spatial: shuffling positions breaks the CNN",
                 shuffled < plain - 0.1,
                 f"MNIST-1D CNN {plain:.1%} -> {shuffled:.1%} with one fixed permutation of "
                 f"the positions (Greydanus 2020: 94% -> 56%)")


def _blurpool(quick: bool) -> Claim:
    from .analysis import shift_consistency
    from .data import load_dataset

    _, test = load_dataset("mnist5k")
    x = test.x[:300]
    rng = np.random.default_rng(0)
    found = {}
    for pool in ("max", "blur"):
        model = (_train("mnist5k", "lenet5", quick) if pool == "max" else
                 _train("mnist5k", "lenet5", quick, pool="blur")).model
        found[pool] = shift_consistency(model, x, max_shift=3, pairs=4, rng=rng).consistency
    return Claim("BlurPool vs max pooling: shift consistency (Zhang 2019)", True,
                 f"LeNet-5 on mnist5k, shifts up to 3 px: max {found['max']:.1%}, BlurPool "
                 f"{found['blur']:.1%} (measured, not a pass/fail claim: on these centred "
                 f"digits the dense head decides, see BENCHMARKS.md)")


def _lenet1989(quick: bool) -> Claim:
    from .analysis import parameter_table
    from .models import build_model

    model = build_model("lenet1989", np.random.default_rng(0), (1, 16, 16), 10)
    table = parameter_table(model, (1, 16, 16))
    result = _train("mnist5k", "lenet1989", quick)
    error = 1 - result.metrics["test_accuracy"]
    return Claim("LeNet-1989: 9,760 parameters", table.total_params == 9760,
                 f"{table.total_params:,} parameters, {table.total_macs + 1000:,} "
                 f"connections (paper: 9,760 and 64,660); error on mnist5k at 16x16: "
                 f"{error:.1%} (the paper: 5.0% on its zip-code set, not available "
                 f"offline)")


def _features(quick: bool) -> Claim:
    from .data import load_dataset
    from .viz.pictures import plot_feature_maps

    result = _train("mnist5k", "lenet5", quick)
    _, test = load_dataset("mnist5k")
    picture = plot_feature_maps(result.model, test.x[0])
    return Claim("Stacked layers compose features from low to high level", True,
                 "LeNet-5's feature maps of one test digit, conv1 then conv2 (see the "
                 "picture)", picture.png)


CLAIMS: tuple[Callable[[bool], Claim], ...] = (
    _continuous, _worked_example, _boundaries, _black_box, _matrix, _pooling, _fields,
    _cnn_vs_mlp, _shuffled, _blurpool, _lenet1989, _features)


def run_lecture(out: str | os.PathLike[str] | None = None, *, quick: bool = False,
                say: Callable[[str], None] = print) -> list[Claim]:
    """Run every claim, print the checklist, and with ``out`` (a folder) write
    ``lecture.html`` there."""
    global _TRAINED
    started = time.perf_counter()
    claims = []
    _TRAINED = {}
    try:
        for make in CLAIMS:
            claim = make(quick)
            claims.append(claim)
            say(f"[{'x' if claim.holds else ' '}] {claim.title}\n      {claim.measured}")
    finally:
        _TRAINED = None
    took = time.perf_counter() - started
    say(f"{sum(c.holds for c in claims)} of {len(claims)} claims hold ({took:.0f} s"
        f"{', quick' if quick else ''})")
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "lecture.html", lambda f: f.write(_page(claims, took,
                                                                      quick).encode()))
    return claims


def _page(claims: list[Claim], took: float, quick: bool) -> str:
    items = []
    for claim in claims:
        picture = ""
        if claim.picture is not None:
            data = base64.b64encode(claim.picture).decode("ascii")
            picture = f'<img alt="{html.escape(claim.title)}" ' \
                      f'src="data:image/png;base64,{data}">'
        mark = "holds" if claim.holds else "does not hold"
        items.append(f'<section><h2>{html.escape(claim.title)}</h2><p class="{mark}">'
                     f"{mark}: {html.escape(claim.measured)}</p>{picture}</section>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:1em auto}"
             "img{max-width:100%}.holds{color:#1a7f37}.does{color:#b00}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>The lecture, "
            f"checked</title><style>{style}</style></head><body><h1>The lecture, checked"
            f"</h1><p>{sum(c.holds for c in claims)} of {len(claims)} claims hold, "
            f"measured in {took:.0f} s{' (quick)' if quick else ''}.</p>"
            f"{''.join(items)}</body></html>")


__all__ = ["CLAIMS", "LECTURE_FILTER", "LECTURE_INPUT", "Claim", "run_lecture"]
