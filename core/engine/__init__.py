"""The model-agnostic engine: load a model, build its prompts, run it, generate, judge, decode.

Nothing here imports from core.data, core.training, core.shapes or core.benchmarks.
"""
