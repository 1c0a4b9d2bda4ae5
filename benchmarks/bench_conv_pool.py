"""Convolution + 2x2 max pooling, forward + backward: the fused layer, the two ops, the cost
model's choice, and PyTorch, side by side (protocol of ``_timing.py``).

``fused`` forces :func:`cnnlab.functional.conv_max_pool`'s strided convolution; ``two ops``
is ``conv2d`` then ``max_pool2d``; ``auto`` is what ``conv_max_pool`` (and
``nn.Sequential``) runs, as :func:`cnnlab.ops.dispatch.pooling_in_conv_pays` decides. The
check: ``auto`` within noise of the faster of the two on every shape.

    python benchmarks/bench_conv_pool.py --out BENCHMARKS-conv-pool.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from _timing import FULL, QUICK, compare, write_report

# (name, batch, C_in, size, C_out, kernel, padding): LeNet-5's two layers, CIFAR's first,
# and wider layers where the shifted kernels' zeros cost more than the pooling saves.
SHAPES = (
    ("lenet-c1", 64, 1, 28, 6, 5, 2),
    ("lenet-c3", 64, 6, 14, 16, 5, 0),
    ("cifar-first", 64, 3, 32, 64, 3, 1),
    ("8->16 3x3", 64, 8, 32, 16, 3, 1),
    ("64->64 3x3", 16, 64, 32, 64, 3, 1),
    ("256->256 1x1", 16, 256, 16, 256, 1, 0),
)


def cnnlab_step(x: np.ndarray, w: np.ndarray, b: np.ndarray, padding: int, mode: str
                ) -> Callable[[], Any]:
    """Forward + backward (gradients of x, w, b) of one conv + pool, as ``mode`` runs it."""
    from cnnlab import Tensor
    from cnnlab import functional as F
    from cnnlab.autograd import grad

    def step() -> Any:
        xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))
        if mode == "two ops":
            y = F.max_pool2d(F.conv2d(xt, wt, bt, padding=padding), 2)
        else:
            y = F.conv_max_pool(xt, wt, bt, padding=padding, pool_size=2)
        return grad(y, [xt, wt, bt], np.ones(y.shape, y.dtype))

    if mode != "fused":
        return step

    def forced() -> Any:  # the strided convolution whatever the cost model says
        from cnnlab.functional import conv_pool

        saved = conv_pool.pooling_in_conv_pays
        conv_pool.pooling_in_conv_pays = lambda *args: True
        try:
            return step()
        finally:
            conv_pool.pooling_in_conv_pays = saved

    return forced


def fuses(x: np.ndarray, w: np.ndarray, padding: int) -> bool:
    """The cost model's choice for this layer (as ``conv_max_pool`` asks it)."""
    from cnnlab.ops.dispatch import pooling_in_conv_pays
    from cnnlab.ops.gemm import gemm_plan

    pads = ((padding, padding),) * 2
    stride_one = gemm_plan(x.shape, w.shape, (1, 1), pads, (1, 1), 1)
    big = (4 * w.shape[0], w.shape[1], w.shape[2] + 1, w.shape[3] + 1)
    layout = "batch" if stride_one.batch_inner else "image"
    fused = gemm_plan(x.shape, big, (2, 2), pads, (1, 1), 1, layout)
    return pooling_in_conv_pays(stride_one, fused, x.itemsize)


def torch_step(x: np.ndarray, w: np.ndarray, b: np.ndarray, padding: int
               ) -> Callable[[], Any]:
    import torch
    import torch.nn.functional as TF

    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))

    def step() -> Any:
        y = TF.max_pool2d(TF.conv2d(xt, wt, bt, padding=padding), 2)
        return torch.autograd.grad(y, [xt, wt, bt], torch.ones_like(y))

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write a Markdown table here")
    parser.add_argument("--quick", action="store_true", help="short protocol (smoke test)")
    args = parser.parse_args(argv)
    protocol = QUICK if args.quick else FULL
    rng = np.random.default_rng(0)
    lines = ["## Convolution + 2x2 max pooling, forward + backward (ms)", "",
             f"Command: `python {' '.join(sys.argv)}`", "",
             "| shape | fused | two ops | auto picks | auto | torch | auto / torch |",
             "|---|--:|--:|---|--:|--:|--:|"]
    for name, n, c_in, size, c_out, k, pad in SHAPES:
        x = rng.standard_normal((n, c_in, size, size), dtype=np.float32)
        w = rng.standard_normal((c_out, c_in, k, k), dtype=np.float32) / (c_in * k * k) ** 0.5
        b = rng.standard_normal(c_out, dtype=np.float32)
        fns = {mode: cnnlab_step(x, w, b, pad, mode) for mode in ("fused", "two ops", "auto")}
        fns["torch"] = torch_step(x, w, b, pad)
        best = compare(fns, protocol)
        picked = "fused" if fuses(x, w, pad) else "two ops"
        row = (f"| {name} | {best['fused'] * 1e3:.2f} | {best['two ops'] * 1e3:.2f} | {picked} "
               f"| {best['auto'] * 1e3:.2f} | {best['torch'] * 1e3:.2f} "
               f"| {best['auto'] / best['torch']:.2f}x |")
        print(row, flush=True)
        lines.append(row)
    if args.out:
        write_report(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
