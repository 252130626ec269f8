"""The decoding evaluation: sentence pool, CHAIR rows, AUROC rows and the CLI on a tiny model."""

from __future__ import annotations

import json

from core.engine.decoding import DecodeNode, DecodeResult
from core.engine.judge import JudgeSettings
from core.shapes.evaluate_decoding import AurocRow, DecodingRow, decoding_row, main, print_tables, sentence_pool
from core.shapes.world import Scene, SceneObject


def node(step, text, chosen, parent):
    return DecodeNode(step=step, text=text, score=0.0, chosen=chosen, parent=parent)


def test_sentence_pool_gives_each_proposal_its_chosen_context():
    judged = DecodeResult(text="A red circle. A blue star.", strategy="debiased-judged", nodes=[
        node(0, "A red circle.", True, None), node(0, "A red square.", False, None),
        node(1, "A blue star.", True, 0), node(1, "", False, 0), node(1, "A green heart.", False, 0)])
    greedy = DecodeResult(text="A red square. A blue star.", strategy="greedy", nodes=[])
    pool = sentence_pool({"judged": [judged], "greedy": [greedy]})
    assert pool == [(0, "", "A red circle."), (0, "A red circle.", "A blue star."), (0, "", "A red square."),
                    (0, "A red circle.", "A green heart."), (0, "A red square.", "A blue star.")]


def test_decoding_row_is_chair_of_the_texts():
    scene = Scene(seed=0, objects=(SceneObject("circle", "red", "small", "left", 10, 40),), background=(0, 0, 0),
                  noise=0.0)
    results = [DecodeResult(text="A red circle. A blue star.", strategy="greedy", nodes=[]),
               DecodeResult(text="A red circle.", strategy="greedy", nodes=[]),
               DecodeResult(text="A red circle. A red circle is here.", strategy="greedy", nodes=[])]
    row = decoding_row(results, [scene] * 3, "greedy", JudgeSettings(), 2.0)
    assert row == DecodingRow(strategy="greedy", context="sentence", alpha=1.0, chair_s=1 / 3, chair_i=1 / 4,
                              recall=1.0, mean_sentences=5 / 3, mean_words=17 / 3, seconds=2.0, repeats=1 / 3)


def test_tables_are_markdown(capsys):
    print_tables([DecodingRow("greedy", "sentence", 1.0, 0.5, 0.25, 0.9, 3.0, 20.0, 12.0)],
                 [AurocRow("sentence", "logit", 0.6, 0.5, {"0.0": 0.6, "1.0": 0.7}, 10, 5)], [0.0, 1.0])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| greedy | - | - | 0.500 | 0.250 | 0.900 | 0.000 | 3.00 | 20.0 | 12 |"
    assert lines[-1] == "| sentence | logit | 0.600 | 0.500 | 0.600 | 0.700 | 10 | 5 |"


def test_cli_runs_on_a_tiny_model(tiny_llava_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    main(["--n", "2", "--batch", "1", "--k", "2", "--max-new-tokens", "6", "--alphas", "0,1",
          "--model", str(tiny_llava_dir), "--reject-below", "-1000", "--out", str(out)])
    data = json.loads(out.read_text())
    assert [(r["strategy"], r["context"]) for r in data["decoding"]] == [
        ("greedy", "sentence"), ("beam", "sentence"), ("raw-judged", "sentence"), ("debiased-judged", "sentence"),
        ("raw-judged", "response"), ("debiased-judged", "response")]
    assert [(r["context"], r["kind"]) for r in data["auroc"]] == [
        (c, k) for c in ("sentence", "response") for k in ("logit", "logprob", "log-odds")]
    assert "| strategy | context | alpha |" in capsys.readouterr().out
    assert all(set(r["debiased"]) == {"0.0", "1.0"} for r in data["auroc"])


def test_json_flag_prints_the_documented_object_on_validation_scenes(tiny_llava_dir, capsys):
    main(["--n", "2", "--batch", "2", "--k", "2", "--max-new-tokens", "5", "--alphas", "0,1", "--json",
          "--eval-first-seed", "4000000", "--strategies", "greedy,debiased-judged", "--contexts", "sentence",
          "--model", str(tiny_llava_dir), "--reject-below", "none"])
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"rows", "auroc"}
    assert [(r["strategy"], r["context"]) for r in data["rows"]] == [("greedy", "sentence"),
                                                                     ("debiased-judged", "sentence")]
    assert all(set(r) == {"strategy", "context", "alpha", "chair_s", "chair_i", "recall"} for r in data["rows"])
    assert [(r["context"], r["kind"]) for r in data["auroc"]] == [
        (c, k) for c in ("sentence", "response") for k in ("logit", "logprob", "log-odds")]


def test_eval_first_seed_chooses_the_scenes(tiny_llava_dir, monkeypatch):
    import core.shapes.world as module  # evaluate_decoding draws its scenes through WorldOptions.scene

    seen = []
    real = module.make_scene
    monkeypatch.setattr(module, "make_scene", lambda seed, **kw: seen.append(seed) or real(seed, **kw))
    main(["--n", "2", "--batch", "2", "--k", "2", "--max-new-tokens", "3", "--alphas", "1", "--json",
          "--eval-first-seed", "4000000", "--strategies", "greedy", "--model", str(tiny_llava_dir)])
    assert seen == [4000000, 4000001]
