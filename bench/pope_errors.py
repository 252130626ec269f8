"""Where a model's yes/no ("Is there a red circle in the image?") errors are, on the shapes world.

`python -m core.shapes.evaluate` gives one accuracy per POPE split. This script asks the same
questions (the same scenes and the same random draws) and sorts each by what it takes to answer it:

- a present object, by how visible it is (clear, low contrast, dim, faint) and whether another
  object of the scene has its colour;
- an absent object, by how it relates to the scene: an absent prior partner of a present anchor,
  sharing a colour with one object *and* a shape with another, sharing only a colour, only a shape,
  or unrelated. Only colour bound to shape tells the near misses (the middle three) from a present object.

Run:  python bench/pope_errors.py --model M --n 300 --first-seed 4000000   (validation scenes)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import ModelSettings  # noqa: E402
from core.engine.loading import LoadedModel, load_model  # noqa: E402
from core.shapes.evaluate import p_yes, pope_items  # noqa: E402
from core.shapes.metrics import hallucination_kind, parse_objects  # noqa: E402
from core.shapes.texts import POPE_SPLITS  # noqa: E402
from core.shapes.world import Scene, WorldOptions, render  # noqa: E402

PRESENT_KINDS = ("clear", "low contrast", "dim", "faint")
ABSENT_KINDS = ("absent partner", "shares colour and shape", "shares colour", "shares shape", "unrelated")


def question_kind(scene: Scene, name: tuple[str, str]) -> str:
    """What answering "Is there a <name>?" takes, on this scene (see the module docstring)."""
    present = scene.names()
    if name in present:
        obj = next(o for o in scene.objects if o.name == name)
        visibility = "faint" if obj.faint else "dim" if obj.dim else "low contrast" if obj.low_contrast else "clear"
        shared = sum(o.color == obj.color for o in scene.objects) > 1
        return visibility + (", colour shared" if shared else "")
    if hallucination_kind(name, present) == "partner":
        return "absent partner"
    colour = any(name[0] == c for c, _shape in present)
    shape = any(name[1] == s for _colour, s in present)
    return {(True, True): "shares colour and shape", (True, False): "shares colour",
            (False, True): "shares shape"}.get((colour, shape), "unrelated")


def pope_errors(loaded: LoadedModel, n: int, first_seed: int, split: str = "random",
                world: WorldOptions = WorldOptions(), batch_size: int = 16) -> dict[str, dict[str, int]]:
    """Questions and wrong answers (P(yes) on the wrong side of 0.5) by question kind, on scenes
    first_seed..first_seed+n-1, drawn as core.shapes.evaluate draws them."""
    scenes = [world.scene(first_seed + i) for i in range(n)]
    totals, errors = Counter(), Counter()
    for start in range(0, n, batch_size):
        chunk = scenes[start:start + batch_size]
        items = pope_items(chunk, split)
        probs = p_yes(loaded, [ex.question for _, ex in items], [render(s) for s, _ in items])
        for p, (scene, example) in zip(probs, items):
            kind = question_kind(scene, parse_objects(example.question)[0])
            totals[kind] += 1
            errors[kind] += (p > 0.5) != (example.answer == "Yes.")
    return {kind: {"n": totals[kind], "errors": errors[kind]} for kind in sorted(totals, key=_kind_rank)}


def _kind_rank(kind: str) -> tuple[int, str]:
    base = kind.split(",")[0]
    return (PRESENT_KINDS.index(base) if base in PRESENT_KINDS else len(PRESENT_KINDS) + ABSENT_KINDS.index(base),
            kind)


def format_table(rows: dict[str, dict[str, int]]) -> str:
    """A markdown table of the counts, with the accuracy over all questions."""
    lines = ["| question | n | wrong | wrong share |", "|---|---|---|---|"]
    lines += [f"| {kind} | {r['n']} | {r['errors']} | {r['errors'] / r['n']:.1%} |" for kind, r in rows.items()]
    total, wrong = sum(r["n"] for r in rows.values()), sum(r["errors"] for r in rows.values())
    near = [r for kind, r in rows.items() if kind.startswith("shares")]
    lines.append(f"| all | {total} | {wrong} | accuracy {1 - wrong / total:.1%} |")
    lines.append(f"| near misses (shares ...) | {sum(r['n'] for r in near)} | {sum(r['errors'] for r in near)} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """CLI: the table for one model and one split."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model id or folder (default: the embedded model)")
    parser.add_argument("--n", type=int, default=300, help="scenes (one yes and one no question each)")
    parser.add_argument("--first-seed", type=int, default=4_000_000, help="first scene seed (validation: 4,000,000+)")
    parser.add_argument("--split", default="random", choices=POPE_SPLITS)
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    WorldOptions.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    loaded = load_model(ModelSettings(**({"model": args.model} if args.model else {})))
    rows = pope_errors(loaded, args.n, args.first_seed, args.split, WorldOptions.from_args(args))
    print(json.dumps(rows) if args.json else format_table(rows))


if __name__ == "__main__":
    main()
