"""``cnnlab`` command line: argparse subcommands that build configs and call the library.

``cnnlab example`` walks through the lecture's worked example; ``cnnlab arith`` prints
output sizes and receptive fields of a layer stack (Dumoulin & Visin 2016).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._memory import tune_allocator
from .lecture import LECTURE_FILTER, LECTURE_INPUT


def _grid(title: str, values: np.ndarray) -> str:
    rows = [" ".join(f"{v:4g}" for v in row) for row in np.atleast_2d(values)]
    return "\n".join([title, *("  " + r for r in rows)])


def run_example(out: object = None) -> dict[str, np.ndarray]:
    """Print the lecture's worked example, every number computed by the engine."""
    from . import functional as F

    write = (lambda s: print(s, file=out)) if out is not None else print
    x = LECTURE_INPUT[None, None]
    w = LECTURE_FILTER[None, None]
    feature = F.conv2d(x, w, padding="same")
    pooled = F.max_pool2d(feature, 2)
    shifted = np.zeros_like(x)
    shifted[..., 1:] = x[..., :-1]  # translate one pixel to the right, zero fill
    feature_shifted = F.conv2d(shifted, w, padding="same")
    write("The lecture's worked example, computed by cnnlab.functional\n")
    write(_grid("Input data (6x6):", x[0, 0]))
    write(_grid("Filter (3x3):", w[0, 0]))
    write(_grid("Feature map = conv2d(input, filter, padding='same'):", feature[0, 0]))
    write(_grid("2x2 max pooling of the feature map = max_pool2d(feature, 2):", pooled[0, 0]))
    write(_grid("Input shifted one pixel to the right (zero fill):", shifted[0, 0]))
    write(_grid("Feature map of the shifted input:", feature_shifted[0, 0]))
    # T(conv(x)): the original feature map shifted right with zero fill, as x was.
    shifted_feature = np.zeros_like(feature)
    shifted_feature[..., 1:] = feature[..., :-1]
    agree = np.all(shifted_feature == feature_shifted, axis=(0, 1, 2))
    columns = ", ".join(str(c) for c in np.flatnonzero(agree))
    differ = ", ".join(str(c) for c in np.flatnonzero(~agree)) or "none"
    write(
        "\nShift-equivariance, conv(T x) == T conv(x): the two maps agree in columns "
        f"{columns} and differ in column(s) {differ}: the border, where zero padding "
        "is not periodic (with padding_mode='circular' and a circular shift they agree "
        "everywhere)."
    )
    return {"feature": feature[0, 0], "pooled": pooled[0, 0],
            "feature_shifted": feature_shifted[0, 0]}


def _int_at_least(text: str, minimum: int) -> int:
    """An argparse type's check: ``text`` as an integer >= ``minimum``; argparse names the
    flag in its error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got "
                                         f"{text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
    return value


def seed_value(text: str) -> int:
    """``--seed``: an integer >= 0 (NumPy's generators take no negative seed)."""
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    """An integer >= 1 (``--stats-every``, sizes)."""
    return _int_at_least(text, 1)


def port_number(text: str) -> int:
    """``--port``: 0 (a free port) to 65535."""
    value = _int_at_least(text, 0)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port 0..65535, got {value}")
    return value


def path_value(text: str) -> str:
    """A path flag's value: not empty (an empty path meant the current folder, silently)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a path, got an empty string")
    return text


def check_writable(path: str | Path, flag: str, fn: str) -> None:
    """Fail now, not after the run, when ``path`` cannot be written: its nearest existing
    folder must be writable (the missing ones are created then)."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{fn}: {flag} {path} is a folder; it needs a file name")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{fn}: {flag} {path} cannot be written: {folder} is not a "
                         f"writable folder")


LAYER_KINDS = ("conv", "pool", "tconv")


def parse_layer(spec: str) -> dict[str, object]:
    """``conv:k=3,s=2,p=1,d=1`` / ``pool:k=2`` / ``tconv:k=2,s=2,op=0`` -> layer dict."""
    kind, _, options = spec.partition(":")
    if kind not in LAYER_KINDS:
        raise ValueError(f"arith: layer kind must be one of {LAYER_KINDS}, got {kind!r} "
                         f"in {spec!r}")
    names = {"k": "kernel", "s": "stride", "p": "padding", "d": "dilation",
             "op": "output_padding"}
    layer: dict[str, object] = {"kind": kind, "kernel": None, "stride": None, "padding": 0,
                                "dilation": 1, "output_padding": 0,
                                "transposed": kind == "tconv"}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key not in names or not value.lstrip("-").isdigit():
            raise ValueError(f"arith: layer option must be one of {tuple(names)} with an "
                             f"int value, got {item!r} in {spec!r}")
        layer[names[key]] = int(value)
    if layer["kernel"] is None:
        raise ValueError(f"arith: layer {spec!r} needs a kernel size k=")
    if layer["stride"] is None:
        layer["stride"] = layer["kernel"] if kind == "pool" else 1
    return layer


def arith_table(input_size: Sequence[int], layers: Sequence[dict[str, object]]
                ) -> list[dict[str, object]]:
    """Each layer's output size and receptive field (size, jump, start) per spatial axis.

    Every layer goes through the engine's own argument checks and shape rules
    (``cnnlab.ops._args``), so an impossible layer gets the engine's message, naming it.
    """
    from .ops._args import (
        checked_conv_output_shape,
        checked_conv_transpose_output_shape,
        pad_pairs,
        pool_request,
        receptive_field,
        to_tuple,
    )

    size = tuple(to_tuple(tuple(input_size), len(input_size), "--input-size", "arith"))
    outputs = []
    for index, layer in enumerate(layers):
        fn = f"arith: layer {index} ({layer['kind']})"
        ndim = len(size)
        k = to_tuple(layer["kernel"], ndim, "k (kernel size)", fn)
        s = to_tuple(layer["stride"], ndim, "s (stride)", fn)
        d = to_tuple(layer["dilation"], ndim, "d (dilation)", fn)
        if layer["kind"] == "pool":
            p = to_tuple(layer["padding"], ndim, "p (padding)", fn, minimum=0)
            size = pool_request(size, k, s, p, d, False, fn).out_spatial
        elif layer["transposed"]:
            op = to_tuple(layer["output_padding"], ndim, "op (output padding)", fn, minimum=0)
            pads = pad_pairs(layer["padding"], ndim, "p (padding)", fn)
            size = checked_conv_transpose_output_shape(size, k, s, pads, d, op, fn)
        else:
            pads = pad_pairs(layer["padding"], ndim, "p (padding)", fn)
            size = checked_conv_output_shape(size, k, s, pads, d, fn)
        outputs.append(size)
    fields = receptive_field(layers)  # type: ignore[arg-type]
    return [{"layer": index, **layer, "output": size, **field}
            for index, (layer, size, field) in enumerate(zip(layers, outputs, fields))]


def run_arith(args: argparse.Namespace) -> None:
    layers = [parse_layer(spec) for spec in args.layers]
    input_size = tuple(int(v) for v in args.input_size.split(","))
    rows = arith_table(input_size, layers)
    header = (f"{'#':>2} {'layer':<6} {'k':>3} {'s':>3} {'p':>3} {'d':>3} "
              f"{'output':>12} {'RF size':>8} {'jump':>6} {'start':>7}")
    print(f"input size {input_size}\n{header}\n{'-' * len(header)}")
    for row in rows:
        out = "x".join(str(n) for n in row["output"])
        print(f"{row['layer']:>2} {row['kind']:<6} {row['kernel']:>3} {row['stride']:>3} "
              f"{row['padding']:>3} {row['dilation']:>3} {out:>12} {row['size']:>8g} "
              f"{row['jump']:>6g} {row['start']:>7g}")
    print("\nRF size: input pixels one output sees; jump: input pixels between neighbouring "
          "outputs; start: centre of the first output's field (pixel centres at 0.5, 1.5, …).")


def _train_config(args: argparse.Namespace):
    from .train import default_config

    settings = {"epochs": args.epochs, "steps": args.steps, "batch_size": args.batch_size,
                "lr": args.lr, "seed": args.seed, "optimizer": args.optimizer,
                "schedule": args.schedule, "weight_decay": args.weight_decay,
                "augment_shift": args.augment_shift, "shuffle": getattr(args, "shuffle", None),
                "checkpoint_every": args.checkpoint_every,
                "threads": getattr(args, "threads", None), "stats_every": _stats_every(args),
                "pool": getattr(args, "pool", None),
                "blur_filter": getattr(args, "blur_filter", None)}
    if args.resume and args.checkpoint:
        settings = _resumed_settings(settings, Path(args.checkpoint))
    if getattr(args, "stats", None) and not settings["stats_every"]:  # --stats alone
        settings["stats_every"] = DEFAULT_STATS_EVERY
    return default_config(
        args.data, args.model, **settings, checkpoint_dir=args.checkpoint,
        resume=args.resume or None, progress=not args.no_progress)


# Steps between recorded statistics when --stats is given without --stats-every.
DEFAULT_STATS_EVERY = 10


def _stats_every(args: argparse.Namespace) -> int | None:
    """``--stats-every N``: N; ``--no-stats``: 0; else None (the resumed run's own setting,
    or off; ``--stats`` alone then means :data:`DEFAULT_STATS_EVERY`)."""
    stats, every = getattr(args, "stats", None), getattr(args, "stats_every", None)
    if stats is False and every is not None:
        raise ValueError(f"train: --no-stats and --stats-every {every} contradict each "
                         f"other; give one of them")
    return 0 if stats is False else every


def _resumed_settings(settings: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``settings`` with those not given on the command line (None) taken from the run
    being resumed, its length, worker count and checkpoint interval included, so that
    ``--resume`` alone continues that run exactly as it was set up (its statistics
    included); a recipe setting given and different is refused by the trainer. A
    checkpoint written before a setting existed ran with its default."""
    from .train.checkpoint import check_run_metadata, load_checkpoint_metadata
    from .train.loop import CHECKPOINT_NAME
    from .train.recipes import RECIPE_FIELDS, saved_setting

    path = folder / CHECKPOINT_NAME
    if not path.is_file():
        return settings  # nothing to resume yet: a fresh run
    metadata = load_checkpoint_metadata(path)
    check_run_metadata(metadata, path, "resume")  # before any setting is taken from it
    saved = metadata["config"]
    filled = dict(settings)
    # --threads is not carried over: it only says how many shards run at once on this
    # machine (the weights are the same bits for any value), so a smaller machine resuming
    # a run keeps its own default.
    for name in (*RECIPE_FIELDS, "checkpoint_every", "stats_every"):
        if filled.get(name) is None:
            filled[name] = saved_setting(saved, name)
    if settings["epochs"] is None and settings["steps"] is None:
        filled["epochs"], filled["steps"] = saved.get("epochs"), saved.get("steps")
    return filled


def run_train(args: argparse.Namespace) -> None:
    from .train import Trainer, write_metrics

    config = _train_config(args)
    if config.resume and config.checkpoint_dir is None:
        raise ValueError("train: --resume needs --checkpoint DIR")
    if config.stats_every and config.checkpoint_dir is None:
        raise ValueError("train: --stats needs --checkpoint DIR: the statistics are written "
                         "to the run's folder (DIR/stats.npz and DIR/stats.json)")
    from .train.loop import CHECKPOINT_NAME

    checkpoint = (Path(config.checkpoint_dir) / CHECKPOINT_NAME
                  if config.checkpoint_dir is not None else None)
    if (args.metrics_out and checkpoint is not None
            and Path(args.metrics_out).resolve() == checkpoint.resolve()):
        raise ValueError(f"train: --metrics-out {args.metrics_out} is the run's checkpoint "
                         f"file; writing the metrics there would replace it")
    if args.metrics_out:
        check_writable(args.metrics_out, "--metrics-out", "train")
    if config.resume:
        if checkpoint.is_symlink() and not checkpoint.exists():
            raise ValueError(f"train: --resume: {checkpoint} is a link to "
                             f"{os.readlink(checkpoint)}, which does not exist; nothing to "
                             f"resume, and the link is left as it is")
        if not checkpoint.is_file():
            print(f"cnnlab: note: nothing to resume: {checkpoint} does not exist; a fresh "
                  f"run starts", file=sys.stderr)
    result = Trainer(config).run()
    m = result.metrics
    print(f"{m['model']} on {m['data']}: test accuracy {m['test_accuracy']:.4f}, "
          f"test loss {m['test_loss']:.4f}, {m['params']:,} parameters, "
          f"{m['steps']} steps in {m['train_seconds']:.1f} s")
    if result.stats is not None:
        print(f"statistics of {len(result.stats.steps)} steps (every {config.stats_every}) in "
              f"{Path(config.checkpoint_dir) / 'stats.npz'} and stats.json")
    if args.metrics_out:
        write_metrics(args.metrics_out, m)


def run_eval(args: argparse.Namespace) -> None:
    from .sources import load_checkpoint_model
    from .train import evaluate

    loaded = load_checkpoint_model(args.checkpoint, "eval")
    loss, accuracy = evaluate(loaded.model, loaded.x_test, loaded.y_test)
    print(f"{loaded.name} on {loaded.data} (step {loaded.metadata['step']}): test accuracy "
          f"{accuracy:.4f}, test loss {loss:.4f}")


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """The one way commands name a model: a checkpoint, or a torch callable and weights."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="DIR", type=path_value,
                        help="a run of `cnnlab train` (its folder or checkpoint file)")
    source.add_argument("--torch-model", metavar="MODULE:CALLABLE",
                        help="a PyTorch model: a class or function of an importable module "
                             "that builds it with no arguments")
    parser.add_argument("--state-dict", metavar="FILE.safetensors", type=path_value,
                        help="the torch model's weights (safetensors)")
    parser.add_argument("--input-shape", type=positive_int, nargs="+", metavar="N",
                        help="the torch model's input: C L, or C H W")
    parser.add_argument("--data", help="dataset for the parts that need examples (a "
                                       "checkpoint knows its own)")


def load_model_source(args: argparse.Namespace, fn: str) -> Any:
    from .sources import load_checkpoint_model, load_torch_model

    if args.checkpoint:
        if args.state_dict or args.input_shape:
            raise ValueError(f"{fn}: --state-dict and --input-shape go with --torch-model, "
                             f"not --checkpoint")
        return load_checkpoint_model(args.checkpoint, fn)
    if not args.state_dict or not args.input_shape:
        raise ValueError(f"{fn}: --torch-model needs --state-dict FILE.safetensors and "
                         f"--input-shape C H [W]")
    if len(args.input_shape) not in (2, 3):
        raise ValueError(f"{fn}: --input-shape must be C L or C H W, got "
                         f"{' '.join(map(str, args.input_shape))}")
    return load_torch_model(args.torch_model, args.state_dict, tuple(args.input_shape),
                            args.data, fn)


def run_lecture(args: argparse.Namespace) -> None:
    from .lecture import run_lecture as lecture

    claims = lecture(args.out, quick=args.quick)
    print(f"wrote {Path(args.out) / 'lecture.html'}")
    if not all(claim.holds for claim in claims):
        raise RuntimeError("lecture: some claims do not hold (see the checklist)")


def run_serve(args: argparse.Namespace) -> None:
    from .explorer import Explorer, serve

    loaded = load_model_source(args, "serve")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"cnnlab: warning: serving on {args.host}, not only this machine: anyone "
              f"who can reach it can use the explorer and run the model", file=sys.stderr)
    serve(Explorer(loaded), args.host, args.port, open_browser=args.open,
          say=lambda line: print(line, flush=True))


def run_report(args: argparse.Namespace) -> None:
    from .report import build_report

    check_writable(args.out, "--out", "report")
    loaded = load_model_source(args, "report")
    if args.data and args.checkpoint:
        from .data import load_dataset

        _, test = load_dataset(args.data)
        loaded.data, loaded.x_test, loaded.y_test = args.data, test.x, test.y
    path = build_report(loaded, args.out,
                        progress=None if args.no_progress else
                        (lambda part: print(f"report: {part}", file=sys.stderr)))
    print(f"wrote {path}")


def run_models(args: argparse.Namespace) -> None:
    from .models import MODELS

    print(f"{'model':<14} {'task':<9} description")
    for name, info in MODELS.items():
        print(f"{name:<14} {info.task:<9} {info.description}")
    print("\n`--model cnn` means the dataset's standard CNN: mnist1d and mnist1d-shuffled "
          "-> mnist1d-cnn, "
          "digits -> digits-cnn, mnist5k -> lenet5.")


def run_datasets(args: argparse.Namespace) -> None:
    from .data import available_datasets

    rows = available_datasets()
    width = max(len("dataset"), *(len(name) for name, *_ in rows))
    print(f"{'dataset':<{width}} {'offline':<8} description")
    for name, description, ready, missing in rows:
        status = "yes" if ready else "no"
        extra = "" if ready else f"  (needs {missing})"
        print(f"{name:<{width}} {status:<8} {description}{extra}")


def run_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo as demo

    demo(report_dir=args.report, seed=args.seed, quick=args.quick,
         progress=not args.no_progress)


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset name (see `cnnlab datasets`)")
    parser.add_argument("--model", required=True,
                        help="model name (see `cnnlab models`); `cnn`/`mlp` resolve to the "
                             "dataset's standard CNN / MLP")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="passes over the training set")
    length.add_argument("--steps", type=int, help="optimizer steps (instead of --epochs)")
    parser.add_argument("--batch-size", type=int, help="mini-batch size")
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), help="optimizer")
    parser.add_argument("--schedule", choices=("constant", "cosine", "onecycle"),
                        help="learning-rate schedule over the run (default constant)")
    parser.add_argument("--weight-decay", type=float, help="weight decay")
    parser.add_argument("--augment-shift", type=int,
                        help="random translation of training inputs by up to this many pixels")
    parser.add_argument("--pool", choices=("max", "avg", "blur"),
                        help="make every downsampling pooling of the model this kind: blur "
                             "is Zhang 2019's anti-aliased pooling (the pooling at stride 1, "
                             "then a binomial blur at the stride); default: the model's own")
    parser.add_argument("--blur-filter", type=positive_int, metavar="N",
                        help="taps of --pool blur's binomial filter (default 4, as the "
                             "antialiased-cnns package)")
    parser.add_argument("--shuffle", action=argparse.BooleanOptionalAction,
                        help="reshuffle the training set every epoch (--no-shuffle: take it "
                             "in stored order; the default depends on the recipe)")
    parser.add_argument("--seed", type=seed_value, help="random seed (default 0)")
    parser.add_argument("--checkpoint", metavar="DIR", type=path_value,
                        help="directory for checkpoints")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --checkpoint DIR to the weights it would "
                             "have reached uninterrupted (a fresh run if DIR holds no "
                             "checkpoint yet); settings not given are the run's own, a "
                             "different lr, batch size, seed, ... is refused, and "
                             "--epochs/--steps may extend a run without a learning-rate "
                             "schedule")
    parser.add_argument("--metrics-out", metavar="FILE.json", type=path_value,
                        help="write metrics as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--threads", type=int,
                        help="differentiate up to this many of a batch's shards at once "
                             "(worker processes on Linux, threads elsewhere; default 0: one "
                             "per available core). The shards follow the batch and the "
                             "model, so the weights are the same bits for any value")
    parser.add_argument("--stats", action=argparse.BooleanOptionalAction,
                        help="record, every --stats-every steps, each layer's output mean, "
                             "standard deviation, fraction <= 0 and histogram of magnitudes "
                             "and each parameter's gradient norm, into --checkpoint DIR as "
                             "stats.npz and stats.json (needs --checkpoint; --resume goes "
                             "on recording as the run did, --no-stats stops)")
    parser.add_argument("--stats-every", type=positive_int, metavar="N",
                        help=f"steps between recorded statistics (implies --stats; default "
                             f"{DEFAULT_STATS_EVERY})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlab", description="Convolutional neural networks from first principles.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("example", help="walk through the lecture's worked 6x6 example",
                   description="Print the lecture's worked example: input, filter, feature "
                               "map, 2x2 max pooling, and shift-equivariance.")
    arith = sub.add_parser(
        "arith", help="output sizes and receptive fields of a layer stack",
        description="Convolution arithmetic for a stack of layers, e.g. "
                    "`cnnlab arith --input-size 28 conv:k=5,p=2 pool:k=2 conv:k=5 pool:k=2`. "
                    "Layer kinds: conv, pool (stride defaults to k), tconv (transposed); "
                    "options k (kernel), s (stride), p (padding), d (dilation), "
                    "op (output padding, tconv).")
    arith.add_argument("layers", nargs="+", help="layer specs such as conv:k=3,s=2,p=1")
    arith.add_argument("--input-size", default="32",
                       help="input spatial size, one int per axis, comma separated "
                            "(default 32)")
    train = sub.add_parser("train", help="train a model on a dataset",
                           description="Train a model; each dataset/model pair has a default "
                                       "recipe, e.g. `cnnlab train --data mnist1d --model cnn`.")
    _add_train_options(train)
    evaluate = sub.add_parser("eval", help="evaluate a checkpoint on its test set",
                              description="Evaluate a checkpoint written by `cnnlab train`.")
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH", type=path_value,
                          help="checkpoint file or directory")
    sub.add_parser("models", help="list the models", description="List the models.")
    sub.add_parser("datasets", help="list the datasets and whether they work offline",
                   description="List the built-in datasets, offline availability and extras.")
    demo = sub.add_parser(
        "demo", help="train a CNN against an MLP and show why the CNN wins",
        description="Train an MLP and a CNN on MNIST-1D and on the MNIST 5k subset, print "
                    "a table and write a report folder with learning curves and filters.")
    demo.add_argument("--report", default="cnnlab-report", metavar="DIR", type=path_value,
                      help="report folder (default ./cnnlab-report)")
    demo.add_argument("--seed", type=seed_value, default=0, help="random seed (default 0)")
    demo.add_argument("--quick", action="store_true", help="fewer steps (a smoke test)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    report = sub.add_parser(
        "report", help="one self-contained HTML page about a model",
        description="Write an HTML report (pictures embedded, opens offline) about a "
                    "checkpoint or a PyTorch model: architecture, curves, filters, feature "
                    "maps, feature visualisation, Grad-CAM, equivariance, a stepper.")
    add_model_source(report)
    report.add_argument("--out", default="cnnlab-report.html", metavar="FILE.html",
                        type=path_value, help="the page (default cnnlab-report.html)")
    report.add_argument("--no-progress", action="store_true", help="print no progress")
    lecture = sub.add_parser(
        "lecture", help="the lecture's claims, each checked by a small experiment",
        description="Run each claim of the lecture as an experiment on real data, print "
                    "a checklist with the numbers and write a self-contained page.")
    lecture.add_argument("--out", default="cnnlab-lecture", metavar="DIR", type=path_value,
                         help="folder for lecture.html (default ./cnnlab-lecture)")
    lecture.add_argument("--quick", action="store_true",
                         help="every claim on less data and fewer steps (under 30 s)")
    serve = sub.add_parser(
        "serve", help="a local explorer of a model in the browser",
        description="Serve a page where you draw an input (or pick a test example) and "
                    "watch every layer respond, shift it, swap max pooling for BlurPool, "
                    "click a feature map for its filter, receptive field, Grad-CAM and "
                    "strongest inputs, and step through a convolution. Ctrl-C stops it.")
    add_model_source(serve)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1, this machine only)")
    serve.add_argument("--port", default=8765, type=port_number,
                       help="port (default 8765; 0 picks a free one)")
    serve.add_argument("--open", action="store_true", help="open the page in a browser")
    animate = sub.add_parser(
        "animate", help="an animated GIF of a convolution's kernel sliding over its input",
        description="Draw a convolution's arithmetic: one frame per output position, the "
                    "input, its padding, the output and the kernel's footprint. One number "
                    "per size means 1-D, two mean 2-D.")
    animate.add_argument("--input-size", type=positive_int, nargs="+", required=True,
                         metavar="N", help="input size: N (1-D) or N N (2-D)")
    animate.add_argument("--kernel-size", type=positive_int, nargs="+", required=True,
                         metavar="K", help="kernel size: K or K K")
    animate.add_argument("--stride", type=positive_int, nargs="+", default=[1], metavar="S")
    animate.add_argument("--padding", nargs="+", default=["0"], metavar="P",
                         help="samples per side (one per axis), or valid, same, full, "
                              "causal (1-D)")
    animate.add_argument("--padding-mode", default="zeros",
                         choices=("zeros", "circular", "reflect", "replicate"))
    animate.add_argument("--dilation", type=positive_int, nargs="+", default=[1],
                         metavar="D")
    animate.add_argument("--transposed", action="store_true",
                         help="a transposed convolution (drawn with the zeros its stride "
                              "inserts)")
    animate.add_argument("--output-padding", type=int, nargs="+", default=[0], metavar="P",
                         help="extra output samples at the end (transposed only)")
    animate.add_argument("--values", action="store_true",
                         help="show values: the input 1, 2, 3, ... and a kernel of ones, "
                              "with each position's running sum")
    animate.add_argument("--out", default="convolution.gif", metavar="FILE.gif",
                         type=path_value, help="the GIF to write (default convolution.gif)")
    return parser


def _padding_value(values: list[str]) -> Any:
    """``--padding``: one keyword, or one int per axis (one int pads every axis)."""
    if len(values) == 1 and not values[0].lstrip("-").isdigit():
        return values[0]
    try:
        numbers = tuple(int(v) for v in values)
    except ValueError:
        raise ValueError(f"animate: --padding takes ints or one of valid, same, full, "
                         f"causal, got {' '.join(values)}") from None
    return numbers[0] if len(numbers) == 1 else numbers


def run_animate(args: argparse.Namespace) -> None:
    from .viz.animation import animate_convolution

    def sizes(values: list[int]) -> Any:
        return values[0] if len(values) == 1 else tuple(values)

    n = sizes(args.input_size)
    k = sizes(args.kernel_size)
    values = kernel = None
    if args.values:
        shape = tuple(args.input_size)
        values = np.arange(1, int(np.prod(shape)) + 1, dtype=np.float64).reshape(shape)
        kernel = np.ones(tuple(args.kernel_size) if len(args.kernel_size) == len(shape)
                         else tuple(args.kernel_size) * len(shape))
    check_writable(args.out, "--out", "animate")
    animation = animate_convolution(
        n, k, stride=sizes(args.stride), padding=_padding_value(args.padding),
        padding_mode=args.padding_mode, dilation=sizes(args.dilation),
        transposed=args.transposed, output_padding=sizes(args.output_padding),
        input=values, kernel=kernel, path=args.out)
    out = "x".join(str(v) for v in animation.output_size)
    print(f"wrote {args.out}: {len(animation.frames)} frames, output {out}")


COMMANDS = {"example": lambda args: run_example(), "arith": run_arith, "train": run_train,
            "eval": run_eval, "models": run_models, "datasets": run_datasets, "demo": run_demo,
            "animate": run_animate, "report": run_report, "lecture": run_lecture,
            "serve": run_serve}


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: Any = None, line: str | None = None) -> None:
    """A warning on the command line: one line, as the errors, without a source line."""
    print(f"cnnlab: warning: {message}", file=sys.stderr)


def _where_the_run_stands(args: argparse.Namespace) -> str:
    """For an interrupted ``train``: where its last checkpoint is, if it wrote one."""
    if args.command != "train":
        return ""
    if not args.checkpoint:
        return "; no checkpoint was kept (--checkpoint DIR keeps one)"
    checkpoint = Path(args.checkpoint) / "checkpoint.safetensors"
    if not checkpoint.is_file():
        return f"; no checkpoint was written in {args.checkpoint} yet"
    return f"; the last checkpoint is {checkpoint} (--resume continues from it)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()  # reuse freed activation memory instead of page-faulting it back
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            COMMANDS[args.command](args)
    except (ValueError, TypeError, RuntimeError, ImportError, OSError) as error:
        # One line naming the problem; a failed run never overwrites a good checkpoint.
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"cnnlab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: one line, not a traceback through the training loop.
        print(f"cnnlab: interrupted{_where_the_run_stands(args)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
