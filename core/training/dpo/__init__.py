"""LoRA-DPO: teach a vision-language model to prefer the chosen answer of each preference pair.

Direct Preference Optimization (Rafailov et al. 2023) with a LoRA adapter (peft) on the
language model, optionally the projector too. The reference policy is the same model with
the adapter switched off (`model.disable_adapter()`), so there is one copy of the weights;
the base may be 4-bit NF4 (QLoRA, CUDA) or full precision (CPU).

Why a focused loop and not TRL's DPOTrainer: TRL 1.16's DPOTrainer does train our tiny LLaVA
offline (tried), but its losses are one long if/elif ladder that can only be exercised
through a model, its vision collator is general-purpose and untestable in a few lines, and
its checkpoints are Trainer folders written in place. Here each piece is small and tested on
its own: a collator with exact tensors, loss functions checked against the formula on known
numbers, and epoch checkpoints written to a temporary folder and renamed only when complete,
so a crash resumes bit-identically from the last whole one.

The parts, by job:
- `settings`: DPOSettings, PreferenceExample, the adapter's file names and the CLI flags;
- `losses`: policy and reference log-probs and the DPO / IPO / RPO losses on them;
- `collate`: a preference batch (chosen rows, then rejected rows);
- `lora`: putting a fresh adapter on the model and taking it off again;
- `checkpoints`: epoch checkpoints, resume, and publishing the finished adapter;
- `loop`: the training loop (`train_dpo`);
- `__main__`: the CLI.

Train from the pairs in the store (progress per step; the run is recorded in the store):
    python -m core.training.dpo --db data/selfjudge.db --out data/adapters/NAME [--epochs 1 --beta 0.1 ...]
"""
