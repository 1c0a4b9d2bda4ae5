"""Time the insight layer's calls that issues 14 and 15 bound, against their bars.

| call | at most |
|---|---|
| ``equivariance_report`` on LeNet-5 with 64 inputs and 3 shifts | 1 s |
| ``receptive_fields`` on a ResNet-50 | 1 s |
| ``kernel_of`` on a 64x64 operator | 1 s |
| ``conv_matrix`` for a (16, 32, 32) input with a 3x3 kernel | 0.5 s |
| ``animate_convolution`` for a 7x7 input and a 3x3 kernel (issue 15), GIF written | 2 s |

Each call is timed whole, as a user makes it (tracing included), by the shared protocol
(``_timing.compare``: pause, burst, minimum over rounds). The ResNet-50 is torchvision's
layout written out here (bottlenecks [3, 4, 6, 3], widths 64..2048; torchvision is not a
dependency), once from torch modules (traced with ``torch.fx``) and once from cnnlab's.
``kernel_of`` probes three 64x64 operators: scipy's 5x5
``ndimage.correlate`` (a NumPy callable, one probe per call), a cnnlab ``Conv2d``
(batched probes) and a torch ``Conv2d``.

    python benchmarks/bench_analysis.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _timing import FULL, QUICK, compare, machine_info, write_report

from cnnlab import nn
from cnnlab.analysis import conv_matrix, equivariance_report, kernel_of, receptive_fields
from cnnlab.models import build_model
from cnnlab.viz import animate_convolution

BARS = {"equivariance_report lenet5 64x3": 1.0, "receptive_fields resnet50 torch": 1.0,
        "receptive_fields resnet50 cnnlab": 1.0, "kernel_of scipy 64x64": 1.0,
        "kernel_of cnnlab conv 64x64": 1.0, "kernel_of torch conv 64x64": 1.0,
        "conv_matrix 16x32x32 k3": 0.5, "animate_convolution 7x7 k3": 2.0}


def resnet50(lib: Any) -> Any:
    """torchvision's ResNet-50 layout (v1.5: the stride in the 3x3 conv), built from
    ``lib``: ``torch.nn`` or ``cnnlab.nn``, which take the same arguments."""

    class Bottleneck(lib.Module):
        def __init__(self, c_in: int, mid: int, stride: int) -> None:
            super().__init__()
            out = 4 * mid
            self.conv1, self.bn1 = lib.Conv2d(c_in, mid, 1, bias=False), lib.BatchNorm2d(mid)
            self.conv2 = lib.Conv2d(mid, mid, 3, stride, 1, bias=False)
            self.bn2 = lib.BatchNorm2d(mid)
            self.conv3, self.bn3 = lib.Conv2d(mid, out, 1, bias=False), lib.BatchNorm2d(out)
            self.relu = lib.ReLU()
            self.downsample = (lib.Sequential(lib.Conv2d(c_in, out, 1, stride, bias=False),
                                              lib.BatchNorm2d(out))
                               if stride != 1 or c_in != out else None)

        def forward(self, x: Any) -> Any:
            identity = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            return self.relu(self.bn3(self.conv3(y)) + identity)

    layers: list[Any] = [lib.Conv2d(3, 64, 7, 2, 3, bias=False), lib.BatchNorm2d(64),
                         lib.ReLU(), lib.MaxPool2d(3, 2, 1)]
    c_in = 64
    for index, blocks in enumerate((3, 4, 6, 3)):
        mid = 64 * 2**index
        for b in range(blocks):
            layers.append(Bottleneck(c_in, mid, 2 if b == 0 and index else 1))
            c_in = 4 * mid
    layers += [lib.AdaptiveAvgPool2d(1), lib.Flatten(), lib.Linear(2048, 1000)]
    return lib.Sequential(*layers).eval()


def cases(folder: str) -> dict[str, Any]:
    import torch
    from scipy import ndimage

    rng = np.random.default_rng(0)
    lenet = build_model("lenet5", rng, (1, 28, 28), 10)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    resnet_torch, resnet_cnnlab = resnet50(torch.nn), resnet50(nn)
    weights = rng.standard_normal((1, 5, 5))
    conv = nn.Conv2d(1, 1, 5, padding=2, rng=rng)
    torch_conv = torch.nn.Conv2d(1, 1, 5, padding=2)
    kernel = rng.standard_normal((16, 16, 3, 3))
    return {
        "equivariance_report lenet5 64x3": lambda: equivariance_report(lenet, x,
                                                                       shifts=(1, 2, 4)),
        "receptive_fields resnet50 torch": lambda: receptive_fields(resnet_torch,
                                                                    (3, 224, 224)),
        "receptive_fields resnet50 cnnlab": lambda: receptive_fields(resnet_cnnlab,
                                                                     (3, 224, 224)),
        "kernel_of scipy 64x64": lambda: kernel_of(
            lambda a: ndimage.correlate(a, weights, mode="nearest"), (1, 64, 64),
            rng=np.random.default_rng(0)),
        "kernel_of cnnlab conv 64x64": lambda: kernel_of(conv, (1, 64, 64),
                                                         rng=np.random.default_rng(0)),
        "kernel_of torch conv 64x64": lambda: kernel_of(torch_conv, (1, 64, 64),
                                                        rng=np.random.default_rng(0)),
        "conv_matrix 16x32x32 k3": lambda: conv_matrix(kernel, (16, 32, 32), padding=1),
        "animate_convolution 7x7 k3": lambda: animate_convolution(
            (7, 7), (3, 3), path=Path(folder) / "animation.gif"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (noisy)")
    parser.add_argument("--json", metavar="FILE", default=None, help="write raw numbers")
    args = parser.parse_args(argv)
    protocol = QUICK if args.quick else FULL
    command = shlex.join(["python", "benchmarks/bench_analysis.py",
                          *(sys.argv[1:] if argv is None else argv)])
    machine = machine_info()
    print("machine:", json.dumps(machine))
    with tempfile.TemporaryDirectory() as folder:
        seconds = compare(cases(folder), protocol)
    rows = []
    print(f"{'call':<36} {'seconds':>9} {'bar':>6}  verdict")
    for name, value in seconds.items():
        bar = BARS[name]
        verdict = "within" if value <= bar else "OVER"
        rows.append({"call": name, "seconds": value, "bar_s": bar, "within": value <= bar})
        print(f"{name:<36} {value:>9.3f} {bar:>6.1f}  {verdict}")
    if args.json:
        write_report(args.json, {"rows": rows, "command": command, "machine": machine,
                                 "protocol": protocol.as_dict()})


if __name__ == "__main__":
    main()
