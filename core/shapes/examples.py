"""Pick Explore's example scenes: test-split scenes where the raw judge says "yes" to a hallucinated
sentence of the model's own greedy description and the debiased judge says "no".

Each scene's greedy description is split into sentences; every sentence naming an absent object
is judged (default judge settings: its template and context, score kind log-odds, so that "yes" is
a log-odds above 0). A scene qualifies when some such sentence has raw log-odds > 0 and debiased
log-odds < 0. The first `n` qualifying scenes (in seed order) are written like `core.shapes.world sample`
writes scenes (PNG files and scenes.jsonl), with the sentence and its scores added to each row.

Run:  python -m core.shapes.examples --out assets/examples --n 4 --scan 300
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from core.engine.chat import prepare_image
from core.config import ModelSettings
from core.shapes.evaluate import describe_batch
from core.engine.judge import JudgeItem, JudgeSettings, judge_sentences
from core.engine.loading import LoadedModel, load_model
from core.engine.sentences import split_sentences
from core.shapes.metrics import sentence_is_hallucinated
from core.shapes.texts import describe
from core.shapes.world import make_scene, render


@dataclass
class Flip:
    """A hallucinated sentence the raw judge accepts and the debiased judge rejects."""

    seed: int
    description: str
    sentence: str
    raw: float  # log-odds of "yes", with the image
    blind: float  # the same without the image
    debiased: float


def find_flips(loaded: LoadedModel, seeds: list[int], settings: JudgeSettings, batch_size: int = 25) -> list[Flip]:
    """For each scene, the hallucinated greedy sentence whose debiased log-odds is lowest among those
    the raw judge accepts (raw > 0 > debiased); scenes without one are left out."""
    flips = []
    for first in range(0, len(seeds), batch_size):
        scenes = [make_scene(seed) for seed in seeds[first:first + batch_size]]
        texts = describe_batch(loaded, [render(s) for s in scenes])
        items, owners = [], []
        for index, (scene, text) in enumerate(zip(scenes, texts)):
            sentences = split_sentences(text)
            for j, sentence in enumerate(sentences):
                if sentence_is_hallucinated(sentence, scene.names()):
                    items.append(JudgeItem(image=index, sentence=sentence, context=" ".join(sentences[:j])))
                    owners.append(index)
        if not items:
            continue
        images = [prepare_image(loaded.processor, render(s)) for s in scenes]
        best: dict[int, Flip] = {}
        for item, owner, verdict in zip(items, owners, judge_sentences(loaded, images, items, settings)):
            raw, blind = verdict.raw["log-odds"], verdict.blind["log-odds"]
            debiased = verdict.debiased("log-odds", settings.alpha)
            if raw > 0 > debiased and (owner not in best or debiased < best[owner].debiased):
                best[owner] = Flip(scenes[owner].seed, texts[owner], item.sentence, raw, blind, debiased)
        flips += [best[i] for i in sorted(best)]
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
               "flip": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(flip).items()
                        if k != "seed"}}
        lines.append(json.dumps(row))
    path = out / "scenes.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI: scan test scenes from --first-seed, write the first --n with a raw-yes, debiased-no hallucination."""
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
    for first in range(args.first_seed, args.first_seed + args.scan, 50):
        flips += find_flips(loaded, list(range(first, min(first + 50, args.first_seed + args.scan))), settings)
        if len(flips) >= args.n:
            break
    flips = flips[:args.n]
    if not flips:
        raise SystemExit(f"no scene among {args.scan} has a hallucinated sentence that raw accepts and debiased rejects")
    print(write_examples(flips, args.out))
    for flip in flips:
        print(f"seed {flip.seed}: {flip.sentence!r} raw {flip.raw:+.2f} blind {flip.blind:+.2f} "
              f"debiased {flip.debiased:+.2f}")


if __name__ == "__main__":
    main()
