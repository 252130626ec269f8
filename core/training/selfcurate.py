"""Self-curation, the paper's self-rewarding loop: the model writes candidates, judges them
itself, and its best-versus-worst answer becomes a preference pair (source "self").

For each image (fresh shapes-world scenes, seeds from 2,000,000 up so they never meet the
test split 0..999,999, or the images in a folder): generate candidates, rank them by the
debiased self-judgment score (or the raw score, or for shapes scenes the ground-truth
"oracle": fewest hallucinated objects, then most recall), and store top versus bottom.
Images whose best and worst candidates are the same text, or tie, give no pair.

Run:  python -m core.training.selfcurate --n 200                         (shapes scenes, debiased)
      python -m core.training.selfcurate --n 200 --rank oracle
      python -m core.training.selfcurate --folder my_images --rank raw
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from core.config import DataSettings, ModelSettings
from core.data.store import Pair, Store, comparable_text, strip_control_characters
from core.engine.generation import GenerationSettings
from core.engine.images import open_image
from core.engine.judge import JudgeResult, JudgeSettings, ScoredCandidate, judge
from core.engine.loading import LoadedModel, load_model
from core.engine.prompts import DESCRIBE_QUESTION
from core.shapes.metrics import parse_objects
from core.shapes.world import WorldOptions, render

FRESH_SEED_OFFSET = 2_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
Truth = set[tuple[str, str]]


def oracle_key(candidate: ScoredCandidate, truth: Truth | None, higher_is_better: bool = True
               ) -> tuple[int, float]:
    """Ground-truth quality: fewer hallucinated objects first, then more of the scene's objects named."""
    if truth is None:
        raise ValueError("oracle ranking needs ground truth; it works on shapes scenes, not a folder of images")
    claims = parse_objects(candidate.text)
    return (-hallucinated_objects(claims, truth), len(truth & set(claims)) / max(len(truth), 1))


def hallucinated_objects(claims: list[tuple[str, str]], truth: Truth) -> int:
    """How many of the claimed objects (core.shapes.metrics.parse_objects) are not in the scene."""
    return sum(1 for claim in claims if claim not in truth)


def _signed(score: float, higher_is_better: bool) -> float:
    # Templates where "yes" is bad (safety) rank low scores first.
    return score if higher_is_better else -score


# (candidate, ground truth or None, whether the judge template's high scores are good) -> key; higher = better.
RANKERS: dict[str, Callable[[ScoredCandidate, Truth | None, bool], object]] = {
    "debiased": lambda candidate, truth, higher: _signed(candidate.mean_debiased, higher),
    "raw": lambda candidate, truth, higher: _signed(candidate.mean_raw, higher),
    "oracle": oracle_key,
}


@dataclass
class CurationSettings:
    """Which images to curate and how to rank their candidates."""

    n: int = 100
    rank: str = "debiased"  # a key of RANKERS
    seed_offset: int = FRESH_SEED_OFFSET  # first shapes-scene seed (ignored with a folder)
    folder: str = ""  # curate these images instead of shapes scenes
    question: str = DESCRIBE_QUESTION
    world: WorldOptions = field(default_factory=WorldOptions)  # the shapes world the scenes come from

    def __post_init__(self) -> None:
        if self.rank not in RANKERS:
            raise ValueError(f"rank must be one of {', '.join(RANKERS)}, not {self.rank!r}")
        if self.n < 1:
            raise ValueError(f"n must be at least 1 image, not {self.n}")
        if self.folder and self.rank == "oracle":
            raise ValueError("oracle ranking needs ground truth, which only shapes scenes have; "
                             "use --rank debiased or raw with --folder")
        if not self.folder and self.seed_offset < 1_000_000:
            raise ValueError(f"seed_offset {self.seed_offset} overlaps the test split (seeds 0..999,999); "
                             f"use {FRESH_SEED_OFFSET} or more")
        if not self.question.strip():
            raise ValueError("question is empty; curation needs a prompt such as 'Describe the image.'")


@dataclass
class Source:
    """One image to curate: where it came from, and its objects when known (shapes scenes)."""

    label: str
    image: Image.Image
    truth: Truth | None


@dataclass
class CurationProgress:
    """How far a curation run is: images judged, pairs kept, images skipped (no preference)."""

    done: int
    total: int
    pairs: int
    skipped: int
    seconds: float


def sources(settings: CurationSettings) -> Iterator[Source]:
    """The images to curate: the first n of the folder (sorted by name) or n fresh shapes scenes."""
    if settings.folder:
        folder = Path(settings.folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder of images")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        for path in paths[:settings.n]:
            yield Source(label=path.name, image=open_image(path), truth=None)
        return
    # A seed names a scene only together with its world, so a pair from another world says which.
    world = "" if settings.world == WorldOptions() else f" ({settings.world})"
    for seed in range(settings.seed_offset, settings.seed_offset + settings.n):
        scene = settings.world.scene(seed)
        yield Source(label=f"scene seed {seed}{world}", image=render(scene), truth=scene.names())


def pick_pair(result: JudgeResult, rank: str, truth: Truth | None = None
              ) -> tuple[ScoredCandidate, ScoredCandidate] | None:
    """Best and worst candidate by `rank`, or None when there is no preference (same text or a tie).

    Empty candidates and those without a score (no sentence to judge) take no part.
    """
    def key(candidate: ScoredCandidate):
        return RANKERS[rank](candidate, truth, result.settings.higher_is_better)

    scored = [c for c in result.candidates if c.text.strip() and not math.isnan(c.mean_debiased)]
    return best_and_worst(scored, key) if len(scored) >= 2 else None


def best_and_worst(candidates: list[ScoredCandidate], key: Callable[[ScoredCandidate], object]
                   ) -> tuple[ScoredCandidate, ScoredCandidate] | None:
    """Top and bottom of the candidates by key, or None when they tie or are the same text."""
    ordered = sorted(candidates, key=key, reverse=True)  # stable: ties keep generation order
    best, worst = ordered[0], ordered[-1]
    if best.text.strip() == worst.text.strip() or key(best) == key(worst):
        return None
    return best, worst


def candidate_scores(candidate: ScoredCandidate, truth: Truth | None) -> dict:
    """The numbers stored with an answer of a pair (ground truth ones too for shapes scenes)."""
    scores = {"raw": candidate.mean_raw, "blind": candidate.mean_blind, "debiased": candidate.mean_debiased,
              "min_debiased": candidate.min_debiased, "likelihood": candidate.likelihood}
    if truth is not None:
        hallucinated, recall = oracle_key(candidate, truth)
        scores |= {"hallucinated": -hallucinated, "recall": recall}
    return scores


def make_pair(source: Source, result: JudgeResult, rank: str, loaded: LoadedModel) -> Pair | None:
    """The store pair for one judged image, or None when its candidates express no preference."""
    picked = pick_pair(result, rank, source.truth)
    if picked is None:
        return None
    best, worst = picked
    chosen, rejected = strip_control_characters(best.text), strip_control_characters(worst.text)
    if not chosen or not rejected or comparable_text(chosen) == comparable_text(rejected):
        return None  # the same answer once cleaned: no preference to learn
    return Pair(image_sha256="", prompt=result.question, chosen=chosen, rejected=rejected,
                chosen_scores=candidate_scores(best, source.truth),
                rejected_scores=candidate_scores(worst, source.truth), model_id=loaded.model_id,
                adapter=loaded.adapter, source="self", note=f"self-curated ({rank}) from {source.label}")


@dataclass
class Curated:
    """One judged image: its pair (None when its candidates express no preference) and the image itself."""

    pair: Pair | None
    image: Image.Image


def curated(loaded: LoadedModel, settings: CurationSettings, gen: GenerationSettings,
            judge_settings: JudgeSettings) -> Iterator[Curated]:
    """Generate and self-judge candidates for each image, yielding its pair; touches no store.

    Pure computation, so it can run in a separate worker (a ZeroGPU `spaces.GPU` call is a forked
    process, and a SQLite connection must never cross a fork): the caller writes what it returns.
    """
    for done, source in enumerate(sources(settings), start=1):
        # Each image gets its own sampling seed so a run is reproducible and images differ.
        result = judge(loaded, source.image, settings.question,
                       GenerationSettings(**{**asdict(gen), "seed": gen.seed + done}), judge_settings)
        yield Curated(make_pair(source, result, settings.rank, loaded), source.image)


def store_curated(store: Store, items: Iterable[Curated], total: int,
                  on_progress: Callable[[CurationProgress], None] | None = None) -> CurationProgress:
    """Add each curated pair to the store as it comes (duplicates skipped); return the final tally."""
    started = time.time()
    done = pairs = skipped = 0
    for done, item in enumerate(items, start=1):
        if item.pair is None or store.add_pairs([(item.pair, item.image)], skip_duplicates=True) == [None]:
            skipped += 1
        else:
            pairs += 1
        if on_progress is not None:
            on_progress(CurationProgress(done, total, pairs, skipped, time.time() - started))
    return CurationProgress(done, total, pairs, skipped, time.time() - started)


def curate(loaded: LoadedModel, store: Store, settings: CurationSettings, gen: GenerationSettings,
           judge_settings: JudgeSettings,
           on_progress: Callable[[CurationProgress], None] | None = None) -> CurationProgress:
    """Generate, self-judge and store top-versus-bottom pairs for each image, one image at a time."""
    return store_curated(store, curated(loaded, settings, gen, judge_settings), settings.n, on_progress)


def main(argv: list[str] | None = None) -> None:
    """CLI: self-curate preference pairs into the store, printing progress."""
    parser = argparse.ArgumentParser(prog="python -m core.training.selfcurate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="how many images to curate (default 100)")
    parser.add_argument("--rank", default="debiased", choices=list(RANKERS),
                        help="rank candidates by the debiased score, the raw score, or ground truth (shapes only)")
    parser.add_argument("--folder", default="", help="curate the images in this folder instead of shapes scenes")
    parser.add_argument("--seed-offset", type=int, default=FRESH_SEED_OFFSET,
                        help=f"first shapes-scene seed (default {FRESH_SEED_OFFSET}; the test split is 0..999999)")
    parser.add_argument("--question", default=DESCRIBE_QUESTION, help="the prompt to answer")
    parser.add_argument("--candidates", type=int, default=4, help="candidates per image (default 4)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest candidate in tokens (default 64)")
    parser.add_argument("--alpha", type=float, default=1.0, help="debiasing strength alpha (default 1.0)")
    parser.add_argument("--judge-template", default=None,
                        help="judge template: faithfulness | faithfulness_last | safety | a custom text containing "
                             "{sentence} (default SELFJUDGE_JUDGE_TEMPLATE or faithfulness)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--db", type=Path, default=None, help="the store (default: SELFJUDGE_DATA/selfjudge.db)")
    parser.add_argument("--model", default=None, help="model id or path (default: the embedded model)")
    parser.add_argument("--adapter", default=None, help="LoRA adapter to curate with (a later round)")
    WorldOptions.add_arguments(parser)
    args = parser.parse_args(argv)
    settings = CurationSettings(n=args.n, rank=args.rank, seed_offset=args.seed_offset, folder=args.folder,
                                question=args.question, world=WorldOptions.from_args(args))
    gen = GenerationSettings(n=args.candidates, strategy="sample", temperature=args.temperature,
                             max_new_tokens=args.max_new_tokens, seed=args.seed)
    model_settings = ModelSettings(**{k: v for k, v in {"model": args.model, "adapter": args.adapter}.items() if v})
    store = Store(args.db or DataSettings().db_path)

    def show(p: CurationProgress) -> None:
        print(f"\r{p.done}/{p.total} images  {p.pairs} pairs  {p.skipped} skipped  {p.seconds:.0f}s", end="",
              flush=True)

    template = {"template": args.judge_template} if args.judge_template else {}
    judge_settings = JudgeSettings(alpha=args.alpha, **template)
    final = curate(load_model(model_settings), store, settings, gen, judge_settings, show)
    print(f"\nstored {final.pairs} self pairs in {store.path} ({final.skipped} images gave no preference)")
    store.close()


if __name__ == "__main__":
    main()
