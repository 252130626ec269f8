"""Running model work on a Hugging Face ZeroGPU Space when this is one, on the local device otherwise.

ZeroGPU is recognised the way the `spaces` package itself decides (spaces/config.py): the
environment variable SPACES_ZERO_GPU is 1, t or true (any case). Being able to import
`spaces` says nothing: requirements.txt installs it on every Linux machine, and there
`spaces.GPU` is a no-op anyway.

On ZeroGPU a GPU is attached only inside functions decorated with `spaces.GPU`, for as long
as the duration the decorator asks for; each handler says how long it needs from its own
arguments. The decorated function runs in a forked worker process: it must compute and
return, never write through a connection (SQLite) that the main process opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

ZERO_GPU_ENV = "SPACES_ZERO_GPU"
_TRUE = ("1", "t", "true")  # the spellings spaces.config.boolean accepts


def zero_gpu(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process runs on a ZeroGPU Space (SPACES_ZERO_GPU=1/t/true, as `spaces` reads it)."""
    return environ.get(ZERO_GPU_ENV, "").strip().lower() in _TRUE


def _spaces():
    try:
        import spaces
    except ImportError as error:
        raise RuntimeError(f"{ZERO_GPU_ENV} says this is a ZeroGPU Space but the `spaces` package is missing; "
                           "install requirements.txt (it lists spaces)") from error
    return spaces


def on_gpu(fn: Callable[..., Any], duration: Callable[..., int]) -> Callable[..., Any]:
    """`fn` wrapped in spaces.GPU(duration=duration) on ZeroGPU, else `fn` itself."""
    if not zero_gpu():
        return fn
    # ZeroGPU calls duration with the same arguments as fn, so it can size the request.
    return _spaces().GPU(duration=duration)(fn)


def gpu_available() -> bool:
    """Whether this process runs under ZeroGPU; if so `spaces` is imported now, before any CUDA use.

    `spaces` patches torch at import so the model can be moved to CUDA at import time (app.py).
    """
    if not zero_gpu():
        return False
    _spaces()
    return True
