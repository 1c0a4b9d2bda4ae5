"""What ``cnnlab serve`` computes, as data, apart from HTTP: one :class:`Explorer` per
loaded model answers the JSON API's requests (documented in the README, "cnnlab serve").

Requests arrive as parsed JSON (dicts); every check of their content raises
:class:`RequestError` (a ``ValueError``) with a message naming the field, what was expected
and what was given, which the server answers with HTTP 400. Models are run one request at
a time under a lock: cnnlab's graph capture and the swap to eval mode touch the model, and
a LeNet-5 forward takes a few milliseconds, so serialising costs less than it protects.

Maps travel in one encoding (:func:`encode_maps`): per channel, the values scaled to bytes
between that channel's min and max, base64, so a LeNet-5 forward with all its layers is a
few kilobytes; ``"encoding": "float32"`` asks for the exact values instead.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analysis.equivariance import shift_array, shift_consistency, swap_pooling
from ..analysis.graph import Capture, Graph, Node, evaluating
from ..analysis.receptive import ReceptiveFields, graph_fields
from ..sources import LoadedModel

SHIFT_MODES = {"circular": "circular", "zeros": "crop"}  # API name -> shift_array's mode
POOLS = ("model", "blur")
ENCODINGS = ("uint8", "float32")
POOLING_OPS = ("max_pool", "avg_pool", "lp_pool", "blur_pool")
CONSISTENCY_EXAMPLES = 200  # test inputs behind the shift-consistency figure
TOP_EXAMPLES_POOL = 1000  # test inputs searched for a channel's strongest
TOP_K = 6
VISUALISE_STEPS = 128


class RequestError(ValueError):
    """A request the explorer cannot answer as asked (HTTP 400)."""


def encode_maps(array: np.ndarray, encoding: str = "uint8") -> dict[str, Any]:
    """One layer's output without the batch axis, ``(C, *spatial)`` or ``(F,)`` (one
    channel), as JSON: ``shape``, and for ``"uint8"`` per-channel ``min``/``max`` with
    ``data`` the base64 of the values scaled to 0..255 (``min + byte / 255 * (max - min)``,
    C order); for ``"float32"`` ``data`` is the base64 of little-endian float32 values."""
    array = np.asarray(array, dtype=np.float64)
    result: dict[str, Any] = {"shape": list(array.shape), "encoding": encoding}
    if encoding == "float32":
        result["data"] = base64.b64encode(array.astype("<f4").tobytes()).decode("ascii")
        return result
    channels = array.reshape(array.shape[0] if array.ndim > 1 else 1, -1)
    low, high = channels.min(axis=1), channels.max(axis=1)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.rint((channels - low[:, None]) / span[:, None] * 255).astype(np.uint8)
    result.update(min=low.tolist(), max=high.tolist(),
                  data=base64.b64encode(scaled.tobytes()).decode("ascii"))
    return result


def decode_maps(encoded: dict[str, Any]) -> np.ndarray:
    """The array :func:`encode_maps` encoded (to the byte's precision for ``"uint8"``)."""
    raw = base64.b64decode(encoded["data"])
    shape = tuple(encoded["shape"])
    if encoded.get("encoding") == "float32":
        return np.frombuffer(raw, "<f4").astype(np.float64).reshape(shape)
    channels = np.frombuffer(raw, np.uint8).reshape(len(encoded["min"]), -1) / 255.0
    low, high = np.array(encoded["min"]), np.array(encoded["max"])
    return (low[:, None] + channels * (high - low)[:, None]).reshape(shape)


def _choice(payload: dict[str, Any], key: str, choices: Sequence[str], default: str,
            fn: str) -> str:
    value = payload.get(key, default)
    if value not in choices:
        raise RequestError(f"{fn}: {key} must be one of {list(choices)}, got {value!r}")
    return str(value)


def _integer(value: Any, key: str, fn: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"{fn}: {key} must be an integer in {low}..{high}, got {value!r}")
    return value


def _unique_names(graph: Graph) -> list[str]:
    """Each node's name (:attr:`Node.name`), with "#2", "#3"... where a module runs the
    same op more than once."""
    seen: dict[str, int] = {}
    names = []
    for node in graph:
        seen[node.name] = seen.get(node.name, 0) + 1
        names.append(node.name if seen[node.name] == 1 else f"{node.name}#{seen[node.name]}")
    return names


def _params(graph: Graph, node: Node) -> int:
    return int(sum(np.prod(graph.parameter_shapes.get(ref, ())) for ref in node.params))


@dataclass(frozen=True)
class _View:
    """One way of running the model (its own poolings, or swapped for BlurPool): the
    model, its capture, its graph with unique layer names and its receptive fields."""

    model: Any
    capture: Capture
    graph: Graph
    names: list[str]
    fields: ReceptiveFields

    @classmethod
    def of(cls, model: Any, example: np.ndarray) -> _View:
        capture = Capture(model, "serve")
        with evaluating(model):
            graph = capture.run(example[None]).graph
        return cls(model, capture, graph, _unique_names(graph),
                   graph_fields(graph, strict=False))

    def run(self, x: np.ndarray) -> Any:
        """Every node's output for a batch ``x``, in eval mode."""
        with evaluating(self.model):
            return self.capture.run(x)

    def layers(self) -> list[dict[str, Any]]:
        """``GET /api/model``'s rows: name, op, output shape, parameters, field, jump."""
        return [{"name": name, "kind": node.op, "module_type": node.module_type,
                 "output_shape": list(node.output_shape[1:]),
                 "params": _params(self.graph, node),
                 "receptive_field": None if row.size is None else list(row.size),
                 "jump": None if row.jump is None else list(row.jump)}
                for node, name, row in zip(self.graph, self.names, self.fields.rows)]


class Explorer:
    """The explorer's answers for one model (:class:`~cnnlab.sources.LoadedModel`).

    ``model_info()``, ``forward(request)``, ``inspect(request)``, ``visualise(request)``,
    ``consistency(request)`` and ``example(index)`` each return a JSON-ready dict; the
    README's "cnnlab serve" section documents every field. ``pool="blur"`` in a request
    runs the model with its poolings swapped for BlurPool
    (:func:`cnnlab.analysis.swap_pooling`, parameters shared).
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.input_shape = tuple(int(n) for n in loaded.input_shape)
        self.rank = len(self.input_shape) - 1
        if self.rank not in (1, 2):
            raise ValueError(f"serve: the explorer shows 1-D and 2-D models, got input "
                             f"shape {self.input_shape}")
        self._lock = threading.Lock()
        self._cache: dict[tuple[Any, ...], Any] = {}
        example = self._zeros()
        own = _View.of(loaded.model, example)
        self.views = {"model": own}
        output = own.run(example[None]).output_array()
        self.classifier = output.ndim == 2
        self.classes = [str(i) for i in range(output.shape[1])] if self.classifier else []
        self.poolings = sum(node.op in POOLING_OPS for node in own.graph)
        if self.poolings:
            self.views["blur"] = _View.of(swap_pooling(loaded.model, "blur"), example)
        # Drawn strokes span the test inputs' range (MNIST after normalisation is not
        # 0..1); without examples, 0..1.
        x = loaded.x_test
        self.value_range = ((float(np.min(x[:TOP_EXAMPLES_POOL])),
                             float(np.max(x[:TOP_EXAMPLES_POOL])))
                            if x is not None and len(x) else (0.0, 1.0))

    def _zeros(self) -> np.ndarray:
        return np.zeros(self.input_shape, Capture(self.loaded.model, "serve").dtype())

    # ---- requests -----------------------------------------------------------------------

    def model_info(self) -> dict[str, Any]:
        """``GET /api/model``."""
        x = self.loaded.x_test
        return {"name": self.loaded.name, "input_shape": list(self.input_shape),
                "classes": self.classes, "task": "classifier" if self.classifier else "map",
                "layers": self.views["model"].layers(),
                "blur_layers": self.views["blur"].layers() if "blur" in self.views else None,
                "data": self.loaded.data,
                "examples": 0 if x is None else len(x),
                "value_range": list(self.value_range),
                "poolings": self.poolings, "pools": list(self.views),
                "shift_modes": list(SHIFT_MODES), "encodings": list(ENCODINGS)}

    def check_input(self, payload: dict[str, Any], fn: str) -> np.ndarray:
        """``payload["input"]``: a nested list of numbers of the model's input shape."""
        if not isinstance(payload, dict):
            raise RequestError(f"{fn}: the body must be a JSON object, got "
                               f"{type(payload).__name__}")
        if "input" not in payload:
            raise RequestError(f"{fn}: input is missing: give a nested list of shape "
                               f"{list(self.input_shape)}")
        try:
            array = np.asarray(payload["input"])
        except ValueError:  # ragged lists
            raise RequestError(f"{fn}: input must be a nested list of shape "
                               f"{list(self.input_shape)}, got ragged lists") from None
        if array.dtype.kind not in "iuf":
            raise RequestError(f"{fn}: input must hold only numbers, got "
                               f"{'strings' if array.dtype.kind == 'U' else array.dtype}")
        if array.shape != self.input_shape:
            raise RequestError(f"{fn}: input must have shape {list(self.input_shape)}, got "
                               f"{list(array.shape)}")
        if not np.isfinite(array).all():
            raise RequestError(f"{fn}: input must be finite numbers, got inf or NaN")
        return array.astype(self._zeros().dtype)

    def _shift(self, payload: dict[str, Any], fn: str) -> tuple[int, ...]:
        shift = payload.get("shift", [0] * self.rank)
        if (not isinstance(shift, list) or len(shift) != self.rank
                or any(isinstance(s, bool) or not isinstance(s, int) for s in shift)):
            raise RequestError(f"{fn}: shift must be a list of {self.rank} integers (one "
                               f"per spatial axis), got {shift!r}")
        limit = max(self.input_shape[1:])
        if any(abs(s) >= limit for s in shift):
            raise RequestError(f"{fn}: each shift must be smaller than {limit} in size, "
                               f"got {shift}")
        return tuple(shift)

    def _settings(self, payload: dict[str, Any], fn: str) -> tuple[str, str, str]:
        pool = _choice(payload, "pool", list(self.views), "model", fn)
        mode = _choice(payload, "shift_mode", list(SHIFT_MODES), "circular", fn)
        encoding = _choice(payload, "encoding", ENCODINGS, "uint8", fn)
        return pool, mode, encoding

    def forward(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/forward``: the prediction and every layer's maps for the input moved
        by ``shift``, with each layer's equivariance error against the unshifted input."""
        fn = "forward"
        base = self.check_input(payload, fn)
        shift = self._shift(payload, fn)
        pool, mode, encoding = self._settings(payload, fn)
        started = time.perf_counter()
        moved = shift_array(base[None], shift, SHIFT_MODES[mode])[0]
        view = self.views[pool]
        with self._lock:
            recording = view.run(moved[None])
            reference = view.run(base[None]) if any(shift) else recording
            output = recording.output_array()[0]
            layers = []
            for node, name, row in zip(recording.graph, view.names, view.fields.rows):
                maps = recording.array(node.index)[0]
                error, note = self._equivariance(maps, reference.array(node.index)[0], row,
                                                 shift, mode)
                layers.append({"name": name, "kind": node.op,
                               "output_shape": list(maps.shape),
                               "maps": encode_maps(maps, encoding),
                               "equivariance_error": error, "equivariance_note": note})
        result: dict[str, Any] = {
            "input": encode_maps(moved, encoding), "shift": list(shift),
            "shift_mode": mode, "pool": pool, "output": output.tolist(), "layers": layers}
        if self.classifier:
            z = output - output.max()
            probabilities = np.exp(z) / np.exp(z).sum()
            result["probabilities"] = probabilities.tolist()
            result["prediction"] = int(probabilities.argmax())
        result["milliseconds"] = round(1000 * (time.perf_counter() - started), 2)
        return result

    def _equivariance(self, shifted: np.ndarray, reference: np.ndarray, row: Any,
                      shift: tuple[int, ...], mode: str) -> tuple[float | None, str]:
        """The relative error ``|f(T x) - T' f(x)| / |f(x)|``, ``T'`` the shift divided by
        the layer's jump (its cumulative stride)."""
        if not any(shift):
            return 0.0, "no shift"
        if row.jump is None or shifted.ndim != self.rank + 1:
            return None, "no spatial axes"
        steps = []
        for s, jump in zip(shift, row.jump):
            if float(jump) <= 0 or s % jump:
                return None, f"shift {list(shift)} is not a multiple of the stride " \
                             f"{list(row.jump)}"
            steps.append(int(s // jump))
        expected = shift_array(reference[None], steps, SHIFT_MODES[mode])[0]
        scale = float(np.linalg.norm(reference)) or 1.0
        return float(np.linalg.norm(shifted - expected) / scale), "relative L2 error"

    def _node(self, view: _View, payload: dict[str, Any], fn: str) -> Node:
        layer = payload.get("layer")
        if layer not in view.names:
            raise RequestError(f"{fn}: layer must name one of {view.names}, got {layer!r}")
        return view.graph[view.names.index(layer)]

    def _channel(self, payload: dict[str, Any], node: Node, fn: str) -> int:
        channels = node.output_shape[1] if len(node.output_shape) > 1 else 1
        return _integer(payload.get("channel", 0), "channel", fn, 0, channels - 1)

    def _filter(self, view: _View, node: Node, channel: int
                ) -> tuple[Node | None, np.ndarray | None]:
        """The convolution behind ``channel`` of ``node``: the node itself, or the nearest
        one upstream through ops that keep channels (activations, pooling)."""
        while node.op != "conv":
            upstream = node.node_inputs()
            if len(upstream) != 1 or node.params:
                return None, None
            parent = view.graph[upstream[0]]
            if len(parent.output_shape) != len(node.output_shape) or \
                    parent.output_shape[1] != node.output_shape[1]:
                return None, None  # the channels are not the convolution's any more
            node = parent
        weights = dict(view.model.named_parameters())
        weight = weights.get(node.inputs[1]) if len(node.inputs) > 1 else None
        if weight is None:
            return node, None
        data = weight.detach().cpu().numpy() if hasattr(weight, "cpu") else weight.data
        return node, np.asarray(data)[channel]

    def inspect(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/inspect``: one feature map's filter, a unit's receptive field on the
        input, Grad-CAM for the current input, and the test inputs that excite it most."""
        fn = "inspect"
        base = self.check_input(payload, fn)
        shift = self._shift(payload, fn)
        pool, mode, encoding = self._settings(payload, fn)
        view = self.views[pool]
        node = self._node(view, payload, fn)
        channel = self._channel(payload, node, fn)
        x = shift_array(base[None], shift, SHIFT_MODES[mode])[0]
        result: dict[str, Any] = {"layer": view.names[node.index], "channel": channel,
                                  "pool": pool}
        spatial = len(node.output_shape) == self.rank + 2
        with self._lock:
            maps = view.run(x[None]).array(node.index)[0]
            conv, weight = self._filter(view, node, channel)
            result["filter"] = None if conv is None or weight is None else {
                "layer": view.names[conv.index], "weights": encode_maps(weight, encoding)}
            unit = payload.get("unit")
            if spatial:
                size = node.output_shape[2:]
                if unit is None:
                    unit = [int(u) for u in np.unravel_index(int(np.argmax(maps[channel])),
                                                             size)]
                if (not isinstance(unit, list) or len(unit) != self.rank
                        or any(isinstance(u, bool) or not isinstance(u, int) for u in unit)
                        or any(not 0 <= u < n for u, n in zip(unit, size))):
                    raise RequestError(f"{fn}: unit must be {self.rank} integers inside "
                                       f"{list(size)}, got {unit!r}")
                unit = [int(u) for u in unit]
                extents = view.fields.extents(node.index)  # by index: names may repeat
                result["unit"] = unit
                result["receptive_field"] = None if extents is None else [
                    [int(lo[u]), int(hi[u])] for (lo, hi), u in zip(extents, unit)]
            else:
                result["unit"], result["receptive_field"] = None, None
            result["grad_cam"] = self._grad_cam(view, x, node, encoding) \
                if spatial and self.classifier else None
            result["top_examples"] = self._top(pool, node, channel, encoding) \
                if spatial else []
        return result

    def _grad_cam(self, view: _View, x: np.ndarray, node: Node, encoding: str
                  ) -> dict[str, Any] | None:
        from ..analysis.gradcam import grad_cam

        if not node.module:
            return None  # Grad-CAM hooks a module; a functional op has none
        cam = grad_cam(view.model, x, layer=node.module)
        return {"layer": cam.layer, "target": cam.target, "score": cam.score,
                "map": encode_maps(cam.map[None], encoding)}

    def _top(self, pool: str, node: Node, channel: int, encoding: str
             ) -> list[dict[str, Any]]:
        x, y = self.loaded.x_test, self.loaded.y_test
        if x is None:
            return []
        key = ("top", pool, node.index)
        if key not in self._cache:
            # every channel's strongest value per input, for the first test inputs: one
            # pass serves every channel of the layer
            batch = np.asarray(x[:TOP_EXAMPLES_POOL])
            strongest = []
            for lo in range(0, len(batch), 250):
                maps = self.views[pool].run(batch[lo:lo + 250]).array(node.index)
                strongest.append(maps.reshape(*maps.shape[:2], -1).max(axis=2))
            self._cache[key] = np.concatenate(strongest)  # (N, C)
        values = self._cache[key][:, channel]
        order = np.argsort(-values, kind="stable")[:TOP_K]
        return [{"index": int(i), "label": None if y is None else int(y[i]),
                 "value": float(values[i]), "input": encode_maps(x[i], encoding)}
                for i in order]

    def visualise(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/visualise``: the input optimised to excite one channel
        (:func:`cnnlab.analysis.visualise_channel`, seeded, cached)."""
        from ..analysis.features import visualise_channel

        fn = "visualise"
        if not isinstance(payload, dict):
            raise RequestError(f"{fn}: the body must be a JSON object")
        pool, _, encoding = self._settings(payload, fn)
        view = self.views[pool]
        node = self._node(view, payload, fn)
        channel = self._channel(payload, node, fn)
        name = view.names[node.index]
        if len(node.output_shape) != self.rank + 2:
            raise RequestError(f"{fn}: layer {name} has no spatial axes; pick a "
                               f"convolution's or pooling's maps")
        key = ("visualise", pool, node.index, channel)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = visualise_channel(
                    view.model, self.input_shape, layer=node.name, channel=channel,
                    steps=VISUALISE_STEPS, value_range=self.value_range,
                    rng=np.random.default_rng(0))
            feature = self._cache[key]
        return {"layer": name, "channel": channel, "pool": pool,
                "image": encode_maps(feature.image, encoding),
                "activation": feature.activation, "baseline": feature.baseline}

    def consistency(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/consistency``: how often the prediction survives random shifts of up
        to 3 pixels (Zhang 2019), on the first test inputs, for this pooling."""
        fn = "consistency"
        if not isinstance(payload, dict):
            raise RequestError(f"{fn}: the body must be a JSON object")
        pool, mode, _ = self._settings(payload, fn)
        x = self.loaded.x_test
        if x is None or not self.classifier:
            return {"pool": pool, "shift_mode": mode, "consistency": None,
                    "note": "needs a classifier and test inputs (--data)"}
        key = ("consistency", pool, mode)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = shift_consistency(
                    self.views[pool].model, np.asarray(x[:CONSISTENCY_EXAMPLES]), max_shift=3,
                    pairs=4, mode=SHIFT_MODES[mode], rng=np.random.default_rng(0))
            found = self._cache[key]
        return {"pool": pool, "shift_mode": mode, "consistency": found.consistency,
                "max_shift": 3, "examples": min(len(x), CONSISTENCY_EXAMPLES)}

    def lecture_example(self) -> dict[str, Any]:
        """``GET /api/lecture-example``: the lecture's worked 6x6 example for the stepper
        (the input, the 3x3 filter, zero padding 1: a same-size output)."""
        from ..lecture import LECTURE_FILTER, LECTURE_INPUT

        return {"input": LECTURE_INPUT.tolist(), "filter": LECTURE_FILTER.tolist(),
                "padding": 1}

    def example(self, index: Any) -> dict[str, Any]:
        """``GET /api/example?index=I``: test input ``I`` as a nested list, and its label."""
        x, y = self.loaded.x_test, self.loaded.y_test
        if x is None:
            raise RequestError("example: no test inputs: start the server with --data NAME")
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise RequestError(f"example: index must be an integer, got {index!r}") from None
        i = _integer(i, "index", "example", 0, len(x) - 1)
        return {"index": i, "label": None if y is None else int(y[i]),
                "input": np.asarray(x[i], dtype=np.float64).tolist()}


__all__ = ["Explorer", "RequestError", "decode_maps", "encode_maps"]
