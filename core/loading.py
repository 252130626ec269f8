"""Loading any transformers image-text-to-text model (hub id or local path), optionally in
4-bit NF4 through bitsandbytes and with a LoRA adapter.

The only module-level state in core/ is the cached handle kept here (`get_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

from core.config import ModelSettings, display_model_id, without_paths  # display_model_id: for the UI

# Kept in full precision under 4-bit: quantizing these hurts most and saves least. transformers 5
# matches these as regexes from the start of a module's full name, or as suffixes.
UNQUANTIZED_MODULES = [r".*vision_tower", r".*vision_model", r".*multi_modal_projector", r".*connector",
                       r".*visual", "lm_head"]


@dataclass
class LoadedModel:
    """A model with its processor and where it came from."""

    model: torch.nn.Module
    processor: object
    model_id: str
    adapter: str
    quantized: bool

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
    """'auto' means bfloat16 on CUDA and float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
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
                       quantized=settings.load_in_4bit)


def attach_adapter(model: torch.nn.Module, adapter_path: str) -> torch.nn.Module:
    """Wrap a model with a saved LoRA adapter (peft)."""
    from peft import PeftModel

    if not (Path(adapter_path) / "adapter_config.json").exists():
        raise FileNotFoundError(f"{display_model_id(adapter_path)!r} is not a LoRA adapter folder "
                                "(no adapter_config.json)")
    return PeftModel.from_pretrained(model, adapter_path)


_CACHED: tuple[ModelSettings, LoadedModel] | None = None


def get_model(settings: ModelSettings | None = None) -> LoadedModel:
    """The cached model handle: loaded on first use, reloaded when the settings change."""
    global _CACHED
    settings = settings or ModelSettings()
    if _CACHED is None or _CACHED[0] != settings:
        _CACHED = (settings, load_model(settings))
    return _CACHED[1]
