"""Benchmarks of the engine and the decoders (``make bench`` / ``python -m bench``; one at a time as
``python -m bench.engine`` etc.).

Every benchmark prints the machine, the absolute numbers and a ratio measured in the same run.
Timings interleave the contenders (A, B, A, B, …) and report medians, so both see the same machine
load. ``BENCH_DEVICE=cuda`` (or ``cpu``) picks the device; default: CUDA when present.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def device() -> torch.device:
    name = os.environ.get("BENCH_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    dev = device()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if dev.type == "cuda" else ""
    try:
        load = "load avg {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())
    except OSError:
        load = "load n/a"
    return (f"device {dev}{gpu}; CPU {cpu_model()} ({os.cpu_count()} cores), torch {torch.__version__} "
            f"threads {torch.get_num_threads()}; {load}")


def header(title: str) -> None:
    print(f"\n== {title} ==")
    print(machine())


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of this process) of one call."""
    sync()
    t, c = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - t, time.process_time() - c


CPU_TIMES: dict[str, float] = {}  # median CPU seconds of the last ``interleaved`` call, per contender


def interleaved(contenders: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median wall-clock seconds of each contender, run in turn ``repeats`` times after ``warmup``.
    The median CPU seconds (less sensitive to other processes on a shared machine) go to
    ``CPU_TIMES``."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for k, fn in contenders.items():
            times[k].append(timed(fn))
    CPU_TIMES.clear()
    CPU_TIMES.update({k: statistics.median(c for _, c in v) for k, v in times.items()})
    return {k: statistics.median(w for w, _ in v) for k, v in times.items()}


def goal(ok: bool) -> str:
    return "goal met" if ok else "goal NOT met"
