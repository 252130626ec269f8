"""Benchmark: scoring N candidates (sentences and tokens, with and without the image) naive vs batched vs cached.

For N = 1, 4, 8, 16 it times core.judge.score_candidates in the three core.forward modes
and one plain forward pass of a single candidate with the image (the unit of the goal:
scoring 8 candidates should cost <= 2 such passes). Candidates are reference descriptions
of one scene (core.texts), so they have real sentences.

Models: the embedded model on CPU (a tiny model of the same architecture if
assets/shapes-llava is missing), and with CUDA a LLaVA-1.5-7B-shaped model built from
config with random weights, in bf16 and in NF4.

Run:  python bench/bench_judge.py                 (CPU part; CUDA part when a GPU is present)
      python bench/bench_judge.py --threads 1 --clock cpu   (on a CPU shared with other jobs)
      python bench/bench_judge.py --cpu-shape 7b-tiny --nf4-on-cpu   (smoke-test the GPU code path on CPU)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.chat import answer_ids, prepare_image, prompt_ids  # noqa: E402
from core.config import EMBEDDED_MODEL, ModelSettings  # noqa: E402
from core.embedded import EmbeddedConfig, build_model, build_processor, build_tokenizer  # noqa: E402
from core.judge import JudgeSettings, score_candidates  # noqa: E402
from core.loading import LoadedModel, load_model  # noqa: E402
from core.prompts import DESCRIBE_QUESTION  # noqa: E402
from core.texts import describe  # noqa: E402
from core.world import make_scene, render  # noqa: E402

# LLaVA-1.5-7B: CLIP ViT-L/14 at 336 px (576 image tokens) + Llama-2-7B.
LLAVA_7B = {"image_size": 336, "patch_size": 14, "vision_hidden": 1024, "vision_layers": 24, "vision_heads": 16,
            "vision_intermediate": 4096, "text_hidden": 4096, "text_layers": 32, "text_heads": 32,
            "text_intermediate": 11008, "vocab": 32064}
# The same shape scaled down, to run the GPU code path on a CPU.
LLAVA_7B_TINY = LLAVA_7B | {"vision_hidden": 64, "vision_layers": 2, "vision_heads": 2, "vision_intermediate": 128,
                            "text_hidden": 128, "text_layers": 2, "text_heads": 4, "text_intermediate": 256}


def candidates(n: int, seed: int = 0) -> list[str]:
    """n reference descriptions of one scene (different wordings), 1-4 sentences each."""
    scene = make_scene(seed)
    return [describe(scene, random.Random(i)) for i in range(n)]


def build_llava_shaped(shape: dict, dtype: torch.dtype, device: str) -> LoadedModel:
    """A LLaVA of the given shape with random weights and the shapes-world tokenizer (ids beyond it never occur)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = build_tokenizer(640, 0)
    processor = build_processor(tokenizer, EmbeddedConfig(image_size=shape["image_size"],
                                                          patch_size=shape["patch_size"]))
    vision = CLIPVisionConfig(hidden_size=shape["vision_hidden"], intermediate_size=shape["vision_intermediate"],
                              num_hidden_layers=shape["vision_layers"], num_attention_heads=shape["vision_heads"],
                              image_size=shape["image_size"], patch_size=shape["patch_size"])
    text = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["text_hidden"],
                       intermediate_size=shape["text_intermediate"], num_hidden_layers=shape["text_layers"],
                       num_attention_heads=shape["text_heads"], num_key_value_heads=shape["text_heads"],
                       max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         image_seq_length=(shape["image_size"] // shape["patch_size"]) ** 2)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return LoadedModel(model=model, processor=processor, model_id="llava-1.5-7b-shaped (random)", adapter="",
                       quantized=False)


def as_nf4(loaded: LoadedModel, device: str) -> LoadedModel:
    """Save the model and load it back in NF4 through core.loading (the studio's own 4-bit path)."""
    with tempfile.TemporaryDirectory() as folder:
        loaded.model.save_pretrained(folder)
        loaded.processor.save_pretrained(folder)
        quantized = load_model(ModelSettings(model=folder, load_in_4bit=True, device=device, dtype="bfloat16"
                                             if device == "cuda" else "float32", adapter=""))
    quantized.model_id += " NF4"
    return quantized


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(function, repeats: int, clock: str = "wall") -> float:
    """Median time of `repeats` calls (after one warm-up), synchronising CUDA.

    clock "cpu" counts this process's CPU seconds: on a shared CPU, wall time mostly measures
    the neighbours (run it with --threads 1 so CPU seconds are work, not spinning threads).
    """
    now = CLOCKS[clock]
    times = []
    for i in range(repeats + 1):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = now()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i:
            times.append(now() - start)
    return statistics.median(times)


@torch.no_grad()
def one_forward(loaded: LoadedModel, image, text: str) -> None:
    """One plain forward pass of (image, question, one candidate): the cost unit."""
    prepared = prepare_image(loaded.processor, image)
    ids = prompt_ids(loaded.processor, DESCRIBE_QUESTION, prepared) + answer_ids(loaded.processor, DESCRIBE_QUESTION,
                                                                                 text)
    loaded.model(input_ids=torch.tensor([ids], device=loaded.device),
                 **{k: v.to(loaded.device) for k, v in prepared.tensors.items()})


def bench(loaded: LoadedModel, sizes: list[int], repeats: int, modes: list[str], clock: str = "wall") -> None:
    """Print one table: milliseconds per mode and the ratios, for each N."""
    image = render(make_scene(0))
    settings = JudgeSettings(context="response")
    unit = timed(lambda: one_forward(loaded, image, candidates(1)[0]), repeats, clock)
    print(f"\n## {loaded.model_id} on {loaded.device} ({next(loaded.model.parameters()).dtype}), {clock} clock; "
          f"one forward pass with the image: {unit * 1000:.1f} ms")
    print("| N | sentences | " + " | ".join(f"{m} ms" for m in modes) + " | naive/cached | batched/cached | "
          "cached / one forward |")
    print("|---|---|" + "---|" * len(modes) + "---|---|---|")
    for n in sizes:
        texts = candidates(n)
        sentences = sum(t.count(".") for t in texts)
        seconds = {m: timed(lambda m=m: score_candidates(loaded, image, DESCRIBE_QUESTION, texts, settings, mode=m),
                            repeats, clock) for m in modes}
        ratio = {m: seconds[m] / seconds["cached"] for m in modes}
        print(f"| {n} | {sentences} | " + " | ".join(f"{seconds[m] * 1000:.0f}" for m in modes)
              + f" | {ratio.get('naive', float('nan')):.2f} | {ratio.get('batched', float('nan')):.2f} | "
              f"{seconds['cached'] / unit:.2f} |", flush=True)


def cpu_model(shape: str) -> LoadedModel:
    """The embedded model, or a same-architecture tiny one, or the scaled-down 7B shape."""
    if shape == "7b-tiny":
        return build_llava_shaped(LLAVA_7B_TINY, torch.float32, "cpu")
    if (EMBEDDED_MODEL / "config.json").exists():
        return load_model(ModelSettings(model=str(EMBEDDED_MODEL), device="cpu", dtype="float32", adapter="",
                                        load_in_4bit=False))
    tokenizer = build_tokenizer(640, 0)
    config = EmbeddedConfig()
    return LoadedModel(model=build_model(tokenizer, config).eval(), processor=build_processor(tokenizer, config),
                       model_id="embedded architecture (random weights)", adapter="", quantized=False)


def main(argv: list[str] | None = None) -> None:
    """CLI: run the CPU benchmark, then the CUDA one where a GPU is visible."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,4,8,16", help="numbers of candidates")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per cell (median)")
    parser.add_argument("--cpu-shape", default="embedded", help="embedded | 7b-tiny")
    parser.add_argument("--nf4-on-cpu", action="store_true", help="also time the CPU model in NF4")
    parser.add_argument("--skip-cpu", action="store_true", help="only the CUDA part")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                        help="CPU part: wall time, or this process's CPU seconds (for a shared CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    if not args.skip_cpu:
        loaded = cpu_model(args.cpu_shape)
        bench(loaded, sizes, args.repeats, ["naive", "batched", "cached"], args.clock)
        if args.nf4_on_cpu:
            bench(as_nf4(loaded, "cpu"), sizes, args.repeats, ["naive", "batched", "cached"], args.clock)
    if torch.cuda.is_available():
        loaded = build_llava_shaped(LLAVA_7B, torch.bfloat16, "cuda")
        bench(loaded, sizes, args.repeats, ["naive", "batched", "cached"])
        bench(as_nf4(loaded, "cuda"), sizes, args.repeats, ["naive", "batched", "cached"])
    else:
        print("\nno CUDA device: the LLaVA-1.5-7B-shaped bf16 / NF4 part was not run")


if __name__ == "__main__":
    main()
