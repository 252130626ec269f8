"""Tests for core/engine/auroc.py: AUROC by hand, ties and a one-class error."""

from __future__ import annotations

import pytest

from core.engine.auroc import auroc


def test_auroc_by_hand():
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auroc([1, 1, 1, 1], [True, False, True, False]) == pytest.approx(0.5)
    assert auroc([3, 2, 1], [True, False, False]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        auroc([1, 2], [True, True])
