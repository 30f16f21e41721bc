"""gs:// outputs for real: `interleaf run` and `interleaf export` write to Google Cloud Storage through Beam's
own GCS filesystem (google-cloud-storage), against a GCS emulator (gcp-storage-emulator) serving the JSON
API on 127.0.0.1. What lands in the bucket is byte for byte what the same run and export write locally."""

import importlib.util
import socket
from pathlib import Path

import pytest

from interleaf.cli import main

pytest.importorskip("apache_beam.io.gcp.gcsfilesystem")
gcs_server = pytest.importorskip("gcp_storage_emulator.server")
from google.cloud import storage as gcs  # noqa: E402 (after the skips: part of the gcp extra)

_spec = importlib.util.spec_from_file_location("export_test",
                                               Path(__file__).resolve().parent / "test_export.py")
_export_test = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_export_test)

BUCKET = "interleaf-test"
CONFIG = "[image_safety]\nnsfw = false\nfaces = false\n[ingest.quality]\nmin_images = 0\n"


@pytest.fixture
def bucket(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = gcs_server.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    try:
        yield gcs.Client.create_anonymous_client().bucket(BUCKET)
    finally:
        server.stop()


def _local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _bucket_files(bucket, prefix: str) -> dict[str, bytes]:
    blobs = bucket.client.list_blobs(BUCKET, prefix=prefix + "/")
    return {b.name[len(prefix) + 1:]: b.download_as_bytes() for b in blobs}


@pytest.mark.slow
def test_run_and_export_write_the_same_bytes_to_a_bucket_as_to_a_local_directory(tmp_path, bucket, capsys):
    warc = tmp_path / "museum.warc"
    _export_test._write_warc(warc)
    (tmp_path / "run.toml").write_text(CONFIG)
    for out in (str(tmp_path / "run"), f"gs://{BUCKET}/run"):
        assert main(["run", str(warc), "--output", out, "--config", str(tmp_path / "run.toml"), "--stages",
                     "ingest", "--export", "obelics,webdataset,mmc4"]) == 0
    local, remote = _local_files(tmp_path / "run"), _bucket_files(bucket, "run")
    data = sorted(name for name in local if name.startswith(("documents/", "images/", "export/")) and
                  not name.endswith(("manifest.json", "README.md")))
    assert any(n.startswith("images/") for n in data) and any(n.endswith(".tar") for n in data)
    assert sorted(n for n in remote if n in data) == data
    assert [name for name in data if remote[name] != local[name]] == []
    assert set(remote) == set(local)  # the manifests and cards too, their paths differing

    assert main(["inspect", f"gs://{BUCKET}/run/documents", "--sample", "1"]) == 0
    assert "museum.example" in capsys.readouterr().out
    # an export from the bucket into the bucket, as from a local run into a local directory
    assert main(["export", f"gs://{BUCKET}/run", "--format", "obelics", "--embed-images", "--output",
                 f"gs://{BUCKET}/embedded"]) == 0
    assert main(["export", str(tmp_path / "run"), "--format", "obelics", "--embed-images", "--output",
                 str(tmp_path / "embedded")]) == 0
    local, remote = _local_files(tmp_path / "embedded"), _bucket_files(bucket, "embedded")
    assert set(remote) == set(local) and any(name.endswith(".parquet") for name in remote)
    assert all(remote[n] == local[n] for n in local if n.endswith(".parquet"))
