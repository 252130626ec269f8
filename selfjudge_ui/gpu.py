"""Running model work on a Hugging Face ZeroGPU Space when there is one, on the local device otherwise.

On ZeroGPU a GPU is attached only inside functions decorated with `spaces.GPU`, for as
long as the duration the decorator asks for; each handler says how long it needs from
its own arguments. Without the `spaces` package the function runs as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import spaces
except ImportError:  # not on a Space: run on whatever core.loading picked (CUDA or CPU)
    spaces = None


def on_gpu(fn: Callable[..., Any], duration: Callable[..., int]) -> Callable[..., Any]:
    """`fn` wrapped in spaces.GPU(duration=duration) where `spaces` is importable, else `fn` itself."""
    if spaces is None:
        return fn
    # ZeroGPU calls duration with the same arguments as fn, so it can size the request.
    return spaces.GPU(duration=duration)(fn)


def gpu_available() -> bool:
    """Whether this process runs under ZeroGPU (the model should then go to CUDA at import time)."""
    return spaces is not None
