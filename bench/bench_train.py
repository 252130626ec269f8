"""How fast does the embedded model train on this CPU: one padded batch, length groups, bfloat16 autocast?

Issue 9 asks for seeded training in at most 45 minutes on 2 cores; the default recipe takes 54-65
(docs/language-prior.md). This builds the embedded model from its config (random weights, as the
recipe starts), makes the language stage's batches (core.shapes.embedded.training_batch: 32 fresh
scenes, every task) and times optimizer steps of that stage, after warm-up steps, in float32 and
with `torch.autocast("cpu", dtype=torch.bfloat16)` (weights and optimizer stay float32). It prints
seconds per step of each and the ratio, and what the language and answers stages (the recipe's
4,500 steps of this size) would take at each speed. The training code itself runs in float32; a
bfloat16 option would need a full recipe run to show it trains as well.

It also times the training code's length groups (EmbeddedConfig.length_groups, default 2): each
batch run as that many length-sorted pieces, each padded only to its own longest row, with the
same gradient (tests/test_embedded.py checks it); training steps are otherwise identical. It prints
the share of padding among the tokens computed with one group and with the groups timed.

Run:  python bench/bench_train.py [--steps 12 --threads 2 --groups 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.shapes.embedded import (EmbeddedConfig, build_model, build_processor, build_tokenizer,  # noqa: E402
                                  language_stages, length_groups, training_batch, training_loss_backward)


def seconds_per_step(model, optimizer, batches: list[dict], bf16: bool, groups: int = 1) -> float:
    """Mean wall time of one training step (forward, backward, optimizer) over the batches."""
    start = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            training_loss_backward(model, batch, groups)
        optimizer.step()
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    """CLI: time float32 and bfloat16-autocast steps of the language stage; print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--groups", type=int, default=EmbeddedConfig.length_groups, help="length groups to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = EmbeddedConfig()
    tokenizer = build_tokenizer(cfg.vocab_size, cfg.seed)
    processor = build_processor(tokenizer, cfg)
    model = build_model(tokenizer, cfg)
    model.train()
    stage = language_stages(cfg)[1]
    batches = [training_batch(step, cfg, processor, stage) for step in range(args.warmup + args.steps)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    modes = {"float32, one padded batch": dict(bf16=False),
             "bfloat16 autocast, one padded batch": dict(bf16=True),
             f"float32, {args.groups} length groups": dict(bf16=False, groups=args.groups)}
    for mode in modes.values():
        seconds_per_step(model, optimizer, batches[:args.warmup], **mode)
    # Alternate in two rounds, so a slower stretch of a shared CPU does not fall on one mode only.
    timed = batches[args.warmup:]
    half = len(timed) // 2
    seconds = {name: 0.0 for name in modes}
    for part in (timed[:half], timed[half:]):
        for name, mode in modes.items():
            seconds[name] += seconds_per_step(model, optimizer, part, **mode) / 2
    steps = cfg.steps + cfg.answer_steps
    base = seconds["float32, one padded batch"]
    print(f"language stage, batch {cfg.batch_size}, {args.threads} threads, {args.steps} timed steps each:")
    image_token_id = model.config.image_token_id
    for groups in (1, args.groups):
        pieces = [piece for batch in timed for piece, _ in length_groups(batch, groups, image_token_id)]
        cells = sum(piece["attention_mask"].numel() for piece in pieces)
        padding = cells - sum(int(piece["attention_mask"].sum()) for piece in pieces)
        print(f"  padding, {groups} group{'s' * (groups > 1)}: {padding / cells:.1%} of the tokens computed")
    for name, value in seconds.items():
        print(f"  {name:38s} {value:.3f} s/step -> {steps} steps (language + answers stages) "
              f"{value * steps / 60:.1f} min; speed-up {base / value:.2f}x")

if __name__ == "__main__":
    main()
