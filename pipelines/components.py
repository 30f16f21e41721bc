"""Connected components of a graph given as a PCollection of edges, as a bounded loop of Beam steps
(large-star and small-star rounds). Used by the deduplication stages to turn duplicate pairs into clusters.
"""

from __future__ import annotations

import logging

import apache_beam as beam

from interleaf.pipelines.common import CountingDoFn
from interleaf.pipelines.dedup_common import STAGE

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- connected components

class ConnectedComponents(beam.PTransform):
    """Edges (u, v) between string node ids -> (node, label) for every node of an edge, where label is the
    smallest node id of the node's connected component.

    The alternating algorithm of Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC
    2014), as a bounded loop of Beam steps: each round is a large-star step (every node links its larger
    neighbours to the smallest node of its neighbourhood) and a small-star step (every node links itself
    and its smaller neighbours to the smallest of them), one GroupByKey each. Connectivity is preserved,
    and the edges converge to one star per component around its smallest node, in O(log^2 n) rounds (a
    path of 256 nodes in random order takes 8, of 4,096 takes 11). A node holds only its neighbours, so
    the largest group is the centre of one component.

    Each round counts the edges it changed (info counter `<unit>.cc_roundNN_changed`); a round that
    changes nothing proves convergence (the edge set is then a fixed point). Edges still changing in the
    last round are counted as `<unit>.cc_unconverged` and logged: every label is still a node of the same
    component, so an unfinished run splits clusters (less dedup), it never merges different ones.
    """

    def __init__(self, *, max_rounds: int, stage: str = STAGE, unit: str = "documents"):
        super().__init__()
        self.max_rounds, self.stage, self.unit = max_rounds, stage, unit

    def expand(self, edges):
        # (smaller node, larger node), self-loops left out
        current = edges | "Orient" >> beam.FlatMap(lambda e: [(min(e), max(e))] if e[0] != e[1] else [])
        for k in range(1, self.max_rounds + 1):
            current = current | f"Round{k:02d}" >> _StarRound(k, k == self.max_rounds, self.stage, self.unit)
        # (node, neighbours) from both ends of the final edges
        final = (current | "BothEnds" >> beam.FlatMap(_both_ends)
                 | "GroupFinalNeighbours" >> beam.GroupByKey())
        # (node, smallest of itself and its neighbours): the star's centre
        return final | "Label" >> beam.Map(lambda kv: (kv[0], min(min(kv[1]), kv[0])))


def _both_ends(edge):
    return (edge[0], edge[1]), (edge[1], edge[0])


class _StarRound(beam.PTransform):
    """One large-star and one small-star step: oriented edges (u < v) in, oriented edges out."""

    def __init__(self, k: int, last: bool, stage: str, unit: str):
        super().__init__()
        self.k, self.last, self.stage, self.unit = k, last, stage, unit

    def expand(self, edges):
        # (node, all its neighbours)
        around = edges | "BothEnds" >> beam.FlatMap(_both_ends) | "GroupNeighbours" >> beam.GroupByKey()
        # (smaller node, larger node) after the large-star step
        large = around | "LargeStar" >> beam.ParDo(_StarFn(self.k, False, False, self.stage, self.unit))
        # (node, its smaller neighbours)
        below = (large | "KeyByLargerEnd" >> beam.Map(lambda e: (e[1], e[0]))
                 | "GroupSmallerNeighbours" >> beam.GroupByKey())
        # (smaller node, larger node) after the small-star step
        return below | "SmallStar" >> beam.ParDo(_StarFn(self.k, True, self.last, self.stage, self.unit))


class _StarFn(CountingDoFn):
    """Large star: (u, neighbours) -> (m, v) for each neighbour v > u, m the smallest of u and its
    neighbours. Small star: (u, smaller neighbours) -> (m, v) for u and each smaller neighbour v other than
    m, m the smallest of them. An edge is changed when it does not come out as it went in."""

    def __init__(self, k: int, small: bool, last: bool, stage: str, unit: str):
        self.k, self.small, self.last, self.stage, self.unit = k, small, last, stage, unit

    def setup(self):
        super().setup()
        self.unconverged = 0

    def start_bundle(self):
        self.unconverged = 0

    def process(self, item):
        u, neighbours = item
        nbrs = set(neighbours)
        m = min(min(nbrs), u)
        if self.small:
            changed = len(nbrs) - 1  # every smaller neighbour but m moves from u to m
            for v in sorted(nbrs | {u}):
                if v != m:
                    yield m, v
        else:
            larger = sorted(v for v in nbrs if v > u)
            changed = len(larger) if m != u else 0
            for v in larger:
                yield m, v
        if changed:
            self.funnel.inc(self.unit, f"cc_round{self.k:02d}_changed", changed)
            if self.last:
                self.funnel.inc(self.unit, "cc_unconverged", changed)
                self.unconverged += changed

    def finish_bundle(self):
        super().finish_bundle()
        if self.unconverged:
            log.warning("connected components: %d edges still changing after %d rounds (clusters may be "
                        "split); raise max_rounds", self.unconverged, self.k)
