"""Teacher-forced forward passes over many token sequences ("rows"), batched and prefix-cached.

A row is a full token sequence, with an image or blind. For each row we return the
log-probabilities of its last `n_scored` tokens and the logits of the token after it.
Three modes give the same numbers (tested within 1e-4) at very different costs:

- naive:   one forward pass per row, the image encoded every time;
- batched: rows right-padded into a few forward passes, the image still encoded per row;
- cached:  rows that share an image (or are all blind) share their longest common token
           prefix. That prefix (image tokens included) is run ONCE, batch 1 per image; its
           KV cache is then indexed out to every row, and only the differing suffixes run,
           right-padded in one batch. Logits are computed only where they are read.

Right padding needs no attention mask: pads come after every real token, so the causal
mask already hides them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from core.chat import ImageInputs, token_inputs
from core.loading import serialized

PAD_ID = 0  # any valid id: right padding is never attended to and its logits are never read
PADDING = 0.25  # a new pass starts rather than pad a batch by more than this share of its real tokens


@dataclass(frozen=True)
class Row:
    """One sequence to score: its full ids (image tokens expanded), which image, how many tail tokens to score."""

    ids: tuple[int, ...]
    image: int | None = None  # index into the images list; None = blind
    n_scored: int = 0


@dataclass
class RowOutput:
    """Teacher-forced results for one row."""

    token_logprobs: torch.Tensor  # (n_scored,) log p(token | everything before it)
    next_logits: torch.Tensor  # (vocab,) logits of the token after the row (e.g. the judge's answer)


def _check_rows(rows: list[Row], n_images: int) -> None:
    for row in rows:
        if len(row.ids) < 1 or not 0 <= row.n_scored < len(row.ids):
            raise ValueError(f"a row needs 0 <= n_scored < len(ids); got n_scored={row.n_scored}, "
                             f"len(ids)={len(row.ids)}")
        if row.image is not None and not 0 <= row.image < n_images:
            raise ValueError(f"row image index {row.image} is out of range for {n_images} images")


def image_tensors(images: list[ImageInputs], indices: list[int], device: torch.device) -> dict:
    """Pixel inputs of these images, batched along dim 0 in this order."""
    if not indices:
        return {}
    keys = images[indices[0]].tensors.keys()
    return {k: torch.cat([images[i].tensors[k] for i in indices]).to(device) for k in keys}


def stateful_rope_module(model: torch.nn.Module) -> torch.nn.Module | None:
    """The submodule keeping M-RoPE position deltas between calls (Qwen2-VL family), if any."""
    for module in model.modules():
        if hasattr(module, "rope_deltas"):
            return module
    return None


def _outputs(logits: torch.Tensor, rows: list[Row], first: list[int], prefix_logits: list | None = None
             ) -> list[RowOutput]:
    """Split flattened kept logits back into rows. Row r kept positions first[r].. of its suffix; a first
    position of -1 means the prefix's last logits (prefix_logits[r]) come first."""
    results, at = [], 0
    for r, row in enumerate(rows):
        count = row.n_scored + 1 - (1 if first[r] < 0 else 0)
        block = logits[at:at + count].float()
        at += count
        if first[r] < 0:
            block = torch.cat([prefix_logits[r][None].float(), block])
        logprobs = torch.log_softmax(block[:-1], dim=-1)
        targets = torch.tensor(row.ids[len(row.ids) - row.n_scored:], dtype=torch.long, device=block.device)
        picked = logprobs.gather(1, targets[:, None])[:, 0]
        results.append(RowOutput(token_logprobs=picked.cpu(), next_logits=block[-1].cpu()))
    return results


@torch.no_grad()
def _run_naive(model, images: list[ImageInputs], rows: list[Row], max_tokens: int) -> list[RowOutput]:
    """One full forward pass per row, the reference the other modes are tested against."""
    device = next(model.parameters()).device
    results = []
    for row in rows:
        ids = torch.tensor([row.ids], device=device)
        extra = {}
        if row.image is not None:
            extra = image_tensors(images, [row.image], device) | token_inputs(images[row.image], ids)
        logits = model(input_ids=ids, **extra, use_cache=False, logits_to_keep=row.n_scored + 1).logits[0]
        results += _outputs(logits, [row], [0])
    return results


def _chunks(lengths: list[int], extra: int, max_tokens: int, max_padding: float = PADDING) -> list[list[int]]:
    """Row positions grouped, shortest first, so that rows x (extra + longest) stays under max_tokens
    and padding stays under max_padding of the real tokens (each pass costs its padded size)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    chunks, current, real = [], [], 0
    for i in order:
        padded = (len(current) + 1) * (extra + lengths[i])  # sorted: row i is the longest so far
        too_big = padded > max_tokens
        too_padded = padded > (1 + max_padding) * (real + lengths[i] + (len(current) + 1) * extra)
        if current and (too_big or too_padded):
            chunks.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        chunks.append(current)
    return chunks


def _suffix_pass(model, suffixes: list[list[int]], first: list[int], inputs: dict,
                 token_image: ImageInputs | None = None) -> torch.Tensor:
    """Run right-padded suffixes; return logits at each row's needed positions, flattened row by row."""
    device = next(model.parameters()).device
    width = max(len(s) for s in suffixes)
    ids = torch.full((len(suffixes), width), PAD_ID, dtype=torch.long, device=device)
    keep = torch.zeros((len(suffixes), width), dtype=torch.bool, device=device)
    for r, (suffix, start) in enumerate(zip(suffixes, first)):
        ids[r, :len(suffix)] = torch.tensor(suffix, device=device)
        keep[r, max(start, 0):len(suffix)] = True
    inputs = inputs | token_inputs(token_image, ids)
    return model(input_ids=ids, **inputs, logits_to_keep=keep).logits


@torch.no_grad()
def _run_batched(model, images: list[ImageInputs], rows: list[Row], max_tokens: int) -> list[RowOutput]:
    """Full rows, right-padded into few passes; image rows and blind rows in separate passes."""
    device = next(model.parameters()).device
    results: list[RowOutput | None] = [None] * len(rows)
    for with_image in (True, False):
        members = [i for i, r in enumerate(rows) if (r.image is not None) == with_image]
        for chunk in _chunks([len(rows[i].ids) for i in members], 0, max_tokens):
            chunk_rows = [rows[members[c]] for c in chunk]
            first = [len(r.ids) - 1 - r.n_scored for r in chunk_rows]
            extra: dict = {"use_cache": False}
            token_image = images[chunk_rows[0].image] if with_image else None
            if with_image:
                extra |= image_tensors(images, [r.image for r in chunk_rows], device)
            logits = _suffix_pass(model, [list(r.ids) for r in chunk_rows], first, extra, token_image)
            for c, out in zip(chunk, _outputs(logits, chunk_rows, first, None)):
                results[members[c]] = out
    return results


def _common_prefix(sequences: list[tuple[int, ...]]) -> int:
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for i in range(length):
        if any(s[i] != first[i] for s in sequences):
            return i
    return length


def select_cache(cache: DynamicCache, index: torch.Tensor, config) -> DynamicCache:
    """A new cache holding the given batch rows of `cache` (rows may repeat)."""
    selected = DynamicCache([(keys.index_select(0, index), values.index_select(0, index))
                             for keys, values, *_ in cache], config=config)
    # A sliding-window layer keeps only its last window of keys but counts every token seen
    # (Gemma 3, Mistral): the count places the next tokens, so it must carry over.
    for new, old in zip(selected.layers, cache.layers):
        if hasattr(old, "cumulative_length"):
            new.cumulative_length = old.cumulative_length
    return selected


@torch.no_grad()
def _run_cached(model, images: list[ImageInputs], rows: list[Row], max_tokens: int) -> list[RowOutput]:
    """Shared prefixes once (batched over images of equal prefix length), then all suffixes."""
    device = next(model.parameters()).device
    rope = stateful_rope_module(model)
    groups: dict[int | None, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[row.image].append(i)
    # Every row keeps at least one token after its prefix and no scored token inside it (the
    # prefix's last logits predict the first scored token at the latest).
    prefix_len = {g: min(_common_prefix([rows[i].ids for i in members]),
                         min(len(rows[i].ids) - max(rows[i].n_scored, 1) for i in members))
                  for g, members in groups.items()}
    by_length: dict[tuple[int, bool], list] = defaultdict(list)
    for g, length in prefix_len.items():
        by_length[(length, g is not None)].append(g)
    results: list[RowOutput | None] = [None] * len(rows)
    for (length, with_image), group_keys in by_length.items():
        prefix = torch.tensor([rows[groups[g][0]].ids[:length] for g in group_keys], device=device)
        extra = {}
        if with_image:
            extra = image_tensors(images, group_keys, device) | token_inputs(images[group_keys[0]], prefix)
        if rope is not None:
            rope.rope_deltas = None  # recomputed from this prefix, never carried over from another call
        out = model(input_ids=prefix, **extra, use_cache=True, logits_to_keep=1)
        cache, last_logits = out.cache, out.logits[:, -1]
        deltas = rope.rope_deltas if rope is not None else None
        members = [(gi, i) for gi, g in enumerate(group_keys) for i in groups[g]]
        lengths = [len(rows[i].ids) - length for _, i in members]
        for chunk in _chunks(lengths, length, max_tokens):
            picked = [members[c] for c in chunk]
            index = torch.tensor([gi for gi, _ in picked], device=device)
            chunk_rows = [rows[i] for _, i in picked]
            if rope is not None:
                rope.rope_deltas = deltas.index_select(0, index) if deltas is not None else None
            first = [len(r.ids) - 1 - r.n_scored - length for r in chunk_rows]
            logits = _suffix_pass(model, [list(r.ids[length:]) for r in chunk_rows], first,
                                  {"cache": select_cache(cache, index, model.config), "use_cache": True})
            prefix_logits = [last_logits[gi] if f < 0 else None for (gi, _), f in zip(picked, first)]
            for (_, i), result in zip(picked, _outputs(logits, chunk_rows, first, prefix_logits)):
                results[i] = result
    if rope is not None:
        rope.rope_deltas = None
    return results


RUNNERS = {"naive": _run_naive, "batched": _run_batched, "cached": _run_cached}


@serialized
def run_rows(model: torch.nn.Module, images: list[ImageInputs], rows: list[Row], mode: str = "cached",
             max_tokens: int = 16384) -> list[RowOutput]:
    """Teacher-forced log-probs and next-token logits for every row.

    batched and cached compute identical rows once; naive computes every row (the honest baseline).
    """
    if mode not in RUNNERS:
        raise ValueError(f"mode must be one of {', '.join(RUNNERS)}, not {mode!r}")
    _check_rows(rows, len(images))
    if not rows:
        return []
    if mode == "naive":
        return RUNNERS[mode](model, images, rows, max_tokens)
    unique = list(dict.fromkeys(rows))
    computed = dict(zip(unique, RUNNERS[mode](model, images, unique, max_tokens)))
    return [computed[row] for row in rows]
