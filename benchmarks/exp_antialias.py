"""Anti-aliasing: LeNet-5 on mnist5k with max pooling and with BlurPool (issue 14).

Zhang 2019 ("Making Convolutional Networks Shift-Invariant Again", ICML) replaces every
downsampling max pool by MaxBlurPool (max pool at stride 1, then a binomial blur at the
stride) and reports better shift consistency on ImageNet. This script tests the claim on
the library's smallest image recipe, over several seeds:

- for each seed, ``cnnlab train --data mnist5k --model lenet5``'s recipe (Adam 1e-3,
  batch 128, 10 epochs) twice through :class:`cnnlab.train.Trainer`: once as built, once
  with ``pool="blur", blur_filter=F`` (``cnnlab train ... --pool blur --blur-filter F``:
  the zoo model's max pools swapped for :class:`cnnlab.nn.AntialiasedPool`, the weights
  the same), so both variants start from the same weights and see the same batches;
- on the 1,000 test images: the accuracy, Zhang's consistency
  (:func:`cnnlab.analysis.shift_consistency`: ``--pairs`` pairs of random shifts per image,
  each uniform in ``[-max_shift, max_shift]`` per axis) with circular and zero-fill
  (``crop``) shifts, the accuracy on the shifted images, and, from
  :func:`cnnlab.analysis.equivariance_report`, the fraction of top-1 classes that change
  under a diagonal shift by 1, 2, 3 and 4 pixels (4 = the network's total stride) together
  with the equivariance error of the last feature map (before the flatten) at shift 4,
  on its cells that did not wrap (:func:`interior_error`).
  Both variants of a seed are measured on the same shifts (one ``default_rng(seed)``
  each), so their difference is paired;
- optionally the same with other blur sizes (``--sweep-filters``, on ``--sweep-seeds``) and
  the same recipe with random-translation augmentation (``--augment-shift``), the regime
  of Zhang's ImageNet numbers (random crops).

    python benchmarks/exp_antialias.py --out BENCHMARKS-antialias.md --json antialias.json
    python benchmarks/exp_antialias.py --quick       # smoke run (1 seed, 1 epoch, ~5 s)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

import numpy as np
from _timing import machine_info, machine_markdown, write_report

DIAGONAL_SHIFTS = (1, 2, 3, 4)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _digest(model) -> str:
    """Short hash of a model's parameters (to show that both variants start alike)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(np.ascontiguousarray(p.data).tobytes())
    return h.hexdigest()[:12]


def interior_error(model, x: np.ndarray, stride: int) -> float:
    """||f(shift x) - shift(f(x))|| / ||f(x)|| of the feature map that enters the Flatten
    (LeNet-5: 16x5x5 at total stride 4) for a diagonal circular shift of the input by
    ``stride``, on the cells that did not wrap: the last row and column of a one-cell roll
    come from the other side of the map, which a valid convolution does not see as
    neighbours, so :func:`equivariance_report`'s whole-map error (about 0.5 here) is mostly
    those wrapped cells. (Its own ``interior_errors`` are stricter: cells whose whole
    receptive field reads no wrapped pixel and no padding; on the blurred LeNet-5's 5x5
    map no cell is that far inside, so they are None there.)"""
    from cnnlab.analysis.equivariance import shift_array
    from cnnlab.autograd import Tensor, no_grad

    flatten = next(i for i, m in enumerate(model) if type(m).__name__ == "Flatten")
    seen: list[np.ndarray] = []
    hook = model[flatten - 1].register_forward_hook(
        lambda module, inputs, out: seen.append(np.asarray(out.data)))
    with hook, no_grad():
        for batch in (x, shift_array(x, (stride, stride), "circular")):
            model(Tensor(batch))
    before, after = seen
    reference = before[..., :-1, :-1]
    return float(np.linalg.norm(after[..., 1:, 1:] - reference) / np.linalg.norm(reference))


def train_variant(seed: int, filter_size: int | None, args) -> dict:
    """Train LeNet-5 (``filter_size`` None: max pooling; else MaxBlurPool of that size)
    and measure it; one row of the results."""
    from cnnlab.analysis import equivariance_report, shift_consistency
    from cnnlab.train import Trainer, default_config

    overrides = {"epochs": 1} if args.quick else {}
    if filter_size is not None:
        overrides |= {"pool": "blur", "blur_filter": filter_size}
    config = default_config("mnist5k", "lenet5", seed=seed, progress=False, eval_every=0,
                            checkpoint_every=10**9, augment_shift=args.augment or None,
                            **overrides)
    trainer = Trainer(config)
    start_digest = _digest(trainer.model)
    started = time.perf_counter()
    result = trainer.run()
    wall = time.perf_counter() - started
    model = result.model
    x, y = trainer.x_test, trainer.y_test
    if args.test_images:
        x, y = x[: args.test_images], y[: args.test_images]
    started = time.perf_counter()
    row = {"seed": seed, "variant": "max" if filter_size is None else f"blur-{filter_size}",
           "filter_size": filter_size, "augment_shift": args.augment,
           "start_digest": start_digest, "accuracy": result.metrics["test_accuracy"],
           "train_seconds": result.metrics["train_seconds"], "train_wall": wall}
    for mode, key in (("circular", "circular"), ("crop", "zero")):
        sc = shift_consistency(model, x, max_shift=args.max_shift, pairs=args.pairs,
                               mode=mode, rng=np.random.default_rng(seed), labels=y)
        row[f"consistency_{key}"] = sc.consistency
        row[f"consistency_{key}_se"] = sc.standard_error
        row[f"shifted_accuracy_{key}"] = sc.accuracy
        row["pairs"] = sc.samples
    report = equivariance_report(model, x[: args.diag_images], shifts=DIAGONAL_SHIFTS,
                                 mode="circular")
    row["flips"] = list(report.prediction_change)
    row["interior_error_shift4"] = interior_error(model, x[: args.diag_images], 4)
    row["measure_seconds"] = time.perf_counter() - started
    print(json.dumps(row), flush=True)
    return row


# -- statistics ------------------------------------------------------------------------

METRICS = ("accuracy", "consistency_circular", "consistency_zero", "shifted_accuracy_circular",
           "shifted_accuracy_zero")


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def paired(rows_a: list[dict], rows_b: list[dict], metric: str) -> dict:
    """b - a per seed (matched by seed): mean, std, paired t and its two-sided p, and the
    seed-to-seed spread (std) of each variant."""
    from scipy import stats

    by_seed = {r["seed"]: r for r in rows_a}
    pairs = [(by_seed[r["seed"]][metric], r[metric]) for r in rows_b if r["seed"] in by_seed]
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    diff = b - a
    out = {"diffs": diff.tolist(), "mean": float(diff.mean()), "n": len(diff),
           "std": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
           "spread_a": _mean_std(a)[1], "spread_b": _mean_std(b)[1]}
    if len(diff) > 1 and out["std"] > 0:
        t = stats.ttest_rel(b, a)
        out["t"], out["p"] = float(t.statistic), float(t.pvalue)
    else:
        out["t"] = out["p"] = None
    return out


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _pm(values) -> str:
    mean, std = _mean_std(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def summary_table(groups: dict[str, list[dict]]) -> list[str]:
    lines = ["| variant | seeds | accuracy | consistency circular | consistency zero-fill "
             "| shifted accuracy circular / zero-fill |", "|---|---|---|---|---|---|"]
    for name, rows in groups.items():
        lines.append(
            f"| {name} | {len(rows)} | {_pm([r['accuracy'] for r in rows])} | "
            f"{_pm([r['consistency_circular'] for r in rows])} | "
            f"{_pm([r['consistency_zero'] for r in rows])} | "
            f"{_pm([r['shifted_accuracy_circular'] for r in rows])} / "
            f"{_pm([r['shifted_accuracy_zero'] for r in rows])} |")
    return lines


def paired_table(base: list[dict], other: list[dict]) -> tuple[list[str], dict]:
    stats_by_metric = {m: paired(base, other, m) for m in METRICS}
    lines = ["| seed | Δ accuracy | Δ consistency circular | Δ consistency zero-fill "
             "| Δ shifted accuracy circular | Δ shifted accuracy zero-fill |",
             "|---|---|---|---|---|---|"]
    seeds = [r["seed"] for r in other if r["seed"] in {b["seed"] for b in base}]
    for i, seed in enumerate(seeds):
        cells = " | ".join(f"{100 * stats_by_metric[m]['diffs'][i]:+.1f}" for m in METRICS)
        lines.append(f"| {seed} | {cells} |")
    lines.append("| mean ± std | " + " | ".join(
        f"{100 * s['mean']:+.1f} ± {100 * s['std']:.1f}" for s in stats_by_metric.values())
        + " |")
    lines.append("| paired t (p) | " + " | ".join(
        "-" if s["t"] is None else f"{s['t']:+.1f} ({s['p']:.2g})"
        for s in stats_by_metric.values()) + " |")
    lines.append("| seed spread (std) max / blur | " + " | ".join(
        f"{100 * s['spread_a']:.1f} / {100 * s['spread_b']:.1f}"
        for s in stats_by_metric.values()) + " |")
    return lines, stats_by_metric


def flips_table(groups: dict[str, list[dict]]) -> list[str]:
    head = " | ".join(f"shift {s}" for s in DIAGONAL_SHIFTS)
    lines = [f"| variant | {head} | interior error of the 16x5x5 map at shift 4 |",
             "|---|" + "---|" * len(DIAGONAL_SHIFTS) + "---|"]
    for name, rows in groups.items():
        flips = np.array([r["flips"] for r in rows])
        errors = [r["interior_error_shift4"] for r in rows]
        cells = " | ".join(_pct(v) for v in flips.mean(axis=0))
        lines.append(f"| {name} | {cells} | {np.mean(errors):.3f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7",
                        help="comma-separated seeds (default 0-7)")
    parser.add_argument("--filter-size", type=int, default=4,
                        help="blur taps of the main comparison (default 4)")
    parser.add_argument("--sweep-filters", default="2,3,5",
                        help="other blur sizes, on --sweep-seeds ('' for none)")
    parser.add_argument("--sweep-seeds", default="0,1,2")
    parser.add_argument("--augment-shift", type=int, default=3,
                        help="also train both variants with random translations up to this "
                             "many pixels on --augment-seeds (0: skip; default 3)")
    parser.add_argument("--augment-seeds", default="0,1,2,3,4")
    parser.add_argument("--max-shift", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=10, help="shift pairs per test image")
    parser.add_argument("--diag-images", type=int, default=1000,
                        help="test images for the diagonal-shift flips (default all)")
    parser.add_argument("--out", help="write a Markdown section here")
    parser.add_argument("--json", help="write raw numbers here")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: seed 0, 1 epoch, 200 test images, 2 pairs, no sweep, "
                             "no augmentation")
    args = parser.parse_args(argv)
    args.test_images = 0
    if args.quick:
        args.seeds, args.sweep_filters, args.augment_shift = "0", "", 0
        args.pairs, args.test_images, args.diag_images = 2, 200, 200
    import cnnlab

    cnnlab.tune_allocator()  # as `cnnlab train` does
    info = machine_info()
    began = time.perf_counter()
    seeds = _ints(args.seeds)
    results: dict[str, list[dict]] = {}

    def run(label: str, seed_list: list[int], filter_size: int | None, augment: int) -> None:
        args.augment = augment
        results.setdefault(label, [])
        for seed in seed_list:
            results[label].append(train_variant(seed, filter_size, args))

    f = args.filter_size
    for seed in seeds:  # max and blur of a seed one after the other
        run("max", [seed], None, 0)
        run(f"blur-{f}", [seed], f, 0)
    for size in _ints(args.sweep_filters):
        if size != f:
            run(f"blur-{size}", _ints(args.sweep_seeds), size, 0)
    augment_seeds = _ints(args.augment_seeds) if args.augment_shift else []
    for seed in augment_seeds:
        run(f"max, augment {args.augment_shift}", [seed], None, args.augment_shift)
        run(f"blur-{f}, augment {args.augment_shift}", [seed], f, args.augment_shift)
    total = time.perf_counter() - began

    same_start = all(len({r["start_digest"] for rows in results.values() for r in rows
                          if r["seed"] == s}) == 1 for s in seeds)
    main_groups = {k: v for k, v in results.items() if "augment" not in k}
    lines = ["## Anti-aliasing: max pooling vs BlurPool on mnist5k (issue 14)", "",
             f"Command: `python {' '.join(sys.argv)}`  ",
             f"Total wall time {total:.0f} s. LeNet-5, recipe of `cnnlab train --data mnist5k "
             f"--model lenet5`{' (1 epoch: --quick)' if args.quick else ''}; consistency "
             f"over {results['max'][0]['pairs']:,} pairs of shifts up to ±{args.max_shift} px "
             f"per seed; both variants of a seed start from the same weights "
             f"({'checked' if same_start else 'NOT the same: check'}) and are measured on "
             f"the same shifts.", "", *machine_markdown(info), "",
             "Mean ± std over seeds (%):", "", *summary_table(main_groups), ""]
    paired_lines, paired_stats = paired_table(results["max"], results[f"blur-{f}"])
    lines += [f"Per seed, blur-{f} − max (percentage points):", "", *paired_lines, ""]
    sweep_stats = {}
    for name, rows in main_groups.items():
        if name.startswith("blur-") and name != f"blur-{f}":
            sweep_stats[name] = {m: paired(results["max"], rows, m) for m in METRICS}
    if sweep_stats:
        lines += ["Other blur sizes, − max on the same seeds (mean, points):", "",
                  "| variant | seeds | " + " | ".join(f"Δ {m.replace('_', ' ')}"
                                                    for m in METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        for name, st in sweep_stats.items():
            cells = " | ".join(f"{100 * s['mean']:+.1f} ± {100 * s['std']:.1f}"
                               for s in st.values())
            lines.append(f"| {name} | {st['accuracy']['n']} | {cells} |")
        lines.append("")
    lines += ["Top-1 changed under a diagonal circular shift by s pixels (mean over seeds), "
              "and ||f(shift x) − shift(f(x))|| / ||f(x)|| of the feature map entering the "
              "Flatten (16x5x5, total stride 4) at s = 4, on its cells that did not wrap:",
              "", *flips_table(results), ""]
    augment_stats = None
    if augment_seeds:
        a_max = results[f"max, augment {args.augment_shift}"]
        a_blur = results[f"blur-{f}, augment {args.augment_shift}"]
        lines += [f"With random translations up to ±{args.augment_shift} px in training "
                  "(`--augment-shift`), the rest of the recipe unchanged:", "",
                  *summary_table({k: v for k, v in results.items() if "augment" in k}), ""]
        a_lines, augment_stats = paired_table(a_max, a_blur)
        lines += [f"Per seed, blur-{f} − max, augmented:", "", *a_lines, ""]
    timing = {name: (float(np.mean([r["train_seconds"] for r in rows])),
                     float(np.mean([r["measure_seconds"] for r in rows])))
              for name, rows in results.items()}
    lines += ["Mean seconds per run, training / measuring: " + "; ".join(
        f"{name} {t:.1f} / {m:.1f}" for name, (t, m) in timing.items())]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_report(args.out, text)
    if args.json:
        write_report(args.json, {"machine": info, "args": vars(args), "total_seconds": total,
                                 "rows": results, "paired": paired_stats,
                                 "sweep": sweep_stats, "augment_paired": augment_stats})
    return 0


if __name__ == "__main__":
    sys.exit(main())
