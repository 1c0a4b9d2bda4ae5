"""The lecture's parameter count: a convolution's O(1) parameters per filter against the
dense layer an MLP would need between the same input and output sizes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ops._args import prod
from .graph import INPUT, Capture, Graph, Node, evaluating


@dataclass(frozen=True)
class ParameterRow:
    """One op: ``output_shape`` per sample (no batch axis); ``params``, the parameters it
    reads for the first time; ``macs``, its multiply-accumulates per sample (convolutions,
    transposed convolutions and linear layers; 0 for the rest); ``dense_params``, the
    weights and biases of a fully connected layer from its inputs' size (all of them, for
    a concatenation or a sum; parameters and constants aside) to its output's."""

    name: str
    op: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    dense_params: int


@dataclass(frozen=True)
class ParameterTable:
    rows: tuple[ParameterRow, ...]
    total_params: int

    @property
    def total_macs(self) -> int:
        return sum(row.macs for row in self.rows)

    def to_table(self) -> str:
        header = ("name", "op", "output shape", "params", "MACs", "dense params")
        cells = [header] + [(r.name, r.op, str(r.output_shape), f"{r.params:,}",
                             f"{r.macs:,}", f"{r.dense_params:,}") for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"total: {self.total_params:,} parameters, {self.total_macs:,} MACs "
                     f"per sample")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def _macs(graph: Graph, node: Node) -> int:
    """Multiply-accumulates per sample of one op (batch axis dropped)."""
    if node.op not in ("conv", "conv_transpose", "linear") or len(node.inputs) < 2:
        return 0
    weight = graph.shape_of(node.inputs[1])
    if weight is None:
        return 0
    if node.op == "conv":  # each output value: C_in/groups * prod(kernel) products
        return prod(node.output_shape[1:]) * prod(weight[1:])
    if node.op == "conv_transpose":  # each input value is spread over C_out/groups * k
        source = graph.shape_of(node.inputs[0]) or ()
        return prod(source[1:]) * prod(weight[1:])
    return prod(node.output_shape[1:]) * weight[-1]  # linear: out features x in features


def parameter_table(model: Any, input_shape: Sequence[int]) -> ParameterTable:
    """Per op of ``model`` on one input of ``input_shape`` ((C, *spatial), no batch axis):
    its output shape, parameters, multiply-accumulates and the dense layer's parameters.

    ``model`` is a cnnlab or a torch module (read through :func:`~.graph.trace`, so the
    ops a ``forward`` calls between modules count too). ``total_params`` counts every
    parameter of the model once (a shared one once, an unused one too); a row counts the
    parameters an op reads first.

    >>> from cnnlab import nn
    >>> table = parameter_table(nn.Conv1d(1, 4, 3), (1, 32))
    >>> table.rows[0].params, table.rows[0].macs, table.rows[0].dense_params
    (16, 360, 3960)
    """
    if (not isinstance(input_shape, Sequence) or isinstance(input_shape, str)
            or not input_shape or not all(isinstance(n, (int, np.integer))
                                          and not isinstance(n, bool) and n >= 1
                                          for n in input_shape)):
        raise ValueError(f"parameter_table: input_shape must be (C, *spatial), positive "
                         f"ints without the batch axis, got {input_shape!r}")
    capture = Capture(model, "parameter_table")
    with evaluating(model):
        graph = capture.run(np.zeros((1, *input_shape), capture.dtype())).graph
    sizes = {name: prod(shape) for name, shape in graph.parameter_shapes.items()}
    counted: set[str] = set()
    rows = []
    for node in graph:
        fresh = [ref for ref in node.params if ref not in counted]
        counted.update(fresh)
        # what the op reads: the input and earlier ops' outputs (a concatenation's or a
        # residual sum's inputs together), not its parameters or constants
        sources = [graph.shape_of(ref) for ref in node.inputs
                   if ref == INPUT or ref.startswith("%")]
        n_in = sum(prod(shape[1:]) for shape in sources if shape)
        n_out = prod(node.output_shape[1:])
        rows.append(ParameterRow(node.name, node.op, node.output_shape[1:],
                                 sum(sizes[ref] for ref in fresh), _macs(graph, node),
                                 n_in * n_out + n_out))
    # every parameter once: a cnnlab Parameter's array has .size, a torch one .numel()
    unique = {id(p): p for p in model.parameters()}.values()
    total = sum(int(p.numel()) if capture.torch_model else int(p.data.size) for p in unique)
    return ParameterTable(tuple(rows), total)


__all__ = ["ParameterRow", "ParameterTable", "parameter_table"]
