"""The per-host scheduler: limits per host hold, and a slow or rate-limited host never starves the others."""

import threading
import time
from collections import defaultdict

import pytest

from interleaf.download.politeness import HostScheduler, JobResult


class _Recorder:
    """A work function whose jobs take `seconds[host]`; records start times and concurrency per host."""

    def __init__(self, seconds, retry=None):
        self.seconds, self.retry = seconds, retry or {}
        self.starts, self.done = defaultdict(list), []
        self.active, self.max_active = defaultdict(int), defaultdict(int)
        self.lock = threading.Lock()

    def work(self, host, item, attempt):
        with self.lock:
            self.starts[host].append(time.monotonic())
            self.active[host] += 1
            self.max_active[host] = max(self.max_active[host], self.active[host])
        time.sleep(self.seconds[host])
        with self.lock:
            self.active[host] -= 1
        if attempt < self.retry.get(item, 0):
            return JobResult(retry_after=0.5)
        return JobResult(value=(host, item, attempt))

    def on_done(self, host, item, value):
        with self.lock:
            self.done.append((time.monotonic(), value))


def test_slow_host_does_not_starve_fast_hosts():
    rec = _Recorder({"slow": 0.5, "fast": 0.01})
    s = HostScheduler(rec.work, rec.on_done, threads=4, per_host_concurrency=2, per_host_rate=0)
    start = time.monotonic()
    s.submit("slow", range(8))  # 8 x 0.5 s at 2 at a time: 2 s
    s.submit("fast", range(40))
    assert s.wait(0, timeout=20)
    s.close()
    fast_end = max(t for t, (h, _, _) in rec.done if h == "fast") - start
    slow_end = max(t for t, (h, _, _) in rec.done if h == "slow") - start
    assert fast_end < 1.0 < slow_end  # the fast host finished while the slow one was still busy
    assert rec.max_active["slow"] == 2 and rec.max_active["fast"] <= 2


def test_rate_limit_spaces_request_starts():
    rec = _Recorder({"a": 0.0, "b": 0.0})
    s = HostScheduler(rec.work, rec.on_done, threads=4, per_host_concurrency=4, per_host_rate=10)
    s.submit("a", range(6))
    s.submit("b", range(6))
    assert s.wait(0, timeout=20)
    s.close()
    for host in "ab":
        gaps = [b - a for a, b in zip(rec.starts[host], rec.starts[host][1:], strict=False)]
        assert min(gaps) >= 0.095, gaps  # 10 requests/s per host
    assert len(rec.done) == 12


def test_retry_after_defers_the_host_without_holding_threads():
    rec = _Recorder({"limited": 0.0, "other": 0.05}, retry={"x": 1})
    s = HostScheduler(rec.work, rec.on_done, threads=1, per_host_concurrency=1, per_host_rate=0)
    start = time.monotonic()
    s.submit("limited", ["x", "y"])
    s.submit("other", range(5))
    assert s.wait(0, timeout=20)
    s.close()
    assert s.retries == 1
    by_item = {(h, i): (t - start, attempt) for t, (h, i, attempt) in rec.done}
    assert by_item[("limited", "x")][1] == 1 and by_item[("limited", "x")][0] >= 0.5
    # with one thread, "other" ran during the 0.5 s the limited host was told to wait
    assert max(t for (h, _), (t, _) in by_item.items() if h == "other") < by_item[("limited", "x")][0]


def test_a_failing_job_surfaces_in_wait():
    def work(host, item, attempt):
        raise KeyError("bug")

    s = HostScheduler(work, lambda *a: None, threads=2, per_host_concurrency=1, per_host_rate=0)
    s.submit("h", [1])
    with pytest.raises(RuntimeError, match="fetch job failed"):
        s.wait(0, timeout=5)
    s.close()
