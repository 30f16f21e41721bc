"""`interleaf report` and `interleaf inspect` show what the safety and consent filters did: languages and
their scores, personal data replaced by kind, and the blocklist and language drops (issue 16, item 7)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from interleaf.cli import main
from interleaf.report import build_report

DATA = Path(__file__).parent.parent / "data"


def _udhr_page(name: str, extra: str = "") -> bytes:
    html = (DATA / "udhr" / f"{name}.html").read_text(encoding="utf-8")
    return html.replace("</h1>", f"</h1><p>{extra}</p>", 1).encode() if extra else html.encode()


@pytest.mark.slow
def test_report_and_inspect_show_the_safety_filters(tmp_path, capsys):
    pages = {
        "https://udhr.example.org/eng.html": _udhr_page(
            "eng", "Questions about this translation go to the editor at translations@udhr.example.org, who "
                   "answers every message within a week of receiving it."),
        "https://udhr.example.org/deu.html": _udhr_page("deu_1996"),
        "https://udhr.example.org/fra.html": _udhr_page("fra"),
        "https://udhr.example.org/jpn.html": _udhr_page("jpn"),
        "https://blocked.example/eng.html": _udhr_page("eng"),
    }
    warc = tmp_path / "udhr.warc.gz"
    with open(warc, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for url, body in pages.items():
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")],
                                    protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=http))
    listing = tmp_path / "blocked.txt"
    listing.write_text("blocked.example\n", encoding="utf-8")
    config = tmp_path / "run.toml"
    config.write_text(f'[blocklist]\nfiles = ["{listing}"]\n', encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(warc), "--output", str(out), "--stages", "ingest", "--min-images", "0",
                 "--languages", "en,de,fr", "--config", str(config)]) == 0
    capsys.readouterr()

    page = build_report(str(out), samples=0)
    safety = page[page.index('id="safety"'):]
    safety = safety[:safety.index("</section>")]
    for expected in ("Languages of the curated documents", ">en<", ">de<", ">fr<",
                     "Language identification score", "Personal data replaced", ">email<",
                     "blocked_domain", "language_not_kept"):
        assert expected in safety, expected
    assert ">ja<" not in safety  # dropped by the keep list: not among the curated documents

    assert main(["inspect", str(out / "documents")]) == 0
    shown = capsys.readouterr().out
    assert "languages:" in shown and '"en": 1' in shown and '"de": 1' in shown
    assert "language_score:" in shown
