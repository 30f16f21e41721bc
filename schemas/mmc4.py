"""MMC4 documents to and from Document.

An MMC4 document (allenai/mmc4) is a list of sentences (`text_list`) and images that are not inline but
attached to a sentence (`image_info[i].matched_text_index`, found by linear assignment on a CLIP similarity
matrix). As a Document each image node is placed just before its matched sentence (the convention of
OpenFlamingo's MMC4 loader), with `matched_sim` as its clip_score. The similarity matrix and the other
fields are kept in `Document.meta["mmc4"]` and written back on the way out.
"""

from __future__ import annotations

import math

from interleaf.schemas.document import Document, Node, make_doc_id


def from_mmc4(doc: dict, *, source_file: str | None = None, row_number: int | None = None) -> Document:
    """One MMC4 document to a Document. Raises ValueError for a document that is not in the format."""
    sentences, images = doc.get("text_list"), doc.get("image_info") or []
    url = doc.get("url")
    if not isinstance(sentences, list) or not url:
        raise ValueError("MMC4 document needs 'url' and a 'text_list' list")
    if not isinstance(url, str) or not isinstance(images, list):
        raise ValueError(f"MMC4 url must be a string and image_info a list, found {type(url).__name__} and "
                         f"{type(images).__name__}")
    matrix = doc.get("similarity_matrix")
    if matrix is not None and not (isinstance(matrix, list) and all(
            isinstance(r, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                        and math.isfinite(v) for v in r) for r in matrix)):
        raise ValueError("MMC4 similarity_matrix must be a list of lists of finite numbers")
    if doc.get("could_have_url_duplicate") not in (None, 0, 1, True, False):
        raise ValueError("MMC4 could_have_url_duplicate must be 0, 1 or a boolean, found "
                         f"{doc['could_have_url_duplicate']!r}"[:200])
    by_sentence: dict[int, list[dict]] = {}
    for i, info in enumerate(images):
        if not isinstance(info, dict):
            raise ValueError(f"MMC4 image_info[{i}] must be an object, found {type(info).__name__}")
        if not info.get("raw_url"):
            raise ValueError(f"MMC4 image {i} has no raw_url")
        if not isinstance(info["raw_url"], str):
            raise ValueError(f"MMC4 image_info[{i}].raw_url must be a string, found "
                             f"{type(info['raw_url']).__name__}")
        sim = info.get("matched_sim")
        if sim is not None and (isinstance(sim, bool) or not isinstance(sim, (int, float))
                                or not math.isfinite(sim)):
            raise ValueError(f"MMC4 image_info[{i}].matched_sim must be a finite number, found {sim!r}"[:200])
        idx = info.get("matched_text_index")
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(sentences):
            raise ValueError(f"MMC4 image {i} matched_text_index {idx!r} outside 0..{len(sentences) - 1}")
        by_sentence.setdefault(idx, []).append(info)

    nodes, image_meta = [], {}
    for s, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise ValueError(f"MMC4 text_list[{s}] must be a string, found {type(sentence).__name__}")
        for info in by_sentence.get(s, []):
            node = Node.image_node(info["raw_url"])
            node.clip_score = info.get("matched_sim")
            nodes.append(node)
            image_meta[info["raw_url"]] = {k: v for k, v in info.items()
                                           if k not in ("raw_url", "matched_text_index", "matched_sim")}
        nodes.append(Node.text_node(sentence))

    meta = {"mmc4": {k: v for k, v in doc.items() if k not in ("text_list", "image_info", "url")}}
    meta["mmc4"]["image_metadata"] = image_meta
    meta["mmc4"]["image_order"] = [info["raw_url"] for info in images]  # the rows of similarity_matrix
    return Document(doc_id=make_doc_id(url, nodes), url=url, source_file=source_file,
                    source_offset=row_number, nodes=nodes, meta=meta)


def to_mmc4(doc: Document, *, kept_only: bool = True) -> dict:
    """A Document to an MMC4 document: each image matched to the sentence that follows it (the last one when
    an image ends the document). Images keep their original order; the stored similarity matrix is written
    back only while the document still has exactly its original images and as many sentences."""
    nodes = [n for n in doc.nodes if n.kept] if kept_only else list(doc.nodes)
    saved = dict(doc.meta.get("mmc4", {}))
    image_meta = saved.pop("image_metadata", {})
    text_list: list[str] = []
    pending: list = []
    placed: list[tuple] = []
    for n in nodes:
        if n.is_image:
            pending.append(n)
        else:
            placed += [(img, len(text_list)) for img in pending]
            pending = []
            text_list.append(n.text)
    placed += [(img, max(len(text_list) - 1, 0)) for img in pending]
    order = saved.pop("image_order", [])
    rank = {u: i for i, u in enumerate(order)}
    placed.sort(key=lambda p: rank.get(p[0].image_url, len(rank)))  # the original image order first
    image_info = []
    for img, idx in placed:
        info = dict(image_meta.get(img.image_url, {}))
        info.update(raw_url=img.image_url, matched_text_index=idx, matched_sim=img.clip_score)
        image_info.append(info)
    out = {"url": doc.url, "text_list": text_list, "image_info": image_info}
    sim = saved.pop("similarity_matrix", None)
    if (sim is not None and [i["raw_url"] for i in image_info] == order
            and all(len(r) == len(text_list) for r in sim)):
        out["similarity_matrix"] = sim
    out.update(saved)
    return out
