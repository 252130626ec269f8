"""Paired test of debiased vs raw on the same test scenes: is the CHAIR_S difference beyond noise?

S2: raw-judged vs debiased-judged decoding on scenes 0..n-1 (decoded exactly as
`python -m core.shapes.evaluate_decoding` decodes them, sentence context). S3: greedy descriptions of the
proof's debiased-pair and raw-pair adapters on scenes 0..m-1. For each, per scene: does the caption
hallucinate? An exact two-sided McNemar test on the scenes where exactly one of the two does.

Run:  python bench/paired_chair.py --n 200 --proof data/proof-v3 --proof-scenes 400
(--model, --first-seed and the world flags --partner-rate/--dim-rate choose the model and S2's
scenes; S3 uses the proof's own held-out scenes and world, read from its proof.json)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import ModelSettings  # noqa: E402
from core.engine.decoding import DecodeOptions  # noqa: E402
from core.shapes.evaluate import describe_batch  # noqa: E402
from core.shapes.evaluate_decoding import decode_all, reject_threshold  # noqa: E402
from core.engine.judge import JudgeSettings  # noqa: E402
from core.engine.loading import LoadedModel, attach_adapter, load_model  # noqa: E402
from core.shapes.metrics import chair  # noqa: E402
from core.shapes.world import WorldOptions, render  # noqa: E402


def hallucinates(texts: list[str], scenes: list) -> list[bool]:
    """Per caption: does it name an absent object?"""
    return [chair([t], [s.names()]).chair_s > 0 for t, s in zip(texts, scenes)]


def mcnemar(a: list[bool], b: list[bool]) -> tuple[int, int, float]:
    """Scenes where only a hallucinates, only b does, and the exact two-sided binomial p-value."""
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return only_a, only_b, p


def report(name: str, a: list[bool], b: list[bool]) -> None:
    """One line: both CHAIR_S and the paired test."""
    only_a, only_b, p = mcnemar(a, b)
    print(f"{name}: CHAIR_S {sum(a) / len(a):.1%} vs {sum(b) / len(b):.1%} on {len(a)} scenes; "
          f"only the first hallucinates in {only_a}, only the second in {only_b}; McNemar p = {p:.3f}")


def main() -> None:
    """CLI: the two paired tests."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="decoding scenes (S2); 0 skips")
    parser.add_argument("--proof", type=Path, default=None, help="a core.shapes.proof --out folder (S3)")
    parser.add_argument("--proof-scenes", type=int, default=400)
    parser.add_argument("--model", default=None, help="model folder or id (default: the embedded model)")
    parser.add_argument("--first-seed", type=int, default=0, help="S2's first scene (0: the test split)")
    parser.add_argument("--alpha", type=float, default=JudgeSettings.alpha,
                        help="alpha of debiased-judged decoding (S2)")
    parser.add_argument("--reject-below", type=reject_threshold, default=DecodeOptions.reject_below,
                        help="S2's rejection threshold on the debiased log-odds ('none': never reject)")
    WorldOptions.add_arguments(parser)
    args = parser.parse_args()
    loaded = load_model(ModelSettings(adapter="", **({"model": args.model} if args.model else {})))
    if args.n:
        world = WorldOptions.from_args(args)
        scenes = [world.scene(seed) for seed in range(args.first_seed, args.first_seed + args.n)]
        options = SimpleNamespace(likelihood_weight=DecodeOptions.likelihood_weight,
                                  reject_below=args.reject_below, batch=100, k=4, max_new_tokens=64, seed=0)
        raw = decode_all(loaded, scenes, "raw-judged", JudgeSettings(alpha=0.0), options)
        debiased = decode_all(loaded, scenes, "debiased-judged", JudgeSettings(alpha=args.alpha), options)
        report("S2 debiased-judged vs raw-judged", hallucinates([r.text for r in debiased], scenes),
               hallucinates([r.text for r in raw], scenes))
    if args.proof:
        proof_settings = json.loads((args.proof / "proof.json").read_text())["settings"]
        world = WorldOptions(**proof_settings.get("world", {}))
        first = proof_settings.get("eval_first_seed", 0)
        scenes = [world.scene(seed) for seed in range(first, first + args.proof_scenes)]
        flags = {}
        for rank in ("debiased", "raw"):
            model = attach_adapter(loaded.model, str(args.proof / f"adapter-{rank}"))
            model.eval()
            adapted = LoadedModel(model, loaded.processor, loaded.model_id, rank, loaded.quantized)
            texts = []
            for first in range(0, len(scenes), 50):
                texts += describe_batch(adapted, [render(s) for s in scenes[first:first + 50]])
            model.unload()
            flags[rank] = hallucinates(texts, scenes)
        report("S3 DPO debiased pairs vs raw pairs", flags["debiased"], flags["raw"])


if __name__ == "__main__":
    main()
