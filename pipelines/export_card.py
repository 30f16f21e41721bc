"""The dataset card (README.md) of an export: what the data is, how to load it, and what curation it went
through, every filter with its settings and its counts, from the source run's manifest and funnel. Its YAML
header is the one the Hugging Face Hub reads (data files of the default configuration)."""

from __future__ import annotations

import json

_DATA_FILES = {"obelics": "*.parquet", "webdataset": "*.tar", "mmc4": "docs_shard_*.jsonl"}

_LOAD = {
    "obelics": """```python
from datasets import load_dataset
ds = load_dataset("parquet", data_files="{dir}/*.parquet", split="train")
row = ds[0]  # row["texts"][i] or row["images"][i] (a URL) at each position{embedded}
```""",
    "webdataset": """```python
import json, webdataset as wds
ds = wds.WebDataset("{dir}/part-{{00000..{last:05d}}}-of-{count:05d}.tar")
for sample in ds:
    doc = json.loads(sample["json"])  # doc["nodes"]: text and image nodes in reading order
    images = {{n["file"]: sample[n["file"]] for n in doc["nodes"] if n.get("file")}}  # bytes by file name
```""",
    "mmc4": """```python
import json, zipfile
for shard in range({count}):
    images = zipfile.ZipFile(f"{dir}/images_shard_{{shard:05d}}.zip")
    for line in open(f"{dir}/docs_shard_{{shard:05d}}.jsonl", encoding="utf-8"):
        doc = json.loads(line)  # text_list; image_info[i]: raw_url, image_name, matched_text_index, ...
        data = [images.read(i["image_name"]) for i in doc["image_info"] if i["image_name"]]
```""",
}


def _funnel_rows(funnel: dict) -> list[str]:
    rows = ["| stage | unit | in | out | dropped (reason: count) |", "|---|---|---:|---:|---|"]
    for stage, units in funnel.items():
        for unit, e in units.items():
            reasons = sorted(e.get("dropped", {}).items(), key=lambda x: -x[1])
            dropped = ", ".join(f"{r}: {n:,}" for r, n in reasons)
            rows.append(f"| {stage} | {unit} | {e.get('in', 0):,} | {e.get('out', 0):,} | {dropped or '-'} |")
    return rows


def dataset_card(run_manifest: dict, export_manifest: dict) -> str:
    fmt = export_manifest["format"]
    counts = export_manifest["counts"]
    settings = export_manifest["settings"]
    source = export_manifest["source_run"]
    count = len({f["name"] for f in export_manifest["files"]}) // (2 if fmt == "mmc4" else 1)
    size = sum(f["bytes"] for f in export_manifest["files"])
    embedded = ("\n# row[\"image_data\"][i]: the image as a PIL image (None at text positions)"
                if settings.get("embed_images") else "")
    load = _LOAD[fmt].format(dir="DIR", last=count - 1, count=count, embedded=embedded)
    config = run_manifest.get("config") or {}
    stages = run_manifest.get("stages") or []
    funnel = run_manifest.get("funnel") or {}
    applied = set(stages) | set(funnel) | ({"blocklist"} if {"ingest", "fetch"} & set(stages) else set())
    sections = {name: config[name] for name in ("ingest", "pii", "blocklist", "dedup", "fetch", "image_rules",
                                               "image_safety", "clip") if name in config and name in applied}
    missing = counts["image_missing"]
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        f"    path: \"{_DATA_FILES[fmt]}\"",
        "tags:",
        "- interleaved",
        "- image-text",
        "- interleaf",
        "---",
        "",
        f"# Interleaved text-image documents ({fmt})",
        "",
        f"{counts['documents']:,} documents with {counts['images_exported']:,} images, in {count} "
        f"shard(s) of at most {settings['shard_size']:,} documents ({size / 1e6:.1f} MB), written by "
        f"`interleaf export` {export_manifest['interleaf_version']} from the run in `{source['directory']}` "
        f"(created {source.get('created')}, stages {', '.join(stages) or '-'}).",
        "",
        "## Loading it",
        "",
        "With DIR this directory:",
        "",
        load,
        "",
        "## Images",
        "",
        f"{counts['image_nodes']:,} image positions; {counts['images_embedded']:,} carry their bytes in this "
        f"export. {missing:,} had no bytes in the run's image store (never fetched, or the store lacked "
        "them): "
        + ("they are left out of the documents." if settings["missing_images"] == "drop" else
           "they are kept by URL, without a file."),
        "",
        "## Curation: every filter, with its counts",
        "",
        "From the source run's funnel (in = out + dropped for every stage and unit):",
        "",
        *_funnel_rows(funnel),
        "",
        "## Settings of the run",
        "",
        "The settings of every step that ran:",
        "",
        f"Config fingerprint (sha256 of the run's settings): `{source['config_fingerprint']}`",
        "",
        "```json",
        json.dumps(sections, indent=2, default=str, sort_keys=True),
        "```",
        "",
        "Licences and consent: the documents and images belong to their publishers. The run honoured "
        "robots.txt, X-Robots-Tag, the TDM Reservation Protocol and noai meta tags where its fetch stage "
        "ran; check the terms of each source before you publish this data.",
        "",
    ]
    return "\n".join(lines)
