"""Decoding guided by the debiased self-judgment (the paper's decoding), and the baselines it is compared with.

Judged decoding goes sentence by sentence. At each step the model proposes k next
sentences (sampled, one batched generate call for every image of the batch), the judge
scores each (core.engine.judge: one batched, prefix-cached run) and the best is kept:

    score = debiased judge score (settings.kind, settings.alpha)
            + likelihood_weight * mean token log-prob of the sentence

A proposal whose debiased log-odds (1 + alpha) * lo(image) - alpha * lo(blind), with
lo = log P(yes) - log P(no), is below `reject_below` is rejected: the judge, debiased,
answers "no". Decoding stops when no proposal is left (all rejected, or the model only
proposed to end), when the model's own probability of ending right now (read at the first
generated position) reaches `stop_probability` (0.5: ending is more likely than going on), when the
chosen sentence ended the answer, or at the token budget.
"raw-judged" is the same with alpha = 0; "greedy" and "beam" are plain generate calls
whose sentences are judged afterwards for display. Every proposal is a node of the
returned search tree.

With options.safety set, every decoded answer then passes the fine-grained self-defence
(core.engine.safety): if one of its sentences judges itself harmful at or above the threshold, the
answer becomes the refusal (the decoded text is kept as `unguarded`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from PIL import Image

from core.engine.chat import ImageInputs, check_supported, prepare_image, prompt_ids
from core.engine.generation import Continuation, GenerationSettings, generate_batch
from core.engine.judge import JudgeItem, JudgeSettings, judge_sentences, sentence_spans
from core.engine.loading import LoadedModel
from core.engine.safety import SafetySettings, SafetyVerdict, judge_safety

STRATEGIES = ("greedy", "beam", "raw-judged", "debiased-judged")


@dataclass
class DecodeOptions:
    """Knobs of judged decoding beyond the contract's arguments."""

    temperature: float = 1.0  # sampling of the k proposals
    top_p: float = 0.95
    # Weight of the sentence's mean token log-prob in the score. Without it the best-judged of k
    # samples is often a confident mistake; 2 keeps the model's own preference in the choice.
    likelihood_weight: float = 2.0
    # debiased log-odds threshold; None never rejects. -1: chosen for the shipped model (v13) on validation
    # scenes with alpha 2 (docs/language-prior.md, sweeps); v6's choice was 0
    reject_below: float | None = -1.0
    stop_probability: float = 0.5  # end when the model's own p(end right now) reaches this
    greedy_proposal: bool = True  # the first of the k proposals is the greedy sentence
    safety: SafetySettings | None = None  # the safety defence (FGSD) on the decoded answer; None: off

    def __post_init__(self) -> None:
        GenerationSettings(temperature=self.temperature, top_p=self.top_p)  # same checks and messages
        if self.likelihood_weight < 0:
            raise ValueError(f"likelihood_weight must be >= 0, not {self.likelihood_weight}")
        if not 0 < self.stop_probability <= 1:
            raise ValueError(f"stop_probability must be in (0, 1] (1: end only at the token budget or when "
                             f"nothing is accepted), not {self.stop_probability}")


def flipped_by_debiasing(log_odds: float | None, raw_log_odds: float | None, reject_below: float | None) -> bool:
    """True where the debiased and the raw log-odds fall on two sides of reject_below: debiasing alone decided."""
    if reject_below is None or log_odds is None or raw_log_odds is None or math.isnan(log_odds) \
            or math.isnan(raw_log_odds):
        return False
    return (log_odds >= reject_below) != (raw_log_odds >= reject_below)


@dataclass
class DecodeNode:
    """One proposed sentence in the search tree."""

    step: int
    text: str  # "" when the model proposed to end the answer
    score: float  # the selection score (NaN for an end proposal)
    chosen: bool
    parent: int | None  # index of the chosen node of the previous step
    raw: float = math.nan  # judge score with the image (settings.kind)
    blind: float = math.nan  # the same without the image
    log_odds: float = math.nan  # debiased log-odds, compared with reject_below
    # The log-odds with the image alone (alpha 0): what the raw judge would answer. Where it and
    # log_odds fall on two sides of reject_below, debiasing alone decided to keep or reject.
    raw_log_odds: float = math.nan
    likelihood: float = math.nan  # mean token log-prob
    accepted: bool = True  # passed the reject_below test
    ended: bool = False  # the model ended the answer after (or instead of) this sentence
    n_tokens: int = 0  # tokens of the proposal


@dataclass
class DecodeResult:
    """The decoded answer and its search tree."""

    text: str
    strategy: str
    nodes: list[DecodeNode]
    safety: SafetyVerdict | None = None  # the safety defence's verdict, when it ran
    unguarded: str = ""  # the decoded answer before the safety defence replaced it with the refusal


@dataclass
class _State:
    """One image's decoding in progress."""

    prompt: list[int]
    answer: list[int]
    sentences: list[str]
    nodes: list[DecodeNode]
    parent: int | None = None
    done: bool = False


def _node(step: int, parent: int | None, text: str, verdict, settings: JudgeSettings, likelihood: float,
          options: DecodeOptions, ended: bool, n_tokens: int) -> DecodeNode:
    if verdict is None:
        return DecodeNode(step=step, text="", score=math.nan, chosen=False, parent=parent, accepted=False, ended=True,
                          n_tokens=n_tokens)
    log_odds = verdict.debiased("log-odds", settings.alpha)
    score = verdict.debiased(settings.kind, settings.alpha) + options.likelihood_weight * likelihood
    return DecodeNode(step=step, text=text, score=score, chosen=False, parent=parent,
                      raw=verdict.raw[settings.kind], blind=verdict.blind[settings.kind], log_odds=log_odds,
                      raw_log_odds=verdict.raw["log-odds"],
                      likelihood=likelihood, ended=ended, n_tokens=n_tokens,
                      accepted=options.reject_below is None or log_odds >= options.reject_below)


def _judged_step(loaded: LoadedModel, images: list[ImageInputs], states: list[_State], step: int,
                 settings: JudgeSettings, k: int, max_new_tokens: int, seed: int, options: DecodeOptions) -> None:
    """Propose k sentences for every unfinished image, judge them all at once, keep the best."""
    active = [i for i, s in enumerate(states) if not s.done]
    budget = {i: max_new_tokens - len(states[i].answer) for i in active}
    gen = GenerationSettings(n=k, temperature=options.temperature, top_p=options.top_p,
                             max_new_tokens=max(budget.values()), seed=seed + step)
    proposals = generate_batch(loaded, images, [states[i].prompt + states[i].answer for i in active], active, k,
                               gen, mode="sample", stop_at_sentence=True, greedy_first=options.greedy_proposal)
    tokenizer = loaded.processor.tokenizer
    texts: dict[tuple[int, int], str] = {}
    for i, continuations in zip(active, proposals):
        for j, c in enumerate(continuations):
            del c.token_ids[budget[i]:], c.logprobs[budget[i]:]  # rows share one budget in the batch
            texts[(i, j)] = tokenizer.decode(c.token_ids, skip_special_tokens=True).strip()
    keys = [key for key, text in texts.items() if text]
    verdicts = dict(zip(keys, judge_sentences(loaded, images, [
        JudgeItem(image=i, sentence=texts[(i, j)], context=" ".join(states[i].sentences)) for i, j in keys],
        settings))) if keys else {}
    for i, continuations in zip(active, proposals):
        state = states[i]
        first = len(state.nodes)
        for j, c in enumerate(continuations):
            likelihood = sum(c.logprobs) / len(c.logprobs) if c.logprobs else math.nan
            state.nodes.append(_node(step, state.parent, texts[(i, j)], verdicts.get((i, j)), settings,
                                     likelihood, options, c.finished, len(c.token_ids)))
        _choose(state, first, continuations, budget[i], options.stop_probability)


def _choose(state: _State, first: int, continuations: list[Continuation], budget: int,
            stop_probability: float = 1.0) -> None:
    """Keep the best accepted proposal (ties: the first proposed), or stop."""
    accepted = [n for n in range(first, len(state.nodes)) if state.nodes[n].accepted and state.nodes[n].text]
    wants_to_end = math.exp(continuations[0].end_logprob) >= stop_probability  # NaN (unknown) compares False
    if not accepted or wants_to_end:
        state.done = True
        return
    best = max(accepted, key=lambda n: (state.nodes[n].score, -n))
    chosen = continuations[best - first]
    state.nodes[best].chosen = True
    state.parent = best
    state.answer += chosen.token_ids
    state.sentences.append(state.nodes[best].text)
    state.done = chosen.finished or len(chosen.token_ids) >= budget


def _judge_plain(loaded: LoadedModel, images: list[ImageInputs], answers: list[Continuation], strategy: str,
                 settings: JudgeSettings, options: DecodeOptions) -> list[DecodeResult]:
    """Results of greedy/beam decoding: one chosen node per sentence, its score the debiased judge score."""
    tokenizer = loaded.processor.tokenizer
    spans = [sentence_spans(tokenizer, a.token_ids) for a in answers]
    items = [JudgeItem(image=i, sentence=s.text, context=" ".join(p.text for p in sentences[:j]))
             for i, (_, sentences) in enumerate(spans) for j, s in enumerate(sentences)]
    verdicts = iter(judge_sentences(loaded, images, items, settings) if items else [])
    options = replace(options, likelihood_weight=0.0)
    results = []
    for answer, (text, sentences) in zip(answers, spans):
        nodes = []
        for j, span in enumerate(sentences):
            logprobs = answer.logprobs[span.token_start:span.token_end]
            likelihood = sum(logprobs) / len(logprobs) if strategy == "greedy" and logprobs else math.nan
            ended = answer.finished and j == len(sentences) - 1
            nodes.append(replace(_node(j, j - 1 if j else None, span.text, next(verdicts), settings, likelihood,
                                       options, ended, span.token_end - span.token_start), chosen=True))
        results.append(DecodeResult(text=text, strategy=strategy, nodes=nodes))
    return results


def decode_many(loaded: LoadedModel, images: list[Image.Image], question: str, strategy: str,
                settings: JudgeSettings, k: int = 4, max_new_tokens: int = 64, seed: int = 0,
                options: DecodeOptions | None = None) -> list[DecodeResult]:
    """Decode answers for a batch of images at once (each step is one generate call and one judge run)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if not 1 <= k <= 32:
        raise ValueError(f"k (proposals per step, or beams) must be between 1 and 32, not {k}")
    if not 1 <= max_new_tokens <= 1024:
        raise ValueError(f"max_new_tokens must be between 1 and 1024, not {max_new_tokens}")
    check_supported(loaded.model, loaded.processor)
    options = options or DecodeOptions()
    prepared = [prepare_image(loaded.processor, image) for image in images]
    results = _decode_prepared(loaded, prepared, question, strategy, settings, k, max_new_tokens, seed, options)
    if options.safety is not None:
        verdicts = judge_safety(loaded, prepared, [r.text for r in results], list(range(len(results))), options.safety)
        for result, verdict in zip(results, verdicts):
            result.safety = verdict
            if verdict.refused:
                result.unguarded, result.text = result.text, options.safety.refusal
    return results


def _decode_prepared(loaded: LoadedModel, prepared: list[ImageInputs], question: str, strategy: str,
                     settings: JudgeSettings, k: int, max_new_tokens: int, seed: int,
                     options: DecodeOptions) -> list[DecodeResult]:
    """decode_many on images already prepared, before the safety defence."""
    prompts = [prompt_ids(loaded.processor, question, p) for p in prepared]
    if strategy in ("greedy", "beam"):
        gen = GenerationSettings(n=1, strategy="greedy", max_new_tokens=max_new_tokens, seed=seed)
        answers = generate_batch(loaded, prepared, prompts, list(range(len(prepared))),
                                 1 if strategy == "greedy" else k, gen, mode=strategy)
        return _judge_plain(loaded, prepared, [a[0] for a in answers], strategy, settings, options)
    if strategy == "raw-judged":
        settings = replace(settings, alpha=0.0)
    states = [_State(prompt=p, answer=[], sentences=[], nodes=[]) for p in prompts]
    step = 0
    while not all(s.done for s in states):
        _judged_step(loaded, prepared, states, step, settings, k, max_new_tokens, seed, options)
        step += 1
    tokenizer = loaded.processor.tokenizer
    return [DecodeResult(text=tokenizer.decode(s.answer, skip_special_tokens=True).strip(), strategy=strategy,
                         nodes=s.nodes) for s in states]


def decode(loaded: LoadedModel, image: Image.Image, question: str, strategy: str, settings: JudgeSettings,
           k: int = 4, max_new_tokens: int = 64, seed: int = 0, options: DecodeOptions | None = None) -> DecodeResult:
    """Decode one answer with the given strategy (greedy, beam, raw-judged, debiased-judged)."""
    return decode_many(loaded, [image], question, strategy, settings, k, max_new_tokens, seed, options)[0]

