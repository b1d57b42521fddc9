"""Wall-clock timing shared by ``mlpgx bench`` and ``benchmarks/``."""
from __future__ import annotations

import time


def best_time(fn, budget=0.4, min_runs=3, max_runs=50):
    """Minimum wall time of ``fn()`` over repeated runs (within ``budget`` s,
    after one warm-up run; a call slower than ``4 * budget`` is timed once
    more and that is the measurement)."""
    t0 = time.perf_counter()
    fn()  # warm up (page faults, thread pool, first-call set-up)
    if time.perf_counter() - t0 > 4 * budget:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget
                                    and len(times) < max_runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
