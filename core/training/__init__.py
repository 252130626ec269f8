"""Training: DPO on preference pairs, the fine-tune runner, self-curation of pairs, TRL training."""
