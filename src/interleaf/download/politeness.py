"""Per-host politeness on a shared pool of threads: many requests in flight, few per host.

Jobs are queued per host and handed out round-robin to a fixed pool of threads. A thread only takes a job
from a host that is below its concurrency limit and whose next request is due (rate limit, Crawl-delay,
Retry-After), so a slow or rate-limited host never holds threads that other hosts could use: a retry waits
in its host's queue, not in a sleeping thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What a job returns: a final value, or a request to run it again after `retry_after` seconds."""

    value: object = None
    retry_after: float | None = None  # run the job again (attempt + 1) after this many seconds
    host_interval: float | None = None  # seconds the host asks between requests (Crawl-delay), if known


@dataclass
class _Host:
    queue: deque = field(default_factory=deque)  # (item, attempt)
    active: int = 0
    not_before: float = 0.0  # monotonic time of its next allowed request
    interval: float = 0.0  # minimum seconds between two request starts


class HostScheduler:
    """Runs `work(host, item, attempt) -> JobResult` for queued items; `on_done(host, item, value)` gets each
    final value (in the worker thread). Limits: `threads` in all, `per_host_concurrency` and
    `per_host_rate` (requests per second, 0 for none) per host; a host's Crawl-delay can only slow it down
    further, up to `max_host_interval` seconds."""

    def __init__(self, work: Callable[[str, object, int], JobResult],
                 on_done: Callable[[str, object, object], None], *, threads: int, per_host_concurrency: int,
                 per_host_rate: float, max_host_interval: float = 30.0):
        if threads < 1 or per_host_concurrency < 1 or per_host_rate < 0:
            raise ValueError(f"need threads >= 1, per_host_concurrency >= 1, per_host_rate >= 0; found "
                             f"{threads}, {per_host_concurrency}, {per_host_rate}")
        self._work, self._on_done = work, on_done
        self._concurrency = per_host_concurrency
        self._interval = 1.0 / per_host_rate if per_host_rate else 0.0
        self._max_interval = max_host_interval
        self._cond = threading.Condition()
        self._hosts: dict[str, _Host] = {}
        self._order: deque[str] = deque()  # hosts with queued items, in round-robin order
        self._pending = 0  # items queued or running
        self._closed = False
        self._error: BaseException | None = None  # raised by a job: re-raised by wait()
        self.retries = 0  # jobs run again after a JobResult.retry_after
        self._threads = [threading.Thread(target=self._run, name=f"fetch-{i}", daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    @property
    def hosts_in_flight(self) -> int:
        with self._cond:
            return len(self._hosts)

    def submit(self, host: str, items) -> None:
        with self._cond:
            state = self._hosts.get(host)
            if state is None:
                state = self._hosts[host] = _Host(interval=self._interval)
            was_empty = not state.queue
            for item in items:
                state.queue.append((item, 0))
                self._pending += 1
            if was_empty and state.queue:
                self._order.append(host)
            self._cond.notify_all()

    def wait(self, max_pending: int = 0, timeout: float | None = None) -> bool:
        """Block until at most `max_pending` items remain (True), or `timeout` passes (False)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending > max_pending:
                if self._error is not None:
                    raise RuntimeError(f"a fetch job failed: {self._error!r}") from self._error
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)

    def _take(self) -> tuple[str, object, int] | None:
        """Under the lock: the next due job, round-robin over hosts; None when none is due."""
        now = time.monotonic()
        for _ in range(len(self._order)):
            host = self._order[0]
            self._order.rotate(-1)
            state = self._hosts[host]
            if state.active < self._concurrency and state.not_before <= now:
                item, attempt = state.queue.popleft()
                if not state.queue:
                    self._order.remove(host)
                state.active += 1
                state.not_before = now + state.interval
                return host, item, attempt
        return None

    def _next_due(self) -> float | None:
        now = time.monotonic()
        waits = [self._hosts[h].not_before - now for h in self._order
                 if self._hosts[h].active < self._concurrency]
        return max(0.001, min(waits)) if waits else None

    def _run(self) -> None:
        while True:
            with self._cond:
                job = None
                while not self._closed:
                    job = self._take()
                    if job is not None:
                        break
                    self._cond.wait(self._next_due())
                if job is None:
                    return
            host, item, attempt = job
            try:
                result = self._work(host, item, attempt)
                if result.retry_after is None:
                    self._on_done(host, item, result.value)
            except BaseException as e:  # a bug in a job: stop, and let wait() raise it in the caller's thread
                log.exception("fetch job for %s failed", host)
                with self._cond:
                    self._error, self._closed = e, True
                    self._cond.notify_all()
                return
            with self._cond:
                state = self._hosts[host]
                state.active -= 1
                if result.host_interval is not None:
                    state.interval = min(max(state.interval, result.host_interval), self._max_interval)
                if result.retry_after is not None:
                    self.retries += 1
                    # the whole host waits: a Retry-After is about the server, not one URL
                    state.not_before = max(state.not_before, time.monotonic() + result.retry_after)
                    if not state.queue:
                        self._order.append(host)
                    state.queue.appendleft((item, attempt + 1))
                else:
                    self._pending -= 1
                    if not state.queue and state.active == 0:
                        del self._hosts[host]
                self._cond.notify_all()
