"""Wall-clock timing shared by ``mlpgx bench`` and ``benchmarks/``."""
from __future__ import annotations

import time


def best_time(fn, budget=0.4, min_runs=3, max_runs=50, slow_runs=1):
    """Minimum wall time of ``fn()`` over repeated runs.

    After one warm-up run, ``fn`` is timed until ``budget`` seconds have
    passed (at least ``min_runs``, at most ``max_runs`` times).  A call whose
    warm-up took longer than ``4 * budget`` is timed ``slow_runs`` more times
    instead, and the best of those is the measurement: for calls of a second
    or more, each of which allocates and first touches its outputs and
    scratch afresh, one run alone varied by up to 4x between calls on a
    virtual machine (T = 1e6, D = 60).
    """
    t0 = time.perf_counter()
    fn()  # warm up (page faults, thread pool, first-call set-up)
    if time.perf_counter() - t0 > 4 * budget:
        slow = []
        for _ in range(max(1, slow_runs)):
            t0 = time.perf_counter()
            fn()
            slow.append(time.perf_counter() - t0)
        return min(slow)
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget
                                    and len(times) < max_runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
