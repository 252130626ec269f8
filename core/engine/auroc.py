"""AUROC: how well a score separates positives from negatives (the judge's and the safety check's measure)."""

from __future__ import annotations


def auroc(scores: list[float], labels: list[bool]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count half."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        raise ValueError("AUROC needs at least one positive and one negative")
    # Rank-based (Mann-Whitney U) so it is exact and O(n log n).
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
