"""interleaf on a dask.distributed cluster (pipelines/dask_runner.py): a scheduler and two worker processes
started here on 127.0.0.1, as a user starts them on their own machines, and the same run as on the local
runner, byte for byte, with its funnel.

The first tests pin what Beam 2.77's own Dask runner gets wrong (tagged outputs mixed, finish_bundle
outputs lost, branches that do not end the graph never run, no metrics), on an in-process cluster."""

import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics, monitoring_infos
from apache_beam.metrics.metric import MetricsFilter

from interleaf.cli import main
from interleaf.pipelines.common import create_pipeline, pipeline_options

distributed = pytest.importorskip("distributed", reason="needs dask[distributed] (the test extra has it)")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from test_run import EXPECTED, OTHERS, WARCS, _outputs  # noqa: E402  the local run's inputs and bytes


class _Split(beam.DoFn):
    """Evens to the main output, odds tagged; one element per bundle from finish_bundle; counters."""

    def process(self, x):
        Metrics.counter("test", "in").inc()
        yield x if x % 2 == 0 else beam.pvalue.TaggedOutput("odd", x)

    def finish_bundle(self):
        Metrics.counter("test", "bundles").inc()
        yield beam.transforms.window.GlobalWindows.windowed_value(-1)


def _write(path):
    def write(items):
        Path(path).write_text(json.dumps(sorted(items)))
    return write


def test_tagged_outputs_finish_bundle_side_inputs_branches_and_counters(tmp_path):
    with distributed.LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        options = pipeline_options(["--runner", "DaskRunner",
                                    "--dask_client_address", cluster.scheduler_address])
        p = create_pipeline(options)
        parts = p | beam.Create(list(range(10))) | beam.ParDo(_Split()).with_outputs("odd", main="even")
        limit = p | "Limit" >> beam.Create([5])
        # a side input, and a branch that ends here rather than at the graph's last step
        (parts.odd | beam.Filter(lambda x, n: x < n, n=beam.pvalue.AsSingleton(limit))
         | "OddList" >> beam.combiners.ToList() | "WriteOdd" >> beam.Map(_write(tmp_path / "odd.json")))
        (parts.even | "Group" >> beam.Map(lambda x: (x % 4, x)) | beam.GroupByKey()
         | beam.MapTuple(lambda k, xs: (k, sorted(xs))) | "EvenList" >> beam.combiners.ToList()
         | "WriteEven" >> beam.Map(_write(tmp_path / "even.json")))
        result = p.run()
        result.wait_until_finish()
    assert json.loads((tmp_path / "odd.json").read_text()) == [1, 3]
    # -1 once per bundle (one bundle per created element): finish_bundle's outputs are kept
    assert json.loads((tmp_path / "even.json").read_text()) == [[0, [0, 4, 8]], [2, [2, 6]], [3, [-1] * 10]]
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter())["counters"]
                if c.key.metric.namespace == "test"}
    assert counters == {"in": 10, "bundles": 10}
    # per-step execution times, as Beam's runners report them (the manifest's processing_by_stage)
    steps = [info.labels[monitoring_infos.PTRANSFORM_LABEL] for info in result.monitoring_infos()]
    assert any("_Split" in step for step in steps)


def test_missing_scheduler_is_one_clear_error(tmp_path, capsys):
    warc = HERE.parent / "data" / "warc" / "example.warc.gz"
    code = main(["run", str(warc), "--output", str(tmp_path / "out"), "--stages", "ingest",
                 "--runner", "DaskRunner", "--dask_client_address", "tcp://127.0.0.1:9",
                 "--dask_connection_timeout", "2"])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err and "127.0.0.1:9" in err
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "failed"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A dask scheduler and two single-threaded worker processes, started as a user starts them."""
    where = tmp_path_factory.mktemp("dask")
    scheduler_file = where / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    procs = []

    def start(name: str, args: list[str]):
        with open(where / f"{name}.log", "w") as log:  # the child keeps its own handle
            procs.append(subprocess.Popen(dask + args, stdout=subprocess.DEVNULL, stderr=log))

    try:
        start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                            "--scheduler-file", str(scheduler_file)])
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        for i in range(2):
            start(f"worker{i}", ["worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
                                 "--no-dashboard", "--name", f"w{i}"])
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield scheduler_file
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


class _Model(beam.DoFn):
    """Holds what cannot be pickled once set up, as a loaded model does (an onnxruntime session)."""

    def setup(self):
        self.session = threading.Lock()

    def process(self, x):
        with self.session:
            yield x, os.getpid(), id(self)


def test_setting_up_a_dofn_leaves_the_graphs_copy_as_built():
    """A worker sets up its own copy of a DoFn: the graph's copy, which the scheduler may ship to another
    worker, never holds what setup() loaded (an onnxruntime session cannot be pickled: measured)."""
    from interleaf.pipelines.dask_runner import _run_bundle, _Translator, dask_overrides

    p = beam.Pipeline()
    p | beam.Create([1, 2]) | beam.ParDo(_Model())
    p.replace_all(dask_overrides())
    translator = _Translator({}, shuffle_partitions=4)
    p.visit(translator)
    [spec] = [s for s in translator.specs if "_Model" in s.label]
    outputs = [v for tag, v in _run_bundle([1, 2], spec=spec) if tag is None]
    assert [x for x, _, _ in outputs] == [1, 2]
    pickle.dumps(spec)  # raises if the set-up DoFn (its lock) were in it


@pytest.mark.slow
def test_set_up_dofns_stay_on_their_worker(cluster, tmp_path):
    """Both worker processes run the step; neither ever ships a set-up DoFn to the other."""
    options = pipeline_options(["--runner", "DaskRunner", "--dask_scheduler_file", str(cluster)])
    p = create_pipeline(options)
    (p | beam.Create(list(range(64))) | beam.ParDo(_Model()) | beam.combiners.ToList()
     | beam.Map(_write(tmp_path / "out.json")))
    p.run().wait_until_finish()
    done = json.loads((tmp_path / "out.json").read_text())
    assert sorted(x for x, _, _ in done) == list(range(64))
    assert len({pid for _, pid, _ in done}) == 2
    assert len({(pid, dofn) for _, pid, dofn in done}) == 2  # set up once per worker thread, not per bundle


@pytest.mark.slow
def test_run_on_a_two_worker_cluster_matches_the_local_run(cluster, tmp_path):
    """`interleaf run --runner DaskRunner` over the fixture WARCs, OBELICS and MMC4 files through ingest and
    dedup: the same bytes as the local runner (test_run.EXPECTED) and a funnel that reconciles."""
    data = HERE.parent / "data"
    out = tmp_path / "out"
    inputs = [str(data / "warc" / n) for n in WARCS] + [str(data / n) for n in OTHERS]
    config = tmp_path / "open-image-rules.toml"  # test_run's settings: every archived image passes the rules
    config.write_text("[image_rules]\nmin_side = 1\nmax_aspect_ratio = 1e9\n")
    code = main(["run", *inputs, "--output", str(out), "--stages", "ingest,dedup", "--num-shards", "2",
                 "--config", str(config), "--min-images", "0",
                 "--runner", "DaskRunner", "--dask_scheduler_file", str(cluster)])
    assert code == 0
    assert _outputs(out) == EXPECTED
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["unreconciled"] == []
    assert manifest["runner"]["runner"] == "DaskRunner"
    funnel = manifest["funnel"]
    assert funnel["ingest"]["records"]["in"] == 257 and funnel["dedup"]["documents"]["in"] == 30
    assert funnel["dedup"]["documents"]["dropped"] == {"exact_duplicate": 2, "near_duplicate": 1}
    assert manifest["timings_s"]["processing_by_stage"]["ingest"] > 0
