"""Tests for selfjudge_ui/gpu.py: spaces.GPU where the package exists, the plain function elsewhere."""

from __future__ import annotations

import types

from selfjudge_ui import gpu


def _score(image, n):
    return f"scored {n}"


def test_without_spaces_the_function_is_returned_as_is(monkeypatch):
    monkeypatch.setattr(gpu, "spaces", None)
    assert gpu.on_gpu(_score, lambda *a, **kw: 10) is _score
    assert gpu.gpu_available() is False


def test_with_spaces_the_function_is_wrapped_with_its_duration(monkeypatch):
    calls = []

    def fake_gpu(duration):
        def wrap(fn):
            def run(*args, **kwargs):
                calls.append(duration(*args, **kwargs))
                return fn(*args, **kwargs)
            return run
        return wrap

    monkeypatch.setattr(gpu, "spaces", types.SimpleNamespace(GPU=fake_gpu))
    wrapped = gpu.on_gpu(_score, lambda image, n: 20 + 6 * n)
    assert wrapped("img", 4) == "scored 4"
    assert calls == [44]
    assert gpu.gpu_available() is True
