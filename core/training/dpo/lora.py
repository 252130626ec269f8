"""The LoRA adapter DPO trains: put a fresh seeded one on the model, and take it off again."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from core.training.dpo.settings import LANGUAGE_MODEL_TARGETS, PROJECTOR_MODULES, DPOSettings

def add_lora(model: torch.nn.Module, settings: DPOSettings) -> torch.nn.Module:
    """Wrap the model with a fresh, seeded LoRA adapter (in place; `remove_lora` takes it off)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        raise ValueError("the model already carries an adapter; train DPO from the base model "
                         "(ModelSettings(adapter=''))")
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=LANGUAGE_MODEL_TARGETS, bias="none",
                        modules_to_save=PROJECTOR_MODULES if settings.train_projector else None)
    torch.manual_seed(settings.seed)
    peft_model = get_peft_model(model, config)
    if settings.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input gradients, so frozen 4-bit bases work as they are.
        peft_model.base_model.model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    return peft_model


def remove_lora(peft_model: torch.nn.Module) -> torch.nn.Module:
    """Take the adapter off again and return the base model with its original modules (projector included)."""
    from peft.utils import ModulesToSaveWrapper

    inner = peft_model.base_model.model
    # peft's unload() would keep the *trained* copy of a modules_to_save module; put the original back.
    for name, module in list(inner.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(inner.get_submodule(parent), child, module.original_module)
    base = peft_model.unload()
    if base.is_activation_checkpointing:
        base.activation_checkpointing_disable()
    return base


@contextlib.contextmanager
def lora_attached(model: torch.nn.Module, settings: DPOSettings) -> Iterator[torch.nn.Module]:
    """A fresh seeded LoRA adapter on `model` inside the block; afterwards the model is as it was."""
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    peft_model = add_lora(model, settings)
    try:
        yield peft_model
    finally:
        base = remove_lora(peft_model)
        for name, parameter in base.named_parameters():
            parameter.requires_grad_(requires_grad[name])
        base.train(was_training)
