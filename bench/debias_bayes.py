"""When can debiasing beat the raw judge? A simulation of the Bayes argument in docs/language-prior.md.

Sentences are of two kinds: prior-favoured (the text names such objects often) and other. Each is
true with the *scenes'* rate for its kind. The image gives evidence: a feature drawn from
N(+d/2, 1) for a true sentence and N(-d/2, 1) for a false one, whose log-likelihood ratio is d
times the feature. The blind judge has learned the *text's* rate for each kind. Two raw judges:

- calibrated: trained on labels that follow the scenes, so raw = logit(scenes' rate) + evidence,
  the posterior. Any other score, the debiased one included, ranks no better.
- caption-labelled: a share of its labels follows the text, so its prior term is pulled towards the
  text's rate: raw = logit(mix) + evidence.

It prints AUROC of raw and debiased (alpha 1) for both, in a world whose text prior agrees with
its scenes and in one where it does not. No model is involved; it shows which condition a trained
model must meet before debiasing can help.

Run:  python bench/debias_bayes.py
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.engine.auroc import auroc  # noqa: E402


def logit(p: float) -> float:
    """log(p / (1 - p))."""
    return math.log(p / (1 - p))


def simulate(scene_rate: dict[str, float], text_rate: dict[str, float], caption_share: float, alpha: float,
             n: int, separation: float, seed: int) -> tuple[float, float, float]:
    """AUROC of raw, blind and debiased scores on n simulated sentences (half of each kind)."""
    rng = random.Random(seed)
    judge_rate = {kind: (1 - caption_share) * scene_rate[kind] + caption_share * text_rate[kind] for kind in scene_rate}
    raw, blind, truth = [], [], []
    for i in range(n):
        kind = "prior-favoured" if i % 2 else "other"
        true = rng.random() < scene_rate[kind]
        feature = rng.gauss(separation / 2 if true else -separation / 2, 1.0)
        evidence = separation * feature  # log p(feature | true) - log p(feature | false)
        raw.append(logit(judge_rate[kind]) + evidence)
        blind.append(logit(text_rate[kind]))
        truth.append(true)
    debiased = [(1 + alpha) * r - alpha * b for r, b in zip(raw, blind)]
    return auroc(raw, truth), auroc(blind, truth), auroc(debiased, truth)


def main(argv: list[str] | None = None) -> None:
    """CLI: print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="simulated sentences")
    parser.add_argument("--separation", type=float, default=2.0, help="d: how far the image's evidence separates true from false")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    text_rate = {"prior-favoured": 0.9, "other": 0.5}
    worlds = {"text prior agrees with the scenes": {"prior-favoured": 0.85, "other": 0.5},
              "text prior wrong about the scenes": {"prior-favoured": 0.3, "other": 0.5}}
    print(f"| world | raw judge | share of labels from text | AUROC raw | blind | debiased a={args.alpha:g} | debiased - raw |")
    print("|---|---|---|---|---|---|---|")
    for world, scene_rate in worlds.items():
        for judge, share in (("calibrated", 0.0), ("caption-labelled", 0.5), ("caption-labelled", 0.9)):
            raw, blind, debiased = simulate(scene_rate, text_rate, share, args.alpha, args.n, args.separation, args.seed)
            print(f"| {world} | {judge} | {share:.0%} | {raw:.3f} | {blind:.3f} | {debiased:.3f} | {debiased - raw:+.3f} |")


if __name__ == "__main__":
    main()
