"""The same workloads on two versions of cnnlab, alternating, in one sitting.

A restructuring must not make the library slower. This script runs each workload in fresh
processes, alternating the two versions (``--old``: the ``src`` folder of an older
checkout, e.g. a ``git worktree`` at the commit before the change; the other is the
installed cnnlab), ``--rounds`` times, and keeps each version's fastest time: the
protocol of ``_timing.py`` (a pause before each turn, minimum over rounds), with whole
processes as the turns so that neither version's caches or allocator state help the other.

    git worktree add /tmp/base <commit-before>
    python benchmarks/bench_before_after.py --old /tmp/base/src --rounds 5

Workloads: LeNet-5 on mnist5k (10 epochs, the training bar's recipe), 1,500 steps of the
MNIST-1D CNN, and forward + backward of the ops a training step spends its time in.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from _timing import write_report

# Each workload: Python run in a fresh process; it prints one float, its best time (s).
PREAMBLE = """
import time, numpy as np
import cnnlab
from cnnlab import Tensor
import cnnlab.functional as F
cnnlab.tune_allocator()

def best(fn, repeat=30):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return min(times)

def step(op, *arrays):
    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    def run():
        out = op(*tensors)
        out.backward(np.ones(out.shape, out.dtype))
        for t in tensors:
            t.grad = None
    return run

rng = np.random.default_rng(0)
def r(*shape):
    return rng.standard_normal(shape).astype(np.float32)
"""

WORKLOADS = {
    "LeNet-5 training, mnist5k, 10 epochs": """
from cnnlab.train import Trainer, default_config
config = default_config("mnist5k", "lenet5", progress=False, eval_every=0, epochs=10,
                        batch_size=128, lr=0.001, seed=0)
trainer = Trainer(config)
start = time.perf_counter(); trainer.run(); print(time.perf_counter() - start)
""",
    "MNIST-1D CNN training, 1,500 steps": """
from cnnlab.train import Trainer, default_config
config = default_config("mnist1d", "cnn", progress=False, eval_every=0, steps=1500, seed=0)
trainer = Trainer(config)
start = time.perf_counter(); trainer.run(); print(time.perf_counter() - start)
""",
    "conv2d 5x5, LeNet C1 (64x1x28x28 -> 6), fwd+bwd": """
print(best(step(lambda x, w: F.conv2d(x, w, None, 1, 2), r(64, 1, 28, 28), r(6, 1, 5, 5))))
""",
    "conv2d 3x3, 32x64x32x32 -> 64, fwd+bwd": """
print(best(step(lambda x, w: F.conv2d(x, w, None, 1, 1), r(32, 64, 32, 32), r(64, 64, 3, 3)),
           10))
""",
    "conv1d 255 taps (FFT), 8x4x4096 -> 4, fwd+bwd": """
print(best(step(lambda x, w: F.conv1d(x, w), r(8, 4, 4096), r(4, 4, 255)), 10))
""",
    "conv_transpose2d 4x4 s2, 16x32x16x16 -> 16, fwd+bwd": """
print(best(step(lambda x, w: F.conv_transpose2d(x, w, None, 2, 1), r(16, 32, 16, 16),
                r(32, 16, 4, 4)), 10))
""",
    "max_pool2d 2x2, 64x6x28x28, fwd+bwd": """
print(best(step(lambda x: F.max_pool2d(x, 2), r(64, 6, 28, 28))))
""",
    "relu, 64x6x28x28, fwd+bwd": """
print(best(step(F.relu, r(64, 6, 28, 28))))
""",
    "cross_entropy, 128x10, fwd+bwd": """
target = rng.integers(0, 10, 128)
print(best(step(lambda x: F.cross_entropy(x, target), r(128, 10)), 200))
""",
    "batch_norm (training), 64x32x16x16, fwd+bwd": """
mean, var = np.zeros(32, np.float32), np.ones(32, np.float32)
print(best(step(lambda x, w, b: F.batch_norm(x, mean, var, w, b, True), r(64, 32, 16, 16),
                r(32), r(32))))
""",
}


def run(workload: str, src: str | None) -> float:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    time.sleep(0.15)  # let the previous process's BLAS threads go idle (_timing.PAUSE_S)
    output = subprocess.run([sys.executable, "-c", PREAMBLE + WORKLOADS[workload]], env=env,
                            capture_output=True, text=True, check=True).stdout
    return float(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True, help="src folder of the older checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="run the workloads whose name contains this text")
    parser.add_argument("--json", help="write every round's times here")
    args = parser.parse_args()
    names = [n for n in WORKLOADS if args.only is None or args.only in n]
    times: dict[str, dict[str, list[float]]] = {n: {"old": [], "new": []} for n in names}
    for round_index in range(args.rounds):
        order = ("old", "new") if round_index % 2 == 0 else ("new", "old")
        for name in names:
            for version in order:
                times[name][version].append(run(name, args.old if version == "old" else None))
    print(f"| workload | before | after | after / before |  ({args.rounds} alternating "
          f"rounds, fastest of each)")
    print("|---|---|---|---|")
    for name in names:
        old, new = min(times[name]["old"]), min(times[name]["new"])
        unit, scale = ("s", 1.0) if old > 0.5 else ("ms", 1e3)
        print(f"| {name} | {old * scale:.3g} {unit} | {new * scale:.3g} {unit} | "
              f"{new / old:.2f} |")
    if args.json:
        write_report(args.json, times)


if __name__ == "__main__":
    main()
