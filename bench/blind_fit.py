"""How far a model's blind judge has learned its own training labels (the text prior), on the shapes world.

Without the image, the embedded model learns judgments from text captions
(`core.shapes.texts.caption_judge_example`): "Yes" for a sentence the caption writes, "No" for an
object it does not name. Captions name the frequent-in-text objects (the prior partners) far more
often than the scenes hold them, so those labels say "Yes" to most sentences about a frequent-in-text
object and to fewer than half of the others. The blind score can only carry the prior that debiasing
subtracts as far as the model has learned that. This script draws blind judgments exactly as training
draws them (fresh scenes, the model's recorded corpus habits) and puts the labels' "Yes" rate beside
the model's mean blind P(yes) (`core.shapes.evaluate.p_yes`, the studio's blind prompt), by the object
the judged sentence names and by whether it comes with context.

Run:  python bench/blind_fit.py --model M --n 600 --first-seed 9000000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import ModelSettings  # noqa: E402
from core.engine.loading import LoadedModel, load_model  # noqa: E402
from core.shapes.evaluate import p_yes  # noqa: E402
from core.shapes.metrics import parse_objects  # noqa: E402
from core.shapes.texts import FREQUENT_IN_TEXT, JUDGE_TEMPLATES, CorpusHabits, caption_judge_example  # noqa: E402
from core.shapes.world import WorldOptions  # noqa: E402

GROUPS = ("frequent-in-text object", "other object")


@dataclass
class FitRow:
    """Blind judgments of one group: how many, how often the label is "Yes", the model's mean P(yes)."""

    group: str
    context: bool
    n: int
    label_yes: float
    model_p_yes: float


def recorded_habits(model_dir: str) -> CorpusHabits:
    """The corpus habits a shapes model was trained with (its training_config.json), else the defaults."""
    path = Path(model_dir) / "training_config.json"
    if not path.is_file():
        return CorpusHabits()
    cfg = json.loads(path.read_text())
    defaults = CorpusHabits()
    return CorpusHabits(cfg.get("habit_rate", defaults.mention_rate),
                        cfg.get("typical_name_rate", defaults.typical_name_rate),
                        cfg.get("mention_order", defaults.order))


def judged_group(question: str) -> str:
    """The group of a judge question: by the object its judged sentence (the last one named) is about."""
    names = parse_objects(question)
    return GROUPS[0] if names and names[-1] in FREQUENT_IN_TEXT else GROUPS[1]


def blind_fit(loaded: LoadedModel, n: int, first_seed: int, habits: CorpusHabits,
              world: WorldOptions = WorldOptions(), batch_size: int = 32, seed: int = 0) -> list[FitRow]:
    """Label "Yes" rate and mean blind P(yes) by group and context, over n blind caption judgments of
    scenes first_seed..first_seed+n-1 (templates drawn as training draws them)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = random.Random(seed)
    questions, labels, keys = [], [], []
    for i in range(n):
        with_context = rng.random() < 0.5
        example = caption_judge_example(world.scene(first_seed + i), rng, with_context=with_context,
                                        template=rng.choice(JUDGE_TEMPLATES), habits=habits)
        questions.append(example.question)
        labels.append(example.answer.startswith("Yes"))
        keys.append((judged_group(example.question), with_context))
    scores: list[float] = []
    for start in range(0, n, batch_size):
        scores += p_yes(loaded, questions[start:start + batch_size], None)
    rows = []
    for group in GROUPS:
        for context in (False, True):
            picked = [i for i, key in enumerate(keys) if key == (group, context)]
            if picked:
                rows.append(FitRow(group, context, len(picked), sum(labels[i] for i in picked) / len(picked),
                                   sum(scores[i] for i in picked) / len(picked)))
    return rows


def format_table(rows: list[FitRow]) -> str:
    """A Markdown table, one line per group and context."""
    lines = ["| blind judgments about | context | n | label \"Yes\" | model P(yes) |", "|---|---|---|---|---|"]
    lines += [f"| {r.group} | {'yes' if r.context else 'no'} | {r.n} | {r.label_yes:.3f} | {r.model_p_yes:.3f} |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """CLI: print the table (or JSON) for one model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=ModelSettings().model, help="model folder (default: the embedded model)")
    parser.add_argument("--n", type=int, default=600, help="blind judgments to draw")
    parser.add_argument("--first-seed", type=int, default=9_000_000, help="first scene seed")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of the table")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    loaded = load_model(ModelSettings(model=args.model, device="cpu", dtype="float32", adapter="", load_in_4bit=False))
    habits = recorded_habits(args.model)
    rows = blind_fit(loaded, args.n, args.first_seed, habits)
    if args.json:
        print(json.dumps({"habits": asdict(habits), "rows": [asdict(r) for r in rows]}))
    else:
        print(f"Blind judgments drawn as training draws them: {args.n} scenes from seed {args.first_seed}, "
              f"habit rate {habits.mention_rate}, mention order {habits.order}.\n")
        print(format_table(rows))


if __name__ == "__main__":
    main()
