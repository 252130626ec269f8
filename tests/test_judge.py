"""Self-judgment scores: formulas on hand-built logits, hand-computed model cases, batched == naive, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from core.engine.chat import UnsupportedModelError
import core.engine.judge
from core.engine.chat import conversation
from core.engine.generation import GenerationSettings, generate_candidates
from core.engine.judge import (SCORE_KINDS, AnswerTokens, JudgeSettings, ScoredCandidate, _rank, answer_tokens, debias,
                               judge, main, score_answers, score_candidates, sentence_spans)
from core.engine.prompts import judge_prompt
from core.shapes.world import make_scene, render

QUESTION = "Describe the image."
CANDIDATES = ["There is a small red circle on the left. A large blue star is at the top.",
              "I can see a green heart!", "No shapes."]
FAMILIES = ["tiny_llava", "tiny_idefics3", "tiny_qwen2_vl"]


def test_settings_are_validated():
    with pytest.raises(ValueError, match="alpha must be between 0 and 10"):
        JudgeSettings(alpha=-1)
    with pytest.raises(ValueError, match="kind must be one of logit, logprob, log-odds"):
        JudgeSettings(kind="prob")
    with pytest.raises(ValueError, match="context must be one of sentence, response"):
        JudgeSettings(context="image")
    with pytest.raises(ValueError, match="containing \\{sentence\\}"):
        JudgeSettings(template="Is it true?")
    custom = JudgeSettings(template="Claim: {sentence} True? Answer yes or no.")
    assert custom.template_text == "Claim: {sentence} True? Answer yes or no." and custom.higher_is_better
    assert not JudgeSettings(template="safety").higher_is_better


def test_the_default_template_is_a_setting(monkeypatch):
    assert JudgeSettings().template == "faithfulness"
    monkeypatch.setenv("SELFJUDGE_JUDGE_TEMPLATE", "faithfulness_last")
    assert JudgeSettings().template_text.endswith("The description is: {sentence}")
    monkeypatch.setenv("SELFJUDGE_JUDGE_TEMPLATE", "no placeholder")
    with pytest.raises(ValueError, match="template must be one of"):
        JudgeSettings()


def test_score_kinds_on_hand_built_logits():
    logits = torch.tensor([0.0, 2.0, 1.0, -1.0, 0.5])
    answers = AnswerTokens(yes=(1, 2), no=(3,))
    log_total = math.log(sum(math.exp(v) for v in [0.0, 2.0, 1.0, -1.0, 0.5]))
    log_yes = math.log(math.exp(2.0) + math.exp(1.0))
    assert SCORE_KINDS["logit"](logits, answers) == pytest.approx(2.0)
    assert SCORE_KINDS["logprob"](logits, answers) == pytest.approx(log_yes - log_total, abs=1e-6)
    assert SCORE_KINDS["log-odds"](logits, answers) == pytest.approx(log_yes - (-1.0), abs=1e-6)


def test_debias_formula():
    assert debias(2.0, 0.5, 1.0) == 3.5  # 2 * 2.0 - 0.5
    assert debias(2.0, 0.5, 0.0) == 2.0  # alpha 0 is the raw score
    assert debias(1.0, 3.0, 2.0) == -3.0  # 3 * 1.0 - 2 * 3.0


def test_answer_tokens_are_the_whole_word_spellings(tiny_llava):
    tokenizer = tiny_llava.processor.tokenizer
    answers = answer_tokens(tokenizer)
    assert sorted(tokenizer.decode([t]) for t in answers.yes) == [" Yes", " yes", "Yes"]
    assert sorted(tokenizer.decode([t]) for t in answers.no) == [" No", " no", "No", "no"]


def test_sentence_spans_map_sentences_to_tokens(tiny_llava):
    tokenizer = tiny_llava.processor.tokenizer
    ids = tokenizer(" There is a red circle. A blue star.", add_special_tokens=False)["input_ids"]
    text, spans = sentence_spans(tokenizer, ids)
    assert text == "There is a red circle. A blue star."
    assert [(s.text, s.token_start, s.token_end) for s in spans] == [
        ("There is a red circle.", 0, 6), ("A blue star.", 6, 10)]
    assert sentence_spans(tokenizer, []) == ("", [])


def hand_scores(loaded, image, sentence, context=""):
    """raw and blind logit of the best yes token, straight from processor + model (no core.engine.forward)."""
    processor = loaded.processor
    question = judge_prompt(sentence, context=context)
    yes = list(answer_tokens(processor.tokenizer).yes)
    scores = []
    for with_image in (True, False):
        text = processor.apply_chat_template(conversation(question, with_image), add_generation_prompt=True)
        inputs = processor(text=text, images=[image] if with_image else None, return_tensors="pt",
                           add_special_tokens=False)
        scores.append(loaded.model(**inputs).logits[0, -1, yes].max().item())
    return scores


def hand_token_logprobs(loaded, image, answer, with_image):
    processor = loaded.processor
    text = processor.apply_chat_template(conversation(QUESTION, with_image), add_generation_prompt=True)
    inputs = processor(text=text + " " + answer, images=[image] if with_image else None, return_tensors="pt",
                       add_special_tokens=False)
    n = len(processor.tokenizer(" " + answer, add_special_tokens=False)["input_ids"])
    logprobs = torch.log_softmax(loaded.model(**inputs).logits[0], dim=-1)
    ids = inputs["input_ids"][0]
    return [logprobs[t - 1, ids[t]].item() for t in range(len(ids) - n, len(ids))]


@pytest.mark.parametrize("context", ["sentence", "response"])
def test_scores_equal_hand_computation(tiny_llava, context):
    image = render(make_scene(4))
    settings = JudgeSettings(alpha=1.5, context=context)
    result = score_candidates(tiny_llava, image, QUESTION, CANDIDATES[:1], settings)
    candidate = result.candidates[0]
    first, second = "There is a small red circle on the left.", "A large blue star is at the top."
    expected = [hand_scores(tiny_llava, image, first),
                hand_scores(tiny_llava, image, second, first if context == "response" else "")]
    for sentence, (raw, blind) in zip(candidate.sentences, expected):
        assert sentence.raw == pytest.approx(raw, abs=1e-4)
        assert sentence.blind == pytest.approx(blind, abs=1e-4)
        assert sentence.debiased == pytest.approx(2.5 * raw - 1.5 * blind, abs=1e-4)
    assert candidate.mean_debiased == pytest.approx(sum(2.5 * r - 1.5 * b for r, b in expected) / 2, abs=1e-4)
    assert candidate.min_debiased == pytest.approx(min(2.5 * r - 1.5 * b for r, b in expected), abs=1e-4)
    with_image = hand_token_logprobs(tiny_llava, image, CANDIDATES[0], True)
    blind = hand_token_logprobs(tiny_llava, image, CANDIDATES[0], False)
    assert [t.logprob_image for t in candidate.tokens] == pytest.approx(with_image, abs=1e-4)
    assert [t.logprob_blind for t in candidate.tokens] == pytest.approx(blind, abs=1e-4)
    assert [t.debiased for t in candidate.tokens] == pytest.approx(
        [2.5 * a - 1.5 * b for a, b in zip(with_image, blind)], abs=1e-4)
    assert [t.visual_gain for t in candidate.tokens] == pytest.approx(
        [a - b for a, b in zip(with_image, blind)], abs=1e-4)
    assert candidate.likelihood == pytest.approx(sum(with_image) / len(with_image), abs=1e-4)


def flatten(result):
    numbers = []
    for c in result.candidates:
        numbers += [c.mean_raw, c.mean_blind, c.mean_debiased, c.min_debiased, c.likelihood]
        numbers += [v for s in c.sentences for v in (s.raw, s.blind, s.debiased)]
        numbers += [v for t in c.tokens for v in (t.logprob_image, t.logprob_blind)]
    return numbers


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["logit", "log-odds"])
def test_cached_and_batched_equal_naive(family, kind, request):
    loaded = request.getfixturevalue(family)
    image = render(make_scene(5))
    settings = JudgeSettings(kind=kind, context="response")
    results = {mode: score_candidates(loaded, image, QUESTION, CANDIDATES, settings, mode=mode)
               for mode in ("naive", "batched", "cached")}
    naive = flatten(results["naive"])
    assert flatten(results["batched"]) == pytest.approx(naive, abs=1e-4)
    assert flatten(results["cached"]) == pytest.approx(naive, abs=1e-4)
    assert [c.rank for c in results["cached"].candidates] == [c.rank for c in results["naive"].candidates]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("context", ["sentence", "response"])
def test_the_sentence_last_template_cached_equals_naive(family, context, request):
    loaded = request.getfixturevalue(family)
    image = render(make_scene(5))
    settings = JudgeSettings(kind="log-odds", context=context, template="faithfulness_last")
    naive = score_candidates(loaded, image, QUESTION, CANDIDATES, settings, mode="naive")
    cached = score_candidates(loaded, image, QUESTION, CANDIDATES, settings, mode="cached")
    assert flatten(cached) == pytest.approx(flatten(naive), abs=1e-4)


def test_generated_candidates_reuse_their_image_logprobs(tiny_llava, monkeypatch):
    image = render(make_scene(7))
    gen = GenerationSettings(n=4, max_new_tokens=12, seed=3)
    settings = JudgeSettings(template="faithfulness_last")
    generated = generate_candidates(tiny_llava, image, QUESTION, gen)
    seen = []
    run_rows = core.engine.judge.run_rows
    monkeypatch.setattr(core.engine.judge, "run_rows", lambda model, images, rows, *a: seen.append(rows) or
                        run_rows(model, images, rows, *a))
    reused = judge(tiny_llava, image, QUESTION, gen, settings)
    monkeypatch.setattr(core.engine.judge, "run_rows", run_rows)
    naive = score_answers(tiny_llava, image, QUESTION, [c.token_ids for c in generated], settings, mode="naive")
    assert flatten(reused) == pytest.approx(flatten(naive), abs=1e-4)
    # the only rows scoring answer tokens are blind: the image ones came with the generation
    token_rows = [row for row in seen[0] if row.n_scored > 0]
    assert len(token_rows) == sum(1 for c in generated if c.token_ids) and all(r.image is None for r in token_rows)


def test_reused_logprobs_must_match_the_answers(tiny_llava):
    with pytest.raises(ValueError, match="one log-prob per answer token"):
        score_answers(tiny_llava, render(make_scene(0)), QUESTION, [[5, 6, 7]], JudgeSettings(),
                      image_logprobs=[[-1.0, -2.0]])


def test_rank_by_mean_debiased_nan_last():
    def candidate(score):
        return ScoredCandidate(text="", sentences=[], tokens=[], mean_raw=0, mean_blind=0, mean_debiased=score,
                               min_debiased=score, likelihood=0)

    candidates = [candidate(0.5), candidate(float("nan")), candidate(2.0), candidate(0.5)]
    _rank(candidates, higher_is_better=True)
    assert [c.rank for c in candidates] == [2, 4, 1, 3]
    _rank(candidates, higher_is_better=False)  # safety: the lowest score is the best
    assert [c.rank for c in candidates] == [1, 4, 3, 2]


def test_raw_rank_orders_by_mean_raw_beside_the_debiased_rank():
    def candidate(raw):
        return ScoredCandidate(text="", sentences=[], tokens=[], mean_raw=raw, mean_blind=0, mean_debiased=0,
                               min_debiased=0, likelihood=0)

    candidates = [candidate(2.0), candidate(3.5), candidate(float("nan")), candidate(2.0)]
    _rank(candidates, True, "mean_raw", "raw_rank")
    assert [c.raw_rank for c in candidates] == [2, 1, 4, 3]  # ties keep generation order; no score ranks last
    assert [c.rank for c in candidates] == [0, 0, 0, 0]  # the debiased rank is its own field


def test_result_json_and_best_worst(tiny_llava):
    image = render(make_scene(6))
    result = score_candidates(tiny_llava, image, QUESTION, CANDIDATES, JudgeSettings())
    data = result.to_json()
    assert json.loads(json.dumps(data)) == data
    assert set(data["candidates"][0]["sentences"][0]) == {"text", "raw", "blind", "debiased", "token_start",
                                                          "token_end"}
    assert {"logprob_image", "logprob_blind", "debiased", "visual_gain"} <= set(data["candidates"][0]["tokens"][0])
    assert data["settings"] == {"alpha": 1.0, "kind": "logit", "context": "sentence", "template": "faithfulness"}
    by_score = sorted(result.candidates, key=lambda c: -c.mean_debiased)
    assert result.best() is by_score[0] and result.worst() is by_score[-1]
    by_raw = sorted(result.candidates, key=lambda c: -c.mean_raw)
    assert [c.raw_rank for c in by_raw] == list(range(1, len(by_raw) + 1))


def test_empty_candidates_are_refused(tiny_llava):
    with pytest.raises(ValueError, match="candidate 2 is empty"):
        score_candidates(tiny_llava, render(make_scene(0)), QUESTION, ["A red circle.", "  "], JudgeSettings())


def test_unsupported_processor_is_named(tiny_llava, monkeypatch):
    monkeypatch.setattr(tiny_llava.processor, "chat_template", None)
    with pytest.raises(UnsupportedModelError, match="chat template"):
        score_candidates(tiny_llava, render(make_scene(0)), QUESTION, ["A red circle."], JudgeSettings())


def test_judge_scores_the_generated_tokens(tiny_llava):
    image = render(make_scene(7))
    gen = GenerationSettings(n=1, strategy="greedy", max_new_tokens=12)
    result = judge(tiny_llava, image, QUESTION, gen, JudgeSettings())
    candidate = result.candidates[0]
    generated = generate_candidates(tiny_llava, image, QUESTION, gen)[0]
    assert [t.token_id for t in candidate.tokens] == generated.token_ids
    assert [t.logprob_image for t in candidate.tokens] == pytest.approx(generated.logprobs, abs=1e-4)
    assert candidate.rank == 1


def test_cli_json(tiny_llava_dir, tmp_path, capsys):
    image_path = tmp_path / "scene.png"
    render(make_scene(8)).save(image_path)
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("A small red circle is on the left. A blue star is at the top.\n\nNo shapes.\n")
    main(["--image", str(image_path), "--question", QUESTION, "--candidates", str(candidates), "--alpha", "0.5",
          "--kind", "log-odds", "--model", str(tiny_llava_dir), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert [c["text"] for c in data["candidates"]] == ["A small red circle is on the left. A blue star is at the top.",
                                                       "No shapes."]
    assert [len(c["sentences"]) for c in data["candidates"]] == [2, 1]
    sentence = data["candidates"][0]["sentences"][0]
    assert sentence["debiased"] == pytest.approx(1.5 * sentence["raw"] - 0.5 * sentence["blind"], abs=1e-6)
    assert data["settings"]["kind"] == "log-odds"
    assert all({"logprob_image", "logprob_blind"} <= set(t) for t in data["candidates"][1]["tokens"])


def test_cli_text_and_errors(tiny_llava_dir, tmp_path, capsys):
    image_path = tmp_path / "scene.png"
    render(make_scene(9)).save(image_path)
    main(["--image", str(image_path), "--question", QUESTION, "--n", "2", "--max-new-tokens", "6",
          "--model", str(tiny_llava_dir)])
    out = capsys.readouterr().out
    assert out.count("\n#") == 2 and "kind=logit alpha=1.0 context=sentence template=faithfulness" in out
    with pytest.raises(SystemExit, match="alpha must be between 0 and 10"):
        main(["--image", str(image_path), "--question", QUESTION, "--alpha", "20", "--model", str(tiny_llava_dir)])
