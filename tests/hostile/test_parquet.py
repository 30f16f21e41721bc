"""Parquet whose footer does not bound what decoding it costs: a few KB of dictionary indices in RLE runs
decode to gigabytes. It is decoded in a child process with capped memory (readers/parquet.py)."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from interleaf.cli import main
from interleaf.readers.rows import TOO_LARGE, rows

TEXT = ("The ferry leaves the harbour at seven on calm mornings and returns before the evening tide. Its "
        "captain has sailed the same route for twenty years, and he knows every buoy and sandbank by name. "
        "In winter the crossing is often cancelled, when storms from the west push the waves over the pier.")


def _table(copies: dict[int, int], word: str = "x" * 1000) -> pa.Table:
    """OBELICS rows; row i's texts are `copies[i]` copies of one long word (one dictionary entry), else a
    paragraph and an image. Written with store_schema=False, a reader decodes the words to plain strings."""
    indices, offsets, images = [], [0], []
    for i in range(max(copies) + 2):
        n = copies.get(i)
        indices.extend([0] * n if n else [1, None])
        offsets.append(len(indices))
        images.append([None] * n if n else [None, f"http://{i}.example/a.jpg"])
    words = pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array([word, TEXT]))
    column = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), words)  # never decoded here
    meta = [json.dumps({"url": f"http://{i}.example/"}) for i in range(len(images))]
    return pa.table({"texts": column, "images": images, "metadata": [[None] * len(m) for m in images],
                     "general_metadata": meta})


def test_a_tiny_parquet_file_that_decodes_to_gigabytes_costs_its_row_group_only(tmp_path):
    path = tmp_path / "bomb.obelics.parquet"
    pq.write_table(_table({1: 3_000_000}), path, compression="zstd", row_group_size=2,
                   store_schema=False)  # 3 GB of text
    assert path.stat().st_size < 100_000
    assert pq.ParquetFile(path).metadata.row_group(0).total_byte_size < 10_000_000  # the footer says little
    probe = ("import sys\nfrom interleaf.readers.rows import rows\n"  # VmHWM: this process's peak since exec
             "print([r.reason for r in rows(sys.argv[1])])\n"
             "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n")
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True,
                         timeout=120)
    reasons, peak_kb = out.stdout.splitlines()
    assert reasons == str([TOO_LARGE, TOO_LARGE, None])  # rows 0-1 are one row group
    assert int(peak_kb) < 400_000, peak_kb  # this process never holds the decoded row

    (tmp_path / "run.toml").write_text("[ingest.quality]\nmin_images = 0\n")
    assert main(["run", str(path), "--output", str(tmp_path / "out"), "--config", str(tmp_path / "run.toml"),
                 "--stages", "ingest"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["funnel"]["ingest"]["documents"]["dropped"] == {"too_large": 2}
    assert manifest["funnel"]["ingest"]["documents"]["out"] == 1 and manifest["unreconciled"] == []


def test_a_row_that_decodes_above_max_row_bytes_costs_that_row_only(tmp_path):
    path = tmp_path / "rows.obelics.parquet"
    # row 2: 20 MB decoded, in one row group of four
    pq.write_table(_table({2: 20_000}), path, compression="zstd", store_schema=False)
    got = list(rows(str(path), max_row_bytes=16 * 2**20))
    assert [r.reason for r in got] == [None, None, TOO_LARGE, None]
    assert [r.number for r in got] == [0, 1, 2, 3] and "max_row_bytes" in got[2].error
    assert got[3].value["general_metadata"] == json.dumps({"url": "http://3.example/"})


def test_a_file_that_is_not_parquet_is_one_bad_file_row(tmp_path):
    path = tmp_path / "rows.obelics.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 100 + b"PAR1")
    got = list(rows(str(path)))
    assert len(got) == 1 and got[0].reason == "bad_file" and "Parquet" in got[0].error


def test_rows_that_are_small_in_arrow_and_huge_as_python_values_never_reach_this_process(tmp_path):
    """Found by the third red-team pass: a list of 200,000 indices into one 2,000-character dictionary
    string (9.6 KB of file, 400 MB as strings) and a list of 30 million nulls in an extra column took the
    run's process to 4.6 GB and 2.5 GB; the rows are made in the capped child and stay there."""
    words = pa.DictionaryArray.from_arrays(pa.array([0] * 200_000, pa.int32()), pa.array(["x" * 2000]))
    texts = pa.ListArray.from_arrays(pa.array([0, 200_000, 201_000], pa.int32()),
                                     pa.concat_arrays([words, words.slice(0, 1000)]))
    nulls = pa.ListArray.from_arrays(pa.array([0, 1, 30_000_001], pa.int32()), pa.nulls(30_000_001))
    table = pa.table({"texts": texts, "junk": nulls, "general_metadata": ["{}", "{}"]})
    path = tmp_path / "rows.obelics.parquet"
    pq.write_table(table, path, store_schema=False)
    assert path.stat().st_size < 100_000
    probe = ("import sys\nfrom interleaf.readers.rows import rows\n"
             "print([(r.reason, 'above max_row_bytes' in r.error) for r in rows(sys.argv[1])])\n"
             "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n")
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True,
                         timeout=120)
    reasons, peak_kb = out.stdout.splitlines()
    assert reasons == str([(TOO_LARGE, True), (TOO_LARGE, True)]), reasons
    assert int(peak_kb) < 400_000, peak_kb
