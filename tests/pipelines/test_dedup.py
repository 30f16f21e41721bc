"""Dedup in Beam against planted ground truth: near-duplicate clusters made by edits of controlled size,
chains, exact copies, pairs just below the threshold; repeated paragraphs per domain; images on real photos
and their re-encoded, resized and cropped copies. Everything runs on the local FnApiRunner."""

import io
import random
from dataclasses import replace
from datetime import datetime, timezone
from hashlib import sha256
from pathlib import Path

import apache_beam as beam
import pytest
from PIL import Image

from interleaf.filters.dedup_text import MinHashConfig, jaccard, text_hash, word_shingles
from interleaf.pipelines.common import (WriteShards, create_pipeline, funnel_from, pipeline_options,
                                        unreconciled)
from interleaf.pipelines.components import ConnectedComponents
from interleaf.pipelines.dedup import DedupDocuments, DocumentDedupConfig, ParagraphDedupConfig, RemoveRepeatedParagraphs
from interleaf.pipelines.dedup_images import DedupImages, ImageDedupConfig
from interleaf.schemas.document import (Document, Node, documents_from_table, documents_to_table,
                                        make_doc_id)
from interleaf.schemas.image import ImageRecord, images_from_table, images_to_table
from interleaf.shards import open_shards

THRESHOLD = MinHashConfig().threshold
NGRAM = MinHashConfig().ngram
TWO_WORKERS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
PHOTO_DIR = Path(__file__).parent.parent / "data" / "photos"


# ---------------------------------------------------------------- a corpus with planted duplicates


class Corpus:
    """Random-word documents in planted groups; the truth is computed from exact shingle Jaccard."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        syllables = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"]
        self.vocab = sorted({"".join(self.rng.choice(syllables) for _ in range(self.rng.randint(2, 4)))
                             for _ in range(6000)})
        self.docs: list[Document] = []
        self.groups: list[list[Document]] = []  # documents that may be duplicates of each other
        self.same_id: list[Document] = []  # documents given twice (same doc_id)
        self.near: list[tuple[Document, Document]] = []  # pairs planted at Jaccard 0.85-0.95
        self._n = 0

    def words(self, n):
        return [self.rng.choice(self.vocab) for _ in range(n)]

    def edit(self, words, k, taken=None, ops=("sub", "ins", "del")):
        """k edits (substitution, insertion or deletion of one word) at positions at least NGRAM apart, so
        each edit changes its own NGRAM shingles: the size of the change is controlled."""
        taken = set() if taken is None else taken
        words = list(words)
        positions = []
        while len(positions) < k:
            p = self.rng.randrange(NGRAM, len(words) - NGRAM)
            if all(abs(p - q) >= 2 * NGRAM for q in positions + sorted(taken)):
                positions.append(p)
        taken.update(positions)
        for p in sorted(positions, reverse=True):
            op = self.rng.choice(ops)
            if op == "sub":
                words[p] = self.rng.choice(self.vocab)
            elif op == "ins":
                words.insert(p, self.rng.choice(self.vocab))
            else:
                del words[p]
        return words

    def doc(self, words, paragraphs=4, transform=None) -> Document:
        self._n += 1
        size = -(-len(words) // paragraphs)
        texts = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
        if transform:
            texts = [transform(t) for t in texts]
        url = f"https://site{self._n % 17}.example/page/{self._n}"
        nodes = [Node.text_node(t) for t in texts]
        return Document(doc_id=make_doc_id(url, nodes), url=url, nodes=nodes, source_offset=self._n)

    def group(self, docs):
        self.groups.append(docs)
        self.docs.extend(docs)

    @classmethod
    def planted(cls, seed=0, *, singletons=150, clusters=40, near=60, chains=8, chain_length=6, exact=20,
                below=30):
        c = cls(seed)
        for _ in range(singletons):
            c.group([c.doc(c.words(c.rng.randint(150, 400)))])
        for _ in range(clusters):  # a base and 1-4 copies, each 1-3 edits away from it (J >= ~0.9)
            base = c.words(c.rng.randint(250, 400))
            c.group([c.doc(base)] + [c.doc(c.edit(base, c.rng.randint(1, 3)))
                                     for _ in range(c.rng.randint(1, 4))])
        for _ in range(near):  # pairs at Jaccard 0.85-0.95: k substitutions change 5k of N shingles each side
            base, target = c.words(c.rng.randint(200, 400)), c.rng.uniform(0.85, 0.95)
            n = len(base) - NGRAM + 1
            k = max(1, round(n * (1 - target) / (NGRAM * (1 + target))))  # J = (n - 5k) / (n + 5k)
            c.near.append((c.doc(base), c.doc(c.edit(base, k, ops=("sub",)))))
            c.group(list(c.near[-1]))
        for _ in range(chains):  # each link 3 fresh edits: neighbours J ~0.9, the ends far below
            words, taken = c.words(300), set()
            chain = [c.doc(words)]
            for _ in range(chain_length - 1):
                words = c.edit(words, 3, taken)
                chain.append(c.doc(words))
            c.group(chain)
        upper = lambda t: t.upper()
        punct = lambda t: t.replace(" ", ", ", 3) + "!"
        for i in range(exact):  # copies that differ only in case, punctuation and paragraph breaks
            words = c.words(c.rng.randint(100, 300))
            copies = [c.doc(words), c.doc(words, transform=upper)]
            if i % 2:
                copies.append(c.doc(words, paragraphs=2, transform=punct))
            c.group(copies)
        for _ in range(below):  # pairs just below the threshold: 10-13 edits apart (J ~0.62-0.72)
            base = c.words(300)
            c.group([c.doc(base), c.doc(c.edit(base, c.rng.randint(10, 13)))])
        for i in range(3):  # the same capture twice: same doc_id
            d = c.doc(c.words(200))
            c.same_id.append(d)
            c.docs.extend([d, replace(d, source_file="second-crawl.warc.gz")])
        c.rng.shuffle(c.docs)
        return c

    def truth(self, threshold=THRESHOLD) -> tuple[dict[str, str], dict[str, str]]:
        """({removed doc_id: survivor doc_id}, {removed doc_id: reason}) by the documented survivor rule
        over connected components of exact Jaccard >= threshold (or equal normalised text)."""
        removed, reasons = {}, {}
        for docs in self.groups:
            shingles = [word_shingles(d.text(), NGRAM) for d in docs]
            parent = list(range(len(docs)))
            for i in range(len(docs)):
                for j in range(i + 1, len(docs)):
                    if jaccard(shingles[i], shingles[j]) >= threshold:
                        parent[_root(parent, i)] = _root(parent, j)
            components = {}
            for i in range(len(docs)):
                components.setdefault(_root(parent, i), []).append(docs[i])
            for members in components.values():
                survivor = min(members, key=lambda d: (-len(d.text()), d.doc_id))
                for d in members:
                    if d is not survivor:
                        removed[d.doc_id] = survivor.doc_id
                        same = text_hash(d.text()) == text_hash(survivor.text())
                        reasons[d.doc_id] = "exact_duplicate" if same else "near_duplicate"
        return removed, reasons


def _root(parent, i):
    while parent[i] != i:
        i = parent[i]
    return i


def _run(transform_fn, inputs, args=(), out_dir=None, images=False):
    """Run `transform_fn` on inputs under the local runner; returns (outputs, funnel). Outputs are written
    as Arrow shards (deterministic) under out_dir and read back."""
    p = create_pipeline(pipeline_options(list(args)))
    if images:
        docs, records = inputs
        inputs = {"documents": p | "Docs" >> beam.Create(docs),
                  "images": p | "Images" >> beam.Create(records)}
        result = inputs | transform_fn()
        result["documents"] | "WriteDocs" >> WriteShards(str(out_dir / "docs"), documents_to_table,
                                                         _doc_key, 2)
        result["images"] | "WriteImages" >> WriteShards(str(out_dir / "images"), images_to_table,
                                                        _image_key, 2)
    else:
        result = p | beam.Create(inputs) | transform_fn()
        result | "WriteDocs" >> WriteShards(str(out_dir / "docs"), documents_to_table, _doc_key, 2)
    run = p.run()
    run.wait_until_finish()
    docs = documents_from_table(open_shards(str(out_dir / "docs")).read())
    if images:
        return (docs, images_from_table(open_shards(str(out_dir / "images")).read())), funnel_from(run)
    return docs, funnel_from(run)


def _doc_key(d):
    return f"{d.doc_id}:{d.status}:{d.source_file}"


def _image_key(r):
    return f"{r.sha256}:{r.status}:{','.join(r.urls)}"


def _shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# ---------------------------------------------------------------- documents


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    corpus = Corpus.planted()
    out = tmp_path_factory.mktemp("planted")
    docs, funnel = _run(lambda: DedupDocuments(DocumentDedupConfig()), corpus.docs, out_dir=out)
    return corpus, docs, funnel, out


def _precision_recall(docs, truth, skip):
    removed = {d.doc_id for d in docs if d.status == "dropped" and d.doc_id not in skip}
    expected = set(truth)
    hits = len(removed & expected)
    return hits / max(len(removed), 1), hits / max(len(expected), 1), removed


def test_planted_duplicates_are_found_with_high_precision_and_recall(planted):
    corpus, docs, funnel, _ = planted
    truth, reasons = corpus.truth()
    skip = {d.doc_id for d in corpus.same_id}
    precision, recall, removed = _precision_recall(docs, truth, skip)
    print(f"\nplanted corpus: {len(corpus.docs)} documents, {len(truth)} to remove; "
          f"removed {len(removed)}; precision {precision:.4f} recall {recall:.4f}")
    # candidates are verified against the exact Jaccard: nothing below the threshold is ever removed
    assert precision == 1.0 and recall >= 0.99
    by_id = {}
    for d in docs:
        by_id.setdefault(d.doc_id, []).append(d)
    # every removed document names the survivor of its cluster, and the survivor is kept
    for doc_id, survivor in truth.items():
        (d,) = by_id[doc_id]
        if d.status == "dropped":
            assert d.meta["dedup_cluster"] == survivor and by_id[survivor][0].kept
    # exact duplicates are always found, with their reason
    for doc_id, reason in reasons.items():
        if reason == "exact_duplicate":
            assert by_id[doc_id][0].reason == "exact_duplicate"
    # the same capture twice: one is kept, the other is an exact duplicate of it
    for d in corpus.same_id:
        statuses = sorted((x.status, x.reason, x.meta.get("dedup_cluster")) for x in by_id[d.doc_id])
        assert statuses == [("dropped", "exact_duplicate", d.doc_id), ("kept", None, d.doc_id)]
    assert unreconciled(funnel) == []
    counts = funnel["dedup"]["documents"]
    assert counts["in"] == len(corpus.docs)
    assert counts["dropped"]["exact_duplicate"] == sum(r == "exact_duplicate" for r in reasons.values()) + 3


def test_pairs_at_jaccard_085_to_095_are_all_found(planted):
    """The bands are chosen for recall: a pair at J=0.85 is missed with probability 5e-5."""
    corpus, docs, _, _ = planted
    by_id = {d.doc_id: d for d in docs}
    similarities = sorted(jaccard(word_shingles(a.text(), NGRAM), word_shingles(b.text(), NGRAM))
                          for a, b in corpus.near)
    assert len(similarities) == 60 and 0.83 < similarities[0] < 0.85 and 0.95 < similarities[-1] < 0.97
    assert sum(0.85 <= s < 0.87 for s in similarities) >= 8
    assert sum(0.85 <= s <= 0.95 for s in similarities) >= 45
    for a, b in corpus.near:
        a, b = by_id[a.doc_id], by_id[b.doc_id]
        assert a.meta["dedup_cluster"] == b.meta["dedup_cluster"] and a.kept != b.kept


def test_chains_end_in_one_cluster_although_their_ends_are_not_similar(planted):
    corpus, docs, funnel, _ = planted
    by_id = {d.doc_id: d for d in docs}
    chains = [g for g in corpus.groups if len(g) == 6 and len({len(d.text()) for d in g}) > 1]
    assert len(chains) >= 8
    for chain in chains[:8]:
        ends = jaccard(word_shingles(chain[0].text(), NGRAM), word_shingles(chain[-1].text(), NGRAM))
        assert ends < 0.7  # the ends alone are no duplicates: only transitivity joins them
        clusters = {by_id[d.doc_id].meta.get("dedup_cluster") for d in chain}
        assert len(clusters) == 1 and None not in clusters
        assert sum(by_id[d.doc_id].kept for d in chain) == 1
    info = funnel["dedup"]["documents"]["info"]
    assert "cc_unconverged" not in info  # the last round changed nothing: components converged
    rounds = sorted(k for k in info if k.startswith("cc_round"))
    assert rounds and rounds[-1] < f"cc_round{DocumentDedupConfig().max_rounds:02d}_changed"


def test_pairs_just_below_the_threshold_stay(planted):
    corpus, docs, funnel, _ = planted
    by_id = {d.doc_id: d for d in docs}
    below = [g for g in corpus.groups if len(g) == 2
             and jaccard(word_shingles(g[0].text(), NGRAM), word_shingles(g[1].text(), NGRAM)) < THRESHOLD]
    similarities = [jaccard(word_shingles(a.text(), NGRAM), word_shingles(b.text(), NGRAM)) for a, b in below]
    assert len(below) == 30 and 0.55 < min(similarities) and max(similarities) < THRESHOLD
    kept_pairs = sum(by_id[a.doc_id].kept and by_id[b.doc_id].kept for a, b in below)
    assert kept_pairs >= 29
    # the band collisions of these pairs were rejected by verification, not missed by LSH
    assert funnel["dedup"]["documents"]["info"]["lsh_rejected"] >= 5


def test_identical_across_runs_and_worker_counts(planted, tmp_path):
    corpus, _, funnel, first = planted
    docs = list(reversed(corpus.docs))  # another input order too
    _, funnel2 = _run(lambda: DedupDocuments(DocumentDedupConfig()), docs, TWO_WORKERS, out_dir=tmp_path)
    assert _shard_bytes(tmp_path / "docs") == _shard_bytes(first / "docs")
    assert funnel2 == funnel


def test_without_verification_precision_falls(planted, tmp_path):
    """The documented trade-off: every LSH candidate a duplicate (no verification) pairs documents below
    the threshold, since the recall-leaning bands make pairs at J~0.7 candidates 44% of the time."""
    corpus, _, _, _ = planted
    truth, _ = corpus.truth()
    config = DocumentDedupConfig(verify_candidates=False)
    docs, funnel = _run(lambda: DedupDocuments(config), corpus.docs, out_dir=tmp_path)
    precision, recall, _ = _precision_recall(docs, truth, {d.doc_id for d in corpus.same_id})
    print(f"\nwithout verification: precision {precision:.4f} recall {recall:.4f}")
    assert recall >= 0.99 and precision < 0.97
    assert unreconciled(funnel) == []


def test_documents_dropped_upstream_and_without_text_pass_through(tmp_path):
    text = Node.text_node("the same words in both of these two documents " * 5)
    a = Document(doc_id="a", url="http://x/a", nodes=[text])
    b = Document(doc_id="b", url="http://x/b", nodes=[text]).dropped("too_short")
    c = Document(doc_id="c", url="http://x/c", nodes=[Node.image_node("http://x/i.png")])
    d = Document(doc_id="d", url="http://x/d", nodes=[Node.text_node("THE same words in both of these two "
                                                                     "documents. " * 5)])
    docs, funnel = _run(lambda: DedupDocuments(), [a, b, c, d], out_dir=tmp_path)
    got = {x.doc_id: (x.status, x.reason, x.meta.get("dedup_cluster")) for x in docs}
    survivor = "d" if len(d.text()) > len(a.text()) else "a"
    assert got["b"] == ("dropped", "too_short", None)
    assert got["c"] == ("kept", None, None)
    assert got[survivor] == ("kept", None, survivor)
    assert got[({"a", "d"} - {survivor}).pop()] == ("dropped", "exact_duplicate", survivor)
    assert funnel["dedup"]["documents"] == {"in": 3, "out": 2, "dropped": {"exact_duplicate": 1},
                                            "info": {"no_text": 1}}


def test_connected_components_on_long_chains_and_stars(tmp_path):
    rng = random.Random(5)
    ids = [f"n{rng.getrandbits(40):012x}" for _ in range(330)]
    chain, star, pair, lone = ids[:256], ids[256:300], ids[300:302], ids[302:]
    edges = [(chain[i], chain[i + 1]) for i in range(len(chain) - 1)]
    edges += [(star[0], s) for s in star[1:]] + [tuple(pair)]
    edges += [(lone[i], lone[i + 1]) for i in range(0, 28, 2)]
    rng.shuffle(edges)

    def components(max_rounds):
        p = create_pipeline(pipeline_options())
        labels = p | beam.Create(edges) | ConnectedComponents(max_rounds=max_rounds, stage="cc", unit="nodes")
        labels | WriteShards(str(tmp_path / f"r{max_rounds}"), _labels_table, lambda kv: kv[0], 1)
        run = p.run()
        run.wait_until_finish()
        table = open_shards(str(tmp_path / f"r{max_rounds}")).read().to_pylist()
        return {r["doc_id"]: r["url"] for r in table}, funnel_from(run)["cc"]["nodes"]["info"]

    labels, info = components(10)
    for group in (chain, star, pair) + tuple(lone[i:i + 2] for i in range(0, 28, 2)):
        assert {labels[n] for n in group} == {min(group)}
    assert "cc_unconverged" not in info  # a chain of 256 converges within 10 rounds
    labels, info = components(2)
    assert info["cc_unconverged"] > 0  # too few rounds for that chain: counted, not hidden


def _labels_table(rows):
    # (node, label) pairs through the documents schema: doc_id = node, url = label
    return documents_to_table([Document(doc_id=n, url=label) for n, label in rows])


# ---------------------------------------------------------------- repeated paragraphs


def test_paragraphs_repeated_within_a_domain_are_dropped(tmp_path):
    banner = "We use cookies to improve your experience. Accept all cookies?"

    def page(url, *texts):
        nodes = [Node.text_node(t) for t in texts]
        return Document(doc_id=make_doc_id(url, nodes), url=url, nodes=nodes)

    docs = [
        page("https://www.news.example/1", "First story about the harbour.", banner, "Menu Home About"),
        page("https://news.example/2", "Second story, the mountains.", banner.upper(), "Menu Home About"),
        page("https://news.example/3", "Third story, the river.", "A paragraph only here."),
        page("https://other.example/1", "Another site entirely.", banner),  # once in its domain: kept
        page("https://news.example/4", "Fourth story.", banner).dropped("too_short"),  # not counted
    ]
    out, funnel = _run(lambda: RemoveRepeatedParagraphs(ParagraphDedupConfig(max_documents=1)), docs,
                       out_dir=tmp_path)
    by_url = {d.url: d for d in out}
    for url in ("https://www.news.example/1", "https://news.example/2"):
        assert [(n.status, n.reason) for n in by_url[url].nodes] == [
            ("kept", None), ("dropped", "repeated_paragraph"), ("dropped", "repeated_paragraph")]
    assert all(n.kept for n in by_url["https://news.example/3"].nodes)
    assert all(n.kept for n in by_url["https://other.example/1"].nodes)
    assert by_url["https://news.example/4"].nodes[1].kept  # upstream-dropped documents are left alone
    assert funnel["dedup"]["nodes"] == {"in": 10, "out": 6, "dropped": {"repeated_paragraph": 4}}

    out, funnel = _run(lambda: RemoveRepeatedParagraphs(ParagraphDedupConfig(max_documents=2)), docs,
                       out_dir=tmp_path / "k2")
    assert funnel["dedup"]["nodes"] == {"in": 10, "out": 10, "dropped": {}}


# ---------------------------------------------------------------- images


def _encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _record(data: bytes, url: str) -> ImageRecord:
    with Image.open(io.BytesIO(data)) as im:
        w, h, fmt = im.width, im.height, (im.format or "").lower()
    return ImageRecord(sha256=sha256(data).hexdigest(), urls=[url], width=w, height=h, format=fmt, data=data,
                       source="fetch")


def _copies(data: bytes) -> dict[str, bytes]:
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    dx, dy = max(1, round(w * 0.005)), max(1, round(h * 0.005))
    return {"jpeg": _encode(rgb, "JPEG", quality=70), "half": _encode(rgb.resize((w // 2, h // 2)), "PNG"),
            "crop": _encode(rgb.crop((dx, dy, w - dx, h - dy)), "PNG")}


@pytest.fixture(scope="module")
def image_corpus():
    photos = {p: (PHOTO_DIR / p).read_bytes() for p in ("coins.png", "moon.png", "rocket.jpg", "horse.png",
                                                         "clock_motion.png", "hopper.jpg", "flower.jpg")}
    rec = {name: _record(data, f"https://img.example/{name}") for name, data in photos.items()}
    copies = {(name, kind): _record(data, f"https://mirror.example/{kind}/{name}")
              for name in ("coins.png", "rocket.jpg") for kind, data in _copies(photos[name]).items()}
    # the same bytes served from a second URL: an exact duplicate record
    coins_again = replace(rec["coins.png"], urls=["https://cdn.example/coins.png"])
    broken = ImageRecord(sha256=sha256(b"garbage").hexdigest(), urls=["https://img.example/broken.png"],
                         data=b"garbage", format="png")
    failed = ImageRecord(sha256=None, urls=["https://img.example/404.png"], status="http_4xx", error="404")
    records = list(rec.values()) + list(copies.values()) + [coins_again, broken, failed]

    day = lambda d: datetime(2024, 1, d, tzinfo=timezone.utc)
    n = [0]

    def doc(*images, date=1, text=True):
        n[0] += 1
        url = f"https://site.example/{n[0]}"
        nodes = ([Node.text_node(f"unique text of page {n[0]}")] if text else []) + [
            replace(Node.image_node(f"https://img.example/x{n[0]}-{i}"), image_sha256=r.sha256)
            for i, r in enumerate(images)]
        return Document(doc_id=f"d{n[0]:03d}", url=url, nodes=nodes, crawl_date=day(date))

    docs = {
        # coins and its copies, used by 3 + 2 + 2 + 3 = 10 documents in all: at the cap, kept
        "coins": [doc(rec["coins.png"]) for _ in range(3)]
        + [doc(copies["coins.png", k]) for k in ("jpeg", "jpeg", "half", "half", "crop", "crop", "crop")],
        # horse alone in 11 documents: a logo, over the cap
        "logo": [doc(rec["horse.png"]) for _ in range(11)],
        # rocket by 6 and its copies by 5 more: 11 once the copies are mapped to it
        "rocket": [doc(rec["rocket.jpg"]) for _ in range(6)] + [doc(copies["rocket.jpg", k]) for k in
                                                                 ("jpeg", "half", "crop", "jpeg", "half")],
        # the same set {moon, clock} three times, the latest crawl keeps it; and a superset of it
        "sets": [doc(rec["moon.png"], rec["clock_motion.png"], date=d) for d in (1, 3, 2)]
        + [doc(rec["clock_motion.png"], rec["moon.png"], rec["hopper.jpg"], date=1)],
        "broken": [doc(broken)],
        "unresolved": [doc(ImageRecord(sha256="f" * 64, urls=[]))],
        "dropped": [doc(rec["moon.png"]).dropped("too_short")],
    }
    return rec, copies, records, docs


def test_image_dedup_on_real_photos(image_corpus, tmp_path):
    rec, copies, records, docs = image_corpus
    all_docs = [d for group in docs.values() for d in group]
    (out_docs, out_images), funnel = _run(lambda: DedupImages(ImageDedupConfig()), (all_docs, records),
                                          out_dir=tmp_path, images=True)
    by_id = {d.doc_id: d for d in out_docs}
    store = {r.sha256: r for r in out_images}

    # near duplicates: one representative (the largest, then the smallest sha256: the original or its
    # same-size JPEG re-encoding) stays in the store with the URLs of all copies, exact ones included
    group = [rec["coins.png"]] + [copies["coins.png", k] for k in ("jpeg", "half", "crop")]
    rep = min(group, key=lambda r: (-r.width * r.height, r.sha256)).sha256
    assert [r.sha256 for r in group if r.sha256 in store] == [rep]
    coins = store[rep]
    assert set(coins.urls) == {u for r in group for u in r.urls} | {"https://cdn.example/coins.png"}
    # every coins document is kept and points at the representative
    for d in docs["coins"]:
        (node,) = by_id[d.doc_id].image_nodes
        assert node.kept and node.image_sha256 == rep
    # different photos stay different
    for name in ("moon.png", "clock_motion.png", "hopper.jpg", "flower.jpg"):
        assert store[rec[name].sha256].status == "ok"
    # too frequent: the logo and the rocket (counted over its near duplicates) leave store and documents
    for group, name in (("logo", "horse.png"), ("rocket", "rocket.jpg")):
        assert rec[name].sha256 not in store
        for d in docs[group]:
            (node,) = by_id[d.doc_id].image_nodes
            assert (node.status, node.reason) == ("dropped", "image_too_frequent")
            assert by_id[d.doc_id].kept and by_id[d.doc_id].text_nodes[0].kept
    # the same image set: the latest crawl keeps its images, the others lose them (not their text)
    s = [by_id[d.doc_id] for d in docs["sets"]]
    assert [n.kept for n in s[1].image_nodes] == [True, True]
    for d in (s[0], s[2]):
        assert [n.reason for n in d.image_nodes] == ["duplicate_image_set"] * 2 and d.text_nodes[0].kept
    assert all(n.kept for n in s[3].image_nodes)  # a superset is another set
    # undecodable bytes: a row with status decode_error, the node dropped
    assert coins.phash and coins.data
    broken = next(r for r in out_images if r.urls == ["https://img.example/broken.png"])
    assert broken.status == "decode_error" and "cannot decode" in broken.error
    assert by_id[docs["broken"][0].doc_id].image_nodes[0].reason == "image_decode_error"
    # passed through untouched: failed fetches, nodes of images not in the store, dropped documents
    assert any(r.status == "http_4xx" for r in out_images)
    assert by_id[docs["unresolved"][0].doc_id].image_nodes[0].kept
    assert by_id[docs["dropped"][0].doc_id] == docs["dropped"][0]

    assert unreconciled(funnel) == []
    f = funnel["dedup"]
    assert f["images"]["in"] == 7 + 6 + 2  # photos, copies, second coins URL, broken
    assert f["images"]["dropped"] == {"decode_error": 1, "exact_duplicate": 1, "near_duplicate": 6,
                                      "too_frequent": 2}
    assert f["images"]["out"] == 5
    assert f["nodes"]["dropped"] == {"duplicate_image_set": 4, "image_decode_error": 1,
                                     "image_too_frequent": 22}
    # the coins nodes not already on the representative (the rocket copies' nodes were dropped instead)
    assert f["nodes"]["info"]["repointed"] == sum(d.image_nodes[0].image_sha256 != rep for d in docs["coins"])


def test_image_dedup_is_identical_across_worker_counts(image_corpus, tmp_path):
    _, _, records, docs = image_corpus
    all_docs = [d for group in docs.values() for d in group]
    _run(lambda: DedupImages(), (all_docs, records), out_dir=tmp_path / "one", images=True)
    _run(lambda: DedupImages(), (list(reversed(all_docs)), list(reversed(records))), TWO_WORKERS,
         out_dir=tmp_path / "two", images=True)
    for sub in ("docs", "images"):
        assert _shard_bytes(tmp_path / "one" / sub) == _shard_bytes(tmp_path / "two" / sub)


def test_large_buckets_are_linked_as_stars(image_corpus, tmp_path):
    """Buckets over the pair limit (a template on thousands of pages, one image on thousands of sites) are
    linked around their smallest node instead of pairwise: the same clusters here."""
    corpus = Corpus(seed=7)
    base = corpus.words(300)
    cluster = [corpus.doc(base)] + [corpus.doc(corpus.edit(base, 1)) for _ in range(11)]
    config = DocumentDedupConfig(bucket_pair_limit=4)
    docs, funnel = _run(lambda: DedupDocuments(config), cluster, out_dir=tmp_path / "text")
    assert sum(d.kept for d in docs) == 1 and len({d.meta["dedup_cluster"] for d in docs}) == 1
    assert funnel["dedup"]["documents"]["info"]["lsh_bucket_capped"] > 0

    rec, copies, _, _ = image_corpus
    group = [rec["coins.png"]] + [copies["coins.png", k] for k in ("jpeg", "half", "crop")]
    (_, images), funnel = _run(lambda: DedupImages(ImageDedupConfig(bucket_pair_limit=2)), ([], group),
                               out_dir=tmp_path / "images", images=True)
    assert len(images) == 1 and funnel["dedup"]["images"]["dropped"] == {"near_duplicate": 3}
    assert funnel["dedup"]["images"]["info"]["phash_bucket_capped"] > 0


def test_no_step_gathers_the_collection():
    """Structural check of the claim that nothing is collected into one worker: every grouping in the three
    transforms is a keyed GroupByKey (or CoGroupByKey), and no step takes a side input or combines
    globally."""
    p = create_pipeline(pipeline_options())
    docs = p | "Docs" >> beam.Create([])
    images = p | "Images" >> beam.Create([])
    deduped = docs | DedupDocuments() | RemoveRepeatedParagraphs()
    _ = {"documents": deduped, "images": images} | DedupImages()

    class Visitor(beam.pipeline.PipelineVisitor):
        groupings, offenders = 0, []

        def visit_transform(self, node):
            if isinstance(node.transform, beam.GroupByKey):
                Visitor.groupings += 1
            if node.side_inputs or isinstance(node.transform, beam.CombineGlobally):
                Visitor.offenders.append(node.full_label)

        def enter_composite_transform(self, node):
            self.visit_transform(node)

    p.visit(Visitor())
    assert Visitor.offenders == [] and Visitor.groupings > 50
