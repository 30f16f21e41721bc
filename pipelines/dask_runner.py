"""Beam pipelines on a dask.distributed cluster the user starts on their own machines (by hand, or with
dask-jobqueue on Slurm): `interleaf run ... --runner DaskRunner --dask_client_address tcp://HOST:8786`.

Beam 2.77 ships a Dask runner (apache_beam.runners.dask), but interleaf's pipelines do not run on it
(measured, ENVIRONMENT.md): every consumer of a ParDo gets all of its outputs, main and tagged mixed
together; what a DoFn outputs in finish_bundle is lost; only the last transform's bag is computed, so a
branch that ends elsewhere (the write of rejected documents) never runs; Beam metrics are not collected
(the run's funnel is read from them); DoFn.setup runs again for every partition, reloading a model each
time; a side input is computed inside a task by a nested compute.

This runner keeps what Beam's does well (its graph overrides for Create, Reshuffle and GroupByKey, and
Beam's own DoFn invoker, so DoFns run exactly as on other runners) and translates the graph itself:
  - one dask bag per PCollection: a ParDo's partition task returns (tag, value) pairs, one bag per tag
    selects its own;
  - a partition is a bundle: start_bundle, process, finish_bundle (its outputs kept), under a Beam
    metrics container whose counters travel out of the task with the outputs, so retried or recomputed
    partitions never count twice;
  - every ParDo's counters are a target of the computation, so every branch runs;
  - a DoFn is set up once per worker thread and reused across partitions (torn down when the worker
    starts on another run's bundles);
  - side inputs are whole-list dependencies of the tasks that read them;
  - GroupByKey is dask's task-based shuffle, keys hashed by dask.base.tokenize (the same on every worker,
    unlike Python's salted hash()).
Windowing is the global window only (interleaf's pipelines are batch); any other primitive raises
NotImplementedError naming the step.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.internal import pickler
from apache_beam.metrics import monitoring_infos
from apache_beam.metrics.execution import MetricKey, MetricResult, MetricsContainer
from apache_beam.metrics.metric import MetricResults
from apache_beam.metrics.metricbase import MetricName
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import counters

try:
    import dask
    import dask.bag as db
    import dask.distributed as ddist
    from apache_beam.runners.dask.dask_runner import DaskOptions
    from apache_beam.runners.dask.overrides import (
        _Create,
        _Flatten,
        _GroupByKeyOnly,
        _Reshuffle,
        dask_overrides,
    )
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"the Dask runner needs dask and distributed ({e}): "
                      "pip install 'interleaf[dask]'") from e

log = logging.getLogger(__name__)

MAX_CREATE_PARTITIONS = 256  # a Create of up to this many items makes one partition (one task) per item
SHUFFLE_PARTITIONS_PER_THREAD = 4  # a GroupByKey's output partitions per worker thread of the cluster
_METRICS = "__interleaf_metrics__"  # the tag of a partition's counters among its outputs
_PROCESS_MSECS = ("interleaf_dask_runner", "process_msecs")  # a bundle's wall time, among its counters


@dataclass
class _ParDoSpec:
    """What a partition task needs to run one ParDo: travels in the dask graph."""

    run: str  # this run: DoFns that another run set up on a worker are torn down
    token: str  # this step: the key of the set-up DoFn a worker thread reuses
    label: str
    fn: bytes  # the DoFn, pickled: every thread sets up its own copy, and the graph's copy stays as built
    args: tuple
    kwargs: dict
    side_views: list = field(default_factory=list)  # (view class, view options) per side input
    window_fn: Any = None


class _Receivers(dict):
    """The output handler's receivers: every output, whatever its tag, lands in `out` as (tag, value)."""

    def __init__(self):
        super().__init__()
        self.out: list = []

    def __missing__(self, tag):
        receiver = self[tag] = _Receiver(tag, self)
        return receiver


class _Receiver(Receiver):
    def __init__(self, tag, receivers: _Receivers):
        self.tag, self.receivers = tag, receivers

    def receive(self, windowed_value):
        self.receivers.out.append((self.tag, windowed_value.value))


class _SetUpDoFn:
    """A DoFn set up once, run for many bundles by one thread."""

    def __init__(self, spec: _ParDoSpec, side_values: tuple):
        self.receivers = _Receivers()
        handler = _OutputHandler(window_fn=spec.window_fn, main_receivers=self.receivers[None],
                                 tagged_receivers=self.receivers, per_element_output_counter=None,
                                 output_batch_converter=None, process_yields_batches=False,
                                 process_batch_yields_elements=False)
        side_inputs = [SideInputMap(view, options, [GlobalWindows.windowed_value(v) for v in values])
                       for (view, options), values in zip(spec.side_views, side_values)]
        self.invoker = DoFnInvoker.create_invoker(
            DoFnSignature(pickler.loads(spec.fn)), handler, context=DoFnContext(spec.label, state=None),
            side_inputs=side_inputs, input_args=list(spec.args), input_kwargs=spec.kwargs,
            user_state_context=None, bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
        self.invoker.invoke_setup()

    def bundle(self, items) -> list:
        """Outputs of one bundle as (tag, value) pairs."""
        self.receivers.out = out = []
        try:
            self.invoker.invoke_start_bundle()
            for item in items:
                self.invoker.invoke_process(GlobalWindows.windowed_value(item))
            self.invoker.invoke_finish_bundle()
        finally:
            self.receivers.out = []
        return out

    def teardown(self):
        try:
            self.invoker.invoke_teardown()
        except Exception:  # a teardown that fails leaves nothing to undo
            log.warning("teardown of a DoFn failed", exc_info=True)


_lock = threading.Lock()
_dofns: dict = {}  # (step, thread id) -> _SetUpDoFn of this worker process, all of run _dofns_run
_dofns_run: str | None = None


def _set_up(spec: _ParDoSpec, side_values: tuple) -> _SetUpDoFn:
    """The DoFn of this step for this thread, set up on first use; a worker that starts on another run's
    bundles tears down what the run before it set up (a worker may outlive many runs)."""
    global _dofns_run
    key = (spec.token, threading.get_ident())
    old = []
    with _lock:
        if spec.run != _dofns_run:
            old, _dofns_run = list(_dofns.values()), spec.run
            _dofns.clear()
        dofn = _dofns.get(key)
    for done in old:
        done.teardown()
    if dofn is None:
        dofn = _SetUpDoFn(spec, side_values)
        with _lock:
            if spec.run == _dofns_run:
                _dofns[key] = dofn
    return dofn


def _run_bundle(items, *side_values, spec: _ParDoSpec) -> list:
    """The partition task of a ParDo: its outputs as (tag, value), then (_METRICS, {(namespace, name): n})."""
    # A sampler per bundle: a sampler keeps the first container it was given for a step's state
    sampler = statesampler.StateSampler("", counters.CounterFactory())
    statesampler.set_current_tracker(sampler)
    dofn = _set_up(spec, side_values)
    container = MetricsContainer(spec.label)
    started = time.perf_counter()
    try:
        with sampler.scoped_state(spec.label, "process", metrics_container=container):
            out = dofn.bundle(items)
    except BaseException:
        with _lock:  # a DoFn that failed mid-bundle is not reused
            _dofns.pop((spec.token, threading.get_ident()), None)
        raise
    finally:
        statesampler.set_current_tracker(None)
    counted = {(k.metric.namespace, k.metric.name): n for k, n in container.get_cumulative().counters.items()}
    counted[_PROCESS_MSECS] = round((time.perf_counter() - started) * 1000)
    out.append((_METRICS, counted))
    return out


def _select(part: list, tag) -> list:
    return [value for t, value in part if t == tag]


def _key(kv):
    return kv[0]


def _group(part: list) -> list:
    return [(key, [kv[1] for kv in kvs]) for key, kvs in part]


def _concat(parts: list) -> list:
    return [item for part in parts for item in part]


class _Translator(PipelineVisitor):
    """One dask bag per PCollection, and every ParDo's counters as a target."""

    def __init__(self, bag_kwargs: dict, shuffle_partitions: int):
        self.bag_kwargs, self.shuffle_partitions = bag_kwargs, shuffle_partitions
        self.run = uuid.uuid4().hex
        self.bags: dict = {}  # PCollection -> db.Bag
        self.metrics: list = []  # (step label, bag of counter dicts)
        self.specs: list[_ParDoSpec] = []  # what each ParDo's tasks run (the graph holds them)

    def visit_transform(self, node) -> None:
        t = node.transform
        inputs = [self.bags[pc] for pc in node.inputs if pc in self.bags]
        if isinstance(t, _Create):
            bag = self._create(list(t.values))
        elif isinstance(t, _Reshuffle):
            bag = inputs[0]
        elif isinstance(t, _GroupByKeyOnly):
            # dask's task shuffle keeps its input's partition count, and Flatten adds its inputs' counts: a
            # fixed number in keeps the graph from growing with every join of the pipeline
            bag = inputs[0]
            if bag.npartitions > self.shuffle_partitions:
                bag = bag.repartition(self.shuffle_partitions)
            bag = bag.groupby(_key, shuffle="tasks").map_partitions(_group)
        elif isinstance(t, _Flatten):
            bag = db.concat(inputs) if inputs else db.from_sequence([], npartitions=1)
        elif isinstance(t, beam.ParDo):
            self._pardo(node, inputs[0])
            return
        else:
            raise NotImplementedError(f"the Dask runner cannot run step {node.full_label!r} "
                                      f"({type(t).__name__})")
        for pc in node.outputs.values():
            self.bags[pc] = bag

    def _create(self, items: list):
        kwargs = dict(self.bag_kwargs)
        if not kwargs:
            kwargs = ({"partition_size": 1} if len(items) <= MAX_CREATE_PARTITIONS
                      else {"npartitions": MAX_CREATE_PARTITIONS})
        if not items:
            return db.from_sequence([], npartitions=1)
        return db.from_sequence(items, **kwargs)

    def _pardo(self, node, bag) -> None:
        t = node.transform
        # args with each side input replaced by a placeholder the invoker fills, in t.side_inputs' order
        args, kwargs = t.args, t.kwargs
        main = next(iter(node.main_inputs.values()))
        spec = _ParDoSpec(run=self.run, token=str(len(self.metrics)), label=node.full_label,
                          fn=pickler.dumps(t.fn), args=tuple(args), kwargs=dict(kwargs),
                          side_views=[(type(si), si._view_options()) for si in t.side_inputs],
                          window_fn=main.windowing.windowfn if hasattr(main, "windowing") else None)
        self.specs.append(spec)
        sides = [dask.delayed(_concat)(self.bags[si.pvalue].to_delayed()) for si in t.side_inputs]
        # the spec (the DoFn and its settings) is one key of the graph, not a copy in every task
        raw = bag.map_partitions(_run_bundle, *sides, spec=dask.delayed(spec, pure=False))
        for tag, pc in node.outputs.items():
            self.bags[pc] = raw.map_partitions(_select, tag)
        self.metrics.append((node.full_label, raw.map_partitions(_select, _METRICS)))


class _DaskMetrics(MetricResults):
    """The counters of a finished run, summed over its partitions."""

    def __init__(self, counted: dict):
        self.counted = counted  # (step, namespace, name) -> n

    def query(self, filter=None):
        found = []
        for (step, namespace, name), n in sorted(self.counted.items()):
            key = MetricKey(step, MetricName(namespace, name))
            if self.matches(filter, key):
                found.append(MetricResult(key, n, n))
        return {self.COUNTERS: found, self.DISTRIBUTIONS: [], self.GAUGES: [], self.STRINGSETS: [],
                self.BOUNDED_TRIES: [], self.HISTOGRAMS: []}


class DaskRunnerResult(PipelineResult):
    def __init__(self, client, steps: dict):
        super().__init__(PipelineState.RUNNING)
        self.client, self.steps = client, steps  # {future of a step's counters: step label}
        self._metrics: _DaskMetrics | None = None

    def wait_until_finish(self, duration=None):
        if self._state != PipelineState.RUNNING:
            return self._state
        counted: dict = collections.defaultdict(int)
        try:
            timeout = duration / 1000 if duration is not None else None
            for future, parts in ddist.as_completed(list(self.steps), timeout=timeout, with_results=True):
                for part in parts:
                    for (namespace, name), n in part.items():
                        counted[(self.steps[future], namespace, name)] += n
            self._metrics = _DaskMetrics(dict(counted))
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            self.client.cancel(list(self.steps))
            raise
        finally:
            if self._state != PipelineState.RUNNING:
                self.client.close()
        return self._state

    def cancel(self):
        self.client.cancel(list(self.steps))
        self.client.close()
        self._state = PipelineState.CANCELLED
        return self._state

    def monitoring_infos(self) -> list:
        """Each step's wall time in its bundles (summed over partitions and workers), as the execution-time
        infos Beam's own runners report (pipelines/run.py reads them for the manifest)."""
        return [monitoring_infos.int64_counter(monitoring_infos.TOTAL_MSECS_URN, n, ptransform=step)
                for (step, namespace, name), n in self.metrics().counted.items()
                if (namespace, name) == _PROCESS_MSECS]

    def metrics(self):
        if self._metrics is None:
            raise RuntimeError("the run's counters are known once it has finished (wait_until_finish)")
        return self._metrics


class DaskRunner(PipelineRunner):
    """Runs a pipeline on the dask.distributed scheduler at --dask_client_address (Beam's DaskOptions; with
    none, dask starts a LocalCluster in this process)."""

    def run_pipeline(self, pipeline, options):
        dask_options = options.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = DaskOptions._extract_bag_kwargs(dask_options)
        try:
            client = ddist.Client(**dask_options)
        except OSError as e:  # a scheduler that is not there (or not yet): the user's to fix, in one line
            raise ValueError(f"cannot reach the dask scheduler: {e}. Start one (`dask scheduler`, see "
                             "README) and pass --dask_client_address or --dask_scheduler_file") from None
        threads = sum(client.nthreads().values()) or 1
        pipeline.replace_all(dask_overrides())
        translator = _Translator(bag_kwargs, shuffle_partitions=SHUFFLE_PARTITIONS_PER_THREAD * threads)
        pipeline.visit(translator)
        log.info("running %d steps on the dask scheduler %s", len(translator.metrics),
                 client.scheduler.address)
        futures = client.compute([bag for _, bag in translator.metrics])
        return DaskRunnerResult(client, {f: step for f, (step, _) in zip(futures, translator.metrics)})
