"""The ``cnnlab`` command line, run in-process through ``cnnlab.cli.main``.

Every subcommand has ``--help``; the worked example prints the lecture's numbers; training
writes a checkpoint and a metrics file that ``eval`` reads back; bad input gives one line
``cnnlab: error: ...`` on stderr, exit code 2, and overwrites nothing.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import _lecture as lecture
from cnnlab.cli import COMMANDS, main
from cnnlab.data import available_datasets, read_idx, write_idx
from cnnlab.models import MODELS
from cnnlab.train import load_checkpoint
from cnnlab.train.checkpoint import save_checkpoint

READY = {name for name, _, ready, _ in available_datasets() if ready}
needs_mnist1d = pytest.mark.skipif("mnist1d" not in READY, reason="mnist1d not available")

# The lecture's "Pooling" slide: feature map of the 6x6 input under the 3x3 "X" filter
# (same-size output), and its 2x2 max pooling.
LECTURE_FEATURE_MAP = lecture.FEATURE_MAP.tolist()
LECTURE_POOLED = lecture.POOLED.tolist()


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, pattern: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cnnlab: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in out + err


# -- help and listings ----------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(capsys, command):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: cnnlab{'' if command is None else ' ' + command}")
    if command is None:
        assert all(name in out for name in COMMANDS)


def test_python_dash_m_help():
    done = subprocess.run([sys.executable, "-m", "cnnlab", "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "usage: cnnlab" in done.stdout and "train" in done.stdout


def _grid_after(out: str, title: str, rows: int) -> list[list[float]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    return [[float(v) for v in line.split()] for line in lines[start + 1:start + 1 + rows]]


def test_example_prints_the_lectures_numbers(capsys):
    code, out, err = run(capsys, "example")
    assert code == 0 and err == ""
    assert _grid_after(out, "Feature map = conv2d", 6) == LECTURE_FEATURE_MAP
    assert _grid_after(out, "2x2 max pooling", 3) == LECTURE_POOLED
    assert "agree in columns 1, 2, 3, 4, 5 and differ in column(s) 0" in out


def test_arith_lenet_stack(capsys):
    code, out, _ = run(capsys, "arith", "--input-size", "28,28", "conv:k=5,p=2", "pool:k=2",
                       "conv:k=5", "pool:k=2")
    assert code == 0
    rows = [line.split() for line in out.splitlines() if re.match(r"\s*\d+ (conv|pool)", line)]
    # LeNet-5: 28 -> 28 (pad 2) -> 14 -> 10 -> 5; receptive fields 5, 6, 14, 16 pixels.
    assert [row[6] for row in rows] == ["28x28", "14x14", "10x10", "5x5"]
    assert [row[7] for row in rows] == ["5", "6", "14", "16"]
    assert [row[8] for row in rows] == ["1", "2", "2", "4"]


def test_arith_bad_layer(capsys):
    assert_one_line_error(*run(capsys, "arith", "bogus:k=3"), r"layer kind must be one of")
    assert_one_line_error(*run(capsys, "arith", "--input-size", "4", "conv:k=7"),
                          r"arith: layer 0 \(conv\): kernel \(dilated size \(7,\)\) is larger "
                          r"than the padded input \(4,\)")


@pytest.mark.parametrize(("layer", "message"), [
    # each ended in a ZeroDivisionError traceback
    ("conv:k=3,s=0", r"layer 0 \(conv\): s \(stride\) must be >= 1 in every dimension, got "
                     r"\(0,\)"),
    ("pool:k=2,s=0", r"layer 0 \(pool\): s \(stride\) must be >= 1"),
    ("tconv:k=2,s=0", r"layer 0 \(tconv\): s \(stride\) must be >= 1"),
    # each printed a table and exited 0
    ("conv:k=-3", r"layer 0 \(conv\): k \(kernel size\) must be >= 1 in every dimension, got "
                  r"\(-3,\)"),
    ("conv:k=0", r"k \(kernel size\) must be >= 1"),
    ("conv:k=3,d=0", r"d \(dilation\) must be >= 1"),
    ("conv:k=3,d=-2", r"d \(dilation\) must be >= 1"),
    ("conv:k=3,p=-5", r"p \(padding\) must be >= 0"),
    ("pool:k=2,p=5", r"layer 0 \(pool\): padding \(5,\) must be <= kernel_size // 2"),
    ("tconv:k=3,s=2,op=5", r"layer 0 \(tconv\): output_padding \(5\) must be smaller than "
                           r"stride \(2\) or dilation \(1\)"),
])
def test_arith_refuses_impossible_layers_with_the_engines_messages(capsys, layer, message):
    assert_one_line_error(*run(capsys, "arith", "--input-size", "6", layer), message)


@pytest.mark.parametrize("command", [["train", "--data", "mnist1d", "--model", "cnn"],
                                     ["demo", "--quick"]])
def test_a_negative_seed_names_the_flag(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--seed", "-1"])
    assert exit_info.value.code == 2
    assert re.search(r"argument --seed: must be an integer >= 0, got -1",
                     capsys.readouterr().err)


def test_models_lists_every_model(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()[1:len(MODELS) + 1]]
    assert names == list(MODELS)


def test_datasets_lists_the_builtins(capsys):
    code, out, _ = run(capsys, "datasets")
    assert code == 0
    for name in ("mnist1d", "mnist1d-shuffled", "digits", "mnist5k"):
        assert re.search(rf"^{name}\s+(yes|no)\s", out, flags=re.MULTILINE), name


# -- train and eval ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``cnnlab train --data mnist1d --model cnn --steps 50 ...``, run once."""
    if "mnist1d" not in READY:
        pytest.skip("mnist1d not available")
    root = tmp_path_factory.mktemp("cli")
    folder, metrics = root / "ckpt", root / "metrics.json"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", "--data", "mnist1d", "--model", "cnn", "--steps", "50",
                     "--checkpoint", str(folder), "--metrics-out", str(metrics),
                     "--no-progress"])
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "folder": folder,
            "metrics": metrics, "root": root}


def test_train_writes_checkpoint_and_metrics(trained):
    assert trained["code"] == 0, trained["err"]
    assert trained["err"] == ""
    assert re.match(r"mnist1d-cnn on mnist1d: test accuracy 0\.\d{4}, test loss \d+\.\d{4}, "
                    r"5,210 parameters, 50 steps in \d+\.\d s", trained["out"])
    assert sorted(p.name for p in trained["folder"].iterdir()) == ["checkpoint.safetensors"]
    _, metadata = load_checkpoint(trained["folder"] / "checkpoint.safetensors")
    assert metadata["step"] == 50 and metadata["model"] == "mnist1d-cnn"
    metrics = json.loads(trained["metrics"].read_text())
    assert metrics["steps"] == 50 and metrics["params"] == 5210
    assert metrics["test_accuracy"] > 0.2 and metrics["train_seconds"] > 0
    assert metrics["config"]["lr"] == 1e-2  # the MNIST-1D recipe
    assert metrics["config"]["shuffle"] is False  # ... takes batches in stored order


@pytest.mark.skipif("mnist1d-shuffled" not in READY, reason="mnist1d not available")
@pytest.mark.parametrize("model", ["mnist1d-cnn", "mlp"])
def test_train_on_mnist1d_shuffled(capsys, tmp_path, model):
    metrics = tmp_path / "metrics.json"
    code, out, err = run(capsys, "train", "--data", "mnist1d-shuffled", "--model", model,
                         "--steps", "8", "--batch-size", "100", "--lr", "0.01", "--no-shuffle",
                         "--threads", "1", "--no-progress", "--metrics-out", str(metrics))
    assert code == 0, err
    assert re.match(rf"{model} on mnist1d-shuffled: test accuracy 0\.\d{{4}}, ", out), out
    result = json.loads(metrics.read_text())
    assert result["data"] == "mnist1d-shuffled" and result["steps"] == 8
    assert np.isfinite(result["test_loss"])


@pytest.mark.parametrize(("flags", "shuffle"), [([], False), (["--shuffle"], True),
                                                (["--no-shuffle"], False)])
def test_train_shuffle_flag_overrides_the_recipe(flags, shuffle):
    from cnnlab.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--data", "mnist1d", "--model", "cnn", *flags])
    assert _train_config(args).shuffle is shuffle


@pytest.mark.parametrize("target", ["folder", "file"])
def test_eval_reads_the_checkpoint(capsys, trained, target):
    path = trained["folder"]
    if target == "file":
        path = path / "checkpoint.safetensors"
    code, out, err = run(capsys, "eval", "--checkpoint", str(path))
    assert code == 0, err
    accuracy = json.loads(trained["metrics"].read_text())["test_accuracy"]
    assert out.strip() == (f"mnist1d-cnn on mnist1d (step 50): test accuracy {accuracy:.4f}, "
                           f"test loss {out.split('test loss ')[1].strip()}")


# -- errors: one line, exit 2, nothing overwritten --------------------------------------------


@pytest.fixture()
def workspace(trained, tmp_path):
    """A copy of the trained checkpoint folder and metrics file, with their bytes."""
    folder = tmp_path / "ckpt"
    shutil.copytree(trained["folder"], folder)
    metrics = tmp_path / "metrics.json"
    shutil.copy(trained["metrics"], metrics)
    files = [folder / "checkpoint.safetensors", metrics]
    return {"folder": folder, "metrics": metrics,
            "bytes": {path: path.read_bytes() for path in files}}


def assert_untouched(workspace) -> None:
    for path, payload in workspace["bytes"].items():
        assert path.read_bytes() == payload, f"{path} was changed"
    assert sorted(p.name for p in workspace["folder"].iterdir()) == ["checkpoint.safetensors"]


BAD_TRAIN = [
    (["--data", "nope", "--model", "cnn"], r"train: dataset must be one of .*'nope'"),
    (["--data", "nope", "--model", "mlp"], r"train: dataset must be one of .*'nope'"),
    (["--data", "mnist1d", "--model", "nope"], r"build_model: model must be one of .*'nope'"),
    (["--data", "mnist1d", "--model", "cnn", "--lr", "-0.1"], r"train: lr must be > 0"),
    (["--data", "mnist1d", "--model", "cnn", "--batch-size", "0"],
     r"train: batch-size must be >= 1, got 0"),
    (["--data", "mnist1d", "--model", "cnn", "--steps", "-5"], r"train: steps must be >= 1"),
    (["--data", "mnist1d", "--model", "wavenet"], r"'wavenet' is a sequence model"),
    (["--data", "mnist1d", "--model", "lenet1989"],
     r"train: model 'lenet1989' needs inputs of spatial size \(16, 16\); dataset 'mnist1d' "
     r"has \(40,\)"),
    (["--data", "mnist1d", "--model", "mlp", "--resume"],
     r"is a checkpoint of model 'mnist1d-cnn', not 'mlp'"),
    (["--data", "mnist1d", "--model", "cnn", "--threads", "-1"],
     r"train: threads must be >= 0 \(0: auto\), got -1"),
]


@needs_mnist1d
@pytest.mark.parametrize(("options", "message"), BAD_TRAIN,
                         ids=["unknown-data-cnn", "unknown-data-mlp", "unknown-model",
                              "negative-lr", "zero-batch", "negative-steps", "not-classifier",
                              "wrong-rank", "other-architecture", "negative-threads"])
def test_bad_train_input(capsys, workspace, options, message):
    argv = ["train", *options, "--steps", "3", "--no-progress",
            "--checkpoint", str(workspace["folder"]), "--metrics-out", str(workspace["metrics"])]
    if "--steps" in options:  # the option given in the case wins
        argv = ["train", *options, "--no-progress", "--checkpoint", str(workspace["folder"]),
                "--metrics-out", str(workspace["metrics"])]
    assert_one_line_error(*run(capsys, *argv), message)
    assert_untouched(workspace)


@needs_mnist1d
def test_corrupt_checkpoint_on_resume_is_left_as_it_was(capsys, workspace):
    path = workspace["folder"] / "checkpoint.safetensors"
    corrupt = path.read_bytes()[: path.stat().st_size // 3]
    path.write_bytes(corrupt)
    workspace["bytes"][path] = corrupt
    code, out, err = run(capsys, "train", "--data", "mnist1d", "--model", "cnn", "--steps", "60",
                         "--resume", "--checkpoint", str(workspace["folder"]),
                         "--metrics-out", str(workspace["metrics"]), "--no-progress")
    assert_one_line_error(code, out, err, r"checkpoint\.safetensors is not a readable "
                                          r"safetensors checkpoint")
    assert_untouched(workspace)


def _train(capsys, folder, *options: str) -> dict[str, np.ndarray]:
    code, _, err = run(capsys, "train", "--data", "mnist1d", "--model", "cnn",
                       "--checkpoint", str(folder), "--no-progress", *options)
    assert code == 0, err
    arrays, _ = load_checkpoint(folder / "checkpoint.safetensors")
    return {name: value for name, value in arrays.items() if name.startswith("model.")}


@needs_mnist1d
def test_resume_alone_continues_the_run_with_its_own_settings(capsys, tmp_path):
    # The settings given at the start are not repeated: --resume takes them from the run.
    settings = ("--lr", "0.005", "--batch-size", "50", "--seed", "4", "--shuffle")
    reference = _train(capsys, tmp_path / "whole", "--steps", "12", *settings)
    _train(capsys, tmp_path / "split", "--steps", "5", *settings)
    resumed = _train(capsys, tmp_path / "split", "--steps", "12", "--resume")
    assert list(resumed) == list(reference)
    for name in reference:
        assert resumed[name].tobytes() == reference[name].tobytes(), name


@needs_mnist1d
def test_resume_alone_keeps_the_runs_settings_but_not_its_worker_count(capsys, tmp_path):
    # --threads says how many shards run at once on this machine and changes no bits
    # (tests/train/test_parallel.py), so a resumed run takes this machine's default.
    settings = ("--threads", "2", "--batch-size", "200", "--checkpoint-every", "2")
    reference = _train(capsys, tmp_path / "whole", "--steps", "6", *settings)
    _train(capsys, tmp_path / "split", "--steps", "3", *settings)
    resumed = _train(capsys, tmp_path / "split", "--steps", "6", "--resume")
    for name in reference:
        assert resumed[name].tobytes() == reference[name].tobytes(), name
    _, metadata = load_checkpoint(tmp_path / "split" / "checkpoint.safetensors")
    assert metadata["config"]["checkpoint_every"] == 2
    assert metadata["config"]["threads"] == 0  # auto: one per available core


@needs_mnist1d
def test_resume_alone_of_a_checkpoint_from_before_shuffle_existed(capsys, tmp_path):
    # Such runs shuffled (the default then), though the MNIST-1D recipe now does not.
    reference = _train(capsys, tmp_path / "whole", "--steps", "6", "--shuffle")
    folder = tmp_path / "old"
    _train(capsys, folder, "--steps", "3", "--shuffle")
    path = folder / "checkpoint.safetensors"
    arrays, metadata = load_checkpoint(path)
    del metadata["config"]["shuffle"]
    save_checkpoint(path, arrays, metadata)
    resumed = _train(capsys, folder, "--steps", "6", "--resume")
    for name in reference:
        assert resumed[name].tobytes() == reference[name].tobytes(), name


@needs_mnist1d
def test_a_checkpoint_with_malformed_metadata_is_refused_in_one_line(capsys, workspace):
    path = workspace["folder"] / "checkpoint.safetensors"
    arrays, metadata = load_checkpoint(path)
    save_checkpoint(path, arrays, {**metadata, "config": ["not", "an", "object"]})
    workspace["bytes"][path] = path.read_bytes()
    assert_one_line_error(*run(capsys, "train", "--data", "mnist1d", "--model", "cnn",
                               "--checkpoint", str(workspace["folder"]), "--resume",
                               "--no-progress"),
                          r"checkpoint\.safetensors has a malformed cnnlab metadata record")
    assert_untouched(workspace)


@needs_mnist1d
def test_resume_without_a_length_runs_to_the_runs_own_end(capsys, tmp_path):
    folder = tmp_path / "run"
    _train(capsys, folder, "--steps", "6", "--schedule", "cosine")
    payload = (folder / "checkpoint.safetensors").read_bytes()
    _train(capsys, folder, "--resume")  # not the recipe's 6,000 steps: the run's 6, done
    assert (folder / "checkpoint.safetensors").read_bytes() == payload


@needs_mnist1d
@pytest.mark.parametrize(("options", "message"), [
    (["--lr", "0.001"], r"was trained with lr=0\.005, this run asks for lr=0\.001"),
    (["--no-shuffle", "--steps", "8"], r"was trained with shuffle=True, this run asks for "
                                       r"shuffle=False"),
    (["--steps", "8", "--schedule", "cosine"], r"was trained with schedule='constant'"),
])
def test_resume_refuses_settings_given_differently(capsys, tmp_path, options, message):
    folder = tmp_path / "run"
    _train(capsys, folder, "--steps", "4", "--lr", "0.005", "--shuffle")
    payload = (folder / "checkpoint.safetensors").read_bytes()
    assert_one_line_error(*run(capsys, "train", "--data", "mnist1d", "--model", "cnn",
                               "--checkpoint", str(folder), "--no-progress", "--resume",
                               *options), message)
    assert (folder / "checkpoint.safetensors").read_bytes() == payload


@needs_mnist1d
def test_resume_needs_a_checkpoint_folder(capsys):
    assert_one_line_error(*run(capsys, "train", "--data", "mnist1d", "--model", "cnn",
                               "--resume", "--steps", "2", "--no-progress"),
                          r"train: --resume needs --checkpoint DIR")


@needs_mnist1d
def test_eval_of_a_corrupt_or_missing_checkpoint(capsys, workspace, tmp_path):
    assert_one_line_error(*run(capsys, "eval", "--checkpoint", str(tmp_path / "none")),
                          r"load_checkpoint: no checkpoint file at .*none")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    assert_one_line_error(*run(capsys, "eval", "--checkpoint", str(junk)),
                          r"junk\.safetensors is not a readable safetensors checkpoint")
    assert junk.read_bytes() == b"not a checkpoint"


@needs_mnist1d
def test_eval_of_a_checkpoint_from_another_architecture(capsys, workspace, tmp_path):
    # cnn weights under a record that claims the MLP: eval must refuse, not misload.
    arrays, metadata = load_checkpoint(workspace["folder"] / "checkpoint.safetensors")
    metadata.pop("schema")
    metadata["model"] = "mlp"
    metadata["config"]["model"] = "mlp"
    path = tmp_path / "mislabelled.safetensors"
    save_checkpoint(path, arrays, metadata)
    payload = path.read_bytes()
    assert_one_line_error(*run(capsys, "eval", "--checkpoint", str(path)),
                          r"eval: .*mislabelled\.safetensors does not fit mlp")
    assert path.read_bytes() == payload


def test_truncated_idx_file(tmp_path):
    # Library level: the IDX reader behind `load_mnist_idx` names the file and the sizes.
    path = tmp_path / "images-idx3-ubyte"
    write_idx(path, np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4))
    np.testing.assert_array_equal(read_idx(path)[1, 0], [16, 17, 18, 19])
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"read_idx: .*images-idx3-ubyte is truncated: dims "
                                         r"\(2, 4, 4\) of uint8 need 32 payload bytes, got 27"):
        read_idx(path)
    zipped = tmp_path / "labels.gz"
    # a sound header, then the gzip stream ends inside the payload
    zipped.write_bytes(gzip.compress(path.read_bytes()[:-5] + bytes(5))[:-6])
    with pytest.raises(ValueError, match=r"read_idx: .*labels\.gz is a damaged or truncated "
                                         r"gzip file"):
        read_idx(zipped)


# -- demo -----------------------------------------------------------------------------------


def test_demo_report_for_one_dataset(capsys, tmp_path):
    # The fast path of the demo below: one dataset, the same report machinery.
    from cnnlab.demo import run_demo

    if "mnist1d" not in READY:
        pytest.skip("mnist1d not available")
    report = tmp_path / "report"
    rows = run_demo(report, quick=True, progress=False, runs=(("mnist1d", ("mlp", "cnn"), 4),))
    out = capsys.readouterr().out
    assert [r["model"] for r in rows] == ["mlp", "mnist1d-cnn"]
    assert sorted(p.name for p in report.iterdir()) == [
        "cnn_vs_mlp.png", "curves_mnist1d.png", "filters_mnist1d_mnist1d-cnn.png", "index.html",
        "results.json", "summary.txt"]
    assert "shifted acc" in out and (report / "summary.txt").read_text() in out + "\n"
    for row in rows:
        assert 0 <= row["shifted_accuracy"] <= 1 and row["params"] > 0


# 10 s on an idle 2-core machine, 30-45 s when it is shared (LeNet-5 on 28x28 MNIST).
@pytest.mark.slow
def test_demo_quick_writes_a_report(capsys, tmp_path):
    missing = {"mnist1d", "mnist5k"} - READY
    if missing:
        pytest.skip(f"demo needs {sorted(missing)}")
    report = tmp_path / "report"
    code, out, err = run(capsys, "demo", "--quick", "--report", str(report), "--no-progress")
    assert code == 0, err
    names = sorted(p.name for p in report.iterdir())
    assert names == ["cnn_vs_mlp.png", "convolution.gif", "curves_mnist1d.png",
                     "curves_mnist5k.png", "equivariance_lenet5.png", "feature_maps_lenet5.png",
                     "filters_mnist1d_mnist1d-cnn.png", "filters_mnist5k_lenet5.png",
                     "index.html", "receptive_field_lenet5.png", "results.json",
                     "summary.txt"]
    assert "cnnlab lecture" in out and "cnnlab report" in out and "cnnlab serve" in out
    assert "convolution.gif" in (report / "index.html").read_text()
    for name in names:
        if name.endswith(".png"):
            assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = (report / "index.html").read_text()
    assert all(f"src='{name}'" in page for name in names if name.endswith(".png"))
    rows = json.loads((report / "results.json").read_text())
    assert [(r["data"], r["model"]) for r in rows] == [
        ("mnist1d", "mlp"), ("mnist1d", "mnist1d-cnn"), ("mnist5k", "mlp"),
        ("mnist5k", "lenet5")]
    assert all(r["steps"] == 300 for r in rows)
    assert "Report written to" in out


@needs_mnist1d
def test_resume_with_nothing_to_resume_says_a_fresh_run_starts(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--data", "mnist1d", "--model", "cnn", "--steps", "2",
                       "--no-progress", "--checkpoint", str(tmp_path / "empty"), "--resume")
    assert code == 0
    notes = [line for line in err.splitlines() if line.startswith("cnnlab: note: ")]
    assert len(notes) == 1 and "nothing to resume" in notes[0] and "empty" in notes[0]
    assert "a fresh run starts" in notes[0]


def test_metrics_out_may_not_replace_the_checkpoint(capsys, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "checkpoint.safetensors").write_bytes(b"an earlier run's checkpoint")
    assert_one_line_error(*run(capsys, "train", "--data", "digits", "--model", "cnn",
                               "--steps", "1", "--no-progress", "--checkpoint", str(folder),
                               "--metrics-out", str(folder / "checkpoint.safetensors")),
                          r"train: --metrics-out .*checkpoint.safetensors is the run's "
                          r"checkpoint file")
    assert (folder / "checkpoint.safetensors").read_bytes() == b"an earlier run's checkpoint"


def _digits_run(capsys, folder, *options: str) -> tuple[dict[str, np.ndarray], str]:
    # digits' 8x8 images in batches of 1024: two shards a batch, whatever the machine
    code, _, err = run(capsys, "train", "--data", "digits", "--model", "cnn",
                       "--batch-size", "1024", "--checkpoint", str(folder), "--no-progress",
                       *options)
    assert code == 0, err
    arrays, _ = load_checkpoint(folder / "checkpoint.safetensors")
    return {k: v for k, v in arrays.items() if k.startswith("model.")}, err


def test_resuming_on_fewer_workers_continues_bit_for_bit(capsys, tmp_path):
    """Issue 13, item 6: a two-worker run interrupted and resumed with one worker ends on
    the uninterrupted run's weights (the shard plan is the batch's, not the machine's)."""
    reference, _ = _digits_run(capsys, tmp_path / "whole", "--steps", "4", "--threads", "2")
    _, metadata = load_checkpoint(tmp_path / "whole" / "checkpoint.safetensors")
    assert metadata["shards"] == 2
    _digits_run(capsys, tmp_path / "split", "--steps", "2", "--threads", "2")
    resumed, _ = _digits_run(capsys, tmp_path / "split", "--steps", "4", "--resume",
                             "--threads", "1")
    for name in reference:
        assert resumed[name].tobytes() == reference[name].tobytes(), name


def test_resuming_a_checkpoint_from_before_fixed_shard_plans_says_what_plan_it_gets(
        capsys, tmp_path):
    _digits_run(capsys, tmp_path / "old", "--steps", "2")
    path = tmp_path / "old" / "checkpoint.safetensors"
    arrays, metadata = load_checkpoint(path)
    del metadata["shards"]  # what a checkpoint written before the fixed plan holds
    save_checkpoint(path, arrays, metadata)
    _, err = _digits_run(capsys, tmp_path / "old", "--steps", "4", "--resume")
    warnings = [line for line in err.splitlines() if line.startswith("cnnlab: warning: ")]
    assert len(warnings) == 1, err
    assert "written before the shard plan followed the batch" in warnings[0]
    assert "continues with 2 shard(s) per batch" in warnings[0]


@pytest.mark.parametrize(("state", "said"), [
    ("none", "no checkpoint was kept (--checkpoint DIR keeps one)"),
    ("folder", "no checkpoint was written in {folder} yet"),
    ("written", "the last checkpoint is {folder}/checkpoint.safetensors (--resume continues "
                "from it)"),
])
def test_ctrl_c_prints_one_line_saying_where_the_checkpoint_is(capsys, tmp_path, monkeypatch,
                                                               state, said):
    from cnnlab.train import Trainer

    folder = tmp_path / "run"

    def interrupted(self):
        if state == "written":
            self.save()
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run", interrupted)
    options = ["--checkpoint", str(folder)] if state != "none" else []
    code, out, err = run(capsys, "train", "--data", "digits", "--model", "cnn", "--steps",
                         "2", "--no-progress", *options)
    assert code == 130 and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert lines == [f"cnnlab: interrupted; {said.format(folder=folder)}"], err


def _damage(metadata: dict, how: str) -> None:
    if how.startswith("no "):
        del metadata[how[3:]]
    elif how == "negative step":
        metadata["step"] = -40
    elif how == "string step":
        metadata["step"] = "2"
    elif how == "bad rng state":
        metadata["loader"]["rng_state"]["state"]["state"] = 2**200
    elif how == "history of numbers":
        metadata["history"] = [1, 2]


@pytest.mark.parametrize(("how", "message"), [
    ("no step", r"lacks 'step' in its metadata"),
    ("no optim", r"lacks 'optim' in its metadata"),
    ("no loader", r"lacks 'loader' in its metadata"),
    ("no history", r"lacks 'history' in its metadata"),
    ("no train_seconds", r"lacks 'train_seconds' in its metadata"),
    ("no config", r"lacks 'config' in its metadata"),  # resumed with default settings
    ("negative step", r"is at step -40, which is negative"),  # trained 90, reported 50
    ("string step", r"has 'step' of type str in its metadata, expected int"),
    ("bad rng state", r"has a malformed data loader state \(OverflowError"),
    ("history of numbers", r"has a history that is not a list of records"),
])
def test_a_malformed_checkpoint_is_refused_in_one_line_and_left_untouched(capsys, tmp_path,
                                                                         how, message):
    """Issue 13, item 8: the whole metadata is checked before anything runs."""
    folder = tmp_path / "run"
    _digits_run(capsys, folder, "--steps", "2")
    path = folder / "checkpoint.safetensors"
    arrays, metadata = load_checkpoint(path)
    _damage(metadata, how)
    save_checkpoint(path, arrays, metadata)
    before = path.read_bytes()
    assert_one_line_error(*run(capsys, "train", "--data", "digits", "--model", "cnn",
                               "--steps", "4", "--no-progress", "--checkpoint", str(folder),
                               "--resume"), rf"resume: .*checkpoint.safetensors {message}")
    assert path.read_bytes() == before


@pytest.mark.parametrize("argv", [
    ["train", "--data", "digits", "--model", "cnn", "--checkpoint", ""],
    ["train", "--data", "digits", "--model", "cnn", "--metrics-out", ""],
    ["demo", "--report", ""],
    ["eval", "--checkpoint", ""],
])
def test_an_empty_path_is_refused_naming_the_flag(capsys, argv):
    """Issue 13, item 10: an empty path meant the current folder, or nothing, silently."""
    flag = argv[argv.index("") - 1]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {flag}: must be a path, got an empty string" in capsys.readouterr().err


def test_an_unwritable_metrics_path_fails_before_the_run(capsys, tmp_path, monkeypatch):
    from cnnlab.train import Trainer

    monkeypatch.setattr(Trainer, "run", lambda self: pytest.fail("the run started"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_one_line_error(*run(capsys, "train", "--data", "digits", "--model", "cnn",
                               "--steps", "2", "--no-progress", "--metrics-out",
                               str(blocker / "metrics.json")),
                          r"train: --metrics-out .*metrics.json cannot be written: "
                          r".*a-file is not a writable folder")
    assert_one_line_error(*run(capsys, "train", "--data", "digits", "--model", "cnn",
                               "--steps", "2", "--no-progress", "--metrics-out",
                               str(tmp_path)), r"is a folder; it needs a file name")


@needs_mnist1d
def test_an_unwritable_cache_is_a_warning_not_a_failure(capsys, tmp_path, monkeypatch):
    """The data is generated in memory; only the caching is given up."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("CNNLAB_CACHE", str(blocker / "cache"))
    code, _, err = run(capsys, "train", "--data", "mnist1d", "--model", "cnn", "--steps", "2",
                       "--no-progress")
    assert code == 0, err
    assert re.search(r"cnnlab: warning: mnist1d: cannot write the cache .*; continuing "
                     r"without it", err), err


def test_a_diverged_sharded_run_says_so_in_one_line(capsys):
    """Issue 13, item 20: NumPy's overflow warnings, from every shard, came before the
    one-line error; the loss's own report is the one line now."""
    code, out, err = run(capsys, "train", "--data", "digits", "--model", "cnn", "--batch-size",
                         "1024", "--lr", "1e12", "--steps", "20", "--no-progress",
                         "--threads", "2")
    assert_one_line_error(code, out, err, r"train: loss became nan at step \d+ \(try a "
                                          r"smaller --lr\)")


def test_resume_through_a_dangling_link_is_refused_and_the_link_kept(capsys, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    link = folder / "checkpoint.safetensors"
    link.symlink_to(tmp_path / "gone.safetensors")
    assert_one_line_error(*run(capsys, "train", "--data", "digits", "--model", "cnn",
                               "--steps", "2", "--no-progress", "--checkpoint", str(folder),
                               "--resume"),
                          r"train: --resume: .*checkpoint.safetensors is a link to .*gone"
                          r".safetensors, which does not exist")
    assert link.is_symlink()


# -- training statistics: --stats -------------------------------------------------------------


@pytest.mark.parametrize(("flags", "every"), [([], 0), (["--stats"], 10),
                                              (["--stats-every", "3"], 3),
                                              (["--stats", "--stats-every", "3"], 3),
                                              (["--no-stats"], 0)])
def test_train_stats_flags(flags, every):
    from cnnlab.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--data", "mnist1d", "--model", "cnn", *flags])
    assert _train_config(args).stats_every == every


def _stats_steps(folder) -> list[int]:
    with np.load(folder / "stats.npz", allow_pickle=False) as data:
        return data["steps"].tolist()


@needs_mnist1d
def test_train_stats_writes_npz_and_json_and_resume_appends(capsys, tmp_path):
    folder = tmp_path / "run"
    code, out, err = run(capsys, "train", "--data", "mnist1d", "--model", "cnn", "--steps", "4",
                         "--stats-every", "2", "--checkpoint", str(folder), "--no-progress")
    assert code == 0, err
    assert (f"statistics of 2 steps (every 2) in {folder / 'stats.npz'} and stats.json"
            in out)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.safetensors",
                                                        "stats.json", "stats.npz"]
    assert _stats_steps(folder) == [2, 4]
    with np.load(folder / "stats.npz", allow_pickle=False) as data:
        assert data["layers"].tolist() == ["conv1", "conv2", "conv3", "linear"]
        assert data["histogram"].shape == (2, 4, 82)
    index = json.loads((folder / "stats.json").read_text())
    assert index["every"] == 2 and index["last_step"] == 4
    # --resume alone goes on recording as the run did, after the run's rows
    code, out, err = run(capsys, "train", "--data", "mnist1d", "--model", "cnn", "--steps", "8",
                         "--resume", "--checkpoint", str(folder), "--no-progress")
    assert code == 0, err
    assert _stats_steps(folder) == [2, 4, 6, 8]
    # --no-stats stops recording and leaves the rows as they are
    payload = (folder / "stats.npz").read_bytes()
    code, out, err = run(capsys, "train", "--data", "mnist1d", "--model", "cnn", "--steps",
                         "10", "--resume", "--no-stats", "--checkpoint", str(folder),
                         "--no-progress")
    assert code == 0, err
    assert "statistics" not in out and (folder / "stats.npz").read_bytes() == payload


@pytest.mark.parametrize(("options", "message"), [
    (["--stats"], r"^cnnlab: error: train: --stats needs --checkpoint DIR: the statistics "
                  r"are written to the run's folder \(DIR/stats\.npz and DIR/stats\.json\)$"),
    (["--stats-every", "5"], r"train: --stats needs --checkpoint DIR"),
    (["--no-stats", "--stats-every", "5"], r"^cnnlab: error: train: --no-stats and "
                                           r"--stats-every 5 contradict each other; give "
                                           r"one of them$"),
])
def test_train_stats_errors_in_one_line(capsys, options, message):
    assert_one_line_error(*run(capsys, "train", "--data", "mnist1d", "--model", "cnn",
                               "--steps", "2", "--no-progress", *options), message)


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_stats_every_must_be_a_positive_integer(capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "mnist1d", "--model", "cnn", "--stats-every", value])
    assert exit_info.value.code == 2
    assert re.search(rf"argument --stats-every: must be an integer >= 1, got '?{value}'?",
                     capsys.readouterr().err)
