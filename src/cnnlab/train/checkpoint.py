"""Checkpoints: safetensors files written atomically, read without executing code.

A checkpoint holds named float/int arrays (model weights under ``model.``, optimizer state
under ``optim.``) and a JSON metadata record (schema version, config, architecture, step,
data-order and random-generator states). Writing goes to a temporary file in the same
directory, is flushed and fsynced, then renamed over the target: a crash leaves either the
old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write_bytes
from ..data.limits import check_declared_bytes, file_size

SCHEMA = "cnnlab.checkpoint/1"
METADATA_KEY = "cnnlab"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, another schema, or another architecture."""


def save_checkpoint(path: str | os.PathLike[str], arrays: dict[str, np.ndarray],
                    metadata: dict[str, Any]) -> Path:
    """Save ``arrays`` and JSON-serialisable ``metadata`` as one safetensors file."""
    from safetensors.numpy import save

    record = json.dumps({"schema": SCHEMA, **metadata}, sort_keys=True)
    # np.asarray(order="C"), not np.ascontiguousarray: the latter turns a 0-d array
    # (BatchNorm's num_batches_tracked) into shape (1,), which then fails to load.
    contiguous = {name: np.asarray(value, order="C") for name, value in arrays.items()}
    return atomic_write_bytes(path, save(contiguous, metadata={METADATA_KEY: record}))


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray],
                                                           dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: (arrays, metadata).

    Raises :class:`CheckpointError` naming the file for anything that is not one.
    """
    return _read(path, arrays=True)


def _check_header_size(source: Path) -> None:
    """The size guard every reader of a user's file shares (:mod:`cnnlab.data.limits`),
    on the safetensors header: its declared length (the file's first 8 bytes) must fit in
    the file before it is read. safetensors checks the tensors' offsets against the file."""
    with open(source, "rb") as file:
        prefix = file.read(8)
    if len(prefix) < 8:
        raise CheckpointError(f"load_checkpoint: {source} is not a readable safetensors "
                              f"checkpoint ({len(prefix)} bytes, too few for its header "
                              f"length)")
    try:
        check_declared_bytes(int.from_bytes(prefix, "little"), file_size(source) - 8,
                             compressed=False, path=source, what="safetensors header",
                             fn="load_checkpoint")
    except ValueError as error:  # "<fn>: <path> declares ...": keep what it declares
        detail = str(error).split(f"{source} ", 1)[-1]
        raise CheckpointError(f"load_checkpoint: {source} is not a readable safetensors "
                              f"checkpoint: it {detail}") from None


def load_checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint written by :func:`save_checkpoint`, without its arrays."""
    return _read(path, arrays=False)[1]


def _read(path: str | os.PathLike[str], arrays: bool
          ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors import safe_open

    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"load_checkpoint: no checkpoint file at {source}")
    _check_header_size(source)
    try:
        with safe_open(str(source), framework="numpy") as file:
            header = file.metadata() or {}
            tensors = ({name: file.get_tensor(name) for name in file.keys()} if arrays
                       else {})
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise CheckpointError(
            f"load_checkpoint: {source} is not a readable safetensors checkpoint "
            f"({type(error).__name__}: {error})") from None
    try:
        metadata = json.loads(header[METADATA_KEY])
    except KeyError:
        raise CheckpointError(
            f"load_checkpoint: {source} has no cnnlab metadata record") from None
    except (ValueError, RecursionError) as error:  # bad JSON, an int of 5,000 digits, ...
        raise CheckpointError(f"load_checkpoint: {source} has an unreadable cnnlab metadata "
                              f"record ({type(error).__name__})") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("config", {}), dict):
        raise CheckpointError(f"load_checkpoint: {source} has a malformed cnnlab metadata "
                              f"record (expected a JSON object with a 'config' object)")
    if metadata.get("schema") != SCHEMA:
        raise CheckpointError(f"load_checkpoint: {source} has schema "
                              f"{metadata.get('schema')!r}, expected {SCHEMA!r}")
    return tensors, metadata


# What a training run's checkpoint records beside its arrays (Trainer.save), by type.
RUN_METADATA = {"config": dict, "model": str, "data": str, "step": int, "history": list,
                "train_seconds": (int, float), "optim": dict, "loader": dict,
                "scheduler": (dict, type(None))}


def check_run_metadata(metadata: dict[str, Any], path: Path | str, fn: str) -> None:
    """Refuse a training checkpoint whose metadata is not what :class:`Trainer` writes:
    every :data:`RUN_METADATA` key of its type, a step and a time that are not negative,
    a history of records, an optional shard count >= 1. One line naming the key; nothing
    has run yet, and the file is left as it is."""
    for key, kind in RUN_METADATA.items():
        if key not in metadata:
            raise CheckpointError(f"{fn}: {path} lacks {key!r} in its metadata; it is not "
                                  f"a training checkpoint cnnlab wrote (or it was edited)")
        value = metadata[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise CheckpointError(f"{fn}: {path} has {key!r} of type {type(value).__name__} "
                                  f"in its metadata, expected {_type_names(kind)}")
    if metadata["step"] < 0:
        raise CheckpointError(f"{fn}: {path} is at step {metadata['step']}, which is negative")
    seconds = metadata["train_seconds"]
    if not (seconds >= 0 and seconds != float("inf")):
        raise CheckpointError(f"{fn}: {path} has train_seconds {seconds!r}, expected a finite "
                              f"number >= 0")
    if not all(isinstance(record, dict) for record in metadata["history"]):
        raise CheckpointError(f"{fn}: {path} has a history that is not a list of records")
    shards = metadata.get("shards", 1)
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise CheckpointError(f"{fn}: {path} has shards {shards!r}, expected an int >= 1")


def _type_names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def split_prefix(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose names start with ``prefix + '.'``, with the prefix removed."""
    head = prefix + "."
    return {name[len(head):]: value for name, value in arrays.items() if name.startswith(head)}


def with_prefix(arrays: dict[str, Any], prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.{name}": np.asarray(value) for name, value in arrays.items()}
