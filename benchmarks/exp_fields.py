"""Two of the lecture's claims measured on the zoo's networks (issue 14's experiments).

1. **Weight sharing.** LeNet-1989 (LeCun et al. 1989, 9,760 parameters) against the dense
   layers of the same input and output sizes, per layer, from ``parameter_table``.
2. **Receptive fields on a trained ReLU CNN.** The MNIST-1D CNN (the paper's recipe,
   ``cnnlab train --data mnist1d --model cnn``) before and after training: the theoretical
   field of its last convolution (``receptive_fields``) against the effective one
   (``effective_receptive_field``, Luo et al. 2016: the gradient of the centre unit,
   averaged over random inputs), whose width ``sigma`` Luo et al. find to be a fraction
   of the theoretical field that grows during training.

    python benchmarks/exp_fields.py [--seeds 0 1 2] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from _timing import machine_info, write_report

from cnnlab.analysis import effective_receptive_field, parameter_table, receptive_fields
from cnnlab.models import build_model
from cnnlab.train import default_config, train


def weight_sharing() -> dict[str, Any]:
    model = build_model("lenet1989", np.random.default_rng(0), (1, 16, 16), 10)
    table = parameter_table(model, (1, 16, 16))
    print(table)
    layers = [{"name": r.name, "output_shape": list(r.output_shape), "params": r.params,
               "macs": r.macs, "dense_params": r.dense_params}
              for r in table.rows if r.op in ("conv", "linear")]
    return {"total_params": table.total_params, "total_macs": table.total_macs,
            "layers": layers}


def fields(seed: int, steps: int | None, samples: int) -> dict[str, Any]:
    config = default_config("mnist1d", "cnn", seed=seed, steps=steps, progress=False)
    untrained = build_model("mnist1d-cnn", np.random.default_rng(seed), (1, 40), 10)
    result = train(config)
    rows = {}
    for label, model in (("untrained", untrained), ("trained", result.model)):
        theory = receptive_fields(model, (1, 40))
        last_conv = [r for r in theory.rows if r.op == "conv"][-1]
        erf = effective_receptive_field(model, (1, 40), layer=last_conv.name,
                                        samples=samples, rng=np.random.default_rng(seed))
        rows[label] = {"layer": last_conv.name, "size": last_conv.size[0],
                       "jump": last_conv.jump[0], "erf_sigma": erf.sigma[0],
                       "erf_centre": erf.centre[0]}
        print(f"seed {seed} {label:>9}: {last_conv.name} theoretical field "
              f"{last_conv.size[0]} (jump {last_conv.jump[0]}), ERF sigma "
              f"{erf.sigma[0]:.2f}")
    rows["test_accuracy"] = result.metrics.get("test_accuracy")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="300 steps, a smoke run")
    parser.add_argument("--samples", type=int, default=256,
                        help="random inputs the ERF averages over")
    parser.add_argument("--json", metavar="FILE", default=None, help="write raw numbers")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/exp_fields.py",
                          *(sys.argv[1:] if argv is None else argv)])
    start = time.perf_counter()
    report: dict[str, Any] = {"weight_sharing": weight_sharing()}
    steps = 300 if args.quick else None
    report["fields"] = {str(seed): fields(seed, steps, args.samples) for seed in args.seeds}
    report |= {"command": command, "machine": machine_info(),
               "seconds": time.perf_counter() - start}
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=1))
    if args.json:
        write_report(args.json, report)


if __name__ == "__main__":
    main()
