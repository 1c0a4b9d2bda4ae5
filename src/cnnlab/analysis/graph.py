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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Tensor, enable_grad, grad, no_grad, observe_ops
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


def _example_array(example_input: Any, fn: str) -> np.ndarray:
    array = example_input.data if isinstance(example_input, Tensor) else example_input
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{fn}: example_input must be a NumPy array or a cnnlab Tensor, "
                        f"got {type(example_input).__name__}")
    if array.dtype not in (np.float32, np.float64):
        raise TypeError(f"{fn}: example_input must be float32 or float64, got dtype "
                        f"{array.dtype}")
    return array


def check_batch(x: Any, fn: str) -> np.ndarray:
    """``x`` as the audits take it: a float32 or float64 batch (N, C, *spatial), N >= 1
    and at least one spatial axis; a TypeError or ValueError naming ``fn`` otherwise."""
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
        kind = getattr(x, "dtype", type(x).__name__)
        raise TypeError(f"{fn}: x must be a float32 or float64 NumPy array, got {kind}")
    if x.ndim < 3 or 0 in x.shape:
        raise ValueError(f"{fn}: x must be a batch (N, C, *spatial) with at least one "
                         f"spatial axis, got shape {x.shape}")
    return x


def one_input(x: Any, fn: str) -> np.ndarray:
    """``x`` as the pictures of one input take it: (C, L) or (C, H, W), no batch axis."""
    x = np.asarray(x)
    if x.ndim not in (2, 3):
        raise ValueError(f"{fn}: x must be one input (C, L) or (C, H, W), got shape "
                         f"{x.shape}")
    return x


def _flat_tensors(value: Any) -> list[Any]:
    """The model's return value as a flat list (tuples, lists and dict values unpacked)."""
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _flat_tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _flat_tensors(item)]
    return [value]


class Recording:
    """One run of a model with every node's output kept: ``graph`` (:class:`Graph`),
    ``values[i]`` node i's output as the model's framework holds it (a cnnlab
    :class:`~cnnlab.Tensor` or a ``torch.Tensor``), and ``input``, the input it ran on.

    :meth:`array` gives a value as a NumPy array; :meth:`input_gradient` differentiates
    a node's output back to the input without touching any parameter's ``.grad``.
    """

    def __init__(self, graph: Graph, values: list[Any], input: Any, torch_model: bool
                 ) -> None:
        self.graph, self.values, self.input = graph, values, input
        self.torch_model = torch_model

    def array(self, index: int) -> np.ndarray:
        """Node ``index``'s output as a NumPy array."""
        value = self.values[index]
        if self.torch_model:
            return value.detach().cpu().numpy()
        return value.data

    def output_array(self) -> np.ndarray:
        """The model's (first) output as a NumPy array."""
        ref = self.graph.outputs[0] if self.graph.outputs else CONSTANT
        if not ref.startswith("%"):
            raise ValueError("the model's output is not computed from its input")
        return self.array(int(ref[1:]))

    def input_gradient(self, index: int, gradient: np.ndarray) -> np.ndarray:
        """d(<node ``index``'s output, ``gradient``>)/d(input), as a NumPy array."""
        value = self.values[index]
        if self.torch_model:
            import torch

            grad_out = torch.as_tensor(gradient, dtype=value.dtype)
            (result,) = torch.autograd.grad(value, self.input, grad_out,
                                            allow_unused=True)
            if result is None:
                return np.zeros(tuple(self.input.shape))
            return result.detach().cpu().numpy()
        (result,) = grad(value, [self.input], gradient)
        return np.zeros(self.input.shape) if result is None else result


class Capture:
    """A model ready to be run and recorded, node by node (:meth:`run`), any number of
    times: cnnlab models through the autograd tape, torch models through ``torch.fx``
    (traced once). ``fn`` names the calling function in error messages."""

    def __init__(self, model: Any, fn: str) -> None:
        from ._torch import TorchCapture, is_torch_module

        self.model, self.fn = model, fn
        self.torch_model = is_torch_module(model)
        if self.torch_model:
            # Traced in eval mode: fx turns ``self.training`` into a constant where a
            # forward reads it (F.dropout(x, p, self.training), F.batch_norm(...)).
            with evaluating(model):
                self._torch = TorchCapture(model, fn)
        elif not isinstance(model, Module):
            kind = type(model)
            raise TypeError(f"{fn}: model must be a cnnlab.nn.Module or a torch.nn.Module, "
                            f"got {kind.__module__}.{kind.__qualname__}")

    def dtype(self) -> np.dtype:
        """The dtype of the model's first parameter (float32 without parameters)."""
        for p in self.model.parameters():
            return np.dtype(str(p.dtype).replace("torch.", ""))
        return np.dtype(np.float32)

    def _cast(self, array: np.ndarray) -> np.ndarray:
        """A float input in the model's dtype (a float64 batch for a float32 model)."""
        return array.astype(self.dtype(), copy=False)

    def forward(self, array: np.ndarray) -> np.ndarray:
        """The model's (first) output on ``array`` (batch axis included), without
        recording or gradients, as a NumPy array."""
        if self.torch_model:
            import torch

            from ._torch import torch_input

            with torch.no_grad():
                out = self.model(torch_input(self.model, array))
            first = _flat_tensors(out)[0]
            return first.detach().cpu().numpy()
        with no_grad():
            out = self.model(self._cast(_example_array(array, self.fn)))
        first = _flat_tensors(out)[0]
        return np.asarray(first.data if isinstance(first, Tensor) else first)

    def run(self, array: np.ndarray, *, differentiable: bool = False) -> Recording:
        """Run the model on ``array`` (batch axis included) in the mode it is in now and
        record every op. ``differentiable`` keeps what :meth:`Recording.input_gradient`
        needs (torch: autograd on; cnnlab records its tape either way)."""
        if self.torch_model:
            import torch

            from ._torch import torch_input

            x = torch_input(self.model, array)
            if differentiable:
                x = x.detach().requires_grad_(True)
            with torch.set_grad_enabled(differentiable):
                graph, values = self._torch.run(x)
            return Recording(graph, values, x, True)
        graph, values, x = _run_cnnlab(self.model,
                                       self._cast(_example_array(array, self.fn)))
        return Recording(graph, values, x, False)


@contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """Eval mode for the duration, every module's own mode restored after; works for cnnlab
    and torch modules (both keep ``training`` on each module)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _run_cnnlab(model: Module, array: np.ndarray) -> tuple[Graph, list[Any], Tensor]:
    named_modules = {id(m): (path, type(m).__name__) for path, m in model.named_modules()}
    param_names = {id(p): name for name, p in model.named_parameters()}
    params = [p for _, p in model.named_parameters()]
    grad_flags = [(p, p.requires_grad) for p in params]

    x = Tensor(array, requires_grad=True)
    refs: dict[int, str] = {id(x): INPUT, **param_names}
    values: list[Tensor] = []  # also keeps ids unique while the model runs
    aliases: list[Tensor] = []
    nodes: list[Node] = []
    stack: list[tuple[str, str]] = [("", type(model).__name__)]

    def observe(out: Tensor, parents: tuple[Tensor, ...], op: str,
                attrs: dict[str, Any]) -> None:
        inputs = tuple(refs.get(id(p), CONSTANT) for p in parents)
        if op == "identity" and attrs.get("purpose") == "backward hook":
            aliases.append(out)
            refs[id(out)] = inputs[0]
            return
        module, module_type = stack[-1]
        node = Node(len(nodes), op, inputs, tuple(out.shape), attrs, module, module_type)
        nodes.append(node)
        values.append(out)
        refs[id(out)] = node.ref

    class Paths:
        """Keeps ``stack`` at the module whose ``forward`` runs now."""

        def enter(self, module: Module) -> None:
            stack.append(named_modules.get(id(module), stack[-1]))

        def exit(self, module: Module) -> None:
            stack.pop()

    try:
        for p in params:
            p.requires_grad = True  # a frozen parameter's ops are ops too
        with enable_grad(), observe_ops(observe), observe_calls(Paths()):
            output = model(x)
    finally:
        for p, flag in grad_flags:
            p.requires_grad = flag
    outputs = tuple(refs.get(id(t), CONSTANT) if isinstance(t, Tensor) else CONSTANT
                    for t in _flat_tensors(output))
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return Graph(tuple(nodes), tuple(array.shape), outputs, shapes), values, x


def trace(model: Any, example_input: Any) -> Graph:
    """Run ``model`` once on ``example_input`` and return every op it ran, in order.

    Parameters
    ----------
    model : cnnlab.nn.Module or torch.nn.Module
        Any model; its ``forward`` may call functional ops and Tensor arithmetic freely.
        A torch model is traced with ``torch.fx`` (so its ``forward`` must not branch on
        values) and its ops are named in cnnlab's vocabulary (:mod:`._torch`).
    example_input : np.ndarray or Tensor (or torch.Tensor for a torch model)
        One input as ``forward`` takes it, batch axis included ((N, C, *spatial) for a
        CNN), float32 or float64; its values matter only where the model branches on them.

    Returns
    -------
    Graph
        Its ``nodes`` in execution order; every reference in a node's ``inputs`` names
        the example input, a parameter, a constant, or an earlier node.

    The model runs in eval mode, and every module gets back the mode it had. The model's
    own hooks run as usual; backward-hook identity ops
    (:meth:`~cnnlab.nn.Module.register_full_backward_hook`)
    are left out: they compute nothing, and a reference to one is a reference to its input.

    >>> from cnnlab import nn
    >>> model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU())
    >>> [node.op for node in trace(model, np.zeros((1, 1, 8), np.float32))]
    ['conv', 'relu']
    """
    capture = Capture(model, "trace")
    if capture.torch_model and not isinstance(example_input, np.ndarray):
        array = example_input.detach().cpu().numpy()
    else:
        array = _example_array(example_input, "trace")
    with evaluating(model):
        return capture.run(array).graph
