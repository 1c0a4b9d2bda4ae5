"""Training speed and accuracy, cnnlab vs PyTorch CPU, the same recipes side by side.

Recipes (shared/REFERENCES.md):
- MNIST-1D CNN (Greydanus 2020): Adam lr 1e-2, batch 100, 6,000 steps, seed 0; and the
  MLP (40-100-100-10) and logistic regression with the same recipe (accuracy only).
- LeNet-5 on mnist5k: 4,000 train / 1,000 test, 10 epochs, Adam 1e-3, batch 128.

Both libraries see the same data in the same order (cnnlab's seeded DataLoader) and run
one after the other, each after a short pause, so their BLAS threads never overlap. The
speed rows alternate the two libraries for ``--rounds`` rounds and compare each one's
fastest run (shared/REFERENCES.md: minimum over rounds, ratios from one run); every
round's times are printed and kept in the JSON.

    python benchmarks/bench_train.py --out BENCHMARKS-train.md
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
from _timing import write_report


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
            # cnnlab's lenet5 order (pool, then ReLU: the same function, see its docstring)
            tnn.Conv2d(1, 6, 5, padding=2), tnn.MaxPool2d(2), tnn.ReLU(),
            tnn.Conv2d(6, 16, 5), tnn.MaxPool2d(2), tnn.ReLU(), tnn.Flatten(),
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

    loader = DataLoader(trainer.train_set, batch_size=trainer.config.batch_size,
                        shuffle=trainer.config.shuffle,
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
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating cnnlab/torch runs per speed row (default 3)")
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
        speed_row = model in ("cnn", "lenet5")
        cnnlab_times, torch_times = [], []
        for _ in range(args.rounds if speed_row else 1):
            time.sleep(0.5)
            metrics, wall, trainer = cnnlab_run(data, model, **overrides)
            cnnlab_times.append(metrics["train_seconds"])
            if speed_row:
                acc, seconds = torch_run(trainer, trainer.config.model)
                torch_times.append(seconds)
            print(json.dumps({"model": trainer.config.model, "cnnlab_seconds": cnnlab_times[-1],
                              "torch_seconds": torch_times[-1] if torch_times else None}),
                  flush=True)
        row = {"data": data, "model": trainer.config.model,
               "cnnlab_accuracy": metrics["test_accuracy"],
               "cnnlab_seconds": min(cnnlab_times), "cnnlab_rounds": cnnlab_times,
               "cnnlab_wall": wall, "steps": metrics["steps"], "params": metrics["params"],
               "threads": trainer.threads}
        if speed_row:
            row.update(torch_accuracy=acc, torch_seconds=min(torch_times),
                       torch_rounds=torch_times, ratio=min(cnnlab_times) / min(torch_times))
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        "## Training (cnnlab vs PyTorch, same recipe and batches)", "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"numpy {np.__version__}, torch {torch.__version__}", "",
        "| data | model | params | steps | threads | cnnlab acc | cnnlab s | torch acc "
        "| torch s | time ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        torch_cols = (f"{100 * r['torch_accuracy']:.1f}% | {r['torch_seconds']:.1f} | "
                      f"{r['ratio']:.2f}x" if "ratio" in r else "- | - | -")
        lines.append(f"| {r['data']} | {r['model']} | {r['params']:,} | {r['steps']} | "
                     f"{r['threads']} | "
                     f"{100 * r['cnnlab_accuracy']:.1f}% | {r['cnnlab_seconds']:.1f} | "
                     f"{torch_cols} |")
    rounds = [r for r in rows if "ratio" in r]
    if rounds:
        lines += ["", f"Times are each library's fastest of {args.rounds} alternating rounds; "
                  "all rounds (cnnlab / torch, s):"]
        lines += [f"- {r['model']}: " + ", ".join(
            f"{c:.2f} / {t:.2f}" for c, t in zip(r["cnnlab_rounds"], r["torch_rounds"]))
            for r in rounds]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_report(args.out, text)
    if args.json:
        write_report(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
