"""The studio's DPO trainer on preference pairs (LoRA on the language model)."""
