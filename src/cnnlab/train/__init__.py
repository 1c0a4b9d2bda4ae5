"""Training: configs as data, the loop, metrics, safetensors checkpoints with exact resume."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .loop import (
    Trainer,
    TrainingDivergedError,
    TrainResult,
    count_parameters,
    evaluate,
    train,
    write_metrics,
)
from .recipes import RECIPES, STANDARD_CNN, TrainConfig, default_config, resolve_model

__all__ = [
    "RECIPES",
    "STANDARD_CNN",
    "CheckpointError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "count_parameters",
    "default_config",
    "evaluate",
    "load_checkpoint",
    "resolve_model",
    "save_checkpoint",
    "train",
    "write_metrics",
]
