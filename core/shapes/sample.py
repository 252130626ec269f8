"""Sample the shapes world to files: rendered scenes (PNG) and scenes.jsonl with ground truth and a description.

It lives apart from core.shapes.world because the descriptions come from core.shapes.texts,
which builds on the world (the world itself imports nothing from texts).

Run:  python -m core.shapes.sample --seed 0 --n 16 --out data/sample
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict
from pathlib import Path

from core.shapes.texts import describe
from core.shapes.world import make_scene, render


def sample(seed: int, n: int, out: Path) -> Path:
    """Write n scenes (PNG) and out/scenes.jsonl with ground truth and a reference description."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        scene = make_scene(seed + i)
        fname = f"scene_{seed + i:07d}.png"
        render(scene).save(out / fname)
        row = {"file": fname, "seed": scene.seed,
               "objects": [{k: v for k, v in asdict(o).items() if k in ("shape", "color", "size", "position")}
                           for o in scene.objects],
               "description": describe(scene, random.Random(scene.seed))}
        lines.append(json.dumps(row))
    path = out / "scenes.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)  # never leave a half-written file
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m core.shapes.sample",
                                     description="Write N rendered scenes and their ground truth.")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first scene")
    parser.add_argument("--n", type=int, default=16, help="number of scenes")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    print(sample(args.seed, args.n, args.out))


if __name__ == "__main__":
    main()
