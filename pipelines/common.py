"""What every interleaf Beam stage shares: the runner, funnel counters, and shard read/write transforms.

Funnel convention. Each stage counts what enters and leaves it with Beam Metrics counters in the namespace
`interleaf.<stage>`, named `<unit>.in`, `<unit>.out` and `<unit>.dropped.<reason>`, where unit is
`documents`, `nodes` or `images`. The run reads them back into the manifest's funnel (see `funnel_from`),
where for every unit in = out + sum(dropped).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from interleaf import storage
from interleaf.shards import list_shards, read_shard, shard_name, write_shard

log = logging.getLogger(__name__)

NAMESPACE_PREFIX = "interleaf."


# ---------------------------------------------------------------- runner


def pipeline_options(pipeline_args: list[str] | None = None, **overrides) -> PipelineOptions:
    """Beam's options from the arguments interleaf did not consume, handed over untouched."""
    return PipelineOptions(pipeline_args or [], **overrides)


DASK_RUNNERS = ("DaskRunner", "dask")  # --runner values that pick pipelines/dask_runner.py


def create_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A pipeline on the runner the options name; with none named, Beam's local FnApiRunner directly.

    The DirectRunner (Beam's default) first tries to download the Prism runner binary from the internet
    before falling back (measured here); the FnApiRunner is what it falls back to, so we start there.
    `--direct_num_workers N --direct_running_mode multi_processing` still apply to it.
    """
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner", "FnApiRunner"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    if runner in DASK_RUNNERS:  # interleaf's own translation, not Beam's (pipelines/dask_runner.py)
        try:
            from interleaf.pipelines.dask_runner import DaskRunner
        except ImportError as e:
            raise ValueError(str(e)) from None
        return beam.Pipeline(runner=DaskRunner(), options=options)
    return beam.Pipeline(options=options)


# ---------------------------------------------------------------- funnel counters


class _Progress:
    """What this worker process has counted so far, logged every `interval` seconds: Beam's own metrics
    reach the launcher only when the pipeline ends, and a long local run should show that it moves.
    Funnels report here when they flush (every FLUSH_EVERY elements and at the end of a bundle), not per
    element, so its lock is off the hot path."""

    interval = 15.0

    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[str, int] = defaultdict(int)
        self.last = time.monotonic()

    def add(self, counts: dict[str, int]) -> None:
        with self.lock:
            for key, n in counts.items():
                self.counts[key] += n
            now = time.monotonic()
            if now - self.last < self.interval:
                return
            self.last = now
            line = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        log.info("progress (this worker): %s", line)


_PROGRESS = _Progress()


class Funnel:
    """Counts of one stage: `Funnel("ingest").inc("documents", "in")`, `.drop("nodes", "too_short", 3)`.

    Counts add up in a plain dict of the DoFn instance that owns the funnel (Beam gives every thread its
    own instance) and go to Beam counters `interleaf.<stage>/<unit>.<what>` and to the progress log when
    `flush()` runs: every FLUSH_EVERY elements in, and at the end of each bundle (CountingDoFn does both).
    """

    FLUSH_EVERY = 1000  # elements counted "in" between flushes, so that progress shows inside long bundles

    def __init__(self, stage: str):
        self.stage = stage
        self.namespace = NAMESPACE_PREFIX + stage
        self._pending: dict[str, int] = defaultdict(int)
        self._since_flush = 0

    def inc(self, unit: str, what: str, n: int = 1) -> None:
        if n:
            self._pending[f"{unit}.{what}"] += n
            if what == "in":
                self._since_flush += n
                if self._since_flush >= self.FLUSH_EVERY:
                    self.flush()

    def drop(self, unit: str, reason: str, n: int = 1) -> None:
        if n:
            self._pending[f"{unit}.dropped.{reason}"] += n

    def flush(self) -> None:
        """Hand the counts gathered since the last flush to Beam's counters and the progress log."""
        if not self._pending:
            return
        pending, self._pending, self._since_flush = self._pending, defaultdict(int), 0
        for name, n in pending.items():
            Metrics.counter(self.namespace, name).inc(n)
        _PROGRESS.add({f"{self.stage} {name[:-3]}": n for name, n in pending.items() if name.endswith(".in")})


class CountingDoFn(beam.DoFn):
    """Base of every DoFn that counts into a stage's funnel: setup() makes `self.funnel` for `self.stage`
    (a class attribute, or given to __init__), finish_bundle() flushes it. Subclasses that override setup()
    or finish_bundle() call super()."""

    stage: str = ""

    def __init__(self, stage: str | None = None):
        if stage is not None:
            self.stage = stage

    def setup(self):
        if not self.stage:
            raise ValueError(f"{type(self).__name__} counts into no stage: set its `stage`")
        self.funnel = Funnel(self.stage)

    def finish_bundle(self):
        self.funnel.flush()


class DecisionDoFn(CountingDoFn):
    """A filter of one unit: `decide(element)` returns None to keep the element or a reason to drop it; the
    base counts in / out / dropped by reason and routes a dropped element, as `mark_dropped` makes it, to
    the tagged output "rejected"."""

    unit: str = "documents"

    def decide(self, element) -> str | None:
        raise NotImplementedError

    def mark_dropped(self, element, reason: str):
        return element.dropped(reason)

    def process(self, element):
        self.funnel.inc(self.unit, "in")
        reason = self.decide(element)
        if reason:
            self.funnel.drop(self.unit, reason)
            yield beam.pvalue.TaggedOutput("rejected", self.mark_dropped(element, reason))
            return
        self.funnel.inc(self.unit, "out")
        yield element


def funnel_from(result) -> dict:
    """The funnel of a finished pipeline: {stage: {unit: {"in", "out", "dropped": {reason: n}}}}."""
    funnel: dict = defaultdict(lambda: defaultdict(lambda: {"in": 0, "out": 0, "dropped": {}}))
    for c in result.metrics().query(MetricsFilter())["counters"]:
        ns = c.key.metric.namespace
        if not ns.startswith(NAMESPACE_PREFIX):
            continue
        stage = ns[len(NAMESPACE_PREFIX):]
        value = c.committed if c.committed is not None else c.attempted
        unit, _, what = c.key.metric.name.partition(".")
        entry = funnel[stage][unit]
        if what.startswith("dropped."):
            reason = what[len("dropped."):]
            entry["dropped"][reason] = entry["dropped"].get(reason, 0) + value
        elif what in ("in", "out"):
            entry[what] += value
        else:  # informational counters such as images.archived
            entry.setdefault("info", {})[what] = entry.get("info", {}).get(what, 0) + value
    return {s: {u: {**e, "dropped": dict(sorted(e["dropped"].items()))} for u, e in units.items()}
            for s, units in funnel.items()}


def unreconciled(funnel: dict) -> list[str]:
    """Stage/unit pairs whose counts do not reconcile (in != out + dropped); [] when all do."""
    bad = []
    for stage, units in funnel.items():
        for unit, e in units.items():
            if e["in"] != e["out"] + sum(e["dropped"].values()):
                bad.append(f"{stage}/{unit}: in {e['in']} != out {e['out']} + dropped "
                           f"{sum(e['dropped'].values())}")
    return bad


# ---------------------------------------------------------------- shards


def stable_shard(key: str, num_shards: int) -> int:
    """Shard index of a key, the same on every worker and every run (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % num_shards


class WriteShards(beam.PTransform):
    """Write records as `num_shards` Arrow shards under `directory`, deterministically.

    Records are spread by a stable hash of `key_fn(record)` and sorted by that key inside each shard, so the
    same input gives byte-identical shards whatever the runner, worker count or bundle boundaries. Every
    shard index is written, empty ones included, so a reader sees a complete part-i-of-N set.
    Output: (path, rows) per shard.
    """

    def __init__(self, directory: str, to_table: Callable[[list], pa.Table], key_fn: Callable[[object], str],
                 num_shards: int = 1):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be at least 1, found {num_shards}")
        self.directory, self.to_table, self.key_fn, self.num_shards = directory, to_table, key_fn, num_shards

    def expand(self, records):
        n, key_fn = self.num_shards, self.key_fn
        # (shard index, record)
        keyed = records | "KeyByShard" >> beam.Map(lambda r: (stable_shard(key_fn(r), n), r))
        # (shard index, None) for every index, so empty shards are written too
        every = records.pipeline | "EveryShard" >> beam.Create([(i, None) for i in range(n)])
        return ((keyed, every) | "Flatten" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.Map(self._write))

    def _write(self, item) -> tuple[str, int]:
        index, records = item
        rows = sorted((r for r in records if r is not None), key=self.key_fn)
        storage.makedirs(self.directory)
        path = storage.join(self.directory, shard_name(index, self.num_shards))
        write_shard(path, self.to_table(rows))
        return path, len(rows)


class ReadShards(beam.PTransform):
    """Rows of the shards at `path` (a directory, file or glob), converted by `from_table`, shard by shard."""

    def __init__(self, path: str, schema: pa.Schema, from_table: Callable[[pa.Table], Iterable]):
        super().__init__()
        self.path, self.schema, self.from_table = path, schema, from_table

    def expand(self, pbegin):
        schema, from_table = self.schema, self.from_table
        # shard paths, one per element, spread over workers
        return (pbegin
                | "ListShards" >> beam.Create(list_shards(self.path))
                | "Spread" >> beam.Reshuffle()
                | "ReadShard" >> beam.FlatMap(lambda p: from_table(read_shard(p, schema))))
