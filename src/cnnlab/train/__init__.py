"""Training: configs as data, the loop, metrics, safetensors checkpoints with exact resume,
and the statistics a run records (``--stats``)."""

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
from .stats import TrainingStats, read_training_stats

__all__ = [
    "RECIPES",
    "STANDARD_CNN",
    "CheckpointError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "TrainingStats",
    "count_parameters",
    "default_config",
    "evaluate",
    "load_checkpoint",
    "read_training_stats",
    "resolve_model",
    "save_checkpoint",
    "train",
    "write_metrics",
]
