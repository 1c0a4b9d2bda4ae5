"""What each speed mechanism buys: a LeNet-5 training step with one mechanism turned off.

The mechanisms (each in its own module, whose docstring cites this script):

- ``fusion``: the conv + max-pool rewrite pass (``cnnlab/nn/fusion.py``), off with
  ``Sequential.fuse_conv_pool = False``;
- ``workers``: the shards of a batch run at once on every core (``cnnlab/train/parallel.py``),
  off with ``--threads 1`` (the same shards, one after another: the same weights);
- ``allocator``: ``cnnlab.tune_allocator()`` (``cnnlab/_memory.py``), off by not calling it;
- ``plan caches``: the GEMM's plans, tap windows and phase slices, the cost model's choices
  and the fused layer's index maps are built once per shape (``functools.lru_cache`` in
  ``ops/gemm.py``, ``ops/dispatch.py``, ``ops/conv_pool.py``), off by calling the uncached
  functions.

Each configuration trains LeNet-5 on mnist5k for ``--steps`` steps in a fresh process; the
configurations alternate for ``--rounds`` rounds and each keeps its fastest milliseconds
per step (the protocol of ``_timing.py``, with whole processes as the turns).

    python benchmarks/bench_mechanisms.py --rounds 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _timing import write_report

RUN = """
import json, sys
import cnnlab
from cnnlab import nn
from cnnlab.train import Trainer, default_config
off = set(sys.argv[1:])
if "allocator" not in off:
    cnnlab.tune_allocator()
if "plan caches" in off:
    from cnnlab.functional import conv_pool
    from cnnlab.ops import conv_pool as kernel_pool, dispatch, gemm
    for module, names in ((gemm, ("gemm_plan", "_tap_windows", "_phase_slices",
                                  "_batch_to_front")),
                          (dispatch, ("gemm_plan", "choose_conv_method",
                                      "pooling_in_conv_pays")),
                          (conv_pool, ("gemm_plan", "choose_conv_method",
                                       "pooling_in_conv_pays")),
                          (kernel_pool, ("_pooled_index",))):
        for name in names:
            if hasattr(module, name) and hasattr(getattr(module, name), "__wrapped__"):
                setattr(module, name, getattr(module, name).__wrapped__)
steps = int(STEPS)
config = default_config("mnist5k", "lenet5", steps=steps, progress=False, eval_every=0,
                        threads=1 if "workers" in off else 0, checkpoint_every=10**6)
trainer = Trainer(config)
if "fusion" in off:
    for module in trainer.model.modules():
        if isinstance(module, nn.Sequential):
            module.fuse_conv_pool = False
result = trainer.run()
print(1000 * result.metrics["train_seconds"] / steps)
"""

CONFIGS = {
    "all on": (),
    "fusion off": ("fusion",),
    "workers off (--threads 1)": ("workers",),
    "allocator tuning off": ("allocator",),
    "plan caches off": ("plan caches",),
}


def run(off: tuple[str, ...], steps: int) -> float:
    time.sleep(0.3)  # let the previous process's threads go idle (_timing.PAUSE_S)
    code = RUN.replace("STEPS", str(steps))
    output = subprocess.run([sys.executable, "-c", code, *off], capture_output=True,
                            text=True, check=True).stdout
    return float(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--json", help="write every round's times here")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for round_index in range(args.rounds):
        names = list(CONFIGS) if round_index % 2 == 0 else list(reversed(CONFIGS))
        for name in names:
            times[name].append(run(CONFIGS[name], args.steps))
    base = min(times["all on"])
    print(f"| LeNet-5 on mnist5k, batch 128 | ms per step | vs all on |  ({args.rounds} "
          f"alternating rounds, fastest of each, {args.steps} steps)")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {min(values):.2f} | {min(values) / base:.2f}x |")
    if args.json:
        write_report(args.json, times)


if __name__ == "__main__":
    main()
