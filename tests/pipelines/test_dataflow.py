"""The whole pipeline built for Google Cloud Dataflow and translated into a job without submitting it
(Beam's --dry_run), with no network: the graph holds every stage, GPU steps carry accelerator hints, and the
workers are told how to install interleaf."""

import socket
from dataclasses import replace

import pytest

from interleaf.cli import main
from interleaf.pipelines import dataflow
from interleaf.pipelines.run import RunConfig, run
from interleaf.pipelines.tokenize import TokenizeConfig
from interleaf.tokenizers.text_bpe import TextTokenizer
from interleaf.tokenizers.vq import VQModel, save_vq, vq_preset

pytest.importorskip("apache_beam.runners.dataflow.internal.apiclient", reason="needs apache-beam[gcp]")

GPU = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"
DATAFLOW = ["--runner", "DataflowRunner", "--project", "interleaf-test", "--region", "us-central1",
            "--temp_location", "gs://interleaf-test-bucket/tmp", "--staging_location",
            "gs://interleaf-test-bucket/staging", "--no_auth", "--dry_run=True", "--sdk_location", "container",
            "--job_name", "interleaf-dry-run"]


@pytest.fixture
def no_network(monkeypatch):
    attempts = []
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if not (str(host).startswith("127.") or host in ("localhost", "::1")):
            attempts.append(address)
            raise OSError("network disabled in this test")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


@pytest.fixture
def tokenizers(tmp_path):
    text = tmp_path / "bpe.json"
    TextTokenizer.train(["a small corpus of words for a tokenizer"] * 20, vocab_size=300).save(str(text))
    vq = tmp_path / "vq.pt"
    save_vq(VQModel(vq_preset("tiny")), str(vq))
    return str(text), str(vq)


def test_full_pipeline_translates_for_dataflow(tmp_path, data_dir, tokenizers, no_network):
    cfg = RunConfig(stages=["ingest", "dedup", "fetch", "clip", "tokenize"], clip_accelerator=GPU,
                    tokenize_accelerator=GPU,
                    tokenize=TokenizeConfig(text_tokenizer=tokenizers[0], image_tokenizer=tokenizers[1],
                                            device="cuda"))
    # The fetch stage lists its resumable store while the graph is built (on a real launch that is a gs://
    # listing, with credentials); here it is a local folder so that nothing reaches the network.
    cfg.fetch = replace(cfg.fetch, store_dir=str(tmp_path / "fetch-store"))
    out = run([str(data_dir / "warc" / "issue-493.warc")], "gs://interleaf-test-bucket/run", cfg, DATAFLOW)
    assert out["dry_run"] and no_network == []
    names = out["graph"]["transforms"]
    for stage in ("Ingest", "DedupDocuments", "DedupDocuments/RepeatedParagraphs", "Fetch", "DedupImages", "Clip",
                  "Final", "Tokenize", "WriteDocuments", "WriteRejected", "WriteFailed", "WriteImages",
                  "Tokenize/WriteTokens"):
        assert stage in names, stage
    hinted = out["graph"]["resource_hints"]
    assert any(n.startswith("Clip") for n in hinted) and any(n.startswith("Tokenize") for n in hinted)
    assert all(h["beam:resources:accelerator:v1"] == GPU for h in hinted.values())
    assert not any(n.startswith(("Ingest", "Fetch", "Tokenize/WriteTokens")) for n in hinted)  # CPU steps stay on CPU
    # the workers install interleaf from this checkout's pyproject.toml
    assert out["remote"]["setup_file"].endswith("pyproject.toml")


def test_missing_dataflow_options_fail_before_any_work(tmp_path, data_dir, capsys):
    code = main(["run", str(data_dir / "warc" / "issue-493.warc"), "--output", "gs://x-bucket/out",
                 "--stages", "ingest", "--runner", "DataflowRunner", "--dry_run=True"])
    assert code == 2
    err = capsys.readouterr().err
    assert "DataflowRunner needs --project, --region, --temp_location" in err


def test_user_staging_is_respected():
    args = dataflow.prepare(DATAFLOW + ["--extra_package", "dist/interleaf.whl"])
    assert "--setup_file" not in args
    assert dataflow.prepare(["--direct_num_workers", "2"]) == ["--direct_num_workers", "2"]
