"""Shared helpers for benchmarks: timing that alternates the sides of a comparison, XLA cost/memory figures,
growth-exponent fits and Markdown tables. Run benchmarks as ``python -m benchmarks.<name>`` from the repo root."""
from __future__ import annotations

import platform
import statistics
import time
from typing import Callable, Sequence

import jax
import numpy as np


def machine() -> str:
    dev = jax.devices()[0]
    kind = dev.device_kind if dev.platform != "cpu" else f"CPU ({len(jax.devices())} XLA device, {_cores()} cores)"
    return f"{kind}; {platform.processor() or platform.machine()}; jax {jax.__version__}"


def _cores() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def block(x):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def time_alternating(fns: dict[str, Callable[[], object]], repeats: int = 5) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin (A, B, A, B, ...) after one warm-up call each,
    so that a slow phase of a shared machine hits every side alike."""
    for f in fns.values():
        block(f())
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            block(f())
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def xla_cost(fn: Callable, *args) -> dict[str, float]:
    """Exact figures from XLA for ``jax.jit(fn)(*args)``: flops and temporary bytes of the compiled program."""
    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    mem = compiled.memory_analysis()
    return {"flops": float(cost.get("flops", float("nan"))), "temp_bytes": float(mem.temp_size_in_bytes)}


def growth_exponent(lengths: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares slope of log(value) against log(length)."""
    return float(np.polyfit(np.log(lengths), np.log(values), 1)[0])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def measure(fns: dict[str, Callable], args, repeats: int, run_limit: float) -> tuple[dict, dict]:
    """XLA's cost of each compiled function on ``args`` and, for those whose temporary memory is under
    ``run_limit`` bytes, their median times from alternating runs."""
    costs, runnable = {}, {}
    for name, f in fns.items():
        costs[name] = xla_cost(f, *args)
        if costs[name]["temp_bytes"] < run_limit:
            jitted = jax.jit(f)
            runnable[name] = lambda jitted=jitted: jitted(*args)
    return costs, time_alternating(runnable, repeats=repeats)


def load_revision(path: str, rev: str, name: str):
    """The module at ``path`` (relative to the repository) as it was at git revision ``rev``, imported as ``name``:
    for timing a layer against an earlier version of itself in the same run."""
    import importlib.util
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    src = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(src)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
