"""SelfJudge Studio's library, in layers (lowest first; each imports only from those below it).

- `core.config`: the settings dataclasses every layer reads (filled from CLI flags and SELFJUDGE_* variables).
- `core.engine`: the model-agnostic engine: loading, chat templates, forward passes, generation, the judge,
  judge-guided decoding, safety. It imports nothing from the other layers (tests/test_layers.py).
- `core.data`: the preference store (SQLite) and its import/export.
- `core.training`: DPO on stored pairs, the background fine-tune runner, self-curation, TRL export.
- `core.shapes`: the synthetic shapes world, its toy model and the evaluations run on it.
- `core.benchmarks`: the real-image benchmarks (COCO CHAIR, POPE).
"""
