"""Teacher-forced shape naming: given the true description so far and "There is a {size} {colour}", does the model
name the object's shape next? Split by whether the object's colour is its own in the scene, or it is the first or
the second of two objects of one colour (in the model's mention order). Where greedy captions lose recall and
repeat an object, this says whether the model cannot read the shape or cannot tell which same-colour object is next.

Run:  python bench/shape_binding.py --model assets/shapes-llava --n 300 --first-seed 4000000
(validation seeds by default; the mention order is the model's own, from its training_config.json)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import ModelSettings  # noqa: E402
from core.engine.loading import LoadedModel, load_model  # noqa: E402
from core.engine.prompts import DESCRIBE_QUESTION  # noqa: E402
from core.shapes.evaluate import chat_prompt  # noqa: E402
from core.shapes.texts import POSITION_PHRASE, mention_order  # noqa: E402
from core.shapes.world import SHAPES, WorldOptions, render  # noqa: E402

TEMPLATE = "There is a {size} {color} {shape} {where}."


def object_group(obj, ordered: list) -> str:
    """'own colour', or 'first of a colour' / 'later of a colour' among objects sharing its colour."""
    same = [o for o in ordered if o.color == obj.color]
    if len(same) == 1:
        return "own colour"
    return "first of a colour" if same[0] is obj else "later of a colour"


def forced_cases(scene, order: str) -> list[tuple[str, str, str]]:
    """(answer prefix ending in the object's colour, its true shape, its group) for each object in mention order."""
    ordered = mention_order(scene, order)
    cases = []
    for i, obj in enumerate(ordered):
        said = " ".join(TEMPLATE.format(size=o.size, color=o.color, shape=o.shape, where=POSITION_PHRASE[o.position])
                        for o in ordered[:i])
        prefix = (said + " " if said else "") + f"There is a {obj.size} {obj.color}"
        cases.append((prefix, obj.shape, object_group(obj, ordered)))
    return cases


@torch.no_grad()
def next_shape(loaded: LoadedModel, image, prompt: str, prefixes: list[str]) -> list[str]:
    """The shape word the model ranks highest after each prefix (answers start after 'ASSISTANT: ')."""
    processor = loaded.processor
    shape_ids = {shape: processor.tokenizer(" " + shape, add_special_tokens=False)["input_ids"][0] for shape in SHAPES}
    texts = [prompt + " " + prefix for prefix in prefixes]
    inputs = processor(text=texts, images=[image] * len(texts), return_tensors="pt", padding=True,
                       add_special_tokens=False, padding_side="left")
    logits = loaded.model(**{k: v.to(loaded.device) for k, v in inputs.items()}).logits[:, -1, :]
    ids = torch.tensor(list(shape_ids.values()), device=logits.device)
    best = logits[:, ids].argmax(dim=-1).tolist()
    return [list(shape_ids)[b] for b in best]


def shape_binding(loaded: LoadedModel, n: int, first_seed: int, order: str,
                  world: WorldOptions = WorldOptions()) -> dict[str, dict[str, float]]:
    """Per object group: objects and the share whose shape the model names right, teacher-forced, on n scenes."""
    prompt = chat_prompt(loaded.processor, DESCRIBE_QUESTION, with_image=True)
    right, total = Counter(), Counter()
    for i in range(n):
        scene = world.scene(first_seed + i)
        cases = forced_cases(scene, order)
        named = next_shape(loaded, render(scene), prompt, [prefix for prefix, _shape, _group in cases])
        for (_prefix, shape, group), guess in zip(cases, named):
            total[group] += 1
            right[group] += guess == shape
    return {group: {"objects": total[group], "shape_right": right[group] / total[group]} for group in total}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/shapes-llava")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--first-seed", type=int, default=4_000_000)
    parser.add_argument("--json", action="store_true")
    WorldOptions.add_arguments(parser)
    args = parser.parse_args(argv)
    config = Path(args.model) / "training_config.json"
    order = json.loads(config.read_text()).get("mention_order", "position") if config.exists() else "position"
    loaded = load_model(ModelSettings(model=args.model, adapter=""))
    result = shape_binding(loaded, args.n, args.first_seed, order, WorldOptions.from_args(args))
    if args.json:
        print(json.dumps({"mention_order": order, "groups": result}))
        return
    print(f"mention order {order}; {args.n} scenes from seed {args.first_seed}")
    for group in ("own colour", "first of a colour", "later of a colour"):
        if group in result:
            print(f"  {group:18s} {result[group]['objects']:5d} objects  shape named right {result[group]['shape_right']:.3f}")


if __name__ == "__main__":
    main()
