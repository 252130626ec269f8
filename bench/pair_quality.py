"""How good are self-curated pairs under each ranking of the same candidates?

The proof (core.shapes.proof) trains on best-versus-worst pairs ranked by the mean sentence score,
raw or debiased. This script judges the candidates of the proof's curation scenes once (seeds
2,000,000+, as the proof does; never the test split) and picks each scene's pair under several
rankings of the same candidates:

    mean-raw, mean-debiased   the proof's rankings (mean over the answer's sentences)
    min-raw, min-debiased     the answer's worst sentence decides (one hallucinated claim spoils a caption)
    verdict-raw, verdict-debiased
                              the judge's yes/no: answers whose every sentence has log-odds >= 0 (the judge
                              says yes, as judged decoding's `reject_below` 0 asks) first, then by the
                              worst sentence's log-odds
    oracle                    ground truth: fewest hallucinated objects, then most recall

For each it prints how often the chosen answer has fewer / as many / more hallucinated objects than
the rejected one, and how often the chosen one is clean while the rejected one hallucinates. The
debiased rankings use alpha 1 (`--alpha`), the sentence context and the `logit` kind, as the proof;
the verdict rankings judge the same candidates again with the `log-odds` kind.

Run:  python bench/pair_quality.py --model M --scenes 400
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import ModelSettings  # noqa: E402
from core.engine.generation import GenerationSettings  # noqa: E402
from core.engine.judge import JudgeSettings, ScoredCandidate, debias, judge  # noqa: E402
from core.engine.loading import load_model  # noqa: E402
from core.engine.prompts import DESCRIBE_QUESTION  # noqa: E402
from core.shapes.metrics import parse_objects  # noqa: E402
from core.training.selfcurate import (FRESH_SEED_OFFSET, CurationSettings, best_and_worst,  # noqa: E402
                                      hallucinated_objects, oracle_key, sources)


def sentence_scores(candidate: ScoredCandidate, alpha: float) -> tuple[list[float], list[float]]:
    """Raw and debiased (at alpha) score of each of the candidate's sentences."""
    raw = [s.raw for s in candidate.sentences]
    return raw, [debias(s.raw, s.blind, alpha) for s in candidate.sentences]


def ranking_keys(candidate: ScoredCandidate, alpha: float) -> dict[str, float]:
    """The candidate's key under every score-based ranking (higher is better)."""
    raw, debiased = sentence_scores(candidate, alpha)
    return {"mean-raw": sum(raw) / len(raw), "mean-debiased": sum(debiased) / len(debiased),
            "min-raw": min(raw), "min-debiased": min(debiased)}


def verdict_key(candidate: ScoredCandidate, alpha: float) -> dict[str, tuple[bool, float]]:
    """Keys of the verdict rankings, from a candidate judged with the log-odds kind."""
    raw, debiased = sentence_scores(candidate, alpha)
    return {"verdict-raw": (min(raw) >= 0, min(raw)), "verdict-debiased": (min(debiased) >= 0, min(debiased))}


def hallucinated(text: str, truth: set) -> int:
    """Absent objects the text claims."""
    return hallucinated_objects(parse_objects(text), truth)


def main() -> None:
    """CLI: judge the curation scenes once, compare the rankings' pairs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or id (default: the embedded model)")
    parser.add_argument("--scenes", type=int, default=400, help="curation scenes (seeds 2,000,000+)")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=1.0)
    args = parser.parse_args()
    loaded = load_model(ModelSettings(adapter="", **({"model": args.model} if args.model else {})))
    gen = GenerationSettings(n=args.candidates, strategy="sample", temperature=1.0, max_new_tokens=64, seed=0)
    names = ("mean-raw", "mean-debiased", "min-raw", "min-debiased", "verdict-raw", "verdict-debiased", "oracle")
    tally = {name: {"fewer": 0, "same": 0, "more": 0, "clean over hallucinated": 0} for name in names}
    for done, source in enumerate(sources(CurationSettings(n=args.scenes, seed_offset=FRESH_SEED_OFFSET)), start=1):
        # The same per-scene sampling seed as the proof's curation, so the candidates are the proof's.
        seeded = GenerationSettings(**{**asdict(gen), "seed": gen.seed + done})
        result = judge(loaded, source.image, DESCRIBE_QUESTION, seeded, JudgeSettings(alpha=args.alpha))
        # The same seed samples the same candidates; only the score kind differs.
        odds = judge(loaded, source.image, DESCRIBE_QUESTION, seeded, JudgeSettings(alpha=args.alpha, kind="log-odds"))
        if [c.text for c in odds.candidates] != [c.text for c in result.candidates]:
            raise RuntimeError("the log-odds run sampled other candidates; sampling must be seeded")
        usable = [c.text.strip() and c.sentences and not math.isnan(c.mean_debiased) for c in result.candidates]
        scored = [c for c, ok in zip(result.candidates, usable) if ok]
        if len(scored) < 2:
            continue
        keys = {id(c): ranking_keys(c, args.alpha) | verdict_key(o, args.alpha)
                for c, o, ok in zip(result.candidates, odds.candidates, usable) if ok}
        for name in names:
            if name == "oracle":
                pair = best_and_worst(scored, lambda c: oracle_key(c, source.truth))
            else:
                pair = best_and_worst(scored, lambda c, name=name: keys[id(c)][name])
            if pair is None:
                continue
            chosen, rejected = (hallucinated(c.text, source.truth) for c in pair)
            tally[name]["fewer" if chosen < rejected else "same" if chosen == rejected else "more"] += 1
            tally[name]["clean over hallucinated"] += chosen == 0 < rejected
    print(f"{args.scenes} curation scenes (seeds {FRESH_SEED_OFFSET:,}+), {args.candidates} sampled candidates each, "
          f"alpha {args.alpha:g}")
    print("| ranking | pairs | chosen has fewer hallucinated objects | as many | more | chosen clean, rejected not |")
    print("|---|---|---|---|---|---|")
    for name, counts in tally.items():
        total = counts["fewer"] + counts["same"] + counts["more"]
        print(f"| {name} | {total} | " + " | ".join(f"{counts[k] / max(1, total):.1%}" for k in
                                                    ("fewer", "same", "more", "clean over hallucinated")) + " |")


if __name__ == "__main__":
    main()
