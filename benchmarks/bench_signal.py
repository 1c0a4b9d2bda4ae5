"""cnnlab.signal vs scipy.signal: seconds per call on representative sizes, and --fit.

For a few shapes (a long 1-D signal with a 255-tap and a 10,000-tap filter, a 256x256
image with a 31x31 kernel, a tiny 8-sample signal with 6 taps) it times ``convolve``
(method 'auto' and 'direct'), ``fftconvolve`` and ``oaconvolve`` of cnnlab and SciPy,
float64, 'full' mode, with the pause / burst / minimum-over-rounds protocol of
``_timing.py``::

    python benchmarks/bench_signal.py                       # cnnlab vs SciPy
    python benchmarks/bench_signal.py --baseline old.py     # + an older cnnlab/signal.py
    python benchmarks/bench_signal.py --fit                 # direct vs fft, cost constants

``--baseline FILE`` loads another version of ``cnnlab/signal.py`` from a file (its imports
must resolve) and times it as a third contender, for before/after comparisons in one run.

``--fit`` times ``cnnlab.signal.convolve`` with ``method='direct'`` and ``'fft'`` forced on
a grid of 1-D, 2-D and 3-D shapes in the three modes, prints which is faster and what
``choose_conv_method`` picks, and fits the constants of the shared cost model
(``cnnlab.ops.dispatch.convolve_seconds``) that only the signal path exercises:
``FFT_CONVOLVE_CALL_SECONDS`` and ``FFT_LINE_FLOPS_PER_S`` for the FFT, the three
``NP_CONVOLVE_*`` constants of the 1-D direct sum. The constants the layers also use (the
GEMM engine's, ``FFT_FLOPS_PER_S``) are fitted by ``bench_conv.py --fit`` and held fixed
here. It only prints; editing ``dispatch.py`` is a separate, reviewed change.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import scipy.signal as ss
from _fit import CONTESTED_RATIO, dispatch_constants, fit_constants, report_fit
from _timing import FULL, QUICK, Protocol, compare, machine_info, write_report

import cnnlab.signal as cs
from cnnlab.ops import dispatch


@dataclass(frozen=True)
class SignalCase:
    """in1 of ``shape1`` convolved with in2 of ``shape2`` (float64, standard normal)."""

    name: str
    shape1: tuple[int, ...]
    shape2: tuple[int, ...]
    mode: str = "full"

    def operands(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return rng.standard_normal(self.shape1), rng.standard_normal(self.shape2)


CASES = (
    SignalCase("1d-1e5-k255", (100_000,), (255,)),
    SignalCase("2d-256-k31", (256, 256), (31, 31)),
    SignalCase("small-8-k6", (8,), (6,)),
    # issue 13: the exact direct sum on a long 1-D signal (it took 39 s and 1.1 GiB)
    SignalCase("1d-1e5-k1e4", (100_000,), (10_000,)),
)
# (label, function, keyword arguments)
FUNCTIONS = (("convolve", "convolve", {}), ("fftconvolve", "fftconvolve", {}),
             ("oaconvolve", "oaconvolve", {}),
             ("convolve-direct", "convolve", {"method": "direct"}))


def load_module(path: str, name: str = "baseline_signal") -> Any:
    """A module loaded from a file path (an older ``signal.py`` kept for comparison)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline: cannot load a Python module from {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_compare(cases: Sequence[SignalCase], protocol: Protocol, baseline: Any | None
                ) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    libraries = {"cnnlab": cs, "scipy": ss}
    if baseline is not None:
        libraries = {"before": baseline} | libraries
    rows = []
    for case in cases:
        in1, in2 = case.operands(rng)
        for function, name_in_lib, options in FUNCTIONS:
            calls: dict[str, Callable[[], Any]] = {
                name: partial(getattr(lib, name_in_lib), in1, in2, case.mode, **options)
                for name, lib in libraries.items()}
            seconds = compare(calls, protocol)
            row = {"case": case.name, "function": function,
                   **{f"{name}_ms": s * 1e3 for name, s in seconds.items()}}
            rows.append(row)
            ratio = seconds["cnnlab"] / seconds["scipy"]
            times = "  ".join(f"{name} {s * 1e3:9.3f} ms" for name, s in seconds.items())
            print(f"{case.name:<13} {function:<15} {times}   cnnlab/scipy {ratio:5.2f}x",
                  flush=True)
    return rows


# ---------------------------------------------------------------------------------------
# --fit: direct vs fft through cnnlab.signal.convolve, and the signal-only constants.


# The constants --fit estimates, by the method whose model uses them; the layers' rates
# (bench_conv.py --fit) stay fixed. Per-call constants end in _SECONDS and count 1 per call.
FIT_CONSTANTS = {
    "direct": ("NP_CONVOLVE_CALL_SECONDS", "NP_CONVOLVE_OUTPUT_SECONDS",
               "NP_CONVOLVE_MACS_PER_S"),
    "fft": ("FFT_LINE_FLOPS_PER_S", "FFT_CONVOLVE_CALL_SECONDS"),
}



def fit_cases() -> list[SignalCase]:
    """1-D signals of 50 to 10^5 samples with 3 to 1000 taps, 2-D images of 16^2 to 256^2
    with 3^2 to 31^2 kernels and two 3-D volumes, each in the three modes."""
    shapes = []
    for n in (50, 500, 5000, 100_000):
        shapes += [((n,), (k,)) for k in (3, 15, 63, 255, 1000) if k <= n]
    for n in (16, 64, 256):
        shapes += [((n, n), (k, k)) for k in (3, 7, 15, 31) if k <= n]
    shapes += [((32, 32, 32), (5, 5, 5)), ((48, 48, 48), (9, 9, 9))]
    return [SignalCase("x".join(map(str, s1)) + "-k" + "x".join(map(str, s2)), s1, s2, mode)
            for s1, s2 in shapes for mode in ("full", "same", "valid")]


def model_seconds(method: str, in1: np.ndarray, in2: np.ndarray, mode: str) -> float:
    """The shared model's time for ``convolve(in1, in2, mode, method)``."""
    return dispatch.convolve_seconds(in1.shape, in2.shape, mode,
                                     np.result_type(in1, in2))[method]


def cost_terms(method: str, in1: np.ndarray, in2: np.ndarray, mode: str) -> dict[str, float]:
    """The model's count behind each fitted constant, plus the fixed constants' part.

    The model is affine in 1/rate and in the per-call seconds, so evaluating it with one
    fitted constant at 1 (a rate) or at 1 s (a per-call or per-tap time) and the other
    fitted ones switched off yields that term's count; with all of them off, what remains is
    the part of the fixed (layer-fitted) constants, ``"fixed"``.
    """
    names = FIT_CONSTANTS[method]
    off = {name: (0.0 if name.endswith("_SECONDS") else math.inf) for name in names}
    with dispatch_constants(**off):
        fixed = model_seconds(method, in1, in2, mode)
    terms = {}
    for name in names:
        with dispatch_constants(**(off | {name: 1.0})):
            terms[name] = model_seconds(method, in1, in2, mode) - fixed
    return terms | {"fixed": fixed}


def run_fit(protocol: Protocol) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'shape':<22} {'mode':<5} {'direct ms':>9} {'fft ms':>9} {'faster':>6} "
          f"{'picks':>6}  {'model direct':>12} {'model fft':>9}")
    for case in fit_cases():
        in1, in2 = case.operands(rng)
        calls = {method: partial(cs.convolve, in1, in2, case.mode, method)
                 for method in FIT_CONSTANTS}
        seconds = compare(calls, protocol)
        model = {m: model_seconds(m, in1, in2, case.mode) for m in FIT_CONSTANTS}
        row = {"name": case.name, "mode": case.mode,
               "direct_ms": seconds["direct"] * 1e3, "fft_ms": seconds["fft"] * 1e3,
               "faster": min(seconds, key=seconds.__getitem__),
               "picks": cs.choose_conv_method(in1, in2, case.mode),
               "model_direct_ms": model["direct"] * 1e3, "model_fft_ms": model["fft"] * 1e3,
               "contested": max(seconds.values()) < CONTESTED_RATIO * min(seconds.values()),
               "terms": {m: cost_terms(m, in1, in2, case.mode) for m in FIT_CONSTANTS}}
        rows.append(row)
        flag = "" if row["faster"] == row["picks"] else "  <- wrong pick"
        print(f"{case.name:<22} {case.mode:<5} {row['direct_ms']:9.3f} {row['fft_ms']:9.3f} "
              f"{row['faster']:>6} {row['picks']:>6}  {row['model_direct_ms']:12.3f} "
              f"{row['model_fft_ms']:9.3f}{flag}", flush=True)
    fits = {method: fit_constants(method, rows) for method in FIT_CONSTANTS}
    return {"fit": rows, **report_fit(fits, rows, ("direct", "fft"),
                                      "layer-fitted rates held fixed")}


# ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (noisy)")
    parser.add_argument("--baseline", metavar="FILE.py", default=None,
                        help="an older cnnlab/signal.py to time beside the current one")
    parser.add_argument("--fit", action="store_true",
                        help="time direct vs fft on a grid and suggest cost constants")
    parser.add_argument("--json", metavar="FILE", default=None, help="write raw numbers")
    args = parser.parse_args(argv)
    protocol = QUICK if args.quick else FULL
    command = shlex.join(["python", "benchmarks/bench_signal.py",
                          *(sys.argv[1:] if argv is None else argv)])
    machine = machine_info()
    print("machine:", json.dumps(machine))
    if args.fit:
        report = run_fit(protocol)
    else:
        baseline = load_module(args.baseline) if args.baseline else None
        report = {"rows": run_compare(CASES, protocol, baseline)}
    report |= {"command": command, "machine": machine, "protocol": protocol.as_dict()}
    if args.json:
        write_report(args.json, report)


if __name__ == "__main__":
    main()
