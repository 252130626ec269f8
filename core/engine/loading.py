"""Loading any transformers image-text-to-text model (hub id or local path), optionally in
4-bit NF4 through bitsandbytes and with a LoRA adapter.

The only module-level state in core/ is kept here: the cached handle (`get_model`) and the one
lock (`MODEL_LOCK`) that serializes all work on a model. Concurrent requests (Score, Decode,
Compare, Self-curate in the studio) must not interleave on one model: Qwen2-VL keeps its
rope_deltas on the module and generation reseeds the global RNG, so interleaved calls would
silently change each other's numbers. Saved LoRA adapters are switched on the one copy of
the base weights (`adapter_in_use`), never loaded as a second model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

from core.config import ModelSettings, display_model_id, without_paths  # display_model_id: for the UI

# Kept in full precision under 4-bit: quantizing these hurts most and saves least. transformers 5
# matches these as regexes from the start of a module's full name, or as suffixes.
UNQUANTIZED_MODULES = [r".*vision_tower", r".*vision_model", r".*multi_modal_projector", r".*connector",
                       r".*visual", "lm_head"]
# Held by every forward pass and generation call (core.engine.forward, core.engine.generation) and around an
# adapter switch; re-entrant, so a caller may hold it across several of them.
MODEL_LOCK = threading.RLock()


def serialized(function):
    """Decorate a function that runs a model so that it holds MODEL_LOCK while it runs."""
    @functools.wraps(function)
    def holding_the_lock(*args, **kwargs):
        with MODEL_LOCK:
            return function(*args, **kwargs)
    return holding_the_lock


@dataclass
class LoadedModel:
    """A model with its processor and where it came from."""

    model: torch.nn.Module
    processor: object
    model_id: str
    adapter: str
    quantized: bool
    # Adapters switched on by `adapter_in_use`: the peft wrapper (None until the first one) and,
    # per adapter folder, its peft name and the weights file's modification time when loaded.
    switchable: object | None = field(default=None, repr=False, compare=False)
    adapter_names: dict[str, tuple[str, int]] = field(default_factory=dict, repr=False, compare=False)
    memory_budget: int = 0  # bytes of KV cache a scoring pass may hold; 0 = per device (core.engine.forward)

    @property
    def device(self) -> torch.device:
        """Where the model's inputs must go."""
        return next(self.model.parameters()).device


def resolve_device(device: str) -> str:
    """'auto' means CUDA where present, else CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("SELFJUDGE_DEVICE=cuda but no CUDA device is visible; use cpu or auto")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """'auto' means bfloat16 on a CUDA card that supports it, float16 on one that does not (T4), float32 on CPU."""
    if device == "cuda" and dtype in ("auto", "bfloat16"):
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if dtype == "bfloat16":
            raise RuntimeError(f"SELFJUDGE_DTYPE=bfloat16 but {torch.cuda.get_device_name()} has no bfloat16 support; "
                               "use float16 or auto")
        return torch.float16
    if dtype == "auto":
        return torch.float32
    return getattr(torch, dtype)


def quantization_config(compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """NF4 with double quantization; vision tower, projector and lm_head stay unquantized."""
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=UNQUANTIZED_MODULES)


def load_model(settings: ModelSettings) -> LoadedModel:
    """Load model and processor as the settings say (4-bit and adapter optional)."""
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    kwargs: dict = {"dtype": dtype}
    if settings.load_in_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("4-bit loading needs bitsandbytes >= 0.47: pip install bitsandbytes") from exc
        kwargs["quantization_config"] = quantization_config(dtype)
        kwargs["device_map"] = {"": device if device == "cpu" else 0}
    try:
        processor = AutoProcessor.from_pretrained(settings.model)
        model = AutoModelForImageTextToText.from_pretrained(settings.model, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise RuntimeError(f"could not load {display_model_id(settings.model)!r} as an image-text-to-text model "
                           f"(AutoModelForImageTextToText + AutoProcessor): {without_paths(str(exc))}") from exc
    if not settings.load_in_4bit:
        model = model.to(device)
    if getattr(processor, "chat_template", None) is None:
        raise RuntimeError(f"{display_model_id(settings.model)!r} has no chat template in its processor; the judge "
                           "builds every prompt with it. Add a chat_template to the processor config.")
    adapter = ""
    if settings.adapter:
        model = attach_adapter(model, settings.adapter)
        adapter = settings.adapter
    model.eval()
    return LoadedModel(model=model, processor=processor, model_id=settings.model, adapter=adapter,
                       quantized=settings.load_in_4bit, memory_budget=settings.memory_budget_mib * 1024**2)


def attach_adapter(model: torch.nn.Module, adapter_path: str) -> torch.nn.Module:
    """Wrap a model with a saved LoRA adapter (peft)."""
    from peft import PeftModel

    if not (Path(adapter_path) / "adapter_config.json").exists():
        raise FileNotFoundError(f"{display_model_id(adapter_path)!r} is not a LoRA adapter folder "
                                "(no adapter_config.json)")
    return PeftModel.from_pretrained(model, adapter_path)


def _weights_time(adapter_path: Path) -> int:
    weights = adapter_path / "adapter_model.safetensors"
    return (weights if weights.exists() else adapter_path / "adapter_config.json").stat().st_mtime_ns


def _switchable(loaded: LoadedModel, adapter_path: str):
    """The peft model over the loaded weights with this adapter loaded into it (once); None for the bare base."""
    from peft import PeftModel

    peft_model = loaded.model if isinstance(loaded.model, PeftModel) else loaded.switchable
    if not adapter_path:
        return peft_model
    path = Path(adapter_path).resolve()
    if not (path / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter_path!r} is not a LoRA adapter folder (no adapter_config.json)")
    key, stamp = str(path), _weights_time(path)
    known = loaded.adapter_names.get(key)
    if known is not None and known[1] == stamp:
        return peft_model
    name = "adapter_" + hashlib.sha256(f"{key}:{stamp}".encode()).hexdigest()[:12]
    if peft_model is None:
        # Injects the adapter's layers into the loaded model in place: no copy of the base weights.
        peft_model = loaded.switchable = PeftModel.from_pretrained(loaded.model, str(path), adapter_name=name)
        peft_model.base_model.disable_adapter_layers()  # at rest the bare base answers
    else:
        peft_model.load_adapter(str(path), adapter_name=name)
    if known is not None:  # the folder was trained again since: drop the stale weights
        peft_model.delete_adapter(known[0])
    loaded.adapter_names[key] = (name, stamp)
    peft_model.eval()
    return peft_model


@contextlib.contextmanager
def adapter_in_use(loaded: LoadedModel, adapter_path: str) -> Iterator[LoadedModel]:
    """The loaded model with this saved LoRA adapter switched on ('' = the bare base) inside the block.

    One copy of the base weights: each adapter folder is loaded into the model once (peft's
    load_adapter) and switched with set_adapter, and the base is the model with its adapters
    disabled. The block holds MODEL_LOCK; afterwards the model answers as before it.
    """
    with MODEL_LOCK:
        peft_model = _switchable(loaded, adapter_path)
        if peft_model is None:  # no adapter loaded anywhere: the model is the bare base already
            yield loaded
            return
        original = peft_model.active_adapter
        name = loaded.adapter_names[str(Path(adapter_path).resolve())][0] if adapter_path else None
        try:
            if name is None:
                peft_model.base_model.disable_adapter_layers()
            else:
                peft_model.set_adapter(name, inference_mode=True)
                peft_model.base_model.enable_adapter_layers()
            yield dataclasses.replace(loaded, adapter=adapter_path)
        finally:
            peft_model.set_adapter(original, inference_mode=True)
            if loaded.adapter:  # loaded with an adapter (settings.adapter): that one answers at rest
                peft_model.base_model.enable_adapter_layers()
            else:
                peft_model.base_model.disable_adapter_layers()


_CACHED: tuple[ModelSettings, LoadedModel] | None = None


def get_model(settings: ModelSettings | None = None) -> LoadedModel:
    """The cached model handle: loaded on first use, reloaded when the settings change."""
    global _CACHED
    settings = settings or ModelSettings()
    with MODEL_LOCK:  # a reload waits for the work running on the old model
        if _CACHED is None or _CACHED[0] != settings:
            _CACHED = None  # let the old model go before the new one loads
            _CACHED = (settings, load_model(settings))
        return _CACHED[1]
