"""The training loop: reads top to bottom, deterministic, resumable to the exact weights.

One ``np.random.Generator`` seeded from ``config.seed`` spawns independent streams for
initialisation, data order and augmentation, so the same seed gives the same final
weights, bit for bit on any number of cores (the shard plan ignores the machine and BLAS
runs one thread: :mod:`cnnlab.train.parallel`). A checkpoint (``checkpoint.safetensors``
in ``config.checkpoint_dir``) holds the model, optimizer, data-order and generator states
and the step counter; it is written atomically after every epoch and every
``checkpoint_every`` steps, and ``resume`` continues from it to exactly the weights an
uninterrupted run reaches. A non-finite loss stops the run with
:class:`TrainingDivergedError` and leaves the last good checkpoint in place.
``config.stats_every`` records activation statistics and gradient norms every that many
steps (:mod:`cnnlab.train.stats`), written beside the checkpoint just before it.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import functional as F
from .. import nn
from .._files import exclusive_folder
from ..autograd import Tensor, grad, no_grad
from ..data import ArrayDataset, DataLoader, load_dataset
from ..data.transforms import RandomTranslate
from ..models import MODELS, build_model
from ..nn.pooling import replace_pooling
from ..ops._args import prod
from ..optim import SGD, Adam, AdamW
from ..optim.lr_scheduler import CosineAnnealingLR, OneCycleLR
from .checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    check_run_metadata,
    load_checkpoint,
    save_checkpoint,
    split_prefix,
    with_prefix,
)
from .parallel import (
    ProcessShards,
    ShardResult,
    ThreadShards,
    can_fork_workers,
    coupled_layers,
    resolve_workers,
    run_in_order,
    shard_bounds,
    shard_count,
    single_threaded_blas,
    sum_shards,
)
from .recipes import RECIPE_FIELDS, TrainConfig, saved_setting
from .stats import ActivationProbe, LayerSums, StatsLog, TrainingStats, gradient_norms

CHECKPOINT_NAME = "checkpoint.safetensors"


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What a run produced: the model, the final metrics and the learning curve, and the
    statistics it recorded (``config.stats_every``; earlier ones of a resumed run too)."""

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    stats: TrainingStats | None = None


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.data.size for p in model.parameters()))


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1000
             ) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``x: (N, C, *spatial)``, ``y: (N,)``."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    with no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(Tensor(x[start:start + batch_size])).data
            target = y[start:start + batch_size]
            total_loss += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(axis=1) == target).sum())
    model.train(was_training)
    return total_loss / max(len(x), 1), correct / max(len(x), 1)


def _make_optimizer(config: TrainConfig, model: nn.Module):
    params = list(model.parameters())
    if config.optimizer == "sgd":
        return SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(config: TrainConfig, optimizer: Any, total_steps: int):
    """Per-step learning-rate schedule (None for a constant rate)."""
    if config.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total_steps)
    if config.schedule == "onecycle":
        return OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)
    return None


def _split_state(state: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays (ndim >= 1) go to the tensor file; scalars and dicts to JSON metadata."""
    arrays, plain = {}, {}
    for key, value in state.items():
        if isinstance(value, np.ndarray) and value.ndim >= 1:
            arrays[key] = value
        else:
            plain[key] = _jsonable(value)
    return arrays, plain


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _merge_state(arrays: dict[str, np.ndarray], plain: dict[str, Any]) -> dict[str, Any]:
    return {**plain, **arrays}


def _resampled(dataset: ArrayDataset, size: tuple[int, ...]) -> ArrayDataset:
    """Area-resample images to ``size`` (e.g. 28x28 MNIST to LeCun 1989's 16x16)."""
    pool = F.adaptive_avg_pool1d if len(size) == 1 else F.adaptive_avg_pool2d
    return ArrayDataset(pool(dataset.x, size), dataset.y)


class Trainer:
    """Builds data, model and optimizer from a :class:`TrainConfig` and runs the loop."""

    def __init__(self, config: TrainConfig, datasets: tuple[Any, Any] | None = None) -> None:
        config.validate()
        info = MODELS.get(config.model)
        if info is not None and info.task != "classify":
            # The loop's loss is cross-entropy over classes; a sequence or segmentation
            # model would fail at its first step with a shape error from cross_entropy.
            raise ValueError(f"train: model {config.model!r} is a {info.task} model; the "
                             f"training loop trains classifiers (see `cnnlab models`)")
        self.config = config
        root = np.random.default_rng(config.seed)
        init_rng, data_rng, augment_rng = root.spawn(3)
        train, test = datasets if datasets is not None else load_dataset(config.data)
        required = MODELS[config.model].input_size if config.model in MODELS else None
        if required and tuple(train.x.shape[2:]) != required:
            if train.x.ndim - 2 != len(required):  # resampling keeps the spatial rank
                raise ValueError(f"train: model {config.model!r} needs inputs of spatial "
                                 f"size {required}; dataset {config.data!r} has "
                                 f"{tuple(train.x.shape[2:])}")
            train, test = _resampled(train, required), _resampled(test, required)
        self.train_set, self.test_set = train, test
        self.x_test, self.y_test = test.x, test.y
        self.num_classes = int(max(train.y.max(), test.y.max()) + 1)
        self.input_shape = tuple(train.x.shape[1:])
        self.model = build_model(config.model, init_rng, self.input_shape, self.num_classes)
        if config.pool is not None:  # the same weights, other poolings (--pool)
            self.model = replace_pooling(self.model, config.pool, config.blur_filter)
        transform = (RandomTranslate(config.augment_shift, rng=augment_rng)
                     if config.augment_shift else None)
        self.loader = DataLoader(train, batch_size=config.batch_size, shuffle=config.shuffle,
                                 drop_last=False, rng=data_rng, transform=transform)
        self.optimizer = _make_optimizer(config, self.model)
        self.scheduler = _make_scheduler(config, self.optimizer, self.total_steps)
        # The shard plan follows the batch and the model; the workers only run it.
        self._batch_independent = not coupled_layers(self.model)
        self.shards = self._shard_count(config.batch_size)
        self.workers = resolve_workers(config.threads)
        self.threads = min(self.workers, self.shards)  # shards at once in a full batch
        self._runner: ProcessShards | ThreadShards | None = None
        # Statistics: the probe's hooks go on only for the steps that record.
        self._probe = ActivationProbe(self.model) if config.stats_every else None
        self._stats = (StatsLog(self._probe, list(self.model.named_parameters()),
                                config.stats_every) if self._probe is not None else None)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0

    # -- checkpoints ----------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        if self.config.checkpoint_dir is None:
            return None
        return Path(self.config.checkpoint_dir) / CHECKPOINT_NAME

    def save(self) -> None:
        path = self.checkpoint_path
        if path is None:
            return
        optim_arrays, optim_plain = _split_state(self.optimizer.state_dict())
        loader_arrays, loader_plain = _split_state(self.loader.state_dict())
        arrays = {**with_prefix(self.model.state_dict(), "model"),
                  **with_prefix(optim_arrays, "optim"), **with_prefix(loader_arrays, "data")}
        metadata = {
            "config": asdict(self.config), "model": self.config.model,
            "data": self.config.data, "step": self.step, "history": self.history,
            "train_seconds": self.train_seconds, "optim": optim_plain, "loader": loader_plain,
            "scheduler": _jsonable(self.scheduler.state_dict()) if self.scheduler else None,
            "shards": self.shards,
        }
        self._write_stats()  # first: a crash between the two leaves rows a resume drops
        save_checkpoint(path, arrays, metadata)

    @property
    def stats(self) -> TrainingStats | None:
        """The statistics recorded so far (None when ``config.stats_every`` is 0)."""
        return self._stats.result() if self._stats is not None else None

    def _write_stats(self) -> None:
        if self._stats is not None and self.config.checkpoint_dir is not None:
            self._stats.write(self.config.checkpoint_dir)

    def restore(self) -> bool:
        """Load the checkpoint if there is one; False when there is none yet."""
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        arrays, metadata = load_checkpoint(path)
        check_run_metadata(metadata, path, "resume")
        for key in ("model", "data"):
            if metadata.get(key) != getattr(self.config, key):
                raise CheckpointError(
                    f"resume: {path} is a checkpoint of {key} {metadata.get(key)!r}, "
                    f"not {getattr(self.config, key)!r}")
        self._check_same_recipe(path, metadata.get("config", {}))
        if int(metadata["step"]) > self.total_steps:
            raise CheckpointError(
                f"resume: {path} is at step {metadata['step']}, past this run's "
                f"{self.total_steps} steps; resume with at least as many steps (or epochs)")
        try:
            self.model.load_state_dict(split_prefix(arrays, "model"))
        except (ValueError, KeyError) as error:
            raise CheckpointError(f"resume: {path} does not fit this architecture: {error}"
                                  ) from None
        for part, load in (
                ("optimizer", lambda: self.optimizer.load_state_dict(
                    _merge_state(split_prefix(arrays, "optim"), metadata["optim"]))),
                ("data loader", lambda: self.loader.load_state_dict(
                    _merge_state(split_prefix(arrays, "data"), metadata["loader"]))),
                ("scheduler", lambda: self.scheduler is not None
                 and self.scheduler.load_state_dict(metadata["scheduler"]))):
            try:
                load()
            except (ValueError, TypeError, KeyError, IndexError, OverflowError) as error:
                raise CheckpointError(f"resume: {path} has a malformed {part} state "
                                      f"({type(error).__name__}: {error})") from None
        if "shards" not in metadata:
            # Written when the shard count followed --threads (and so the machine): this
            # run goes on with the plan of the batch and the model, whatever it had.
            warnings.warn(f"{path} was written before the shard plan followed the batch and "
                          f"the model; the run continues with {self.shards} shard(s) per "
                          f"batch, so it may end on other last bits than the original would "
                          f"have", UserWarning, stacklevel=2)
        self.step = int(metadata["step"])
        self.history = list(metadata["history"])
        self.train_seconds = float(metadata["train_seconds"])
        if self._stats is not None:  # the run's earlier rows, up to its checkpoint
            try:
                self._stats.extend_from(path.parent, self.step, "resume")
            except ValueError as error:
                raise CheckpointError(str(error)) from None
        return True

    def _check_same_recipe(self, path: Path, saved: dict[str, Any]) -> None:
        """Refuse to resume with other :data:`RECIPE_FIELDS` than the checkpoint's, or with
        another length when the learning rate follows a schedule over the run: the run would
        no longer reach the weights of the run it continues (a checkpoint written before a
        field existed counts as having its default)."""
        differing = [name for name in RECIPE_FIELDS
                     if saved_setting(saved, name) != getattr(self.config, name)]
        if differing:
            was = ", ".join(f"{name}={saved_setting(saved, name)!r}" for name in differing)
            now = ", ".join(f"{name}={getattr(self.config, name)!r}" for name in differing)
            raise CheckpointError(
                f"resume: {path} was trained with {was}, this run asks for {now}; resume "
                f"with the run's settings, or train into another --checkpoint directory")
        if self.config.schedule != "constant":
            planned = self._steps_of(saved.get("steps"), saved.get("epochs") or 0)
            if planned != self.total_steps:
                raise CheckpointError(
                    f"resume: {path} follows a {self.config.schedule} learning-rate schedule "
                    f"over {planned} steps, this run asks for {self.total_steps}; a "
                    f"schedule's length cannot change when resuming")

    # -- the loop -------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return self._steps_of(self.config.steps, self.config.epochs)

    def _steps_of(self, steps: int | None, epochs: int | None) -> int:
        """A run's length in optimizer steps, from its ``steps`` or else its ``epochs``."""
        return steps if steps is not None else epochs * len(self.loader)

    def _train_step(self, xb: np.ndarray, yb: np.ndarray) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]  # frozen: skipped
        step = self.step + 1
        recording = self._stats is not None and step % self.config.stats_every == 0
        results = self._run_shards(xb, yb, params, self._probe if recording else None)
        value, grads = sum_shards(results)
        if recording:  # the diverging step too: its statistics say where it went
            self._record_stats(step, results, params, grads)
        if not math.isfinite(value):
            kept = (f"; the last good checkpoint ({self.checkpoint_path}) was kept"
                    if self.checkpoint_path and self.checkpoint_path.exists() else "")
            raise TrainingDivergedError(
                f"train: loss became {value} at step {self.step + 1} (try a smaller --lr)"
                f"{kept}")
        for param, param_grad in zip(params, grads):
            param.grad = param_grad
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return value

    def _shard_count(self, samples: int) -> int:
        """Shards of a batch of ``samples`` samples (:func:`~.parallel.shard_count`)."""
        return shard_count(samples, prod(self.input_shape), self._batch_independent)

    def _loss_and_gradients(self, xb: np.ndarray, yb: np.ndarray, params: list[Tensor]
                            ) -> tuple[float, list[np.ndarray | None]]:
        """The batch's mean loss and its gradient for each of ``params``: the sum, in shard
        order, of its shards' (see :mod:`cnnlab.train.parallel`), run by up to
        ``self.workers`` processes at once, with the same bits for any number of them."""
        return sum_shards(self._run_shards(xb, yb, params))

    def _run_shards(self, xb: np.ndarray, yb: np.ndarray, params: list[Tensor],
                    probe: ActivationProbe | None = None) -> list[ShardResult]:
        """Each shard's (weighted loss, gradients), with ``probe``'s record of it third when
        one is given, in shard order (:meth:`_loss_and_gradients`)."""
        jobs = [(xb[lo:hi], yb[lo:hi], (hi - lo) / len(xb))
                for lo, hi in shard_bounds(len(xb), self._shard_count(len(xb)))]
        with single_threaded_blas():  # BLAS's thread count changes rounding (see .parallel)
            if min(self.workers, len(jobs)) == 1:
                return run_in_order(self._shard_gradients, jobs, params, probe)
            if (self._runner is not None
                    and not self._runner.fits(self._shard_gradients, jobs, params, probe)):
                self.close()  # a batch bigger than the configured one, or another shape
            if self._runner is None:
                self._runner = self._start_runner(xb, yb)
            return self._runner.run(self._shard_gradients, jobs, params, probe)

    def _record_stats(self, step: int, results: list[ShardResult], params: list[Tensor],
                      grads: list[np.ndarray | None]) -> None:
        """One row of statistics: the shards' layer sums added in shard order (the whole
        batch's), and each parameter's gradient norm from the summed gradient."""
        sums = LayerSums.zeros(len(self._probe.names), len(self._probe.edges) - 1)
        for result in results:
            sums += result[2]
        by_param = {id(p): g for p, g in zip(params, grads)}
        self._stats.append(step, sums, gradient_norms(list(self.model.parameters()),
                                                      by_param))

    def _start_runner(self, xb: np.ndarray, yb: np.ndarray) -> ProcessShards | ThreadShards:
        """Worker processes where the OS can fork them (no interpreter lock to share),
        else threads; either way the same shards, so the same weights. The processes get
        room for the shards of a configured batch, or of ``xb`` if that is larger."""
        rows = max(len(xb), self.config.batch_size)
        bounds = shard_bounds(rows, self._shard_count(rows))
        workers = min(self.workers, len(bounds))
        if not can_fork_workers():
            return ThreadShards(workers)
        return ProcessShards(self._shard_gradients, list(self.model.parameters()), bounds,
                             xb, yb, workers, self._probe)

    def _shard_gradients(self, xb: np.ndarray, yb: np.ndarray, weight: float,
                         params: list[Tensor]) -> tuple[float, list[np.ndarray | None]]:
        """(weight * loss, weight * d loss / d params) of one shard; ``weight`` is its share
        of the batch, so the shards' sums are the batch's mean loss and its gradient."""
        loss = F.cross_entropy(self.model(Tensor(xb)), yb)
        grads = grad(loss, params, np.asarray(weight, dtype=loss.dtype))
        return float(loss.data) * weight, grads

    def _record(self, train_loss: float) -> None:
        test_loss, test_accuracy = evaluate(self.model, self.x_test, self.y_test)
        # Epochs trained so far (fractional): the loader's epoch index is ambiguous at an
        # epoch's last batch (still in progress) versus just after it (the next one).
        epochs = self.step / max(len(self.loader), 1)
        self.history.append({"step": self.step, "epoch": epochs,
                             "train_loss": train_loss, "test_loss": test_loss,
                             "test_accuracy": test_accuracy})

    def run(self) -> TrainResult:
        """Train to ``total_steps`` (continuing from the checkpoint when resuming)."""
        # One BLAS thread throughout, steps and evaluations alike: its thread count changes
        # rounding (see cnnlab.train.parallel), and the shards are the parallelism. A
        # 2-thread BLAS call between steps would also leave OpenBLAS's workers spinning on
        # the cores the shards need: the ten steps after each evaluation ran 30-40% slower.
        # A step's overflow and NaN are the loss's to report (TrainingDivergedError, one line):
        # NumPy's warnings from inside it, in every shard, only repeated it (issue 13).
        with single_threaded_blas(), contextlib.ExitStack() as stack, np.errstate(
                over="ignore", invalid="ignore", divide="ignore"):
            if self.config.checkpoint_dir is not None:  # one run per checkpoint folder
                stack.enter_context(exclusive_folder(self.config.checkpoint_dir, "train"))
            return self._run()

    def _run(self) -> TrainResult:
        if self.config.resume:
            self.restore()
        elif self.checkpoint_path is not None and self.checkpoint_path.exists():
            # Never overwrite a run's checkpoint by starting a new run on top of it.
            raise CheckpointError(
                f"train: {self.checkpoint_path} already exists; pass --resume to continue "
                f"that run, or choose another --checkpoint directory")
        config, total = self.config, self.total_steps
        progress = _progress(total, self.step, config.progress, f"{config.model}/{config.data}")
        running, count = 0.0, 0
        self.model.train()
        try:
            while self.step < total:
                started = time.perf_counter()
                for xb, yb in self.loader:
                    running += self._train_step(xb, yb)
                    count += 1
                    self.step += 1
                    progress.update(1)
                    done = self.step >= total
                    at_eval = done or (config.eval_every and self.step % config.eval_every == 0)
                    at_save = done or self.step % config.checkpoint_every == 0
                    if at_eval or at_save:  # evaluation and checkpoints are not train time
                        self.train_seconds += time.perf_counter() - started
                        if at_eval:
                            self._record(running / max(count, 1))
                            progress.set_postfix(loss=f"{running / max(count, 1):.3f}",
                                                 acc=f"{self.history[-1]['test_accuracy']:.3f}")
                            running, count = 0.0, 0
                        if at_save:
                            self.save()
                        started = time.perf_counter()
                    if done:
                        break
                self.train_seconds += time.perf_counter() - started
                if self.step < total:  # an epoch ended with steps still to go
                    if not config.eval_every and count:
                        self._record(running / count)
                        running, count = 0.0, 0
                    self.save()  # at least every epoch
        except TrainingDivergedError:
            self._write_stats()  # up to the step that diverged; a resume drops the rows
            raise                # after its checkpoint
        finally:
            progress.close()
            self.close()
        return TrainResult(self.model, self.metrics(), self.history, self.stats)

    def close(self) -> None:
        """Stop the shard workers, if any (a later step starts them again)."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def metrics(self) -> dict[str, Any]:
        test_loss, test_accuracy = evaluate(self.model, self.x_test, self.y_test)
        return {
            "data": self.config.data, "model": self.config.model,
            "test_accuracy": test_accuracy, "test_loss": test_loss,
            "params": count_parameters(self.model), "train_seconds": self.train_seconds,
            "steps": self.step, "epochs": self.step / max(len(self.loader), 1),
            "seed": self.config.seed, "history": self.history,
            "config": asdict(self.config),
        }


class _NoProgress:
    def update(self, n: int) -> None: ...

    def set_postfix(self, **kwargs: Any) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool, label: str):
    if not enabled:
        return _NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, initial=initial, desc=label, unit="step", leave=False,
                dynamic_ncols=True)


def train(config: TrainConfig, datasets: tuple[Any, Any] | None = None) -> TrainResult:
    """Run one training job described by ``config``."""
    return Trainer(config, datasets).run()


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics`` as JSON, atomically."""
    atomic_write_bytes(path, json.dumps(_jsonable(metrics), indent=2).encode())
