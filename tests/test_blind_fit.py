"""Tests for bench/blind_fit.py: blind judgments drawn as training draws them, labels beside the model's P(yes)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from core.engine.prompts import JUDGE_PROMPTS, judge_prompt
from core.shapes.evaluate import p_yes
from core.shapes.texts import FREQUENT_IN_TEXT, CorpusHabits

SPEC = importlib.util.spec_from_file_location("blind_fit", Path(__file__).parent.parent / "bench" / "blind_fit.py")
blind_fit = importlib.util.module_from_spec(SPEC)
sys.modules["blind_fit"] = blind_fit  # its dataclass looks its module up there
SPEC.loader.exec_module(blind_fit)


def test_the_group_is_the_judged_sentence_s_object_not_the_context_s():
    frequent = " ".join(FREQUENT_IN_TEXT[0])
    judged_other = judge_prompt("There is a small red cross on the left.", JUDGE_PROMPTS["faithfulness"],
                                context=f"There is a large {frequent} at the top.")
    judged_frequent = judge_prompt(f"There is a small {frequent} on the left.", JUDGE_PROMPTS["faithfulness_last"],
                                   context="There is a large red cross at the top.")
    assert blind_fit.judged_group(judged_other) == "other object"
    assert blind_fit.judged_group(judged_frequent) == "frequent-in-text object"


def test_recorded_habits_come_from_the_training_config(tmp_path):
    assert blind_fit.recorded_habits(str(tmp_path)) == CorpusHabits()
    (tmp_path / "training_config.json").write_text(json.dumps(
        {"habit_rate": 0.8, "typical_name_rate": 0.0, "mention_order": "kind"}))
    assert blind_fit.recorded_habits(str(tmp_path)) == CorpusHabits(0.8, 0.0, "kind")


def test_rows_count_every_judgment_once_and_labels_carry_the_prior(tiny_llava):
    habits = CorpusHabits(0.8, 0.0, "kind")
    rows = blind_fit.blind_fit(tiny_llava, n=400, first_seed=9_000_000, habits=habits, batch_size=64)
    assert sum(r.n for r in rows) == 400
    assert {(r.group, r.context) for r in rows} == {(g, c) for g in blind_fit.GROUPS for c in (False, True)}
    label = {g: sum(r.label_yes * r.n for r in rows if r.group == g) / sum(r.n for r in rows if r.group == g)
             for g in blind_fit.GROUPS}
    # the labels say "Yes" to most sentences about a frequent-in-text object, to under half of the others
    assert label["frequent-in-text object"] > 0.75 > 0.45 > label["other object"]
    assert all(0.0 < r.model_p_yes < 1.0 for r in rows)
    # the same judgments in batches of another size give the same means
    again = blind_fit.blind_fit(tiny_llava, n=400, first_seed=9_000_000, habits=habits, batch_size=7)
    for a, b in zip(rows, again):
        assert (a.group, a.context, a.n, a.label_yes) == (b.group, b.context, b.n, b.label_yes)
        assert a.model_p_yes == pytest.approx(b.model_p_yes, abs=1e-4)


def test_model_p_yes_is_the_blind_p_yes_of_core_evaluate(tiny_llava):
    rows = blind_fit.blind_fit(tiny_llava, n=1, first_seed=9_000_000, habits=CorpusHabits(), batch_size=1)
    assert len(rows) == 1 and rows[0].n == 1
    # redraw the one question as blind_fit draws it, and score it alone
    import random

    from core.shapes.texts import JUDGE_TEMPLATES, caption_judge_example
    from core.shapes.world import WorldOptions

    rng = random.Random(0)
    with_context = rng.random() < 0.5
    example = caption_judge_example(WorldOptions().scene(9_000_000), rng, with_context=with_context,
                                    template=rng.choice(JUDGE_TEMPLATES), habits=CorpusHabits())
    assert rows[0].context == with_context
    assert rows[0].label_yes == float(example.answer.startswith("Yes"))
    assert rows[0].model_p_yes == pytest.approx(p_yes(tiny_llava, [example.question], None)[0], abs=1e-5)


def test_cli_prints_json_and_rejects_bad_n(tiny_llava_dir, capsys):
    blind_fit.main(["--model", str(tiny_llava_dir), "--n", "12", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert sum(r["n"] for r in out["rows"]) == 12 and out["habits"]["order"] in ("position", "kind")
    with pytest.raises(SystemExit):
        blind_fit.main(["--model", str(tiny_llava_dir), "--n", "0"])
