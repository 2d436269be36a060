"""Pick torch's thread count per step on a shared 2-core machine.

Measured here: a 2-thread training step takes ~0.2 s on an idle machine but
2-5 s while one other single-threaded process runs (OpenMP threads wait on a
descheduled peer; `nice` does not help across sessions), whereas 1 thread
takes ~0.4 s either way. Other engineers' test runs come and go, so the
trainer watches its step times: one thread is the safe baseline, two threads
are probed now and then and kept while they are faster.
"""

from __future__ import annotations

import statistics
from collections import deque

import torch


class ThreadTuner:
    def __init__(self, max_threads: int = 2, probe_every: int = 40, probe_len: int = 4) -> None:
        self.max_threads = max_threads
        self.probe_every = probe_every
        self.probe_len = probe_len
        self.times: dict[int, deque[float]] = {1: deque(maxlen=15), max_threads: deque(maxlen=15)}
        self.steps_in_mode = 0
        self.probing = 0
        # 1-thread steps before the next 2-thread probe; the first window is
        # short but long enough to get past the warm-up steps.
        self.wait = 2 * probe_len
        # Start on one thread: its time is the yardstick the 2-thread probe must beat.
        self.threads = 1
        torch.set_num_threads(1)

    def _median(self, threads: int) -> float | None:
        values = self.times[threads]
        return statistics.median(values) if values else None

    def _set(self, threads: int) -> None:
        self.threads = threads
        torch.set_num_threads(threads)
        self.steps_in_mode = 0

    def record(self, seconds: float) -> None:
        """Record the last step's time and choose the thread count for the next."""
        if self.max_threads == 1:
            return
        self.times[self.threads].append(seconds)
        self.steps_in_mode += 1
        one = self._median(1)
        if self.threads == 1:
            if self.steps_in_mode >= self.wait:
                self.times[self.max_threads].clear()
                self._set(self.max_threads)
                self.probing = self.probe_len
            return
        if self.probing:
            self.probing -= 1
            many = self._median(self.max_threads)
            if self.probing == 0 and one is not None and many is not None and many > one:
                self._set(1)
                self.wait = self.probe_every
        elif one is not None and seconds > 1.5 * one:
            # One slow step is enough: a contended 2-thread step costs 5-10 normal ones.
            self._set(1)
            self.wait = self.probe_every
        elif self.steps_in_mode >= 10 * self.probe_every:
            # Refresh the 1-thread yardstick now and then (it drifts with the work).
            self.times[1].clear()
            self._set(1)
            self.wait = 2 * self.probe_len
