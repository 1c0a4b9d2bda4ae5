"""Timing protocol shared by the benchmarks: pause, short burst, minimum over rounds.

Why this protocol (``/work/shared/REFERENCES.md``, "Timing pitfall"): on a 2-core machine,
alternating NumPy and PyTorch call by call corrupts both figures. OpenBLAS worker threads keep
spinning about 0.1 s after a call and fight PyTorch's OpenMP threads for the cores (a
2048x2048 matmul drops from about 400 to 176 and 135 GFLOP/s). So each library's turn starts
after a pause of :data:`PAUSE_S`, times a short burst of calls, and the figure kept is the
minimum per-call time over several rounds. Absolute times still swing between runs (up to
1.7x); compare ratios taken in one run.

Only the standard library and NumPy are imported at module level; PyTorch, SciPy and
threadpoolctl are looked up lazily so that a NumPy-only benchmark can reuse this file.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

import numpy as np

# Longer than the ~0.1 s that OpenBLAS workers spin after a call (REFERENCES.md).
PAUSE_S = 0.15


@dataclass(frozen=True)
class Protocol:
    """How long and how often to time.

    rounds : turns each function gets; the minimum per-call time over them is kept.
    burst_s : target wall time of one burst (the call count is calibrated once per function).
    max_calls : cap on the calls in one burst, so tiny functions keep bursts short.
    pause_s : sleep before every burst, so the previous library's threads have gone idle.
    budget_s : a function gets no more rounds once its bursts have taken this long (it
        always gets one); a function whose first call takes longer is timed by that call
        alone, since first-call costs (page faults, plan caches) are negligible at that length.
    """

    rounds: int = 7
    burst_s: float = 0.2
    max_calls: int = 200
    pause_s: float = PAUSE_S
    budget_s: float = 10.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Protocol()
QUICK = Protocol(rounds=2, burst_s=0.05, max_calls=50, budget_s=1.0)


def time_burst(fn: Callable[[], object], calls: int) -> float:
    """Mean seconds per call of ``calls`` back-to-back calls of ``fn``."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def calls_per_burst(seconds_per_call: float, protocol: Protocol) -> int:
    """How many calls fill one burst of ``protocol.burst_s`` (at least 1)."""
    calls = int(protocol.burst_s / max(seconds_per_call, 1e-9))
    return max(1, min(calls, protocol.max_calls))


def compare(fns: Mapping[str, Callable[[], object]], protocol: Protocol) -> dict[str, float]:
    """Minimum per-call seconds of each function, timed in alternating turns.

    Each function is warmed up (first call: page faults, plan caches), then calibrated by one
    more call. Every round gives each function one burst, each after ``protocol.pause_s`` of
    sleep; the turn order reverses every round so neither always follows the other. See
    :class:`Protocol` for how ``budget_s`` limits very slow functions.
    """
    names = list(fns)
    calls: dict[str, int] = {}
    best = dict.fromkeys(names, float("inf"))
    spent = dict.fromkeys(names, 0.0)
    for name in names:
        time.sleep(protocol.pause_s)
        first = time_burst(fns[name], 1)
        if first > protocol.budget_s:
            best[name], spent[name] = first, first
            continue
        if first < protocol.burst_s:
            first = time_burst(fns[name], 1)
        calls[name] = calls_per_burst(first, protocol)
    for round_index in range(protocol.rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            if spent[name] >= protocol.budget_s:
                continue
            time.sleep(protocol.pause_s)
            per_call = time_burst(fns[name], calls[name])
            spent[name] += per_call * calls[name]
            best[name] = min(best[name], per_call)
    return best


def matmul_gflops(protocol: Protocol, size: int = 2048, with_torch: bool = True
                  ) -> dict[str, float]:
    """float32 ``size x size`` matmul rate (GFLOP/s) of NumPy (and PyTorch), each in its turn.

    The practical ceiling for GEMM-bound layers on this machine, measured in the same run as
    the layers so that a busy machine shows up here too.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(a)
    fns: dict[str, Callable[[], object]] = {"numpy": lambda: np.matmul(a, b, out=out)}
    if with_torch:
        import torch

        a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
        out_t = torch.empty_like(a_t)
        fns["torch"] = lambda: torch.mm(a_t, b_t, out=out_t)
    flops = 2.0 * size**3
    return {name: flops / seconds / 1e9 for name, seconds in compare(fns, protocol).items()}


# ---------------------------------------------------------------------------------------
# What machine and software produced the numbers.


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _blas_info() -> list[str]:
    """One line per thread pool (threadpoolctl), else NumPy's build-time BLAS."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        lines = []
        for pool in threadpool_info():
            extra = ", ".join(f"{key} {pool[key]}" for key in ("architecture", "threading_layer")
                              if pool.get(key))
            # numpy and scipy may each ship an OpenBLAS; the folder says whose it is.
            path = pool.get("filepath", "")
            owner = (path.split("site-packages/", 1)[1].split("/", 1)[0]
                     if "site-packages/" in path else os.path.basename(os.path.dirname(path)))
            version = f" {pool['version']}" if pool.get("version") else ""
            lines.append(f"{pool['internal_api']}{version} ({owner}): "
                         f"{pool['num_threads']} threads" + (f", {extra}" if extra else ""))
        return lines
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [f"{blas.get('name')} {blas.get('version')} (numpy build)"]
    except (TypeError, KeyError):
        return ["unknown (install threadpoolctl for details)"]


def machine_info() -> dict[str, Any]:
    """CPU, cores, load, library versions and thread pools, for the record."""
    flags = _cpu_flags()
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "simd": [f for f in ("avx2", "avx512f", "avx512_bf16") if f in flags],
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "torch": _version("torch"),
        "cnnlab": _version("cnnlab"),
        "blas": _blas_info(),
    }
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def machine_markdown(info: Mapping[str, Any]) -> list[str]:
    """Markdown bullet lines describing ``machine_info()``."""
    versions = ", ".join(f"{name} {info[name]}" for name in
                         ("python", "numpy", "scipy", "torch", "cnnlab") if info.get(name))
    lines = [
        f"- CPU: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
        f"SIMD: {', '.join(info['simd']) or 'none detected'}",
        f"- Load average at start: {', '.join(str(v) for v in info['load_average'])}",
        f"- Versions: {versions}",
    ]
    if "torch_threads" in info:
        lines.append(f"- torch threads: {info['torch_threads']}")
    lines += [f"- Thread pool: {line}" for line in info["blas"]]
    return lines


def finite(value: Any) -> Any:
    """``value`` with inf/nan floats as None, so the JSON is standard."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


def write_report(path: str, content: Any) -> None:
    """Write a benchmark's report atomically (``cnnlab._files``): a string as text, anything
    else as JSON (non-finite floats as null, :func:`finite`). An interrupted run leaves the
    previous report whole."""
    from cnnlab._files import atomic_write_bytes

    if not isinstance(content, str):
        content = json.dumps(finite(content), indent=1) + "\n"
    atomic_write_bytes(path, content.encode("utf-8"))
    print(f"wrote {path}")
