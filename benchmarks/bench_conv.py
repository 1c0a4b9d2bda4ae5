"""Convolution benchmark: cnnlab vs PyTorch CPU, side by side in one run.

For each layer shape it times ``cnnlab.functional.conv1d/conv2d`` and
``torch.nn.functional.conv1d/conv2d`` (float32, with bias), forward and forward+backward,
with the pause / burst / minimum-over-rounds protocol of ``_timing.py``, and reports the
ratio cnnlab/torch (lower is better) against the project's bars::

    python benchmarks/bench_conv.py --out BENCHMARKS-conv.md --json conv.json
    python benchmarks/bench_conv.py --quick --shapes resnet-3x3,2d-k31
    python benchmarks/bench_conv.py --fit        # GEMM vs FFT, constants for ops/dispatch.py

Flops are counted as ``2 * N * C_out * prod(out) * C_in/groups * prod(kernel)`` forward and
three times that forward+backward (grad input and grad weight each cost one forward).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from _fit import CONTESTED_RATIO, dispatch_constants, fit_constants, report_fit
from _timing import (
    FULL,
    QUICK,
    Protocol,
    compare,
    machine_info,
    machine_markdown,
    matmul_gflops,
    write_report,
)

import cnnlab
import cnnlab.functional as F
from cnnlab.ops import dispatch
from cnnlab.ops._args import conv_output_shape, prod
from cnnlab.ops.gemm import GemmPlan, gemm_plan

# Bars on the geometric mean of cnnlab/torch time ratios (lower is better).
BARS = {
    ("normal", "forward"): 3.0,
    ("normal", "forward_backward"): 2.0,
    ("large", "forward"): 0.25,
    ("large", "forward_backward"): 0.25,
}

# Relative error allowed between cnnlab and torch: max|a - b| / max|b|. float32 sums of up
# to ~6e4 products (grad of a 255-tap weight over N*L = 65536 positions) keep about 1e-5.
TOLERANCE = 1e-4


@dataclass(frozen=True)
class ConvCase:
    """One layer: (N, C_in, *spatial) -> C_out with a cubic kernel, stride and padding.

    ``torch_ref_ms``: PyTorch's forward / forward+backward time on the quiet development
    machine (REFERENCES.md), printed beside this run's to show how busy the machine is.
    """

    name: str
    batch: int
    in_channels: int
    spatial: tuple[int, ...]
    out_channels: int
    kernel: int
    stride: int
    padding: int
    large: bool
    torch_ref_ms: tuple[float, float]

    @property
    def dims(self) -> int:
        return len(self.spatial)

    @property
    def out_spatial(self) -> tuple[int, ...]:
        return conv_output_shape(self.spatial, (self.kernel,) * self.dims,
                                 (self.stride,) * self.dims, ((self.padding,) * 2,) * self.dims,
                                 (1,) * self.dims)

    @property
    def forward_flops(self) -> float:
        return (2.0 * self.batch * self.out_channels * prod(self.out_spatial)
                * self.in_channels * self.kernel**self.dims)

    def describe(self) -> str:
        spatial = "x".join(str(n) for n in self.spatial)
        return (f"{self.batch},{self.in_channels},{spatial}->{self.out_channels} "
                f"k{self.kernel} s{self.stride} p{self.padding}")


CASES = (
    ConvCase("lenet-c1", 128, 1, (28, 28), 6, 5, 1, 2, False, (0.45, 4.5)),
    ConvCase("lenet-c3", 128, 6, (14, 14), 16, 5, 1, 0, False, (0.21, 1.4)),
    ConvCase("cifar-first", 64, 3, (32, 32), 64, 3, 1, 1, False, (1.25, 7.0)),
    ConvCase("resnet-3x3", 32, 64, (56, 56), 64, 3, 1, 1, False, (18.6, 66.0)),
    ConvCase("strided", 32, 128, (28, 28), 256, 3, 2, 1, False, (10.6, 37.0)),
    ConvCase("1x1", 32, 256, (14, 14), 256, 1, 1, 0, False, (3.0, 13.8)),
    ConvCase("2d-k31", 8, 16, (64, 64), 16, 31, 1, 15, True, (188.0, 673.0)),
    ConvCase("1d-k255", 16, 32, (4096,), 32, 255, 1, 127, True, (226.0, 1221.0)),
)
CASES_BY_NAME = {case.name: case for case in CASES}
MODES = ("forward", "forward_backward")


# ---------------------------------------------------------------------------------------
# The two libraries, on the same float32 data.


@dataclass(frozen=True)
class Operands:
    """float32 input (N, C_in, *spatial), weight (C_out, C_in, *kernel), bias (C_out,) and
    a fixed upstream gradient (N, C_out, *out), as NumPy arrays and torch tensors sharing
    the memory."""

    x: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    grad_out: np.ndarray

    def torch(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a) for a in (self.x, self.weight, self.bias,
                                                   self.grad_out))


def make_operands(case: ConvCase, rng: np.random.Generator) -> Operands:
    kernel = (case.kernel,) * case.dims
    fan_in = case.in_channels * prod(kernel)
    scale = np.float32(1.0 / math.sqrt(fan_in))  # keeps outputs O(1), as a trained layer's
    return Operands(
        x=rng.standard_normal((case.batch, case.in_channels, *case.spatial), dtype=np.float32),
        weight=rng.standard_normal((case.out_channels, case.in_channels, *kernel),
                                   dtype=np.float32) * scale,
        bias=rng.standard_normal(case.out_channels, dtype=np.float32),
        grad_out=rng.standard_normal((case.batch, case.out_channels, *case.out_spatial),
                                     dtype=np.float32),
    )


def cnnlab_conv(dims: int) -> Callable[..., Any]:
    return {1: F.conv1d, 2: F.conv2d}[dims]


def torch_conv(dims: int) -> Callable[..., Any]:
    return {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d}[dims]


def cnnlab_calls(case: ConvCase, ops: Operands, algorithm: str = "auto"
                 ) -> dict[str, Callable[[], Any]]:
    """Forward on arrays, and forward+backward on fresh leaf Tensors (so grads start empty)."""
    conv = cnnlab_conv(case.dims)
    settings = {"stride": case.stride, "padding": case.padding, "algorithm": algorithm}

    def forward() -> np.ndarray:
        return conv(ops.x, ops.weight, ops.bias, **settings)

    def forward_backward() -> tuple[np.ndarray, ...]:
        leaves = [cnnlab.Tensor(a, requires_grad=True) for a in (ops.x, ops.weight, ops.bias)]
        y = conv(*leaves, **settings)
        y.backward(ops.grad_out)
        return (y.data, *(leaf.grad for leaf in leaves))

    return {"forward": forward, "forward_backward": forward_backward}


def torch_calls(case: ConvCase, ops: Operands) -> dict[str, Callable[[], Any]]:
    """Forward under no_grad, and forward+backward on fresh leaves (detach: no copy)."""
    conv = torch_conv(case.dims)
    x, weight, bias, grad_out = ops.torch()
    settings = {"stride": case.stride, "padding": case.padding}

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return conv(x, weight, bias, **settings)

    def forward_backward() -> tuple[torch.Tensor, ...]:
        leaves = [t.detach().requires_grad_(True) for t in (x, weight, bias)]
        y = conv(*leaves, **settings)
        y.backward(grad_out)
        return (y.detach(), *(leaf.grad for leaf in leaves))

    return {"forward": forward, "forward_backward": forward_backward}


def geometry(case: ConvCase, ops: Operands) -> GemmPlan:
    """The GEMM plan ``cnnlab.ops.dispatch`` builds for this layer (zero padding)."""
    return gemm_plan(ops.x.shape, ops.weight.shape, (case.stride,) * case.dims,
                         ((case.padding, case.padding),) * case.dims, (1,) * case.dims, 1)


def relative_error(ours: Any, reference: Any) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if ours.shape != reference.shape:
        return math.inf
    return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-30))


def check(ours: dict[str, Callable[[], Any]], theirs: dict[str, Callable[[], Any]]
          ) -> dict[str, float]:
    """Worst relative error of output (forward) and output + 3 grads (forward+backward)."""
    errors = {"forward": relative_error(ours["forward"](), theirs["forward"]().numpy())}
    pairs = zip(ours["forward_backward"](), theirs["forward_backward"](), strict=True)
    errors["forward_backward"] = max(relative_error(a, b.numpy()) for a, b in pairs)
    return errors


# ---------------------------------------------------------------------------------------
# Side-by-side run.


def bench_case(case: ConvCase, protocol: Protocol, rng: np.random.Generator) -> dict[str, Any]:
    ops = make_operands(case, rng)
    ours, theirs = cnnlab_calls(case, ops), torch_calls(case, ops)
    errors = check(ours, theirs)
    for mode, error in errors.items():
        if not error <= TOLERANCE:
            print(f"WARNING: {case.name} {mode}: cnnlab differs from torch by {error:.2e} "
                  f"(relative to max |torch|; tolerance {TOLERANCE:.0e})", file=sys.stderr)
    result: dict[str, Any] = {
        "name": case.name, "shape": case.describe(), "large": case.large,
        "algorithm": dispatch.choose_conv_method(geometry(case, ops)),
        "max_relative_error": errors,
        "forward_gflop": case.forward_flops / 1e9,
    }
    for mode, factor, ref_ms in zip(MODES, (1.0, 3.0), case.torch_ref_ms, strict=True):
        seconds = compare({"cnnlab": ours[mode], "torch": theirs[mode]}, protocol)
        flops = factor * case.forward_flops
        result[mode] = {
            "cnnlab_ms": seconds["cnnlab"] * 1e3,
            "torch_ms": seconds["torch"] * 1e3,
            "ratio": seconds["cnnlab"] / seconds["torch"],
            "cnnlab_gflops": flops / seconds["cnnlab"] / 1e9,
            "torch_gflops": flops / seconds["torch"] / 1e9,
            "torch_reference_ms": ref_ms,
        }
    return result


def geometric_mean(values: Sequence[float]) -> float:
    return float(np.exp(np.mean(np.log(values)))) if values else math.nan


def summarise(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for (group, mode), bar in BARS.items():
        ratios = [r[mode]["ratio"] for r in results if r["large"] == (group == "large")]
        if not ratios:
            continue
        mean = geometric_mean(ratios)
        rows.append({"group": group, "mode": mode, "shapes": len(ratios),
                     "geometric_mean": mean, "bar": bar, "meets_bar": mean <= bar})
    return rows


TABLE_HEADER = ("| shape | (N,C_in,spatial->C_out k s p) | auto | mode | cnnlab ms | torch ms "
                "| cnnlab/torch | cnnlab GFLOP/s | torch GFLOP/s |")


def table_rows(result: dict[str, Any]) -> list[str]:
    rows = []
    for mode in MODES:
        m = result[mode]
        rows.append(f"| {result['name']} | {result['shape']} | {result['algorithm']} | "
                    f"{mode.replace('_', '+')} | {m['cnnlab_ms']:.2f} | {m['torch_ms']:.2f} | "
                    f"{m['ratio']:.2f}x | {m['cnnlab_gflops']:.0f} | {m['torch_gflops']:.0f} |")
    return rows


def summary_lines(summary: Sequence[dict[str, Any]]) -> list[str]:
    names = {"normal": "normal shapes", "large": "large kernels"}
    return [f"- {names[s['group']]} ({s['shapes']}), {s['mode'].replace('_', '+')}: "
            f"geometric mean {s['geometric_mean']:.2f}x vs bar <= {s['bar']:.2f}x: "
            f"{'meets' if s['meets_bar'] else 'MISSES'}" for s in summary]


def markdown(report: dict[str, Any]) -> str:
    p, mm = report["protocol"], report["matmul_gflops"]
    lines = [
        "## Convolution: cnnlab vs PyTorch CPU",
        "",
        f"Command: `{report['command']}`",
        "",
        *machine_markdown(report["machine"]),
        f"- float32 2048x2048 matmul, same run: NumPy {mm['numpy']:.0f} GFLOP/s, "
        f"torch {mm['torch']:.0f} GFLOP/s",
        f"- Protocol: {p['rounds']} rounds; each turn sleeps {p['pause_s']} s, then times a "
        f"burst of about {p['burst_s']} s (at most {p['max_calls']} calls); minimum per-call "
        f"time over rounds (fewer rounds once a function has taken {p['budget_s']} s). "
        "float32, with bias; forward+backward = 3x forward flops.",
        "",
        TABLE_HEADER,
        "|---|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for result in report["results"]:
        lines += table_rows(result)
    lines += ["", "Geometric means of cnnlab/torch time (lower is better):", "",
              *summary_lines(report["summary"]), ""]
    return "\n".join(lines)


def print_result(result: dict[str, Any]) -> None:
    for mode in MODES:
        m = result[mode]
        print(f"{result['name']:<12} {result['algorithm']:<5} {mode.replace('_', '+'):<17} "
              f"cnnlab {m['cnnlab_ms']:9.2f} ms {m['cnnlab_gflops']:6.0f} GF/s   "
              f"torch {m['torch_ms']:9.2f} ms {m['torch_gflops']:6.0f} GF/s "
              f"(quiet-machine ref {m['torch_reference_ms']:g})   "
              f"ratio {m['ratio']:5.2f}x", flush=True)


def run_side_by_side(cases: Sequence[ConvCase], protocol: Protocol, command: str
                     ) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    machine = machine_info()
    print("machine:", json.dumps(machine))
    matmul = matmul_gflops(protocol)
    print(f"matmul 2048 float32: numpy {matmul['numpy']:.0f} GFLOP/s, "
          f"torch {matmul['torch']:.0f} GFLOP/s", flush=True)
    results = []
    for case in cases:
        results.append(bench_case(case, protocol, rng))
        print_result(results[-1])
    summary = summarise(results)
    print("\n".join(summary_lines(summary)))
    return {"command": command, "machine": machine, "protocol": protocol.as_dict(),
            "matmul_gflops": matmul, "results": results, "summary": summary}


# ---------------------------------------------------------------------------------------
# --fit: GEMM vs FFT on a grid of kernel sizes, and the dispatcher's constants.


# Per algorithm: the rate constants of its cost function in ``cnnlab.ops.dispatch``
# (seconds = count / rate) and its fixed per-call constant, used if dispatch.py defines one.
MODEL_CONSTANTS = {
    "gemm": (("GEMM_FLOPS_PER_S", "COPY_BYTES_PER_S"), "GEMM_CALL_SECONDS"),
    "fft": (("FFT_FLOPS_PER_S", "SPECTRAL_FLOPS_PER_S"), "FFT_LAYER_CALL_SECONDS"),
}
FIT_ALGORITHMS = tuple(MODEL_CONSTANTS)



def model_seconds(algorithm: str, geo: GemmPlan) -> float:
    if algorithm == "gemm":
        return dispatch.gemm_seconds(geo, 4)
    return dispatch.fft_seconds(geo)


def cost_terms(algorithm: str, geo: GemmPlan) -> dict[str, float]:
    """The cost model's count behind each constant, read off ``gemm_seconds``/``fft_seconds``.

    The models are affine in 1/rate, so evaluating one with a single rate at 1, the other
    rates at infinity and the per-call time at 0 yields that term's count (flops or bytes)
    without restating the formulas here. A per-call constant's count is 1.
    """
    rates, call = MODEL_CONSTANTS[algorithm]
    calls = [call] if hasattr(dispatch, call) else []
    off = {name: math.inf for name in rates} | dict.fromkeys(calls, 0.0)
    terms = {}
    for name in rates:
        with dispatch_constants(**(off | {name: 1.0})):
            terms[name] = model_seconds(algorithm, geo)
    return terms | dict.fromkeys(calls, 1.0)


def fit_cases() -> list[ConvCase]:
    """The six normal layers, then 2-D k in 3..31 on 32x32 and 64x64 and 1-D k in 9..255 on
    length 4096 ('same' padding; the grid includes both large-kernel layers).

    Two C_out per grid: the GEMM model's flops/bytes ratio is C_out/itemsize, so varying
    C_out is what separates GEMM_FLOPS_PER_S from COPY_BYTES_PER_S.
    """
    cases = [case for case in CASES if not case.large]
    for size in (32, 64):
        for c_out in (16, 64):
            for k in (3, 5, 9, 15, 31):
                cases.append(ConvCase(f"2d-{size}-o{c_out}-k{k}", 8, 16, (size, size), c_out,
                                      k, 1, k // 2, k > 9, (math.nan, math.nan)))
    for c_out in (8, 32):
        for k in (9, 17, 33, 65, 129, 255):
            cases.append(ConvCase(f"1d-4096-o{c_out}-k{k}", 16, 32, (4096,), c_out, k, 1,
                                  k // 2, k > 33, (math.nan, math.nan)))
    return cases


def run_fit(protocol: Protocol, command: str) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'shape':<20} {'gemm ms':>9} {'fft ms':>9} {'faster':>6} {'picks':>6}  "
          f"{'model gemm':>10} {'model fft':>9}")
    for case in fit_cases():
        ops = make_operands(case, rng)
        geo = geometry(case, ops)
        calls = {algo: cnnlab_calls(case, ops, algo)["forward"] for algo in FIT_ALGORITHMS}
        seconds = compare(calls, protocol)
        row = {"name": case.name, "shape": case.describe(),
               "gemm_ms": seconds["gemm"] * 1e3, "fft_ms": seconds["fft"] * 1e3,
               "faster": min(seconds, key=seconds.__getitem__),
               "picks": dispatch.choose_conv_method(geo),
               "model_gemm_ms": model_seconds("gemm", geo) * 1e3,
               "model_fft_ms": model_seconds("fft", geo) * 1e3,
               "contested": max(seconds.values()) < CONTESTED_RATIO * min(seconds.values()),
               "terms": {algo: cost_terms(algo, geo) for algo in FIT_ALGORITHMS}}
        rows.append(row)
        flag = "" if row["faster"] == row["picks"] else "  <- wrong pick"
        print(f"{case.name:<20} {row['gemm_ms']:9.2f} {row['fft_ms']:9.2f} {row['faster']:>6} "
              f"{row['picks']:>6}  {row['model_gemm_ms']:10.2f} {row['model_fft_ms']:9.2f}"
              f"{flag}", flush=True)

    fits = {algo: fit_constants(algo, rows) for algo in FIT_ALGORITHMS}
    fitted = report_fit(fits, rows, ("gemm", "fft"), "forward times")
    return {"command": command, "machine": machine_info(), "protocol": protocol.as_dict(),
            "fit": rows, **fitted}


# ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and shorter bursts (smoke test; noisy)")
    parser.add_argument("--shapes", default=None,
                        help="comma-separated subset of: " + ",".join(CASES_BY_NAME))
    parser.add_argument("--out", default=None, metavar="FILE.md",
                        help="write a Markdown section (machine, command, table, bars)")
    parser.add_argument("--json", default=None, metavar="FILE", help="write raw numbers")
    parser.add_argument("--fit", action="store_true",
                        help="time gemm vs fft on a grid of kernel sizes and suggest the "
                             "cost constants of cnnlab.ops.dispatch")
    args = parser.parse_args(argv)
    if args.shapes is not None:
        names = [name.strip().lower() for name in args.shapes.split(",") if name.strip()]
        unknown = [name for name in names if name not in CASES_BY_NAME]
        if unknown or not names:
            parser.error(f"--shapes must name some of {', '.join(CASES_BY_NAME)}; "
                         f"got {args.shapes!r}")
        args.cases = [CASES_BY_NAME[name] for name in names]
    else:
        args.cases = list(CASES)
    if args.fit and (args.shapes or args.out):
        parser.error("--fit uses its own grid of shapes and writes no Markdown; "
                     "drop --shapes/--out")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    protocol = QUICK if args.quick else FULL
    command = shlex.join(["python", "benchmarks/bench_conv.py",
                          *(sys.argv[1:] if argv is None else argv)])
    if args.fit:
        report = run_fit(protocol, command)
    else:
        report = run_side_by_side(args.cases, protocol, command)
        if args.out:
            write_report(args.out, markdown(report))
    if args.json:
        write_report(args.json, report)


if __name__ == "__main__":
    main()
