"""Graph capture: every op a model's ``forward`` runs, read from cnnlab's autograd tape.

Module hooks see layers, not what a ``forward`` does between them: ``F.relu``, ``F.pad``, a
residual ``+``, a U-Net's ``concatenate``, LeNet-1989's per-unit biases. The tape sees all
of them, because every differentiable op builds its output with
:meth:`cnnlab.Tensor.from_op`. :func:`trace` runs the model once on an example input that
requires a gradient, and :func:`cnnlab.autograd.observe_ops` shows it each op as it is
recorded: its name and settings, its inputs, its output's shape.
:func:`cnnlab.nn.hooks.observe_calls` says under which module each op ran (entered and left
around every module call, also when a ``forward`` raises). Both observers are per thread:
the model may run on other threads meanwhile, unrecorded. This is what ``torch.fx`` gives
PyTorch models; the analysis functions read models through it.

The graph is the model as written: the conv + max-pool fusion pass (a speed optimisation
whose values equal the two layers', :mod:`cnnlab.nn.fusion`) stands aside while a trace
runs, so a LeNet's convolution and pooling are two nodes, each under its own module.

The capture changes nothing it finds: the model runs in eval mode and each module gets
back its own mode, parameters get back their ``requires_grad`` and keep their ``.grad``
(nothing is differentiated), no hook is registered, and BatchNorm statistics are not
updated (eval mode).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Tensor, enable_grad, observe_ops
from ..nn.hooks import observe_calls
from ..nn.module import Module

# A reference to a value an op reads: "<input>" (the example input), "%3" (node 3's
# output), a parameter's qualified name ("conv1.weight"), or "<constant>" (any other
# tensor). Angle brackets and "%" cannot start an attribute name, so no parameter's name
# is mistaken for the others.
INPUT = "<input>"
CONSTANT = "<constant>"


@dataclass(frozen=True)
class Node:
    """One op as it ran.

    ``index`` is its place in execution order; ``inputs`` are references (:data:`INPUT`,
    ``"%i"`` for node i's output, a parameter's name, :data:`CONSTANT`) in the op's
    argument order; ``attrs`` are its settings (a convolution's ``stride``, ``padding`` as
    (lo, hi) per axis, ``dilation``, ``groups``, ``padding_mode``; a pooling's
    ``kernel_size``...); ``module`` is the qualified name of the innermost module whose
    ``forward`` ran it ("" for the model itself; a module registered under two names is
    reported under the first, as ``named_modules`` lists it; a module the model does not
    hold counts as its caller) and ``module_type`` that module's class.
    """

    index: int
    op: str
    inputs: tuple[str, ...]
    output_shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    module: str = ""
    module_type: str = ""

    @property
    def ref(self) -> str:
        """The reference later nodes use for this node's output."""
        return f"%{self.index}"

    @property
    def name(self) -> str:
        """A readable name: the module path and the op, "<model>" for the top level."""
        return f"{self.module or '<model>'}:{self.op}"

    @property
    def params(self) -> tuple[str, ...]:
        """The parameters among the inputs, by qualified name."""
        return tuple(ref for ref in self.inputs if ref[0] not in "%<")

    def __hash__(self) -> int:  # attrs is a dict: hash what identifies the node
        return hash((self.index, self.op, self.inputs, self.output_shape, self.module))

    def node_inputs(self) -> tuple[int, ...]:
        """Indices of the nodes whose outputs this op reads."""
        return tuple(int(ref[1:]) for ref in self.inputs if ref.startswith("%"))


@dataclass(frozen=True)
class Graph:
    """The ops of one forward pass in execution order (:func:`trace`).

    ``input_shape`` is the example input's shape (batch axis included); ``outputs`` are
    references to the values the model returned, in the order it returned them;
    ``parameter_shapes`` maps each parameter's qualified name to its shape.
    """

    nodes: tuple[Node, ...]
    input_shape: tuple[int, ...]
    outputs: tuple[str, ...]
    parameter_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def shape_of(self, ref: str) -> tuple[int, ...] | None:
        """The shape of the value ``ref`` names (None for a constant)."""
        if ref == INPUT:
            return self.input_shape
        if ref.startswith("%"):
            return self.nodes[int(ref[1:])].output_shape
        return self.parameter_shapes.get(ref)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def consumers(self, index: int) -> tuple[Node, ...]:
        """The nodes that read node ``index``'s output."""
        ref = f"%{index}"
        return tuple(node for node in self.nodes if ref in node.inputs)

    def to_table(self) -> str:
        """One line per op: index, module path, op, inputs, output shape."""
        rows = [("#", "module", "op", "inputs", "output shape")]
        rows += [(str(n.index), n.module or "<model>", n.op, ", ".join(n.inputs),
                  str(n.output_shape)) for n in self.nodes]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                 for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"outputs: {', '.join(self.outputs)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def _example_array(example_input: Any) -> np.ndarray:
    array = example_input.data if isinstance(example_input, Tensor) else example_input
    if not isinstance(array, np.ndarray):
        raise TypeError(f"trace: example_input must be a NumPy array or a cnnlab Tensor, "
                        f"got {type(example_input).__name__}")
    if array.dtype not in (np.float32, np.float64):
        raise TypeError(f"trace: example_input must be float32 or float64, got dtype "
                        f"{array.dtype}")
    return array


def _flat_tensors(value: Any) -> list[Any]:
    """The model's return value as a flat list (tuples, lists and dict values unpacked)."""
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _flat_tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _flat_tensors(item)]
    return [value]


def trace(model: Module, example_input: Any) -> Graph:
    """Run ``model`` once on ``example_input`` and return every op it ran, in order.

    Parameters
    ----------
    model : cnnlab.nn.Module
        Any model; its ``forward`` may call functional ops and Tensor arithmetic freely.
    example_input : np.ndarray or Tensor, float32 or float64
        One input as ``forward`` takes it, batch axis included ((N, C, *spatial) for a
        CNN); its values matter only where the model branches on them.

    Returns
    -------
    Graph
        Its ``nodes`` in execution order; every reference in a node's ``inputs`` names
        the example input, a parameter, a constant, or an earlier node.

    The model's own hooks run as usual; backward-hook identity ops
    (:meth:`~cnnlab.nn.Module.register_full_backward_hook`)
    are left out: they compute nothing, and a reference to one is a reference to its input.

    >>> from cnnlab import nn
    >>> model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU())
    >>> [node.op for node in trace(model, np.zeros((1, 1, 8), np.float32))]
    ['conv', 'relu']
    """
    if not isinstance(model, Module):
        kind = type(model)
        raise TypeError(f"trace: model must be a cnnlab.nn.Module, got "
                        f"{kind.__module__}.{kind.__qualname__} (torch models are read "
                        f"with torch.fx)")
    array = _example_array(example_input)
    named_modules = {id(m): (path, type(m).__name__) for path, m in model.named_modules()}
    param_names = {id(p): name for name, p in model.named_parameters()}
    params = [p for _, p in model.named_parameters()]
    modes = [(m, m.training) for m in model.modules()]
    grad_flags = [(p, p.requires_grad) for p in params]

    x = Tensor(array, requires_grad=True)
    refs: dict[int, str] = {id(x): INPUT, **param_names}
    alive: list[Tensor] = []  # keeps ids unique while the trace runs
    nodes: list[Node] = []
    stack: list[tuple[str, str]] = [("", type(model).__name__)]

    def observe(out: Tensor, parents: tuple[Tensor, ...], op: str,
                attrs: dict[str, Any]) -> None:
        alive.append(out)
        inputs = tuple(refs.get(id(p), CONSTANT) for p in parents)
        if op == "identity" and attrs.get("purpose") == "backward hook":
            refs[id(out)] = inputs[0]
            return
        module, module_type = stack[-1]
        node = Node(len(nodes), op, inputs, tuple(out.shape), attrs, module, module_type)
        nodes.append(node)
        refs[id(out)] = node.ref

    class Paths:
        """Keeps ``stack`` at the module whose ``forward`` runs now."""

        def enter(self, module: Module) -> None:
            stack.append(named_modules.get(id(module), stack[-1]))

        def exit(self, module: Module) -> None:
            stack.pop()

    try:
        model.eval()
        for p in params:
            p.requires_grad = True  # a frozen parameter's ops are ops too
        with enable_grad(), observe_ops(observe), observe_calls(Paths()):
            output = model(x)
    finally:
        for module, mode in modes:
            module.training = mode
        for p, flag in grad_flags:
            p.requires_grad = flag
    outputs = tuple(refs.get(id(t), CONSTANT) if isinstance(t, Tensor) else CONSTANT
                    for t in _flat_tensors(output))
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return Graph(tuple(nodes), tuple(array.shape), outputs, shapes)
