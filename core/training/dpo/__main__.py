"""CLI: train a LoRA-DPO adapter on the store's pairs, printing metrics per step.

    python -m core.training.dpo --db data/selfjudge.db --out data/adapters/NAME [--epochs 1 --beta 0.1 ...]
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from core.config import ModelSettings
from core.training.dpo.settings import DPOSettings, settings_parser
from core.training.finetune import run_training


def main(argv: list[str] | None = None) -> None:
    """CLI: train an adapter on the store's pairs, printing metrics per step."""
    parser = settings_parser()
    parser.add_argument("--db", type=Path, required=True, help="the SQLite store with the pairs (data/selfjudge.db)")
    parser.add_argument("--out", type=Path, required=True, help="adapter folder to create (data/adapters/NAME)")
    parser.add_argument("--source", default="", choices=["", "human", "self"], help="only pairs from this source")
    parser.add_argument("--model", default=None, help="base model id or path (default: the embedded model)")
    parser.add_argument("--4bit", dest="load_in_4bit", action="store_true", help="QLoRA: load the base in 4-bit NF4")
    args = parser.parse_args(argv)
    settings = DPOSettings(**{f.name: getattr(args, f.name) for f in fields(DPOSettings)})
    model_settings = ModelSettings(**{k: v for k, v in {"model": args.model, "adapter": "",
                                                         "load_in_4bit": args.load_in_4bit or None}.items()
                                      if v is not None})

    def show(row: dict) -> None:
        print(f"step {row['step']:4d}  epoch {row['epoch']}  loss {row['loss']:.4f}  margin {row['margin']:+.4f}  "
              f"acc {row['accuracy']:.2f}  chosen {row['reward_chosen']:+.4f}  "
              f"rejected {row['reward_rejected']:+.4f}  nll {row['chosen_nll']:.3f}  {row['seconds']:.0f}s", flush=True)

    run = run_training(args.db, args.out.name, args.out, settings, model_settings, args.source, on_step=show)
    print(f"run #{run['id']} {run['status']}: {run['adapter_path'] or run['error']}")


if __name__ == "__main__":
    main()
