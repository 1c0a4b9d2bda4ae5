"""Training configuration as data: a frozen dataclass and a default recipe per pair.

``cnnlab train --data mnist1d --model cnn --seed 0`` resolves ``cnn`` to the dataset's
standard CNN and fills the rest from :data:`RECIPES` (each recipe cites its source).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..nn.pooling import POOL_KINDS

# The standard CNN of each dataset (what ``--model cnn`` means).
STANDARD_CNN = {"mnist1d": "mnist1d-cnn", "mnist1d-shuffled": "mnist1d-cnn",
                "digits": "digits-cnn", "mnist5k": "lenet5"}

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and so its final weights).

    Exactly one of ``epochs`` / ``steps`` is set. ``checkpoint_every``: steps between
    checkpoints inside an epoch (a checkpoint is also written after every epoch).
    ``eval_every``: steps between test evaluations for the learning curve (0: per epoch).
    ``threads``: how many of a batch's shards are differentiated at once, by the trainer's
    process and its workers (0: one per available core). The shards themselves follow the
    batch and the model (:func:`cnnlab.train.parallel.shard_count`), so the final weights
    are the same bits for every value and any number of cores (the same CPU architecture
    and BLAS build: a different BLAS kernel may round differently).
    ``shuffle``: draw each epoch's batches from a seeded permutation (True) or take the
    training set in its stored order, the same batches every epoch (False).
    ``stats_every``: record activation statistics and gradient norms at every step that is
    a multiple of it (0: none; :mod:`cnnlab.train.stats`), into ``checkpoint_dir`` when set.
    ``pool``: every downsampling pooling of the model becomes this kind, "max", "avg" or
    "blur" (Zhang 2019's anti-aliased pooling with ``blur_filter`` taps,
    :func:`cnnlab.nn.replace_pooling`); None keeps the model's own.
    """

    data: str
    model: str
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "constant"
    weight_decay: float = 0.0
    seed: int = 0
    augment_shift: int = 0
    shuffle: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int = 500
    eval_every: int = 0
    resume: bool = False
    progress: bool = True
    threads: int = 0
    stats_every: int = 0
    pool: str | None = None
    blur_filter: int = 4

    def validate(self) -> None:
        """Raise ValueError naming the first invalid hyperparameter."""
        checks = [
            (self.epochs is None) != (self.steps is None)
            or _fail("exactly one of epochs and steps must be set, got "
                     f"epochs={self.epochs}, steps={self.steps}"),
            self.epochs is None or self.epochs >= 1
            or _fail(f"epochs must be >= 1, got {self.epochs}"),
            self.steps is None or self.steps >= 1
            or _fail(f"steps must be >= 1, got {self.steps}"),
            self.batch_size >= 1 or _fail(f"batch-size must be >= 1, got {self.batch_size}"),
            self.lr > 0 or _fail(f"lr must be > 0, got {self.lr}"),
            self.weight_decay >= 0
            or _fail(f"weight-decay must be >= 0, got {self.weight_decay}"),
            self.optimizer in OPTIMIZERS
            or _fail(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            self.schedule in SCHEDULES
            or _fail(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            self.augment_shift >= 0
            or _fail(f"augment-shift must be >= 0, got {self.augment_shift}"),
            self.checkpoint_every >= 1
            or _fail(f"checkpoint-every must be >= 1, got {self.checkpoint_every}"),
            self.eval_every >= 0 or _fail(f"eval-every must be >= 0, got {self.eval_every}"),
            self.threads >= 0 or _fail(f"threads must be >= 0 (0: auto), got {self.threads}"),
            self.stats_every >= 0
            or _fail(f"stats-every must be >= 0 (0: no stats), got {self.stats_every}"),
            self.pool is None or self.pool in POOL_KINDS
            or _fail(f"pool must be one of {POOL_KINDS}, got {self.pool!r}"),
            self.blur_filter >= 1 or _fail(f"blur-filter must be >= 1, got {self.blur_filter}"),
        ]
        del checks


# The settings that set a run's trajectory: a resumed run must use the checkpoint's own
# (Trainer.restore refuses others). The rest are its length (epochs / steps, which a resume
# may extend) and machine-side settings, which change nothing in the weights (``threads``
# only decides how many shards run at once).
RECIPE_FIELDS = ("batch_size", "lr", "optimizer", "schedule", "weight_decay", "seed",
                 "augment_shift", "shuffle", "pool", "blur_filter")


def saved_setting(saved: dict[str, Any], name: str) -> Any:
    """Setting ``name`` of a checkpoint's saved config; a checkpoint written before the
    setting existed ran with its default."""
    if name in saved:
        return saved[name]
    return next(field.default for field in fields(TrainConfig) if field.name == name)


def _fail(message: str) -> bool:
    raise ValueError(f"train: {message}")


# Default recipes per (dataset, model). Sources: MNIST-1D paper (Greydanus 2020) trains
# its CNN and MLP with Adam, lr 1e-2, batch 100, 6,000 steps, taking the training set in
# its stored order (its train_model reads batch ``step * 100 % 4000``: no shuffling);
# LeNet-5 on mnist5k uses the reference recipe in shared/REFERENCES.md (Adam 1e-3,
# batch 128, 10 epochs).
RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    ("mnist1d", "*"): {"steps": 6000, "batch_size": 100, "lr": 1e-2, "eval_every": 500,
                       "shuffle": False},
    # the same recipe: the paper's comparison changes only the order of the positions
    ("mnist1d-shuffled", "*"): {"steps": 6000, "batch_size": 100, "lr": 1e-2,
                                "eval_every": 500, "shuffle": False},
    ("digits", "*"): {"epochs": 30, "batch_size": 64, "lr": 3e-3},
    ("mnist5k", "*"): {"epochs": 10, "batch_size": 128, "lr": 1e-3},
    ("mnist5k", "lenet1989"): {"epochs": 23, "batch_size": 32, "lr": 1e-3},
}


def resolve_model(data: str, model: str) -> str:
    """``cnn`` -> the dataset's standard CNN; other names pass through."""
    if model == "cnn":
        if data not in STANDARD_CNN:
            raise ValueError(f"train: no standard CNN for dataset {data!r}; "
                             f"name a model (see `cnnlab models`)")
        return STANDARD_CNN[data]
    return model


def default_config(data: str, model: str, **overrides: Any) -> TrainConfig:
    """The recipe for ``(data, model)`` with ``overrides`` (``None`` values ignored)."""
    from ..data import DATASETS

    if data not in DATASETS:
        raise ValueError(f"train: dataset must be one of {sorted(DATASETS)}, got {data!r}")
    model = resolve_model(data, model)
    recipe = dict(RECIPES.get((data, "*"), {"epochs": 10}))
    recipe.update(RECIPES.get((data, model), {}))
    given = {key: value for key, value in overrides.items() if value is not None}
    if "epochs" in given:
        recipe.pop("steps", None)
    if "steps" in given:
        recipe.pop("epochs", None)
    config = replace(TrainConfig(data=data, model=model), **{**recipe, **given})
    config.validate()
    return config
