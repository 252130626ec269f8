"""Measure a model on the held-out shapes-world test split (seeds 0..n-1; training uses seeds >= 1,000,000).

Prints description recall and CHAIR (with what was hallucinated), POPE-style yes/no
accuracy on the random, popular and adversarial splits, and the self-judgment AUROC
of P(yes) with and without the image.

Run:  python -m core.shapes.evaluate --n 500            (the embedded model)
      python -m core.shapes.evaluate --n 500 --4bit     (the same in 4-bit NF4)
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass

import torch
from PIL import Image

from core.config import ModelSettings
from core.engine.auroc import auroc
from core.engine.loading import LoadedModel, load_model
from core.engine.prompts import DESCRIBE_QUESTION
from core.shapes.metrics import ChairResult, chair, parse_objects
from core.shapes.texts import judge_example, pope_examples
from core.shapes.world import make_scene, partner_of, render


def chat_prompt(processor, question: str, with_image: bool) -> str:
    """The generation prompt for one user turn, built with the processor's chat template."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def model_inputs(loaded: LoadedModel, questions: list[str], images: list[Image.Image] | None) -> dict:
    """A left-padded batch of prompts, with one image per prompt or none at all."""
    processor = loaded.processor
    processor.tokenizer.padding_side = "left"  # generation continues from the right edge
    prompts = [chat_prompt(processor, q, images is not None) for q in questions]
    if images is None:
        inputs = processor.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    else:
        inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(loaded.device) for k, v in inputs.items()}


@torch.no_grad()
def describe_batch(loaded: LoadedModel, images: list[Image.Image], question: str = DESCRIBE_QUESTION,
                   max_new_tokens: int = 64) -> list[str]:
    """Greedy answers for a batch of images."""
    inputs = model_inputs(loaded, [question] * len(images), images)
    out = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = out[:, inputs["input_ids"].shape[1]:]
    return [t.strip() for t in loaded.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def yes_no_ids(tokenizer) -> tuple[int, int]:
    """First tokens of ' Yes' and ' No', as this tokenizer writes the answer after the prompt."""
    return (tokenizer(" Yes", add_special_tokens=False)["input_ids"][0],
            tokenizer(" No", add_special_tokens=False)["input_ids"][0])


@torch.no_grad()
def p_yes(loaded: LoadedModel, questions: list[str], images: list[Image.Image] | None) -> list[float]:
    """P(yes) / (P(yes) + P(no)) at the first answer position, for a batch of questions."""
    yes_id, no_id = yes_no_ids(loaded.processor.tokenizer)
    inputs = model_inputs(loaded, questions, images)
    logits = loaded.model(**inputs).logits[:, -1, :].float()
    return torch.softmax(logits[:, [yes_id, no_id]], dim=-1)[:, 0].tolist()


@dataclass
class BaseEvaluation:
    """The embedded model's numbers on the held-out split."""

    n_scenes: int
    describe: ChairResult
    pope_accuracy: dict[str, float]
    judge_auroc_image: float
    judge_auroc_blind: float
    examples: list[dict]
    faint_named: float = float("nan")  # share of faint objects the descriptions name
    absent_partner_named: float = float("nan")  # share of (anchor present, partner absent) scenes naming it


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def evaluate(loaded: LoadedModel, n: int = 500, batch_size: int = 50, start_seed: int = 0) -> BaseEvaluation:
    """Describe, POPE and self-judgment numbers on scenes start_seed..start_seed+n-1."""
    scenes = [make_scene(start_seed + i) for i in range(n)]
    captions: list[str] = []
    for chunk in _batches(scenes, batch_size):
        captions += describe_batch(loaded, [render(s) for s in chunk])
    describe = chair(captions, [s.names() for s in scenes])
    faint_named, absent_partner_named = prior_rates(scenes, captions)

    pope: dict[str, float] = {}
    for split in ("random", "popular", "adversarial"):
        correct = total = 0
        for chunk in _batches(scenes, batch_size):
            items = [(s, ex) for s in chunk for ex in pope_examples(s, split, random.Random(f"{split}-{s.seed}"))]
            probs = p_yes(loaded, [ex.question for _, ex in items], [render(s) for s, _ in items])
            correct += sum((p > 0.5) == (ex.answer == "Yes.") for p, (_, ex) in zip(probs, items))
            total += len(items)
        pope[split] = correct / total

    labels: list[bool] = []
    with_image: list[float] = []
    blind: list[float] = []
    for chunk in _batches(scenes, batch_size):
        items = [(s, *judge_example(s, random.Random(f"judge-{s.seed}"), with_context=False)) for s in chunk]
        questions = [ex.question for _, ex, _ in items]
        with_image += p_yes(loaded, questions, [render(s) for s, _, _ in items])
        blind += p_yes(loaded, questions, None)
        labels += [truthful for _, _, truthful in items]
    examples = [{"seed": s.seed, "truth": sorted(" ".join(nm) for nm in s.names()), "greedy": c}
                for s, c in zip(scenes[:5], captions[:5])]
    return BaseEvaluation(n_scenes=n, describe=describe, pope_accuracy=pope,
                          judge_auroc_image=auroc(with_image, labels), judge_auroc_blind=auroc(blind, labels),
                          examples=examples, faint_named=faint_named, absent_partner_named=absent_partner_named)


def prior_rates(scenes: list, captions: list[str]) -> tuple[float, float]:
    """How often captions name a faint object, and an anchor's partner that is not in the scene."""
    faint = faint_hits = absent = absent_hits = 0
    for scene, caption in zip(scenes, captions):
        claims, present = set(parse_objects(caption)), scene.names()
        for obj in scene.objects:
            if obj.faint:
                faint += 1
                faint_hits += obj.name in claims
            partner = partner_of(obj.name)
            if partner and partner not in present:
                absent += 1
                absent_hits += partner in claims
    return faint_hits / max(faint, 1), absent_hits / max(absent, 1)


def format_report(result: BaseEvaluation) -> str:
    """The evaluation as a Markdown table."""
    d = result.describe
    kinds = ", ".join(f"{k} {v}" for k, v in d.kinds.items())
    rows = [
        f"| held-out scenes | {result.n_scenes} |",
        f"| description object recall | {d.recall:.3f} |",
        f"| greedy CHAIR_S | {d.chair_s:.1%} |",
        f"| greedy CHAIR_I | {d.chair_i:.1%} |",
        f"| hallucinated objects by kind | {kinds} |",
        f"| faint objects named | {result.faint_named:.1%} |",
        f"| absent partner of a present anchor named | {result.absent_partner_named:.1%} |",
        f"| mean sentences per description | {d.mean_sentences:.2f} |",
    ] + [f"| yes/no accuracy, {k} | {v:.1%} |" for k, v in result.pope_accuracy.items()] + [
        f"| self-judgment AUROC of P(yes), with image | {result.judge_auroc_image:.3f} |",
        f"| self-judgment AUROC of P(yes), without image (blind) | {result.judge_auroc_blind:.3f} |",
    ]
    return "| metric | value |\n|---|---|\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """CLI: evaluate a model on the held-out split."""
    parser = argparse.ArgumentParser(prog="python -m core.shapes.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="number of held-out scenes (seeds 0..n-1)")
    parser.add_argument("--model", default=None, help="model id or path (default: the embedded model)")
    parser.add_argument("--4bit", dest="load_in_4bit", action="store_true", help="load in 4-bit NF4")
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error("--n must be at least 2")
    settings = ModelSettings(**{k: v for k, v in {"model": args.model, "adapter": args.adapter,
                                                   "load_in_4bit": args.load_in_4bit or None}.items() if v})
    result = evaluate(load_model(settings), args.n, args.batch_size)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print(format_report(result))
        for ex in result.examples:
            print(f"seed {ex['seed']}: truth {ex['truth']}\n  greedy: {ex['greedy']}")


if __name__ == "__main__":
    main()
