"""How judged decoding chooses among its own proposals: raw against debiased on the same proposal sets.

CHAIR_S of whole decoded captions is noisy on 200 scenes: one different choice changes every later
step. This script decodes once (debiased-judged, alpha 1, as `python -m core.shapes.evaluate_decoding`
does) and, at every step, labels each of the k proposals against the scene: `new` (names only present
objects, at least one not named before), `repeat` (only objects named before), `hallucinated` (an
absent object) or `none` (names no object). It then asks each selection rule which proposal it would
keep *on the same proposal set*, so the rules differ only in their choice:

    rule score = raw + alpha * (raw - blind) + likelihood_weight * mean token log-prob

(alpha 0 is raw-judged). It prints how diverse the proposals are (distinct objects per step, share of
steps whose set mixes a `new` and a `hallucinated` proposal), and, on the mixed steps, how often
each rule keeps a `new` proposal, with a 95% interval for debiased minus raw from resampling scenes.

Judged decoding also *rejects*: a proposal whose debiased log-odds (1 + alpha) * lo(image) -
alpha * lo(blind) is below `reject_below` (0) is dropped, and a step with none left ends the answer.
Each node of the decoding tree carries its raw log-odds and its debiased one (at the decoding's
alpha, 1), so the blind log-odds follows, and a second table gives, over every step, what each rule
does with the same set: keep a new, a repeated or a hallucinated proposal, or end.
(The model's own wish to end, `stop_probability`, is the same for every rule and is left out.)

Run:  python bench/proposal_choice.py --model M --n 200 --eval-first-seed 4000000   (validation scenes)
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import ModelSettings  # noqa: E402
from core.engine.decoding import DecodeOptions, DecodeResult  # noqa: E402
from core.engine.judge import JudgeSettings  # noqa: E402
from core.engine.loading import load_model  # noqa: E402
from core.shapes.evaluate_decoding import decode_all  # noqa: E402
from core.shapes.metrics import hallucination_kind, parse_objects  # noqa: E402
from core.shapes.world import WorldOptions  # noqa: E402

LABELS = ("new", "repeat", "hallucinated", "none")
DECODING_ALPHA = 1.0  # the trajectory followed: debiased-judged decoding at the paper's alpha


def proposal_label(sentence: str, said: set, present: set) -> str:
    """new / repeat / hallucinated / none for one proposal, given the objects already named."""
    claims = parse_objects(sentence)
    if not claims:
        return "none"
    if any(c not in present for c in claims):
        return "hallucinated"
    return "new" if any(c not in said for c in claims) else "repeat"


def step_sets(result: DecodeResult, present: set) -> list[list[dict]]:
    """The proposal sets of one decoded answer: per step, each proposal's label and scores."""
    said_after: dict[int | None, set] = {None: set()}
    by_step: dict[int, list[int]] = defaultdict(list)
    for index, node in enumerate(result.nodes):
        by_step[node.step].append(index)
    sets = []
    for step in sorted(by_step):
        proposals = []
        for index in by_step[step]:
            node = result.nodes[index]
            said = said_after.get(node.parent, set())
            if node.text:
                # log_odds = (1 + a) * raw_log_odds - a * blind_log_odds at the decoding's alpha a
                blind_log_odds = ((1 + DECODING_ALPHA) * node.raw_log_odds - node.log_odds) / DECODING_ALPHA
                proposals.append({"label": proposal_label(node.text, said, present), "raw": node.raw,
                                  "blind": node.blind, "likelihood": node.likelihood,
                                  "raw_log_odds": node.raw_log_odds, "blind_log_odds": blind_log_odds,
                                  "objects": frozenset(parse_objects(node.text)),
                                  "partner": any(hallucination_kind(c, present) == "partner"
                                                 for c in parse_objects(node.text) if c not in present)})
            if node.chosen:
                said_after[index] = said | set(parse_objects(node.text))
        if proposals:
            sets.append(proposals)
    return sets


def pick(proposals: list[dict], alpha: float, likelihood_weight: float) -> dict:
    """The proposal a rule keeps (ties: the first proposed, as core.engine.decoding does)."""
    def score(p: dict) -> float:
        return p["raw"] + alpha * (p["raw"] - p["blind"]) + likelihood_weight * p["likelihood"]
    return max(enumerate(proposals), key=lambda item: (score(item[1]), -item[0]))[1]


def outcome(proposals: list[dict], alpha: float, likelihood_weight: float, reject_below: float | None) -> str:
    """What a rule does with one proposal set: the label it keeps, or "end" when it rejects them all."""
    accepted = [p for p in proposals if reject_below is None
                or (1 + alpha) * p["raw_log_odds"] - alpha * p["blind_log_odds"] >= reject_below]
    return pick(accepted, alpha, likelihood_weight)["label"] if accepted else "end"


def main() -> None:
    """CLI: decode, label the proposals, compare the rules on identical proposal sets."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or id (default: the embedded model)")
    parser.add_argument("--n", type=int, default=200, help="scenes")
    parser.add_argument("--eval-first-seed", type=int, default=4000000, help="first scene (4000000: validation)")
    parser.add_argument("--k", type=int, default=4, help="proposals per step")
    parser.add_argument("--alphas", default="0,0.5,1,2,4", help="alphas of the rules compared")
    parser.add_argument("--likelihood-weights", default="0,1,2,4", help="likelihood weights of the rules compared")
    parser.add_argument("--resamples", type=int, default=400, help="bootstrap resamplings of scenes")
    WorldOptions.add_arguments(parser)
    args = parser.parse_args()
    loaded = load_model(ModelSettings(adapter="", **({"model": args.model} if args.model else {})))
    world = WorldOptions.from_args(args)
    scenes = [world.scene(seed) for seed in range(args.eval_first_seed, args.eval_first_seed + args.n)]
    options = SimpleNamespace(likelihood_weight=DecodeOptions.likelihood_weight, reject_below=DecodeOptions.reject_below,
                              batch=100, k=args.k, max_new_tokens=64, seed=0)
    results = decode_all(loaded, scenes, "debiased-judged", JudgeSettings(alpha=DECODING_ALPHA), options)
    per_scene = [step_sets(r, s.names()) for r, s in zip(results, scenes)]

    steps = [p for sets in per_scene for p in sets]
    distinct = sum(len({q["objects"] for q in p if q["objects"]}) for p in steps) / len(steps)
    print(f"{args.n} scenes (seeds {args.eval_first_seed}+), k = {args.k}: {len(steps)} proposal sets, "
          f"{distinct:.2f} distinct object sets per step")
    shares = {label: sum(q["label"] == label for p in steps for q in p) / sum(len(p) for p in steps) for label in LABELS}
    print("proposals: " + ", ".join(f"{label} {share:.1%}" for label, share in shares.items())
          + f"; hallucinated proposals that name an absent partner: "
          f"{sum(q['partner'] for p in steps for q in p) / max(1, sum(q['label'] == 'hallucinated' for p in steps for q in p)):.1%}")
    mixed = [[p for p in sets if {"new", "hallucinated"} <= {q["label"] for q in p}] for sets in per_scene]
    n_mixed = sum(len(m) for m in mixed)
    print(f"steps with a new and a hallucinated proposal: {n_mixed} ({n_mixed / len(steps):.1%}); "
          f"steps with a new one: {sum(any(q['label'] == 'new' for q in p) for p in steps) / len(steps):.1%}")
    print()
    alphas = [float(a) for a in args.alphas.split(",")]
    weights = [float(w) for w in args.likelihood_weights.split(",")]
    print("share of mixed steps where the rule keeps a new / a hallucinated proposal (alpha 0: raw-judged)")
    print("| likelihood weight | " + " | ".join(f"alpha {a:g}" for a in alphas) + " | debiased a=1 − raw, new [95%] |")
    print("|---|" + "---|" * len(alphas) + "---|")
    rng = random.Random(0)
    for weight in weights:
        def counts(sets_of_scenes: list, alpha: float) -> tuple[int, int, int]:
            chosen = [pick(p, alpha, weight)["label"] for m in sets_of_scenes for p in m]
            return chosen.count("new"), chosen.count("hallucinated"), len(chosen)
        cells = []
        for alpha in alphas:
            new, hallucinated, total = counts(mixed, alpha)
            cells.append(f"{new / max(1, total):.1%} / {hallucinated / max(1, total):.1%}")
        gaps = []
        for _ in range(args.resamples):
            sample = [mixed[rng.randrange(len(mixed))] for _ in mixed]
            new_d, _, total = counts(sample, 1.0)
            new_r, _, _ = counts(sample, 0.0)
            gaps.append((new_d - new_r) / max(1, total))
        gaps.sort()
        new_d, _, total = counts(mixed, 1.0)
        new_r, _, _ = counts(mixed, 0.0)
        lo, hi = gaps[int(0.025 * len(gaps))], gaps[int(0.975 * len(gaps)) - 1]
        print(f"| {weight:g} | " + " | ".join(cells) + f" | {(new_d - new_r) / max(1, total):+.1%} [{lo:+.1%}, {hi:+.1%}] |")
    greedy = [p[0]["label"] for m in mixed for p in m]
    print(f"\nthe first proposal (the greedy one, unless greedy ended the answer) on the mixed steps: "
          f"new {greedy.count('new') / max(1, len(greedy)):.1%}, "
          f"hallucinated {greedy.count('hallucinated') / max(1, len(greedy)):.1%}")

    print(f"\nwith rejection (reject_below {DecodeOptions.reject_below}), over all {len(steps)} steps: "
          "share of steps where the rule keeps a new / repeated / hallucinated proposal / ends")
    print("| likelihood weight | " + " | ".join(f"alpha {a:g}" for a in alphas) + " |")
    print("|---|" + "---|" * len(alphas))
    for weight in weights:
        cells = []
        for alpha in alphas:
            chosen = [outcome(p, alpha, weight, DecodeOptions.reject_below) for p in steps]
            cells.append(" / ".join(f"{chosen.count(label) / len(chosen):.1%}"
                                    for label in ("new", "repeat", "hallucinated", "end")))
        print(f"| {weight:g} | " + " | ".join(cells) + " |")
    rejected = {label: [p for s in steps for p in s if p["label"] == label] for label in ("new", "repeat", "hallucinated")}
    for alpha in alphas:
        print(f"alpha {alpha:g} rejects " + ", ".join(
            f"{sum((1 + alpha) * p['raw_log_odds'] - alpha * p['blind_log_odds'] < DecodeOptions.reject_below for p in ps) / max(1, len(ps)):.1%} of {label}"
            for label, ps in rejected.items()) + " proposals")


if __name__ == "__main__":
    main()
