"""Mean of several saved models' weights (a "model soup"), saved as a model that loads like any other.

Three runs of one training command, which differed only in Python's hash seed (one changed
question in a few batches; fixed in session 20), moved the embedded model's raw judge by 0.18 AUROC
(docs/language-prior.md, session 19). The mean of several runs' weights (other --seed values) says
where a recipe lands without that noise. The models must share
their architecture and their start (runs of one command, or of commands from one --init); the
first model's processor and configs are copied beside the mean.

Run:  python bench/average_weights.py --out SOUP M1 M2 M3
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"


def average_weights(models: list[Path], out: Path) -> int:
    """Write the mean of the models' floating-point weights to out (other tensors: the first model's);
    return the number of tensors averaged."""
    if len(models) < 2:
        raise ValueError("average at least two models")
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder")
    states = [load_file(model / WEIGHTS) for model in models]
    for model, state in zip(models[1:], states[1:]):
        if state.keys() != states[0].keys() or any(state[k].shape != t.shape for k, t in states[0].items()):
            raise ValueError(f"{model} does not have {models[0]}'s architecture")
    mean, averaged = {}, 0
    for name, tensor in states[0].items():
        if tensor.is_floating_point():  # in float32, then back to the stored dtype
            mean[name] = (sum(state[name].float() for state in states) / len(states)).to(tensor.dtype)
            averaged += 1
        else:
            mean[name] = tensor
    shutil.copytree(models[0], out, ignore=shutil.ignore_patterns(WEIGHTS))
    save_file(mean, out / WEIGHTS, metadata={"format": "pt"})
    return averaged


def main(argv: list[str] | None = None) -> None:
    """CLI: average the weights of the models given; save the mean to --out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="saved model folders (model.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the averaged model")
    args = parser.parse_args(argv)
    try:
        averaged = average_weights(args.models, args.out)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(f"averaged {averaged} tensors of {len(args.models)} models into {args.out}")


if __name__ == "__main__":
    main()
