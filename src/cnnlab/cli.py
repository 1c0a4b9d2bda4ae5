"""``cnnlab`` command line: argparse subcommands that build configs and call the library.

``cnnlab example`` walks through the lecture's worked example; ``cnnlab arith`` prints
output sizes and receptive fields of a layer stack (Dumoulin & Visin 2016).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

# The lecture's worked example ("Pooling" slide): 6x6 input, 3x3 filter, same-size output.
LECTURE_INPUT = np.array(
    [[3, 3, 2, 1, 0, 0],
     [3, 3, 2, 1, 0, 0],
     [3, 3, 2, 1, 0, 0],
     [3, 3, 3, 2, 0, 0],
     [3, 3, 2, 1, 0, 0],
     [3, 2, 1, 1, 0, 0]], dtype=np.float32)
LECTURE_FILTER = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=np.float32)


def _grid(title: str, values: np.ndarray) -> str:
    rows = [" ".join(f"{v:4g}" for v in row) for row in np.atleast_2d(values)]
    return "\n".join([title, *("  " + r for r in rows)])


def run_example(out: object = None) -> dict[str, np.ndarray]:
    """Print the lecture's worked example, every number computed by the engine."""
    from . import functional as F

    write = (lambda s: print(s, file=out)) if out is not None else print
    x = LECTURE_INPUT[None, None]
    w = LECTURE_FILTER[None, None]
    feature = F.conv2d(x, w, padding="same")
    pooled = F.max_pool2d(feature, 2)
    shifted = np.zeros_like(x)
    shifted[..., 1:] = x[..., :-1]  # translate one pixel to the right, zero fill
    feature_shifted = F.conv2d(shifted, w, padding="same")
    write("The lecture's worked example, computed by cnnlab.functional\n")
    write(_grid("Input data (6x6):", x[0, 0]))
    write(_grid("Filter (3x3):", w[0, 0]))
    write(_grid("Feature map = conv2d(input, filter, padding='same'):", feature[0, 0]))
    write(_grid("2x2 max pooling of the feature map = max_pool2d(feature, 2):", pooled[0, 0]))
    write(_grid("Input shifted one pixel to the right (zero fill):", shifted[0, 0]))
    write(_grid("Feature map of the shifted input:", feature_shifted[0, 0]))
    inner = slice(2, -1)  # columns whose windows see no border effect in either map
    same = np.array_equal(feature_shifted[..., inner], feature[..., 1:-2])
    write(
        "\nShift-equivariance: conv(shift(x)) == shift(conv(x)) away from the border: "
        f"{'yes' if same else 'NO'} (columns 2..4 of the shifted map equal columns 1..3 "
        "of the original; the border columns differ because zero padding is not periodic)."
    )
    return {"feature": feature[0, 0], "pooled": pooled[0, 0],
            "feature_shifted": feature_shifted[0, 0]}


LAYER_KINDS = ("conv", "pool", "tconv")


def parse_layer(spec: str) -> dict[str, object]:
    """``conv:k=3,s=2,p=1,d=1`` / ``pool:k=2`` / ``tconv:k=2,s=2,op=0`` -> layer dict."""
    kind, _, options = spec.partition(":")
    if kind not in LAYER_KINDS:
        raise ValueError(f"arith: layer kind must be one of {LAYER_KINDS}, got {kind!r} "
                         f"in {spec!r}")
    names = {"k": "kernel", "s": "stride", "p": "padding", "d": "dilation",
             "op": "output_padding"}
    layer: dict[str, object] = {"kind": kind, "kernel": None, "stride": None, "padding": 0,
                                "dilation": 1, "output_padding": 0,
                                "transposed": kind == "tconv"}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key not in names or not value.lstrip("-").isdigit():
            raise ValueError(f"arith: layer option must be one of {tuple(names)} with an "
                             f"int value, got {item!r} in {spec!r}")
        layer[names[key]] = int(value)
    if layer["kernel"] is None:
        raise ValueError(f"arith: layer {spec!r} needs a kernel size k=")
    if layer["stride"] is None:
        layer["stride"] = layer["kernel"] if kind == "pool" else 1
    return layer


def arith_table(input_size: Sequence[int], layers: Sequence[dict[str, object]]
                ) -> list[dict[str, object]]:
    """Each layer's output size and receptive field (size, jump, start) per spatial axis."""
    from .ops._args import (
        conv_output_shape,
        conv_transpose_output_shape,
        receptive_field,
    )

    size = tuple(input_size)
    rows = []
    fields = receptive_field(layers)  # type: ignore[arg-type]
    for index, (layer, field) in enumerate(zip(layers, fields)):
        ndim = len(size)
        k, s, p = (layer["kernel"],) * ndim, (layer["stride"],) * ndim, layer["padding"]
        d, op = (layer["dilation"],) * ndim, (layer["output_padding"],) * ndim
        pads = ((p, p),) * ndim
        if layer["transposed"]:
            size = conv_transpose_output_shape(size, k, s, pads, d, op)
        else:
            size = conv_output_shape(size, k, s, pads, d)
        if any(n < 1 for n in size):
            raise ValueError(f"arith: layer {index} ({layer['kind']}) gives output size "
                             f"{size}: the kernel is larger than the padded input")
        rows.append({"layer": index, **layer, "output": size, **field})
    return rows


def run_arith(args: argparse.Namespace) -> None:
    layers = [parse_layer(spec) for spec in args.layers]
    input_size = tuple(int(v) for v in args.input_size.split(","))
    rows = arith_table(input_size, layers)
    header = (f"{'#':>2} {'layer':<6} {'k':>3} {'s':>3} {'p':>3} {'d':>3} "
              f"{'output':>12} {'RF size':>8} {'jump':>6} {'start':>7}")
    print(f"input size {input_size}\n{header}\n{'-' * len(header)}")
    for row in rows:
        out = "x".join(str(n) for n in row["output"])
        print(f"{row['layer']:>2} {row['kind']:<6} {row['kernel']:>3} {row['stride']:>3} "
              f"{row['padding']:>3} {row['dilation']:>3} {out:>12} {row['size']:>8g} "
              f"{row['jump']:>6g} {row['start']:>7g}")
    print("\nRF size: input pixels one output sees; jump: input pixels between neighbouring "
          "outputs; start: centre of the first output's field (pixel centres at 0.5, 1.5, …).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlab", description="Convolutional neural networks from first principles.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("example", help="walk through the lecture's worked 6x6 example",
                   description="Print the lecture's worked example: input, filter, feature "
                               "map, 2x2 max pooling, and shift-equivariance.")
    arith = sub.add_parser(
        "arith", help="output sizes and receptive fields of a layer stack",
        description="Convolution arithmetic for a stack of layers, e.g. "
                    "`cnnlab arith --input-size 28 conv:k=5,p=2 pool:k=2 conv:k=5 pool:k=2`. "
                    "Layer kinds: conv, pool (stride defaults to k), tconv (transposed); "
                    "options k (kernel), s (stride), p (padding), d (dilation), "
                    "op (output padding, tconv).")
    arith.add_argument("layers", nargs="+", help="layer specs such as conv:k=3,s=2,p=1")
    arith.add_argument("--input-size", default="32",
                       help="input spatial size, one int per axis, comma separated "
                            "(default 32)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "example":
            run_example()
        elif args.command == "arith":
            run_arith(args)
    except (ValueError, TypeError) as error:
        print(f"cnnlab: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
