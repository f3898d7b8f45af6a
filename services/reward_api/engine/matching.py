"""Greedy one-to-one matching of (prediction, ground truth) pairs in memory linear in the boxes.

The rule shared by weighted_sum and /v1/evaluate's precision and recall: repeatedly take the
remaining candidate pair with the highest IoU (ties: lower prediction index, then lower
ground-truth index) and retire both ends. Listing every candidate pair first costs P x G entries:
2,500 identical boxes on each side were 6.25 million tuples and over a gigabyte.

Here a heap holds every prediction's best candidate, found a block of rows at a time (one NumPy
pass per block, not per prediction). The heap's top is the best remaining pair unless its ground
truth was taken meanwhile; then that prediction's row is computed again and it keeps a short list
of its best free candidates (``_HEAD``) for the next time. Memory: O(P + G * block) besides the
few lists.

>>> rows = {0: np.array([0.9, 0.6]), 1: np.array([0.9, 0.7])}
>>> greedy_matching([0, 1], rows.__getitem__, n_gt=2, threshold=0.5)
[(0, 0, 0.9), (1, 1, 0.7)]
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["greedy_matching"]

_HEAD = 16  # candidates a prediction keeps at hand before its row is computed again
_BLOCK_CELLS = 1 << 18  # rows x ground truths computed at once for the first pass


def greedy_matching(
    preds: Sequence[int],
    row: Callable[[int], np.ndarray],
    n_gt: int,
    threshold: float,
    rows: Callable[[Sequence[int]], np.ndarray] | None = None,
) -> list[tuple[int, int, float]]:
    """``(pred, gt, iou)`` in the order the greedy rule takes them.

    ``preds``: the predictions taking part (indexes, increasing); ``row(p)``: the (n_gt,) IoU of
    prediction ``p`` with every ground truth, NaN (or anything below ``threshold``) where the pair
    is not a candidate (e.g. different labels). A pair is a candidate when its IoU >= threshold.
    ``rows(ps)``: the same for several predictions at once, a (len(ps), n_gt) array (faster).
    """
    taken = np.zeros(n_gt, dtype=bool)
    lists: dict[int, list[tuple[float, int]]] = {}
    heap: list[tuple[float, int, int]] = []

    def refill(p: int) -> None:
        values = row(p)
        with np.errstate(invalid="ignore"):
            cols = np.flatnonzero((values >= threshold) & ~taken)
        if not len(cols):
            lists.pop(p, None)
            return
        vals = values[cols]
        order = np.lexsort((cols, -vals))[:_HEAD]
        # Reversed: the best candidate is popped from the end.
        lists[p] = list(zip(vals[order].tolist(), cols[order].tolist(), strict=True))[::-1]
        push_head(p)

    def push_head(p: int) -> None:
        if p not in lists:  # only its best was known (first pass): look again
            refill(p)
            return
        pending = lists[p]
        while pending and taken[pending[-1][1]]:
            pending.pop()
        if pending:
            value, g = pending[-1]
            heapq.heappush(heap, (-value, p, g))
        else:
            refill(p)

    if rows is None:
        for p in preds:
            refill(p)
    else:
        step = max(1, _BLOCK_CELLS // max(n_gt, 1))
        for start in range(0, len(preds), step):
            block = list(preds[start : start + step])
            values = rows(block)
            with np.errstate(invalid="ignore"):
                masked = np.where(values >= threshold, values, -np.inf)
            best = masked.argmax(axis=1)  # the first maximum: ties to the lower ground truth
            top = masked[np.arange(len(block)), best]
            for k in np.flatnonzero(top > -np.inf).tolist():
                heap.append((-float(top[k]), block[k], int(best[k])))
        heapq.heapify(heap)
    matches: list[tuple[int, int, float]] = []
    limit = min(len(preds), n_gt)
    while heap and len(matches) < limit:
        negative, p, g = heapq.heappop(heap)
        if taken[g]:
            push_head(p)  # stale: p's ground truth went to a better pair meanwhile
            continue
        taken[g] = True
        lists.pop(p, None)
        matches.append((p, g, -negative))
    return matches
