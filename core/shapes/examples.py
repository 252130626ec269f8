"""Pick Explore's example scenes: test-split scenes where, with Explore's default settings, the raw
judge prefers a candidate that names an absent object and the debiased judge prefers one that does not.

Each scene gets what Explore's "Generate and score" gives it by default (`core.engine.judge.judge`
with `GenerationSettings()` and `JudgeSettings()`: 4 sampled candidates, seed 0, alpha 1, kind
logit, sentence context). A scene qualifies when the candidate with the highest mean raw score
hallucinates (names an object the scene does not hold) and the debiased rank-1 candidate does not:
ranked by the raw score the studio would keep a hallucination, ranked by the debiased score it
keeps a faithful answer. That is the paper's use of the score (best-of-N), in one click. (A
sentence whose own raw log-odds is above 0 and debiased log-odds below 0 is rare: the blind judge,
too, leans to "yes", so debiasing moves rankings more than it crosses zero.) The first `n`
qualifying scenes (in seed order) are written like `core.shapes.sample` writes scenes (PNG files and
scenes.jsonl), with both candidates and their scores added to each row.

Run:  python -m core.shapes.examples --out assets/examples --n 4 --scan 300
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from core.config import ModelSettings
from core.engine.generation import GenerationSettings
from core.engine.judge import JudgeSettings, ScoredCandidate, judge
from core.engine.loading import LoadedModel, load_model
from core.engine.prompts import DESCRIBE_QUESTION
from core.shapes.metrics import sentence_is_hallucinated
from core.shapes.texts import describe
from core.shapes.world import make_scene, render


@dataclass
class Flip:
    """A scene whose raw-preferred candidate hallucinates while the debiased rank-1 candidate does not."""

    seed: int
    raw_pick: str  # the candidate with the highest mean raw score
    debiased_pick: str  # the debiased rank-1 candidate (highest mean debiased score)
    sentence: str  # the raw pick's first hallucinated sentence
    raw: tuple[float, float]  # mean raw score of (raw pick, debiased pick)
    blind: tuple[float, float]  # mean blind score of both
    debiased: tuple[float, float]  # mean debiased score of both


def _hallucinated(candidate: ScoredCandidate, truth: set) -> list[str]:
    return [s.text for s in candidate.sentences if sentence_is_hallucinated(s.text, truth)]


def find_flips(loaded: LoadedModel, seeds: list[int], settings: JudgeSettings,
               gen: GenerationSettings | None = None) -> list[Flip]:
    """The scenes of `seeds` where the raw judge's favourite candidate hallucinates and the debiased one's does not."""
    gen = gen or GenerationSettings()
    flips = []
    for seed in seeds:  # one image per call, as Explore scores it: the same sampled candidates
        scene = make_scene(seed)
        result = judge(loaded, render(scene), DESCRIBE_QUESTION, gen, settings)
        raw_pick = next(c for c in result.candidates if c.raw_rank == 1)
        debiased_pick = result.best()
        wrong = _hallucinated(raw_pick, scene.names())
        if raw_pick is debiased_pick or not wrong or _hallucinated(debiased_pick, scene.names()):
            continue
        pair = (raw_pick, debiased_pick)
        flips.append(Flip(seed, raw_pick.text, debiased_pick.text, wrong[0],
                          tuple(c.mean_raw for c in pair), tuple(c.mean_blind for c in pair),
                          tuple(c.mean_debiased for c in pair)))
    return flips


def write_examples(flips: list[Flip], out: Path) -> Path:
    """PNG files and scenes.jsonl (core.shapes.world.sample's format plus the flip), written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("scene_*.png"):
        old.unlink()
    lines = []
    for flip in flips:
        scene = make_scene(flip.seed)
        name = f"scene_{flip.seed:07d}.png"
        render(scene).save(out / name)
        row = {"file": name, "seed": flip.seed,
               "objects": [{"shape": o.shape, "color": o.color, "size": o.size, "position": o.position}
                           for o in scene.objects],
               "description": describe(scene, random.Random(scene.seed)),
               "flip": {k: ([round(x, 3) for x in v] if isinstance(v, tuple) else v)
                        for k, v in asdict(flip).items() if k != "seed"}}
        lines.append(json.dumps(row))
    path = out / "scenes.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI: scan test scenes from --first-seed, write the first --n whose raw and debiased favourites differ as above."""
    parser = argparse.ArgumentParser(prog="python -m core.shapes.examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files and scenes.jsonl")
    parser.add_argument("--n", type=int, default=4, help="examples to write")
    parser.add_argument("--scan", type=int, default=300, help="most scenes to look at")
    parser.add_argument("--first-seed", type=int, default=0, help="first scene (0: the test split)")
    parser.add_argument("--alpha", type=float, default=JudgeSettings.alpha, help="debiasing strength")
    parser.add_argument("--model", default=None, help="model id or folder (default: the embedded model)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.scan < args.n:
        parser.error("need 1 <= --n <= --scan")
    loaded = load_model(ModelSettings(**({"model": args.model} if args.model else {}), adapter=""))
    settings = JudgeSettings(alpha=args.alpha)
    flips: list[Flip] = []
    for seed in range(args.first_seed, args.first_seed + args.scan):
        flips += find_flips(loaded, [seed], settings)
        if len(flips) >= args.n:
            break
    if not flips:
        raise SystemExit(f"no scene among {args.scan} has a raw-preferred candidate that hallucinates "
                         "and a debiased rank-1 candidate that does not")
    print(write_examples(flips, args.out))
    for flip in flips:
        print(f"seed {flip.seed}: raw prefers {flip.raw_pick!r} (mean raw {flip.raw[0]:+.2f} vs {flip.raw[1]:+.2f}); "
              f"debiased prefers {flip.debiased_pick!r} (mean debiased {flip.debiased[1]:+.2f} vs "
              f"{flip.debiased[0]:+.2f}); hallucinated: {flip.sentence!r}")


if __name__ == "__main__":
    main()
