"""Candidate answers from one batched decoding call: sampling, greedy, beam or diverse beam search.

Sampling, greedy and beam search are one `model.generate` call each (all candidates, and
all prompts of a batch, advance together). transformers 5 moved group ("diverse") beam
search out of the library to the Hub repo transformers-community/group-beam-search, which
needs the network and trust_remote_code. `diverse_beam_search` below is our own
implementation of it (Vijayakumar et al. 2018, Hamming diversity): the prompt and image
are encoded once, then every beam of every group advances in one batched forward per token.

Per-token log-probabilities are the model's own (log-softmax of the raw logits, before
temperature or top-p), so they equal the teacher-forced scores of core.engine.judge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (Cache, GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria,
                          StoppingCriteriaList)

from core.engine.chat import ImageInputs, check_supported, prepare_image, prompt_ids, token_inputs
from core.engine.forward import image_tensors, stateful_rope_module
from core.engine.loading import LoadedModel, serialized

STRATEGIES = ("sample", "diverse-beam", "greedy")


@dataclass
class GenerationSettings:
    """How candidates are generated."""

    n: int = 4
    strategy: str = "sample"  # sample | diverse-beam | greedy
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 64
    seed: int = 0
    # diverse beam search: n groups of beams_per_group beams; a token already chosen by an
    # earlier group at the same step costs diversity_penalty (in log-probability units).
    beams_per_group: int = 2
    diversity_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if not 1 <= self.n <= 64:
            raise ValueError(f"n (number of candidates) must be between 1 and 64, not {self.n}")
        if self.strategy == "greedy" and self.n != 1:
            raise ValueError("greedy decoding gives exactly one candidate: set n=1, or use sample or diverse-beam")
        if not 0 < self.temperature <= 10:
            raise ValueError(f"temperature must be in (0, 10], not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p} (1 keeps the whole distribution)")
        if not 1 <= self.max_new_tokens <= 1024:
            raise ValueError(f"max_new_tokens must be between 1 and 1024, not {self.max_new_tokens}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, not {self.seed}")
        if not 1 <= self.beams_per_group <= 8:
            raise ValueError(f"beams_per_group must be between 1 and 8, not {self.beams_per_group}")
        if self.diversity_penalty < 0:
            raise ValueError(f"diversity_penalty must be >= 0, not {self.diversity_penalty}")


@dataclass
class Candidate:
    """One generated answer."""

    text: str
    token_ids: list[int]  # generated tokens, end-of-sequence excluded
    logprobs: list[float]  # the model's log p of each generated token (temperature 1, no top-p)


@dataclass
class Continuation:
    """Tokens generated after one prompt, and whether the model ended the answer (end-of-sequence)."""

    token_ids: list[int]
    logprobs: list[float]
    finished: bool
    end_logprob: float = float("nan")  # log p(ending right away | prompt), from the first generated position


def end_ids(loaded: LoadedModel) -> set[int]:
    """The token ids that end an answer (generation config's EOS ids, else the tokenizer's)."""
    eos = loaded.model.generation_config.eos_token_id
    if eos is None:
        eos = loaded.processor.tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the model has no end-of-sequence token in its generation config or tokenizer")
    return set(eos if isinstance(eos, list) else [eos])


def pad_id(loaded: LoadedModel) -> int:
    """The id used to pad prompts on the left and finished rows on the right."""
    pad = loaded.model.generation_config.pad_token_id
    if pad is None:
        pad = loaded.processor.tokenizer.pad_token_id
    return pad if pad is not None else min(end_ids(loaded))


def ends_sentence(text: str) -> bool:
    """True once text ends a sentence: it has a letter or digit and ends with . ! or ? (then whitespace)."""
    stripped = text.rstrip()
    return bool(stripped) and stripped[-1] in ".!?" and any(c.isalnum() for c in stripped)


class SentenceEnd(StoppingCriteria):
    """Stops each row of a batch once its new text ends a sentence."""

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([ends_sentence(t) for t in texts], dtype=torch.bool, device=input_ids.device)


class GreedyFirst(LogitsProcessor):
    """Makes the first of every n sampled rows greedy: only its argmax token keeps a finite score."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        first = scores[::self.n]
        best = first.argmax(dim=-1, keepdim=True)
        scores[::self.n] = torch.full_like(first, float("-inf")).scatter(1, best, first.gather(1, best))
        return scores


def batch_inputs(loaded: LoadedModel, images: list[ImageInputs], prompts: list[list[int]],
                 image_of: list[int | None]) -> dict[str, torch.Tensor]:
    """A left-padded generation batch; all prompts with an image or all without."""
    if len({i is None for i in image_of}) > 1:
        raise ValueError("a generation batch must be all with images or all blind")
    device = loaded.device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id(loaded), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, prompt in enumerate(prompts):
        ids[r, width - len(prompt):] = torch.tensor(prompt)
        mask[r, width - len(prompt):] = 1
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if image_of[0] is not None:
        inputs |= image_tensors(images, image_of, device)
        inputs |= {k: v.masked_fill(mask.to(device) == 0, 0) for k, v in
                   token_inputs(images[image_of[0]], inputs["input_ids"]).items()}
    return inputs


def _continuations(loaded: LoadedModel, new_tokens: torch.Tensor, logprobs: torch.Tensor,
                   stop_at_sentence: bool, end_logprobs: list[float]) -> list[Continuation]:
    """Cut each generated row at its first end token (or pad) and keep its log-probs."""
    ends = end_ids(loaded) | {pad_id(loaded)}
    eos = end_ids(loaded)
    tokenizer = loaded.processor.tokenizer
    result = []
    for row, row_logprobs, end_logprob in zip(new_tokens.tolist(), logprobs.tolist(), end_logprobs):
        cut = next((i for i, t in enumerate(row) if t in ends), len(row))
        content = row[:cut]
        # With pad == EOS, a row stopped at a sentence end is followed by "EOS" padding; it did not end.
        finished = cut < len(row) and row[cut] in eos and not (
            stop_at_sentence and ends_sentence(tokenizer.decode(content, skip_special_tokens=True)))
        result.append(Continuation(token_ids=content, logprobs=row_logprobs[:cut], finished=finished,
                                   end_logprob=end_logprob))
    return result


@serialized
@torch.no_grad()
def generate_batch(loaded: LoadedModel, images: list[ImageInputs], prompts: list[list[int]],
                   image_of: list[int | None], n: int, settings: GenerationSettings, mode: str = "sample",
                   stop_at_sentence: bool = False, greedy_first: bool = False) -> list[list[Continuation]]:
    """n continuations of every prompt from ONE generate call (mode: sample, greedy or beam).

    greedy_first (sampling): the first continuation of each prompt is the greedy one.
    """
    inputs = batch_inputs(loaded, images, prompts, image_of)
    # Sampling knobs only when sampling (transformers warns about them otherwise); top_k=0 turns
    # off the library's default top-k of 50 so that top_p alone truncates.
    knobs = {"temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0} if mode == "sample" else {}
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens, do_sample=mode == "sample", num_beams=n if mode == "beam" else 1,
        num_return_sequences=1 if mode == "beam" else n, output_logits=mode != "beam", return_dict_in_generate=True,
        pad_token_id=pad_id(loaded), eos_token_id=sorted(end_ids(loaded)),
        bos_token_id=loaded.model.generation_config.bos_token_id, **knobs)
    stopping = StoppingCriteriaList([SentenceEnd(loaded.processor.tokenizer, inputs["input_ids"].shape[1])]
                                    if stop_at_sentence else [])
    devices = [loaded.device] if loaded.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(settings.seed)
        processors = LogitsProcessorList([GreedyFirst(n)] if greedy_first and mode == "sample" else [])
        out = loaded.model.generate(**inputs, generation_config=config, stopping_criteria=stopping,
                                    logits_processor=processors)
    new_tokens = out.sequences[:, inputs["input_ids"].shape[1]:].cpu()
    if mode == "beam":
        logprobs = torch.zeros(new_tokens.shape)  # beam paths are rescored teacher-forced where needed
        end_logprobs = [float("nan")] * len(new_tokens)
    else:
        steps = torch.stack([torch.log_softmax(step.float(), dim=-1) for step in out.logits], dim=1).cpu()
        logprobs = steps.gather(2, new_tokens[:, :steps.shape[1], None])[..., 0]
        end_logprobs = torch.logsumexp(steps[:, 0, sorted(end_ids(loaded))], dim=-1).tolist()
    rows = _continuations(loaded, new_tokens, logprobs, stop_at_sentence, end_logprobs)
    per_prompt = 1 if mode == "beam" else n
    return [rows[i * per_prompt:(i + 1) * per_prompt] for i in range(len(prompts))]


def reorder_beams(cache: Cache, sources: torch.Tensor) -> None:
    """Make beam slot b of the cache hold what slot sources[b] held, layer by layer, in the same cache.

    Cache.reorder_cache replaces one layer at a time, so the peak is the cache plus one layer's copy,
    not two whole caches (16 beams of a 7B model: about 5 GiB less than building a new cache).
    """
    cache.reorder_cache(sources)


@dataclass
class _StepPlan:
    """Where every beam slot goes at this step: slot b continues slot sources[b] with tokens[b], at scores[b].

    Slots of finished groups keep sources[b] = b and a padding token: they idle, so the batch keeps its shape.
    """

    sources: list[int]
    tokens: list[int]
    scores: torch.Tensor


def _group_slots(group: int, width: int) -> slice:
    """The beam slots group `group` owns: slots are laid out group by group, `width` each."""
    return slice(group * width, (group + 1) * width)


def _extend_group(group: int, width: int, penalised: torch.Tensor, paths: list[tuple[list[int], list[float]]],
                  eos: set[int], finished: list[tuple[float, Continuation]], plan: _StepPlan) -> list[int]:
    """Fill the group's slots in `plan` with its best `width` live continuations; return the tokens they take.

    `penalised` is (width, vocab): each of the group's beams' score plus the next token's log-prob,
    minus the diversity penalty. Continuations that end the answer go to `finished` instead (with
    their length-normalised score); slots left over once the live continuations run out are dead (-inf).
    """
    first_slot, vocab = group * width, penalised.shape[1]
    # 2 x width candidates: enough for width live ones even if up to width of them end the answer.
    top = penalised.flatten().topk(2 * width)
    picked: list[int] = []
    for score, flat in zip(top.values.tolist(), top.indices.tolist()):
        if score == float("-inf") or len(picked) == width:
            break
        beam_in_group, token = divmod(flat, vocab)  # penalised was flattened row by row
        source = first_slot + beam_in_group
        path_ids, path_logprobs = paths[source]
        if token in eos:
            finished.append((score / (len(path_ids) + 1), Continuation(path_ids, path_logprobs, finished=True)))
            continue
        slot = first_slot + len(picked)  # live continuations fill the group's slots in score order
        plan.sources[slot], plan.tokens[slot], plan.scores[slot] = source, token, score
        picked.append(token)
    for slot in range(first_slot + len(picked), first_slot + width):
        plan.scores[slot] = float("-inf")  # fewer live continuations than slots: the rest are dead
    return picked


@serialized
@torch.no_grad()
def diverse_beam_search(loaded: LoadedModel, image: ImageInputs | None, prompt: list[int],
                        settings: GenerationSettings) -> list[Continuation]:
    """Group beam search with Hamming diversity: settings.n groups, the best hypothesis of each.

    Beam slots are laid out group by group: group g owns slots g * width .. (g + 1) * width - 1.
    At each step every group, in order, picks its best width continuations among its own beams'
    scores plus log-probs, minus diversity_penalty for each earlier group that chose the same token
    at this step. The KV cache then follows the picks (reorder_beams) and all slots advance in one
    batched forward pass.
    """
    model, groups, width = loaded.model, settings.n, settings.beams_per_group
    n_beams, eos = groups * width, end_ids(loaded)
    rope = stateful_rope_module(model)
    if rope is not None:
        rope.rope_deltas = None
    ids = torch.tensor([prompt], device=loaded.device)
    extra = image_tensors([image], [0], loaded.device) | token_inputs(image, ids) if image is not None else {}
    out = model(input_ids=ids, **extra, use_cache=True, logits_to_keep=1)
    cache = out.cache
    cache.batch_repeat_interleave(n_beams)  # the prompt was run once; every slot starts from it
    logits = out.logits[:, -1].float().expand(n_beams, -1)
    # Only the first slot of each group is live at step 0, so a group's beams do not start as copies.
    scores = torch.full((n_beams,), float("-inf"))
    scores[::width] = 0.0
    paths: list[tuple[list[int], list[float]]] = [([], []) for _ in range(n_beams)]  # (token ids, log-probs)
    finished: list[list[tuple[float, Continuation]]] = [[] for _ in range(groups)]  # (length-normalised score, ...)
    for step in range(settings.max_new_tokens):
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        chosen_so_far = torch.zeros(logprobs.shape[1])  # how many earlier groups picked each token at this step
        step_plan = _StepPlan(list(range(n_beams)), [pad_id(loaded)] * n_beams, scores.clone())
        for g in range(groups):
            if len(finished[g]) >= width:
                continue  # this group is done; its slots idle on padding
            slots = _group_slots(g, width)
            penalised = scores[slots, None] + logprobs[slots] - settings.diversity_penalty * chosen_so_far
            for token in _extend_group(g, width, penalised, paths, eos, finished[g], step_plan):
                chosen_so_far[token] += 1
        sources, tokens = step_plan.sources, step_plan.tokens
        paths = [(paths[b][0] + [t], paths[b][1] + [logprobs[b, t].item()]) for b, t in zip(sources, tokens)]
        scores = step_plan.scores
        if all(len(f) >= width for f in finished):
            break
        reorder_beams(cache, torch.tensor(sources, device=ids.device))
        step_ids = torch.tensor(tokens, device=ids.device)[:, None]
        logits = model(input_ids=step_ids, cache=cache, use_cache=True).logits[:, -1].float()
    # Groups that ran out of steps keep their live beams as unfinished answers.
    for g in range(groups):
        for slot in range(n_beams)[_group_slots(g, width)]:
            if scores[slot] > float("-inf") and len(finished[g]) < width:
                path_ids, path_logprobs = paths[slot]
                finished[g].append((scores[slot].item() / max(len(path_ids), 1),
                                    Continuation(path_ids, path_logprobs, finished=False)))
    if rope is not None:
        rope.rope_deltas = None
    return [max(f, key=lambda item: item[0])[1] for f in finished]


def generate_candidates(loaded: LoadedModel, image, question: str, gen: GenerationSettings) -> list[Candidate]:
    """gen.n candidate answers to (image, question) from one batched decoding call, seeded."""
    check_supported(loaded.model, loaded.processor)
    image_inputs = prepare_image(loaded.processor, image)
    prompt = prompt_ids(loaded.processor, question, image_inputs)
    if gen.strategy == "diverse-beam":
        continuations = diverse_beam_search(loaded, image_inputs, prompt, gen)
    else:
        continuations = generate_batch(loaded, [image_inputs], [prompt], [0], gen.n, gen, mode=gen.strategy)[0]
    tokenizer = loaded.processor.tokenizer
    return [Candidate(text=tokenizer.decode(c.token_ids, skip_special_tokens=True).strip(),
                      token_ids=c.token_ids, logprobs=c.logprobs) for c in continuations]
