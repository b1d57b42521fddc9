"""mlpgx._timing.best_time, the timer behind ``mlpgx bench`` and benchmarks/:
how many times it calls the function, and that it returns the fastest run.
A fake clock makes the durations exact."""
from __future__ import annotations

import pytest

from mlpgx import _timing


class FakeClock:
    """perf_counter that advances only when the timed function runs, by the
    next of ``durations`` (the first is the warm-up)."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0

    def perf_counter(self):
        return self.now

    def run(self):
        self.now += self.durations[self.calls]
        self.calls += 1


@pytest.fixture
def clock(monkeypatch):
    def make(durations):
        fake = FakeClock(durations)
        monkeypatch.setattr(_timing.time, "perf_counter", fake.perf_counter)
        return fake
    return make


@pytest.mark.parametrize("slow_runs, expected_calls, expected", [
    (1, 2, 3.0),      # the warm-up, then one timed run
    (3, 4, 1.5),      # the warm-up, then the best of three
    (0, 2, 3.0),      # at least one timed run
])
def test_a_slow_call_is_timed_slow_runs_times(clock, slow_runs, expected_calls, expected):
    fake = clock([5.0, 3.0, 1.5, 2.0, 9.0])
    best = _timing.best_time(fake.run, budget=0.1, slow_runs=slow_runs)
    assert fake.calls == expected_calls
    assert best == expected


def test_a_fast_call_is_timed_within_the_budget(clock):
    # (durations exact in binary) warm-up 1/64 s, not slow for a budget of
    # 1/2; then runs until 1/2 s has passed: 1/8 + 1/16 + 1/8 reaches only
    # 5/16, so a fourth run (1/4) follows
    fake = clock([1 / 64, 1 / 8, 1 / 16, 1 / 8, 1 / 4, 1.0])
    best = _timing.best_time(fake.run, budget=0.5, min_runs=3, slow_runs=3)
    assert fake.calls == 5
    assert best == 1 / 16


def test_min_runs_and_max_runs_bound_a_fast_call(clock):
    fake = clock([0.0] + [0.2] * 3 + [0.0] * 100)
    assert _timing.best_time(fake.run, budget=0.1, min_runs=3) == 0.2
    assert fake.calls == 4            # min_runs, although the budget was spent
    fake = clock([0.0] * 100)
    _timing.best_time(fake.run, budget=0.1, min_runs=3, max_runs=7)
    assert fake.calls == 8            # the warm-up and max_runs
