"""SelfJudge Studio's library, in layers (lowest first).

- `core.config`: the settings dataclasses every layer reads (filled from CLI flags and SELFJUDGE_* variables);
  it imports nothing from core.
- `core.engine`: the model-agnostic engine: loading, chat templates, forward passes, generation, the judge,
  judge-guided decoding, safety. It imports nothing from the other layers.
- `core.data`: the preference store (SQLite) and its import/export; it builds on the engine only.
- `core.training`: DPO on stored pairs (`core.training.dpo`), the fine-tune runner, self-curation, TRL training.
- `core.shapes`: the synthetic shapes world, its toy model and the evaluations run on it.
- `core.benchmarks`: the real-image benchmarks (COCO CHAIR, POPE); nothing else imports them.

Training and the shapes world lean on each other as packages, never as modules: self-curation
draws scenes from core.shapes.world and ranks by their ground truth, and core.shapes.proof runs
self-curation and DPO. tests/test_layers.py checks the rules above and that no modules import in a circle.
"""
