"""Benchmark LoRA-DPO (QLoRA) memory and speed on a LLaVA-1.5-7B-shaped model.

With CUDA: builds LLaVA-1.5-7B's architecture (CLIP ViT-L/14-336 + Llama-2-7B) with random
weights, loads it in 4-bit NF4 through core.engine.loading (exactly as a hub model would be),
warms up on one batch, then runs one DPO epoch of 32 pairs with core.training.dpo.loop.train_dpo and reports
pairs per second and peak GPU memory (torch.cuda.max_memory_allocated over the timed epoch,
the 4-bit weights included). Goals (issue 12): peak <= 12 GiB, >= 2 pairs per second.
Without CUDA: runs the same pipeline on a tiny config (4-bit on CPU) and says CUDA is absent.

Run:  python -m bench.bench_dpo [--pairs 32 --batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from core.config import ModelSettings
from core.engine.loading import load_model
from core.engine.prompts import DESCRIBE_QUESTION
from core.shapes.embedded import IMAGE_TOKEN, EmbeddedConfig, build_processor, build_tokenizer
from core.shapes.texts import describe_sentences, false_sentence, mention_order
from core.shapes.world import make_scene, render
from core.training.dpo.loop import train_dpo
from core.training.dpo.settings import DPOSettings, PreferenceExample

PEAK_GOAL_GIB = 12.0
PAIRS_PER_SECOND_GOAL = 2.0


def llava_7b_config(image_token_id: int, pad_token_id: int) -> LlavaConfig:
    """llava-hf/llava-1.5-7b-hf's architecture: CLIP ViT-L/14 at 336 px, Llama-2-7B, 576 image tokens."""
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                       rms_norm_eps=1e-5, pad_token_id=pad_token_id, tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                       vision_feature_layer=-2, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=576)


def tiny_config(image_token_id: int, pad_token_id: int, vocab_size: int) -> LlavaConfig:
    """A few-layer stand-in with the same structure, for machines without CUDA."""
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              image_size=96, patch_size=12, projection_dim=64)
    text = LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                       pad_token_id=pad_token_id, tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                       vision_feature_layer=-1, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=64)


def save_random_model(folder: Path, cuda: bool) -> None:
    """Save a random-weight model of the benchmark's shape and a matching processor to `folder`."""
    image_size, patch_size = (336, 14) if cuda else (96, 12)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, EmbeddedConfig(image_size=image_size, patch_size=patch_size))
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = (llava_7b_config(image_token_id, tokenizer.pad_token_id) if cuda
              else tiny_config(image_token_id, tokenizer.pad_token_id, len(tokenizer)))
    torch.manual_seed(0)
    # Initialise on the GPU in bfloat16: 7B random floats in seconds, not minutes on the CPU.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16 if cuda else torch.float32)
    try:
        with torch.device("cuda" if cuda else "cpu"):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    if cuda:
        torch.cuda.empty_cache()


def benchmark_pairs(n: int, seed: int = 0) -> list[PreferenceExample]:
    """Shapes scenes with the true description chosen and one with a false sentence rejected."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        scene = make_scene(3_000_000 + i)
        sentences = describe_sentences(scene, rng)
        wrong = list(sentences)
        index = rng.randrange(len(wrong))
        wrong[index] = false_sentence(scene, mention_order(scene)[index], rng)[0]
        pairs.append(PreferenceExample(render(scene), DESCRIBE_QUESTION, " ".join(sentences), " ".join(wrong)))
    return pairs


def run(n_pairs: int, batch_size: int) -> dict:
    """Build, load in 4-bit, train one DPO epoch; return the measurements."""
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        folder = Path(tmp) / "model"
        build_start = time.time()
        save_random_model(folder, cuda)
        loaded = load_model(ModelSettings(model=str(folder), load_in_4bit=True, adapter="",
                                          device="cuda" if cuda else "cpu", dtype="auto"))
        build_seconds = time.time() - build_start
        parameters = sum(p.numel() for p in loaded.model.parameters())
        pairs = benchmark_pairs(n_pairs)
        settings = DPOSettings(epochs=1, batch_size=batch_size, lr=5e-5)
        # One untimed batch first: CUDA kernels, bitsandbytes and autograd set themselves up on first use.
        train_dpo(loaded, benchmark_pairs(batch_size, seed=1), Path(tmp) / "warm-up", settings)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.time()
        result = train_dpo(loaded, pairs, Path(tmp) / "adapter", settings)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.time() - start
        report = {
            "device": torch.cuda.get_device_name(0) if cuda else "cpu (CUDA absent: tiny config, not the 7B shape)",
            "model": "LLaVA-1.5-7B shape, random weights" if cuda else "tiny LLaVA, random weights",
            "quantization": "NF4 (bitsandbytes, double quant; vision tower, projector, lm_head unquantized)",
            "parameters_as_stored": parameters, "pairs": n_pairs, "batch_size": batch_size,
            "steps": result.steps, "seconds_per_pair": round(seconds / n_pairs, 3),
            "pairs_per_second": round(n_pairs / seconds, 2),
            "build_and_load_seconds": round(build_seconds, 1), "final_loss": round(result.metrics[-1]["loss"], 4),
        }
        if cuda:
            peak = torch.cuda.max_memory_allocated() / 2**30
            report |= {"peak_memory_gib": round(peak, 2), "goal_peak_gib": PEAK_GOAL_GIB,
                       "goal_pairs_per_second": PAIRS_PER_SECOND_GOAL,
                       "meets_memory_goal": peak <= PEAK_GOAL_GIB,
                       "meets_speed_goal": n_pairs / seconds >= PAIRS_PER_SECOND_GOAL}
        return report


def main(argv: list[str] | None = None) -> None:
    """CLI: run the benchmark and print its report as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_dpo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=32, help="preference pairs in the epoch (default 32)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step (default 4)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("CUDA is absent: running a tiny config on the CPU (the 7B numbers need a GPU).", flush=True)
    print(json.dumps(run(args.pairs, args.batch_size), indent=2))


if __name__ == "__main__":
    main()
