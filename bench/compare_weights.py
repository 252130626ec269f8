"""Are two saved models' weights equal, bit for bit? Prints how many tensors are equal and the largest difference.

Seeded training is meant to give the same weights for the same seed and --threads; this is how
docs/language-prior.md (session 20) checked it, and found Python's hash seed changing the data.

Run:  python bench/compare_weights.py M1 M2
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file

WEIGHTS = "model.safetensors"


@dataclass
class WeightComparison:
    """Equal tensors out of all, and the largest absolute difference with the tensor it is in."""

    equal: int
    total: int
    largest_difference: float
    largest_in: str


def compare_weights(first: Path, second: Path) -> WeightComparison:
    """Compare two saved models tensor by tensor (they must have the same tensor names and shapes)."""
    a, b = load_file(first / WEIGHTS), load_file(second / WEIGHTS)
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError(f"{second} does not have {first}'s architecture")
    equal, largest, where = 0, 0.0, ""
    for name in sorted(a):
        equal += int(a[name].equal(b[name]))
        difference = (a[name].double() - b[name].double()).abs().max().item() if a[name].numel() else 0.0
        if difference > largest:
            largest, where = difference, name
    return WeightComparison(equal, len(a), largest, where)


def main(argv: list[str] | None = None) -> None:
    """CLI: compare two models' weights; exit status 1 when they differ."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs=2, type=Path, help="two saved model folders (model.safetensors)")
    args = parser.parse_args(argv)
    try:
        result = compare_weights(*args.models)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(f"{result.equal} of {result.total} tensors equal; largest difference {result.largest_difference:.3g}"
          + (f" ({result.largest_in})" if result.largest_in else ""))
    sys.exit(0 if result.equal == result.total else 1)


if __name__ == "__main__":
    main()
