"""One way of naming a model, for every command that loads one (``cnnlab eval``,
``cnnlab report``, later ``serve`` and ONNX):

- ``checkpoint=DIR`` (or the file): a run of ``cnnlab train``; the checkpoint knows its
  model, its dataset and its learning curve;
- ``torch_model="module:callable"`` with ``state_dict=FILE.safetensors`` and
  ``input_shape=(C, H[, W])``: a PyTorch model, built by calling ``callable`` (a class or
  a function) with no arguments, its weights read from a safetensors file (never
  unpickled); ``data=NAME`` names a dataset for the parts that need examples.

Naming a module imports it, which runs its code: that is what the user asks for by
naming it (as ``python -m module`` would).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data import load_dataset
from .train.checkpoint import CheckpointError, check_run_metadata, split_prefix


@dataclass
class LoadedModel:
    """A model ready to look at: ``model`` (cnnlab or torch), ``name``, ``input_shape``
    ((C, *spatial)), ``data`` (the dataset's name or None), the test set (``x_test``,
    ``y_test``, or None), ``history`` (the learning curve, for a checkpoint) and
    ``metadata`` (a checkpoint's)."""

    model: Any
    name: str
    input_shape: tuple[int, ...]
    data: str | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def load_checkpoint_model(checkpoint: str | Path, fn: str = "load") -> LoadedModel:
    """The model of a ``cnnlab train`` run (its folder or its checkpoint file), with its
    dataset's test set and its learning curve."""
    from .train import load_checkpoint
    from .train.loop import Trainer
    from .train.recipes import TrainConfig

    path = Path(checkpoint)
    path = path / "checkpoint.safetensors" if path.is_dir() else path
    arrays, metadata = load_checkpoint(path)
    check_run_metadata(metadata, path, fn)
    config = TrainConfig(**{**metadata["config"], "progress": False, "resume": False,
                            "checkpoint_dir": None})
    trainer = Trainer(config)
    try:
        trainer.model.load_state_dict(split_prefix(arrays, "model"))
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"{fn}: {path} does not fit {config.model}: {error}") from None
    return LoadedModel(trainer.model, config.model, trainer.input_shape, config.data,
                       trainer.x_test, trainer.y_test, list(metadata.get("history", [])),
                       metadata)


def load_torch_model(spec: str, state_dict: str | Path, input_shape: tuple[int, ...],
                     data: str | None = None, fn: str = "load") -> LoadedModel:
    """A torch model named ``"module:callable"``, its weights from a safetensors file."""
    if ":" not in spec:
        raise ValueError(f"{fn}: --torch-model must be module:callable, got {spec!r}")
    module_name, attribute = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{fn}: cannot import {module_name!r} for --torch-model: "
                         f"{error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"{fn}: {module_name!r} has no callable {attribute!r}")
    model = factory()
    from safetensors.torch import load_file

    path = Path(state_dict)
    if not path.is_file():
        raise ValueError(f"{fn}: --state-dict {path} is not a file")
    try:
        weights = load_file(str(path))
    except Exception as error:  # safetensors raises its own kinds for a damaged file
        raise ValueError(f"{fn}: --state-dict {path} is not a safetensors file: "
                         f"{error}") from None
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError) as error:
        first = str(error).splitlines()[0]
        raise ValueError(f"{fn}: {path} does not fit {spec}: {first}") from None
    model.eval()
    shape = tuple(int(n) for n in input_shape)
    x_test = y_test = None
    if data is not None:
        _, test = load_dataset(data)
        x_test, y_test = test.x, test.y
    return LoadedModel(model, spec, shape, data, x_test, y_test)


__all__ = ["LoadedModel", "load_checkpoint_model", "load_torch_model"]
