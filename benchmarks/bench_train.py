"""Training speed and accuracy, cnnlab vs PyTorch CPU, the same recipes side by side.

Recipes (shared/REFERENCES.md):
- MNIST-1D CNN (Greydanus 2020): Adam lr 1e-2, batch 100, 6,000 steps, seed 0; and the
  MLP (40-100-100-10) and logistic regression with the same recipe (accuracy only).
- LeNet-5 on mnist5k: 4,000 train / 1,000 test, 10 epochs, Adam 1e-3, batch 128.

Both libraries see the same data in the same order (cnnlab's seeded DataLoader) and run
one after the other, each after a short pause, so their BLAS threads never overlap.

    python benchmarks/bench_train.py --out BENCHMARKS-train.md
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np


def cnnlab_run(data: str, model: str, **overrides):
    from cnnlab.train import Trainer, default_config

    config = default_config(data, model, progress=False, eval_every=0, **overrides)
    trainer = Trainer(config)
    started = time.perf_counter()
    result = trainer.run()
    wall = time.perf_counter() - started
    return result.metrics, wall, trainer


def torch_model(name: str, length: int = 40):
    import torch.nn as tnn

    if name == "mnist1d-cnn":
        return tnn.Sequential(
            tnn.Conv1d(1, 25, 5, stride=2, padding=1), tnn.ReLU(),
            tnn.Conv1d(25, 25, 3, stride=2, padding=1), tnn.ReLU(),
            tnn.Conv1d(25, 25, 3, stride=2, padding=1), tnn.ReLU(),
            tnn.Flatten(), tnn.Linear(125, 10))
    if name == "lenet5":
        return tnn.Sequential(
            tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
            tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
            tnn.Linear(84, 10))
    raise ValueError(name)


def torch_run(trainer, name: str):
    """Train the same architecture in PyTorch on the same batches; (accuracy, seconds)."""
    import torch

    torch.manual_seed(trainer.config.seed)
    model = torch_model(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=trainer.config.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    from cnnlab.data import DataLoader

    loader = DataLoader(trainer.train_set, batch_size=trainer.config.batch_size, shuffle=True,
                        rng=np.random.default_rng(trainer.config.seed))
    batches = []
    while len(batches) < trainer.total_steps:
        batches.extend((torch.from_numpy(x), torch.from_numpy(y)) for x, y in loader)
    batches = batches[: trainer.total_steps]
    time.sleep(0.5)
    started = time.perf_counter()
    for xb, yb in batches:
        optimizer.zero_grad()
        loss_fn(model(xb), yb).backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        logits = model(torch.from_numpy(trainer.x_test))
    accuracy = float((logits.argmax(1).numpy() == trainer.y_test).mean())
    return accuracy, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write a Markdown section here")
    parser.add_argument("--json", help="write raw numbers here")
    parser.add_argument("--skip-lenet", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from cnnlab._memory import tune_allocator

    # As `cnnlab train` does; one process, so PyTorch gets the same allocator settings.
    tune_allocator()

    rows = []
    for data, model, overrides in [("mnist1d", "cnn", {}), ("mnist1d", "mlp", {}),
                                   ("mnist1d", "logistic", {}),
                                   ("mnist5k", "lenet5", {})]:
        if args.skip_lenet and model == "lenet5":
            continue
        time.sleep(0.5)
        metrics, wall, trainer = cnnlab_run(data, model, **overrides)
        row = {"data": data, "model": trainer.config.model,
               "cnnlab_accuracy": metrics["test_accuracy"],
               "cnnlab_seconds": metrics["train_seconds"], "cnnlab_wall": wall,
               "steps": metrics["steps"], "params": metrics["params"]}
        if trainer.config.model in ("mnist1d-cnn", "lenet5"):
            acc, seconds = torch_run(trainer, trainer.config.model)
            row.update(torch_accuracy=acc, torch_seconds=seconds,
                       ratio=metrics["train_seconds"] / seconds)
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        "## Training (cnnlab vs PyTorch, same recipe and batches)", "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"numpy {np.__version__}, torch {torch.__version__}", "",
        "| data | model | params | steps | cnnlab acc | cnnlab s | torch acc | torch s "
        "| time ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        torch_cols = (f"{100 * r['torch_accuracy']:.1f}% | {r['torch_seconds']:.1f} | "
                      f"{r['ratio']:.2f}x" if "ratio" in r else "- | - | -")
        lines.append(f"| {r['data']} | {r['model']} | {r['params']:,} | {r['steps']} | "
                     f"{100 * r['cnnlab_accuracy']:.1f}% | {r['cnnlab_seconds']:.1f} | "
                     f"{torch_cols} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as file:
            file.write(text)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
