"""The debiased self-judgment score (Yang et al., arXiv 2508.20655) of candidate answers, per sentence and per token.

For each sentence s of a candidate the model judges itself: raw = score of "yes" to the
judge prompt about s given the image, blind = the same without the image, debiased =
(1 + alpha) * raw - alpha * blind. Each token t gets log p(t | image, question, prefix)
and log p(t | question, prefix), teacher-forced. Definitions: README.md, "Self-judgment".

All candidates, with and without the image, are scored in one batched, prefix-cached
pass (core.engine.forward): the image is encoded once per call.

Run:  python -m core.engine.judge --image scene.png --question "Describe the image." --n 4 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field

import torch
from PIL import Image

from core.config import ModelSettings, settings_from_args
from core.engine.chat import ImageInputs, UnsupportedModelError, answer_ids, check_supported, prepare_image, prompt_ids
from core.engine.forward import Row, RowOutput, run_rows
from core.engine.generation import GenerationSettings, generate_candidates
from core.engine.loading import LoadedModel, serialized
from core.engine.prompts import JUDGE_PROMPTS, judge_prompt
from core.engine.sentences import split_sentences

CONTEXTS = ("sentence", "response")
# Spellings of the affirmative and negative answer; each counts only where the tokenizer writes
# the whole word as one token (see answer_tokens).
YES_WORDS = ("Yes", "yes", "YES")
NO_WORDS = ("No", "no", "NO")
# Templates where "yes" is the bad answer, so a lower score is better.
LOWER_IS_BETTER = {"safety"}


@dataclass(frozen=True)
class AnswerTokens:
    """The token ids standing for "yes" and for "no" as the first answer token."""

    yes: tuple[int, ...]
    no: tuple[int, ...]


def _max_logit(logits: torch.Tensor, answers: AnswerTokens) -> float:
    return logits[list(answers.yes)].max().item()


def _yes_logprob(logits: torch.Tensor, answers: AnswerTokens) -> float:
    return torch.logsumexp(torch.log_softmax(logits, dim=-1)[list(answers.yes)], dim=0).item()


def _log_odds(logits: torch.Tensor, answers: AnswerTokens) -> float:
    logprobs = torch.log_softmax(logits, dim=-1)
    return (torch.logsumexp(logprobs[list(answers.yes)], dim=0)
            - torch.logsumexp(logprobs[list(answers.no)], dim=0)).item()


# Score kinds: the judge's logits at the first answer position -> one number (higher = more "yes").
SCORE_KINDS = {"logit": _max_logit, "logprob": _yes_logprob, "log-odds": _log_odds}


@dataclass
class JudgeSettings:
    """How sentences are judged and how the raw and blind scores combine."""

    alpha: float = 1.0  # debiasing strength: debiased = (1 + alpha) * raw - alpha * blind
    kind: str = "logit"  # logit | logprob | log-odds
    context: str = "sentence"  # sentence (alone) | response (previous sentences as context)
    # A key of core.engine.prompts.JUDGE_PROMPTS, or a template containing {sentence}; SELFJUDGE_JUDGE_TEMPLATE sets
    # the default (faithfulness_last puts the sentence last, so the judge computes its instruction once).
    template: str = field(default_factory=lambda: os.environ.get("SELFJUDGE_JUDGE_TEMPLATE", "faithfulness"))

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 10:
            raise ValueError(f"alpha must be between 0 and 10 (0 = raw score, 1 = the paper's default), not {self.alpha}")
        if self.kind not in SCORE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(SCORE_KINDS)}, not {self.kind!r}")
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, not {self.context!r}")
        if self.template not in JUDGE_PROMPTS and "{sentence}" not in self.template:
            raise ValueError(f"template must be one of {', '.join(JUDGE_PROMPTS)} or a custom template containing "
                             "{sentence}, e.g. 'Claim: {sentence} Is it true? Answer yes or no.'")

    @property
    def template_text(self) -> str:
        """The judge prompt template itself."""
        return JUDGE_PROMPTS.get(self.template, self.template)

    @property
    def higher_is_better(self) -> bool:
        """False for templates where "yes" means bad (safety: a high score means unsafe)."""
        return self.template not in LOWER_IS_BETTER


@dataclass
class TokenScore:
    """One candidate token, teacher-forced with and without the image."""

    token: str
    token_id: int
    logprob_image: float
    logprob_blind: float
    debiased: float  # (1 + alpha) * logprob_image - alpha * logprob_blind
    visual_gain: float  # logprob_image - logprob_blind


@dataclass
class SentenceScore:
    """One sentence's self-judgment scores; tokens [token_start, token_end) of the candidate."""

    text: str
    raw: float
    blind: float
    debiased: float
    token_start: int
    token_end: int


@dataclass
class ScoredCandidate:
    """A candidate with its sentence and token scores and summaries."""

    text: str
    sentences: list[SentenceScore]
    tokens: list[TokenScore]
    mean_raw: float
    mean_blind: float
    mean_debiased: float
    min_debiased: float
    likelihood: float  # mean token log-prob with the image
    rank: int = 0  # 1 = best by mean_debiased
    raw_rank: int = 0  # 1 = best by mean_raw (where it differs from rank, debiasing changed the order)


@dataclass
class JudgeResult:
    """All candidates for one (image, question), scored, in generation order."""

    question: str
    candidates: list[ScoredCandidate]
    settings: JudgeSettings
    model_id: str
    adapter: str

    def best(self) -> ScoredCandidate:
        """The rank-1 candidate."""
        return min(self.candidates, key=lambda c: c.rank)

    def worst(self) -> ScoredCandidate:
        """The last-ranked candidate."""
        return max(self.candidates, key=lambda c: c.rank)

    def to_json(self) -> dict:
        """Plain JSON data (non-finite numbers become null)."""
        return json_safe(asdict(self))


def json_safe(value):
    """JSON data with NaN and infinities replaced by null (JSON has no NaN; core marks "undefined" with NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def debias(raw: float, blind: float, alpha: float) -> float:
    """The debiased combination (1 + alpha) * raw - alpha * blind."""
    return (1 + alpha) * raw - alpha * blind


def answer_tokens(tokenizer) -> AnswerTokens:
    """First tokens of "Yes"/"yes"/"YES" (with and without a leading space) that spell the whole word.

    A spelling whose first token is only part of the word ("Y" of "YES") or whitespace is left
    out: it would also start other words. Only if no spelling is one token do first parts count.
    """
    def first_tokens(words: tuple[str, ...], whole: bool) -> set[int]:
        found = set()
        for word in words:
            for spelling in (word, " " + word):
                ids = tokenizer(spelling, add_special_tokens=False)["input_ids"]
                piece = tokenizer.decode(ids[:1]).strip()
                if ids and piece and (piece.lower() == word.lower() if whole else word.lower().startswith(piece.lower())):
                    found.add(ids[0])
        return found

    yes, no = first_tokens(YES_WORDS, True), first_tokens(NO_WORDS, True)
    if not yes or not no:
        yes, no = yes or first_tokens(YES_WORDS, False), no or first_tokens(NO_WORDS, False)
    yes, no = yes - no, no - yes
    if not yes or not no:
        raise UnsupportedModelError("cannot find tokens for the answers yes and no in this tokenizer")
    return AnswerTokens(yes=tuple(sorted(yes)), no=tuple(sorted(no)))


@dataclass
class SentenceSpan:
    """Where a sentence sits in a candidate: its text and its token range [token_start, token_end)."""

    text: str
    token_start: int
    token_end: int


def sentence_spans(tokenizer, token_ids: list[int]) -> tuple[str, list[SentenceSpan]]:
    """The candidate's text and its sentences (core.engine.sentences.split_sentences), each mapped to its tokens.

    A token belongs to the sentence in which its last character lies; each token's end is
    found by decoding the growing prefix of the candidate.
    """
    decoded = tokenizer.decode(token_ids, skip_special_tokens=True)
    text = decoded.strip()
    lead = len(decoded) - len(decoded.lstrip())
    ends, longest = [], 0
    for i in range(len(token_ids)):
        longest = max(longest, len(tokenizer.decode(token_ids[:i + 1], skip_special_tokens=True)))
        ends.append(longest - lead)
    spans, searched_to = [], 0
    for sentence in split_sentences(text):
        start = text.index(sentence, searched_to)
        end = searched_to = start + len(sentence)
        first = next((i for i, e in enumerate(ends) if e > start), len(ends))
        last = next((i for i, e in enumerate(ends) if e >= end), len(ends) - 1)
        spans.append(SentenceSpan(text=sentence, token_start=first, token_end=max(last + 1, first)))
    return text, spans


@dataclass(frozen=True)
class JudgeItem:
    """One sentence to judge, about image `image`, with the sentences before it."""

    image: int
    sentence: str
    context: str = ""


@dataclass
class Judgement:
    """Scores of every kind for one sentence, with and without the image."""

    raw: dict[str, float] = field(default_factory=dict)
    blind: dict[str, float] = field(default_factory=dict)

    def debiased(self, kind: str, alpha: float) -> float:
        """The debiased score of this kind."""
        return debias(self.raw[kind], self.blind[kind], alpha)


def judge_rows(processor, images: list[ImageInputs], items: list[JudgeItem], settings: JudgeSettings) -> list[Row]:
    """For each item, the judge prompt with its image and blind (2 rows per item, image row first)."""
    rows = []
    for item in items:
        question = judge_prompt(item.sentence, settings.template_text,
                                item.context if settings.context == "response" else "")
        rows.append(Row(tuple(prompt_ids(processor, question, images[item.image])), item.image, 0))
        rows.append(Row(tuple(prompt_ids(processor, question, None)), None, 0))
    return rows


def judgements(outputs: list[RowOutput], answers: AnswerTokens) -> list[Judgement]:
    """Every score kind from the judge rows' answer logits (pairs: image row, blind row)."""
    result = []
    for image_out, blind_out in zip(outputs[::2], outputs[1::2]):
        result.append(Judgement(raw={k: f(image_out.next_logits, answers) for k, f in SCORE_KINDS.items()},
                                blind={k: f(blind_out.next_logits, answers) for k, f in SCORE_KINDS.items()}))
    return result


def judge_sentences(loaded: LoadedModel, images: list[ImageInputs], items: list[JudgeItem],
                    settings: JudgeSettings, mode: str = "cached") -> list[Judgement]:
    """Judge many sentences (of many images) in one batched, prefix-cached run."""
    outputs = run_rows(loaded.model, images, judge_rows(loaded.processor, images, items, settings), mode,
                       loaded.memory_budget)
    return judgements(outputs, answer_tokens(loaded.processor.tokenizer))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _rank(candidates: list[ScoredCandidate], higher_is_better: bool, score: str = "mean_debiased",
          field: str = "rank") -> None:
    def key(index: int) -> tuple:
        value = getattr(candidates[index], score)
        if math.isnan(value):
            return (1, 0.0, index)
        return (0, -value if higher_is_better else value, index)

    for rank, index in enumerate(sorted(range(len(candidates)), key=key), start=1):
        setattr(candidates[index], field, rank)


def score_answers(loaded: LoadedModel, image: Image.Image, question: str, answers: list[list[int]],
                  settings: JudgeSettings, mode: str = "cached",
                  image_logprobs: list[list[float] | None] | None = None) -> JudgeResult:
    """Score candidates given as answer token ids: sentences and tokens, with and without the image, one run.

    image_logprobs[c], where given, are candidate c's log p(token | image, question, tokens before) from its
    generation (core.engine.generation returns the model's own, equal to teacher forcing): its image token row
    is then not computed again. Only the blind token row and the judge rows run.
    """
    check_supported(loaded.model, loaded.processor)
    known = image_logprobs or [None] * len(answers)
    if len(known) != len(answers) or any(lp is not None and len(lp) != len(ids) for lp, ids in zip(known, answers)):
        raise ValueError("image_logprobs must give one log-prob per answer token, for each answer (or None)")
    processor, tokenizer = loaded.processor, loaded.processor.tokenizer
    images = [prepare_image(processor, image)]
    image_prompt, blind_prompt = prompt_ids(processor, question, images[0]), prompt_ids(processor, question, None)
    texts, spans, items = [], [], []
    for ids in answers:
        text, candidate_spans = sentence_spans(tokenizer, ids)
        texts.append(text)
        spans.append(candidate_spans)
        items += [JudgeItem(0, s.text, " ".join(p.text for p in candidate_spans[:j]))
                  for j, s in enumerate(candidate_spans)]
    token_rows = [row for ids, lp in zip(answers, known) if ids for row in
                  ([Row(tuple(image_prompt + ids), 0, len(ids))] if lp is None else [])
                  + [Row(tuple(blind_prompt + ids), None, len(ids))]]
    outputs = run_rows(loaded.model, images, token_rows + judge_rows(processor, images, items, settings), mode,
                       loaded.memory_budget)
    judged = iter(judgements(outputs[len(token_rows):], answer_tokens(tokenizer)))
    token_outputs = iter(outputs[:len(token_rows)])
    candidates = []
    for ids, lp, text, candidate_spans in zip(answers, known, texts, spans):
        tokens = []
        if ids:
            with_image = next(token_outputs).token_logprobs.tolist() if lp is None else list(lp)
            blind = next(token_outputs).token_logprobs.tolist()
            tokens = [TokenScore(token=tokenizer.decode([t]), token_id=t, logprob_image=a, logprob_blind=b,
                                 debiased=debias(a, b, settings.alpha), visual_gain=a - b)
                      for t, a, b in zip(ids, with_image, blind)]
        sentences = []
        for span in candidate_spans:
            verdict = next(judged)
            sentences.append(SentenceScore(text=span.text, raw=verdict.raw[settings.kind],
                                           blind=verdict.blind[settings.kind],
                                           debiased=verdict.debiased(settings.kind, settings.alpha),
                                           token_start=span.token_start, token_end=span.token_end))
        debiased = [s.debiased for s in sentences]
        candidates.append(ScoredCandidate(
            text=text, sentences=sentences, tokens=tokens, mean_raw=_mean([s.raw for s in sentences]),
            mean_blind=_mean([s.blind for s in sentences]), mean_debiased=_mean(debiased),
            min_debiased=min(debiased) if debiased else float("nan"),
            likelihood=_mean([t.logprob_image for t in tokens])))
    _rank(candidates, settings.higher_is_better)
    _rank(candidates, settings.higher_is_better, "mean_raw", "raw_rank")
    return JudgeResult(question=question, candidates=candidates, settings=settings, model_id=loaded.model_id,
                       adapter=loaded.adapter)


def score_candidates(loaded: LoadedModel, image: Image.Image, question: str, candidates: list[str],
                     settings: JudgeSettings, mode: str = "cached") -> JudgeResult:
    """Score candidate answers given as text (tokenized as the chat template writes an assistant turn)."""
    check_supported(loaded.model, loaded.processor)
    if not candidates:
        raise ValueError("score_candidates needs at least one candidate answer")
    for i, text in enumerate(candidates):
        if not text.strip():
            raise ValueError(f"candidate {i + 1} is empty; give every candidate some text")
    answers = [answer_ids(loaded.processor, question, text.strip()) for text in candidates]
    return score_answers(loaded, image, question, answers, settings, mode)


@serialized
def judge(loaded: LoadedModel, image: Image.Image, question: str, gen: GenerationSettings,
          settings: JudgeSettings) -> JudgeResult:
    """Generate gen.n candidates in one batched call, then score them (exact generated tokens, whose
    log-probs with the image come from the generation itself)."""
    generated = generate_candidates(loaded, image, question, gen)
    return score_answers(loaded, image, question, [c.token_ids for c in generated], settings,
                         image_logprobs=[c.logprobs for c in generated])


def format_result(result: JudgeResult) -> str:
    """A readable report: candidates by rank, sentence scores, and the tokens with their log-probs."""
    s = result.settings
    lines = [f"question: {result.question}   model: {result.model_id}{' + ' + result.adapter if result.adapter else ''}",
             f"kind={s.kind} alpha={s.alpha} context={s.context} template={s.template}", ""]
    for c in sorted(result.candidates, key=lambda c: c.rank):
        lines.append(f"#{c.rank}  mean raw {c.mean_raw:.3f}  blind {c.mean_blind:.3f}  debiased {c.mean_debiased:.3f}"
                     f"  min {c.min_debiased:.3f}  likelihood {c.likelihood:.3f}")
        lines.append(f"    {c.text}")
        for sentence in c.sentences:
            lines.append(f"    [{sentence.raw:8.3f} {sentence.blind:8.3f} {sentence.debiased:8.3f}]  {sentence.text}")
        lines.append("    tokens (log p with image / blind / visual gain): " + "  ".join(
            f"{t.token!r} {t.logprob_image:.2f}/{t.logprob_blind:.2f}/{t.visual_gain:+.2f}" for t in c.tokens))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """CLI: generate (or read) candidates for an image and question and print their scores."""
    from core.engine.images import open_image
    from core.engine.loading import load_model

    parser = argparse.ArgumentParser(prog="python -m core.engine.judge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--question", required=True, help="question about the image")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--candidates", help="file with one candidate answer per line (instead of generating)")
    source.add_argument("--n", type=int, default=4, help="number of candidates to generate (default 4)")
    parser.add_argument("--strategy", default="sample", help="generation: sample | diverse-beam | greedy")
    parser.add_argument("--seed", type=int, default=0, help="generation seed")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest candidate in tokens")
    parser.add_argument("--alpha", type=float, default=1.0, help="debiasing strength (0 = raw score)")
    parser.add_argument("--kind", default="logit", help="score kind: logit | logprob | log-odds")
    parser.add_argument("--context", default="sentence", help="judge context: sentence | response")
    parser.add_argument("--template", "--judge-template", dest="template", default=None,
                        help="judge template: faithfulness | faithfulness_last | safety | a custom text containing "
                             "{sentence} (default SELFJUDGE_JUDGE_TEMPLATE or faithfulness)")
    parser.add_argument("--memory-budget-mib", type=int, default=None,
                        help="KV cache one scoring pass may hold, in MiB (default 0: per device; "
                             "SELFJUDGE_MEMORY_BUDGET_MIB)")
    parser.add_argument("--model", default=None, help="model id or folder (default SELFJUDGE_MODEL or the embedded model)")
    parser.add_argument("--4bit", dest="load_in_4bit", action="store_true", default=None, help="load in 4-bit NF4")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        settings = JudgeSettings(alpha=args.alpha, kind=args.kind, context=args.context,
                                 **({"template": args.template} if args.template else {}))
        model_settings = settings_from_args(ModelSettings, args)
        loaded = load_model(model_settings)
        image = open_image(args.image)
        if args.candidates:
            with open(args.candidates, encoding="utf-8") as handle:
                texts = [line.strip() for line in handle if line.strip()]
            result = score_candidates(loaded, image, args.question, texts, settings)
        else:
            gen = GenerationSettings(n=args.n, strategy=args.strategy, seed=args.seed,
                                     max_new_tokens=args.max_new_tokens)
            result = judge(loaded, image, args.question, gen, settings)
    except (ValueError, RuntimeError, OSError) as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(result.to_json(), indent=2) if args.json else format_result(result))


if __name__ == "__main__":
    main()
