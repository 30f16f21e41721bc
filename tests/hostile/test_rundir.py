"""Run directories (issue 13 item 7): what can fail is checked before the output is touched, inputs inside
the output are refused on resolved paths, a second run into an output in use is refused, and a killed run's
directory says it is incomplete (inspect, report) until a rerun replaces it whole."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interleaf.cli import main
from interleaf.pipelines.rundir import LOCK

DATA = Path(__file__).resolve().parent.parent / "data"
PROSE = ("The ferry leaves the harbour at seven, and on calm mornings the whole crossing takes less than an "
         "hour, long enough for a coffee and a look at the seals on the sandbank")


def _rows(path: Path, n: int = 5) -> Path:
    rows = [{"texts": [f"{PROSE}, day {i}.", None], "images": [None, f"http://i.example/{i}.jpg"],
             "general_metadata": json.dumps({"url": f"http://p.example/{i}"})} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def previous(tmp_path):
    """A complete run in tmp_path/out, and a config file."""
    (tmp_path / "run.toml").write_text("[ingest.quality]\nmin_words = 10\n")
    rows = _rows(tmp_path / "a.obelics.jsonl")
    assert main(["run", str(rows), "--output", str(tmp_path / "out"), "--config", str(tmp_path / "run.toml"),
                 "--stages", "ingest"]) == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "complete"
    return tmp_path / "out"


def test_a_failing_check_leaves_the_output_untouched(tmp_path, previous, capsys):
    before = _snapshot(previous)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tok.toml").write_text(f'[tokenize]\ntext_tokenizer = "{tmp_path / "tokenizer.json"}"\n'
                                       f'image_tokenizer = "{tmp_path / "garbage.pt"}"\n')
    capsys.readouterr()
    code = main(["run", str(previous / "documents"), "--output", str(previous), "--stages", "tokenize",
                 "--config", str(tmp_path / "tok.toml")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert _snapshot(previous) == before


@pytest.mark.parametrize("spelling", ["dotdot", "symlink"])
def test_an_input_inside_the_output_is_refused_however_it_is_spelled(tmp_path, previous, spelling, capsys):
    before = _snapshot(previous)
    if spelling == "dotdot":
        source = f"{tmp_path}/elsewhere/../out/./documents"
        (tmp_path / "elsewhere").mkdir()
    else:
        (tmp_path / "link").symlink_to(previous / "documents")
        source = str(tmp_path / "link")
    capsys.readouterr()
    assert main(["run", source, "--output", str(previous), "--stages", "dedup"]) == 2
    err = capsys.readouterr().err.strip()
    assert "inside" in err and len(err.splitlines()) == 1
    assert _snapshot(previous) == before


def test_a_second_run_into_an_output_in_use_is_refused(tmp_path, previous, capsys):
    before = _snapshot(previous)
    (previous / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                             "since": "2026-12-07T00:00:00+00:00"}))
    capsys.readouterr()
    rows = _rows(tmp_path / "b.obelics.jsonl")
    assert main(["run", str(rows), "--output", str(previous), "--stages", "ingest"]) == 2
    err = capsys.readouterr().err.strip()
    assert "in use by another run" in err and str(os.getpid()) in err and len(err.splitlines()) == 1
    assert {k: v for k, v in _snapshot(previous).items() if k != LOCK} == before

    # a lock left by a process that is gone is stale: taken over
    (previous / LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": os.uname().nodename}))
    assert main(["run", str(rows), "--output", str(previous), "--config", str(tmp_path / "run.toml"),
                 "--stages", "ingest"]) == 0
    assert not (previous / LOCK).exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_a_killed_run_says_so_until_a_rerun_replaces_it(tmp_path, capsys):
    warcs = sorted(str(p) for p in (DATA / "warc").glob("*.warc*"))
    out = tmp_path / "out"
    args = ["run", *warcs, "--output", str(out), "--stages", "ingest,dedup"]
    proc = subprocess.Popen([sys.executable, "-c", f"import sys; from interleaf.cli import main; "
                                                    f"sys.exit(main({args!r}))"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it once it has started writing its output
        manifest = out / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text() or "{}").get("status") == "running":
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"

    capsys.readouterr()
    if (out / "documents").exists():
        assert main(["inspect", str(out / "documents")]) == 0
        assert "not complete" in capsys.readouterr().err
    assert main(["report", str(out), "--out", str(tmp_path / "report.html")]) == 0
    assert "Incomplete run" in (tmp_path / "report.html").read_text()

    assert main(["run", *warcs, "--output", str(out), "--stages", "ingest,dedup"]) == 0  # takes the lock over
    clean = tmp_path / "clean"
    assert main(["run", *warcs, "--output", str(clean), "--stages", "ingest,dedup"]) == 0
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    for sub in ("documents", "rejected", "images"):  # nothing of the killed run is left
        assert _snapshot(out / sub) == _snapshot(clean / sub)
    capsys.readouterr()
    assert main(["inspect", str(out / "documents")]) == 0
    assert "not complete" not in capsys.readouterr().err


def test_a_tokenizer_path_that_is_a_directory_is_one_line(tmp_path, previous, capsys):
    before = _snapshot(previous)
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "tok.toml").write_text(f'[tokenize]\ntext_tokenizer = "{tmp_path / "dir.json"}"\n'
                                       f'image_tokenizer = "{tmp_path / "dir.json"}"\n')
    capsys.readouterr()
    code = main(["run", str(previous / "documents"), "--output", str(tmp_path / "tok-out"), "--stages",
                 "tokenize", "--config", str(tmp_path / "tok.toml")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err  # was an IsADirectoryError traceback
    assert _snapshot(previous) == before
