"""Tests for selfjudge_ui/gpu.py: ZeroGPU recognised from SPACES_ZERO_GPU (as `spaces` does), not from importability."""

from __future__ import annotations

import sys
import types

import pytest

from selfjudge_ui import gpu


def _score(image, n):
    return f"scored {n}"


@pytest.mark.parametrize("value,expected", [("true", True), ("True", True), ("1", True), ("t", True),
                                            ("false", False), ("0", False), ("", False), ("yes", False)])
def test_zero_gpu_reads_the_variable_the_spaces_package_reads(value, expected):
    assert gpu.zero_gpu({"SPACES_ZERO_GPU": value}) is expected


def test_an_importable_spaces_package_is_not_zero_gpu(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=lambda **kw: pytest.fail("wrapped")))
    assert gpu.on_gpu(_score, lambda *a, **kw: 10) is _score
    assert gpu.gpu_available() is False


def test_on_zero_gpu_the_function_is_wrapped_with_its_duration(monkeypatch):
    calls = []

    def fake_gpu(duration):
        def wrap(fn):
            def run(*args, **kwargs):
                calls.append(duration(*args, **kwargs))
                return fn(*args, **kwargs)
            return run
        return wrap

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))
    wrapped = gpu.on_gpu(_score, lambda image, n: 20 + 6 * n)
    assert wrapped("img", 4) == "scored 4"
    assert calls == [44]
    assert gpu.gpu_available() is True


def test_zero_gpu_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces raises ImportError
    with pytest.raises(RuntimeError, match="install requirements.txt"):
        gpu.on_gpu(_score, lambda *a, **kw: 10)
