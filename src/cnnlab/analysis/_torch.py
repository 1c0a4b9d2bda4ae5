"""Graph capture for ``torch.nn.Module`` models, with ``torch.fx``: the same :class:`Graph`
of :class:`Node` s that :func:`~cnnlab.analysis.trace` reads from cnnlab's tape.

``torch.fx.symbolic_trace`` turns a model's ``forward`` into a graph of module calls
(``conv1``, ``layer1.0.bn2``), function calls (``F.relu``, ``torch.cat``, ``operator.add``
for a residual ``+``) and method calls (``x.flatten(1)``, ``x.view(...)``); a
``torch.fx.Interpreter`` then runs it on the example input, one node at a time, so every
node's output (and its shape) is seen. Each node is named here by cnnlab's op vocabulary
(``conv``, ``max_pool``, ``add``, ``concatenate``...) with the settings in cnnlab's form
(a convolution's ``padding`` as (lo, hi) per axis), so the analysis functions read a torch
model exactly as they read a cnnlab one. An op outside the vocabulary keeps torch's name
(``silu``, ``hardswish``); functions that need to understand it say so, naming it.

torch is imported here only, and only when a torch model is given.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .graph import CONSTANT, INPUT, Graph, Node, _flat_tensors


def is_torch_module(model: Any) -> bool:
    """Whether ``model`` is a ``torch.nn.Module``, without importing torch when it is not."""
    for cls in type(model).__mro__:
        if cls.__module__ == "torch.nn.modules.module" and cls.__name__ == "Module":
            return True
    return False


def _tuple(value: Any, n: int) -> tuple[Any, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(value) if len(value) == n else tuple(value) * n
    return (value,) * n


def _conv_pads(padding: Any, kernel: Sequence[int], dilation: Sequence[int]
               ) -> tuple[tuple[int, int], ...]:
    """torch's conv ``padding`` (int, tuple, "valid", "same") as (lo, hi) per axis; "same"
    puts the odd sample on the high side, as torch does."""
    n = len(kernel)
    if padding == "valid":
        return ((0, 0),) * n
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((int(p), int(p)) for p in _tuple(padding, n))


def _spatial_dims(module_or_name: Any, rank: int) -> int:
    name = module_or_name if isinstance(module_or_name, str) else type(module_or_name).__name__
    for n in (1, 2, 3):
        if name.endswith(f"{n}d"):
            return n
    return rank - 2


def _pool_attrs(kernel: Any, stride: Any, padding: Any, dilation: Any, n: int
                ) -> dict[str, Any]:
    kernel_t = tuple(int(k) for k in _tuple(kernel, n))
    stride_t = kernel_t if stride is None or stride == [] or stride == () else tuple(
        int(s) for s in _tuple(stride, n))
    return {"kernel_size": kernel_t, "stride": stride_t,
            "padding": tuple(int(p) for p in _tuple(padding, n)),
            "dilation": tuple(int(d) for d in _tuple(dilation, n))}


def _adaptive_size(output_size: Any, in_spatial: Sequence[int]) -> tuple[int, ...]:
    sizes = _tuple(output_size, len(in_spatial))
    return tuple(int(i if s is None else s) for s, i in zip(sizes, in_spatial))


def _module_op(module: Any, in_shape: tuple[int, ...]) -> tuple[str, dict[str, Any]] | None:
    """cnnlab's name and settings for a leaf torch module; None for an identity."""
    name = type(module).__name__
    n = _spatial_dims(module, len(in_shape))
    if name in ("Conv1d", "Conv2d", "Conv3d"):
        kernel = tuple(module.weight.shape[2:])
        return "conv", {"kernel_size": kernel, "stride": tuple(module.stride),
                        "padding": _conv_pads(module.padding, kernel, module.dilation),
                        "dilation": tuple(module.dilation), "groups": module.groups,
                        "padding_mode": module.padding_mode}
    if name in ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"):
        return "conv_transpose", {
            "kernel_size": tuple(module.weight.shape[2:]), "stride": tuple(module.stride),
            "padding": tuple((int(p), int(p)) for p in module.padding),
            "dilation": tuple(module.dilation), "groups": module.groups,
            "padding_mode": module.padding_mode,
            "output_padding": tuple(module.output_padding)}
    if name in ("MaxPool1d", "MaxPool2d", "MaxPool3d"):
        return "max_pool", {**_pool_attrs(module.kernel_size, module.stride, module.padding,
                                          module.dilation, n), "ceil_mode": module.ceil_mode}
    if name in ("AvgPool1d", "AvgPool2d", "AvgPool3d"):
        return "avg_pool", {**_pool_attrs(module.kernel_size, module.stride, module.padding,
                                          1, n), "ceil_mode": module.ceil_mode,
                            "count_include_pad": module.count_include_pad,
                            "divisor_override": getattr(module, "divisor_override", None)}
    if name in ("LPPool1d", "LPPool2d", "LPPool3d"):
        return "lp_pool", {**_pool_attrs(module.kernel_size, module.stride, 0, 1, n),
                           "norm_type": float(module.norm_type)}
    if name.startswith("AdaptiveAvgPool") or name.startswith("AdaptiveMaxPool"):
        kind = "adaptive_avg_pool" if "Avg" in name else "adaptive_max_pool"
        return kind, {"output_size": _adaptive_size(module.output_size, in_shape[2:])}
    if name.startswith("BatchNorm"):
        return "batch_norm", {"training": False, "eps": module.eps}
    if name == "LayerNorm":
        return "layer_norm", {"eps": module.eps,
                              "normalized_shape": tuple(module.normalized_shape)}
    if name in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout"):
        return "dropout", {"p": module.p}
    if name == "Identity":
        return None
    if name == "Linear":
        return "linear", {}
    if name == "Flatten":
        return "flatten", {"start_dim": module.start_dim, "end_dim": module.end_dim}
    if name == "LeakyReLU":
        return "leaky_relu", {"negative_slope": module.negative_slope}
    if name == "GELU":
        return "gelu", {"approximate": module.approximate}
    if name in ("Softmax", "LogSoftmax"):
        return ("softmax" if name == "Softmax" else "log_softmax"), {"axis": module.dim}
    if name in ("Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"):
        return "upsample", {"scale_factor": module.scale_factor, "size": module.size,
                            "mode": module.mode,
                            "align_corners": bool(getattr(module, "align_corners", False))}
    return _snake(name), {}


def _snake(name: str) -> str:
    """A torch class or function name in cnnlab's style: ``ReLU`` → ``relu``,
    ``Hardswish`` → ``hardswish``, ``SiLU`` → ``silu``."""
    return {"ReLU": "relu", "ReLU6": "relu6", "SiLU": "silu", "ELU": "elu", "SELU": "selu",
            "CELU": "celu", "PReLU": "prelu"}.get(name, name.lower())


def _bind(names: Sequence[str], args: Sequence[Any], kwargs: dict[str, Any]
          ) -> dict[str, Any]:
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")


def _function_op(target: Any, args: Sequence[Any], kwargs: dict[str, Any],
                 in_shape: tuple[int, ...] | None,
                 param_shape: Callable[[Any], tuple[int, ...] | None]
                 ) -> tuple[str, dict[str, Any]] | None:
    """cnnlab's name and settings for a function or method call in a torch fx graph."""
    import torch
    import torch.nn.functional as F

    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    rank = len(in_shape) if in_shape else 0
    if target in (operator.add, operator.iadd, torch.add) or name in ("add", "add_"):
        return "add", {}
    if target in (operator.sub, operator.isub, torch.sub) or name in ("sub", "sub_"):
        return "sub", {}
    if target in (operator.mul, operator.imul, torch.mul) or name in ("mul", "mul_"):
        return "mul", {}
    if target in (operator.truediv, torch.div) or name in ("div", "div_"):
        return "div", {}
    if target in (torch.cat, torch.concat) or name in ("cat", "concat"):
        return "concatenate", {"axis": _bind(("tensors", "dim"), args, kwargs).get("dim", 0)}
    if target is torch.stack:
        return "stack", {"axis": _bind(("tensors", "dim"), args, kwargs).get("dim", 0)}
    if target is operator.getitem:
        return "getitem", {"index": args[1]}
    if target in (torch.flatten,) or name == "flatten":
        bound = _bind(("input", "start_dim", "end_dim"), args, kwargs)
        return "flatten", {"start_dim": bound.get("start_dim", 0),
                           "end_dim": bound.get("end_dim", -1)}
    if name in ("view", "reshape"):
        return "reshape", {}
    if name in ("mean", "sum", "amax"):
        bound = _bind(("input", "dim", "keepdim"), args, kwargs)
        axis = bound.get("dim")
        return {"amax": "max"}.get(name, name), {
            "axis": tuple(axis) if isinstance(axis, (list, tuple)) else axis,
            "keepdims": bool(bound.get("keepdim", False))}
    if target in (F.conv1d, F.conv2d, F.conv3d):
        bound = _bind(_CONV_ARGS, args, kwargs)
        weight = param_shape(bound["weight"]) or ()
        n = len(weight) - 2
        dilation = tuple(int(d) for d in _tuple(bound.get("dilation", 1), n))
        return "conv", {"kernel_size": tuple(weight[2:]),
                        "stride": tuple(int(s) for s in _tuple(bound.get("stride", 1), n)),
                        "padding": _conv_pads(bound.get("padding", 0), weight[2:], dilation),
                        "dilation": dilation, "groups": int(bound.get("groups", 1)),
                        "padding_mode": "zeros"}
    if target in (F.max_pool1d, F.max_pool2d, F.max_pool3d):
        bound = _bind(_POOL_ARGS, args, kwargs)
        n = _spatial_dims(name.replace("max_pool", ""), rank)
        return "max_pool", {**_pool_attrs(bound["kernel_size"], bound.get("stride"),
                                          bound.get("padding", 0), bound.get("dilation", 1),
                                          n), "ceil_mode": bool(bound.get("ceil_mode"))}
    if target in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d):
        bound = _bind(("input", "kernel_size", "stride", "padding", "ceil_mode",
                       "count_include_pad", "divisor_override"), args, kwargs)
        n = _spatial_dims(name.replace("avg_pool", ""), rank)
        return "avg_pool", {**_pool_attrs(bound["kernel_size"], bound.get("stride"),
                                          bound.get("padding", 0), 1, n),
                            "ceil_mode": bool(bound.get("ceil_mode", False)),
                            "count_include_pad": bool(bound.get("count_include_pad", True)),
                            "divisor_override": bound.get("divisor_override")}
    if name.startswith("adaptive_avg_pool") or name.startswith("adaptive_max_pool"):
        bound = _bind(("input", "output_size"), args, kwargs)
        kind = "adaptive_avg_pool" if "avg" in name else "adaptive_max_pool"
        return kind, {"output_size": _adaptive_size(bound["output_size"],
                                                    (in_shape or ())[2:])}
    if target is F.pad or name == "pad":
        bound = _bind(("input", "pad", "mode", "value"), args, kwargs)
        return "pad", {"pad": tuple(bound["pad"]), "mode": bound.get("mode", "constant"),
                       "value": bound.get("value")}
    if target is F.interpolate or name == "interpolate":
        bound = _bind(("input", "size", "scale_factor", "mode", "align_corners"), args,
                      kwargs)
        return "upsample", {"scale_factor": bound.get("scale_factor"),
                            "size": bound.get("size"), "mode": bound.get("mode", "nearest"),
                            "align_corners": bool(bound.get("align_corners"))}
    if target is F.linear:
        return "linear", {}
    if name in ("contiguous", "clone", "detach", "identity"):
        return None
    if name in ("softmax", "log_softmax"):
        bound = _bind(("input", "dim"), args, kwargs)
        return name, {"axis": bound.get("dim")}
    if name in ("leaky_relu", "leaky_relu_"):
        return "leaky_relu", {"negative_slope": _bind(("input", "negative_slope"), args,
                                                      kwargs).get("negative_slope", 0.01)}
    if name in ("dropout", "dropout1d", "dropout2d", "dropout3d"):
        return "dropout", {"p": _bind(("input", "p"), args, kwargs).get("p", 0.5)}
    return name.rstrip("_"), {}


class TorchCapture:
    """A torch model traced once with ``torch.fx``; :meth:`run` runs it on an input and
    returns the :class:`Graph` and every node's output (torch tensors, in node order)."""

    def __init__(self, model: Any, fn: str) -> None:
        import torch.fx

        self.model = model
        try:
            self.module = torch.fx.symbolic_trace(model)
        except Exception as error:  # fx raises many kinds; all mean "cannot trace"
            raise ValueError(f"{fn}: torch.fx cannot trace {type(model).__name__} "
                             f"({type(error).__name__}: {error}); a forward with "
                             f"data-dependent control flow cannot be analysed") from error
        self.fn = fn
        self.param_names = {name for name, _ in model.named_parameters()}
        self.modules = dict(model.named_modules())

    def run(self, x: Any) -> tuple[Graph, list[Any]]:
        """Run on ``x`` (a torch tensor, batch axis included); autograd records as the
        caller's grad mode says, so a caller may differentiate a node's output."""
        import torch
        import torch.fx

        capture = self
        refs: dict[str, str] = {}
        nodes: list[Node] = []
        values: list[Any] = []
        shapes: dict[str, tuple[int, ...]] = {}

        def ref_of(arg: Any) -> str:
            return refs.get(arg.name, CONSTANT) if isinstance(arg, torch.fx.Node) else CONSTANT

        def shape_of(arg: Any) -> tuple[int, ...] | None:
            return shapes.get(arg.name) if isinstance(arg, torch.fx.Node) else None

        class Recorder(torch.fx.Interpreter):
            def run_node(self, n: torch.fx.Node) -> Any:
                # The arguments' values: a crop's slice bounds may be computed in forward
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                out = super().run_node(n)
                capture._record(n, args, kwargs, out, refs, shapes, nodes, values,
                                ref_of, shape_of)
                return out

        output = Recorder(self.module).run(x)
        outputs = tuple(refs.get(n.name, CONSTANT) if isinstance(n, torch.fx.Node)
                        else CONSTANT for n in _flat_tensors(self._output_args()))
        del output
        parameter_shapes = {name: tuple(p.shape) for name, p in
                            self.model.named_parameters()}
        return Graph(tuple(nodes), tuple(x.shape), outputs, parameter_shapes), values

    def _output_args(self) -> Any:
        for n in self.module.graph.nodes:
            if n.op == "output":
                return n.args[0]
        return ()

    def _record(self, n: Any, args: tuple, kwargs: dict[str, Any], out: Any,
                refs: dict[str, str],
                shapes: dict[str, tuple[int, ...]], nodes: list[Node], values: list[Any],
                ref_of: Callable[[Any], str],
                shape_of: Callable[[Any], tuple[int, ...] | None]) -> None:
        import torch

        if n.op == "placeholder":
            refs[n.name] = INPUT
            shapes[n.name] = tuple(out.shape)
            return
        if n.op == "get_attr":
            refs[n.name] = n.target if n.target in self.param_names else CONSTANT
            if isinstance(out, torch.Tensor):
                shapes[n.name] = tuple(out.shape)
            return
        if n.op not in ("call_module", "call_function", "call_method"):
            return
        if not isinstance(out, torch.Tensor):
            refs[n.name] = CONSTANT  # a size, a tuple of tensors: not an op on a map
            return
        first = n.args[0] if n.args else None
        if isinstance(first, (list, tuple)) and first:
            first = first[0]
        in_shape = shape_of(first)
        stack = n.meta.get("nn_module_stack") or {}
        paths = list(stack.values())
        module_path, module_type = ((paths[-1][0], paths[-1][1].__name__) if paths
                                    else ("", type(self.model).__name__))
        if n.op == "call_module":
            module = self.modules[n.target]
            module_path, module_type = n.target, type(module).__name__
            found = _module_op(module, in_shape or tuple(out.shape))
            inputs = [ref_of(first)] + [f"{n.target}.{name}" for name, p in
                                        module.named_parameters(recurse=False)
                                        if p is not None]
        else:
            tensor_args = [a for a in _flat_tensors(list(n.args) + list(n.kwargs.values()))
                           if hasattr(a, "op")]
            found = _function_op(n.target, args, kwargs, in_shape,
                                 lambda a: tuple(a.shape) if hasattr(a, "shape") else None)
            inputs = [ref_of(a) for a in tensor_args]
        if found is None:  # an identity: a reference to it is a reference to its input
            refs[n.name] = ref_of(first)
            shapes[n.name] = tuple(out.shape)
            return
        op, attrs = found
        node = Node(len(nodes), op, tuple(inputs), tuple(out.shape), attrs, module_path,
                    module_type)
        nodes.append(node)
        # A clone: a later in-place op (ReLU(inplace=True)) must not change this record.
        values.append(out.clone())
        refs[n.name] = node.ref
        shapes[n.name] = tuple(out.shape)


def torch_input(model: Any, array: Any) -> Any:
    """``array`` as a torch tensor of the model's parameter dtype (float32 without any)."""
    import torch

    if isinstance(array, torch.Tensor):
        return array
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    return torch.as_tensor(np.asarray(array)).to(dtype)


__all__ = ["TorchCapture", "is_torch_module", "torch_input"]
