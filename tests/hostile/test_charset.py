"""Pages whose HTTP header, meta tag and bytes disagree on the charset (issue 13 item 6): the text comes out
as a person reads it, in five scripts, whichever of header and meta is wrong; and through `interleaf run`."""

import json

import pytest

from interleaf.cli import main
from interleaf.filters.charset import decode_html
from interleaf.schemas.document import documents_from_table
from interleaf.shards import open_shards

TEXTS = {
    "windows-1251": "Москва — столица России, крупнейший по численности населения город страны. "
                    "Здесь находятся театры, музеи и университеты.",
    "windows-1253": "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και μία από τις αρχαιότερες "
                    "πόλεις του κόσμου, με πολλά μουσεία.",
    "windows-1252": "Le marché de Noël ouvre ses portes à la fin de novembre ; on y trouve "
                    "du vin chaud, des crêpes et des jouets en bois.",
    "windows-1250": "Příliš žluťoučký kůň úpěl ďábelské ódy. Praha je hlavní město České "
                    "republiky a leží na řece Vltavě.",
    "windows-1254": "İstanbul, Türkiye'nin en kalabalık şehridir ve Boğaziçi'nin iki "
                    "yakasında kurulmuştur; çok güzel bir şehir.",
}


def page(text: str, meta: str | None) -> str:
    head = f"<meta charset={meta}>" if meta else ""
    return f"<html><head>{head}<title>t</title></head><body><p>{text}</p></body></html>"


@pytest.mark.parametrize("encoding", TEXTS)
@pytest.mark.parametrize("header,meta", [
    ("iso-8859-1", "right"),  # a server default over the page's own declaration
    ("windows-1251", "right"),
    (None, "right"),
    ("right", "iso-8859-1"),  # a template's declaration over a right header
    ("right", None),
    ("utf-8", "right"),  # a header claiming UTF-8 over legacy bytes
])
def test_the_text_reads_right_whichever_declaration_is_wrong(encoding, header, meta):
    text = TEXTS[encoding]
    body = page(text, encoding if meta == "right" else meta).encode(encoding)
    content_type = "text/html" + (f"; charset={encoding if header == 'right' else header}" if header else "")
    assert text in decode_html(body, content_type)


def test_utf8_bytes_under_a_latin1_header_and_meta():
    text = TEXTS["windows-1251"] + " " + TEXTS["windows-1253"]
    assert text in decode_html(page(text, "iso-8859-1").encode("utf-8"), "text/html; charset=iso-8859-1")


def _record(url: str, body: bytes, content_type: str) -> bytes:
    http = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\n"
            f"WARC-Date: 2024-05-01T10:00:00Z\r\nWARC-Record-ID: <urn:uuid:{abs(hash(url)):032x}>\r\n"
            f"Content-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(http) + len(body)}\r\n\r\n")
    return head.encode() + http + body + b"\r\n\r\n"


@pytest.mark.slow
def test_a_run_reads_every_page_right(tmp_path):
    warc = tmp_path / "charsets.warc"
    with open(warc, "wb") as f:
        for i, (encoding, text) in enumerate(TEXTS.items()):
            f.write(_record(f"http://site{i}.example/", page(text, encoding).encode(encoding),
                            "text/html; charset=iso-8859-1"))
    (tmp_path / "run.toml").write_text("[ingest.quality]\nmin_images = 0\nmin_words = 5\n"
                                       "min_stop_words = 0\n")
    assert main(["run", str(warc), "--output", str(tmp_path / "out"), "--config", str(tmp_path / "run.toml"),
                 "--stages", "ingest"]) == 0
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["unreconciled"] == []
    docs = documents_from_table(open_shards(str(tmp_path / "out" / "documents")).read())
    docs += documents_from_table(open_shards(str(tmp_path / "out" / "rejected")).read())
    texts = {d.url: " ".join(n.text or "" for n in d.nodes) for d in docs}
    for i, text in enumerate(TEXTS.values()):
        assert text in texts[f"http://site{i}.example/"]
