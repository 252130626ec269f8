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

from core.engine.chat import ImageInputs, token_inputs
from core.engine.loading import serialized

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


@dataclass
class _Prefix:
    """A shared prefix already run: its KV cache (batch row b = the b-th distinct prefix), the logits
    after it, and its length in tokens."""

    cache: DynamicCache
    last_logits: torch.Tensor  # (batch, vocab)
    length: int
    rope_deltas: torch.Tensor | None  # M-RoPE offsets per batch row (Qwen2-VL family), else None

    def row(self, b: int, config) -> DynamicCache:
        """A cache of batch row b alone; views, not copies (a pass appends by concatenation, leaving them intact)."""
        row = DynamicCache([(keys[b:b + 1], values[b:b + 1]) for keys, values, *_ in self.cache], config=config)
        # A sliding-window layer keeps only its last window of keys but counts every token seen
        # (Gemma 3, Mistral): the count places the next tokens, so it must carry over.
        for new, old in zip(row.layers, self.cache.layers):
            if hasattr(old, "cumulative_length"):
                new.cumulative_length = old.cumulative_length
        return row


@dataclass
class _Trie:
    """The suffixes of several rows with every shared leading run of tokens stored once: node n holds
    one token, its parent node (-1: the prefix) and its depth after the prefix."""

    tokens: list[int]
    parents: list[int]
    depths: list[int]
    paths: list[list[int]]  # per suffix, the node of each of its tokens


def _trie(suffixes: list[tuple[int, ...]]) -> _Trie:
    """The token trie of these suffixes; a node comes after its parent."""
    node_of: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
    trie = _Trie([], [], [], [])
    for suffix in suffixes:
        node, path = -1, []
        for depth, token in enumerate(suffix):
            if (node, token) not in node_of:
                node_of[(node, token)] = len(trie.tokens)
                trie.tokens.append(token)
                trie.parents.append(node)
                trie.depths.append(depth)
            node = node_of[(node, token)]
            path.append(node)
        trie.paths.append(path)
    return trie


def _tree_mask(trie: _Trie, prefix_length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The (1, 1, nodes, prefix + nodes) additive attention mask: each node sees the prefix, its ancestors
    and itself, so every suffix is computed exactly as if it ran alone after the prefix."""
    n = len(trie.tokens)
    sees = torch.zeros((n, prefix_length + n), dtype=torch.bool)
    sees[:, :prefix_length] = True
    nodes = torch.arange(n)
    parents = torch.tensor(trie.parents + [-1])  # index -1 (no node) maps to -1 again
    ancestor = nodes  # walk all nodes up their ancestors at once, one level per step
    while bool((ancestor >= 0).any()):
        alive = ancestor >= 0
        sees[nodes[alive], prefix_length + ancestor[alive]] = True
        ancestor = parents[ancestor]
    mask = torch.zeros(sees.shape, dtype=dtype).masked_fill(~sees, torch.finfo(dtype).min)
    return mask[None, None].to(device)


def _row_packs(suffixes: list[tuple[int, ...]], rows: list[int], fits) -> list[list[int]]:
    """Sorted rows grouped greedily into packs whose trie size fits (a row alone always does)."""
    packs, current, nodes = [], [], 0
    for i in rows:
        added = len(suffixes[i]) - (_common_prefix([suffixes[i], suffixes[current[-1]]]) if current else 0)
        if current and not fits(nodes + added):
            packs.append(current)
            current, nodes, added = [], 0, len(suffixes[i])
        current.append(i)
        nodes += added
    return packs + [current] if current else packs


def _packs(suffixes: list[tuple[int, ...]], prefix_length: int, max_tokens: int, pair_cost: float,
           merge_pairs: float) -> list[list[int]]:
    """Suffix positions grouped into packs (lists of positions) for one prefix.

    Rows starting with different tokens share no trie node: each first token roots an independent
    subtree. Subtrees join one pack while the attention pairs wasted between them
    (2 x pack nodes x subtree nodes) stay under merge_pairs (worth less than another pass) and the
    pack's cost in KV token positions stays under max_tokens: (prefix + nodes) for the cache plus
    pair_cost per (node, key) pair for attention scores and mask. A subtree over the budget is
    split between rows, keeping rows that share tokens together.
    """
    def fits(nodes: int) -> bool:
        return prefix_length + nodes + pair_cost * nodes * (prefix_length + nodes) <= max_tokens

    order = sorted(range(len(suffixes)), key=lambda i: suffixes[i])  # rows sharing tokens side by side
    subtrees: list[tuple[list[int], int]] = []  # (rows, trie nodes)
    for i in order:
        if subtrees and suffixes[subtrees[-1][0][-1]][0] == suffixes[i][0]:
            rows, nodes = subtrees[-1]
            subtrees[-1] = (rows + [i], nodes + len(suffixes[i]) - _common_prefix([suffixes[i], suffixes[rows[-1]]]))
        else:
            subtrees.append(([i], len(suffixes[i])))
    packs, current, nodes = [], [], 0
    for rows, size in subtrees:
        if current and (2 * nodes * size > merge_pairs or not fits(nodes + size)):
            packs.append(current)
            current, nodes = [], 0
        if fits(size):
            current, nodes = current + rows, nodes + size
        else:
            packs += _row_packs(suffixes, rows, fits)
    return packs + [current] if current else packs


# Another pass costs about as much as this many tokens of work; subtrees merge into one pass while
# the attention they waste on each other costs less.
PASS_TOKENS = 32


def merge_pairs(model: torch.nn.Module) -> float:
    """Attention pairs worth one pass: a token costs ~12 x hidden^2 FLOPs per layer (projections and
    MLP), a (query, key) pair ~4 x hidden (scores and weighted values), so PASS_TOKENS x 3 x hidden."""
    return PASS_TOKENS * 3 * model.config.get_text_config().hidden_size


def pair_cost(model: torch.nn.Module) -> float:
    """Bytes of attention scores and mask per (query, key) pair, in KV token positions (kv_bytes_per_token)."""
    text = model.config.get_text_config()
    return (text.num_attention_heads * 4 + 4) / kv_bytes_per_token(model)  # fp32 scores per head, fp32 mask


def _past_sliding_window(model: torch.nn.Module, length: int) -> bool:
    """Whether a sequence this long outgrows a sliding-window layer's cache (Gemma 3, Mistral).

    Such a layer keeps only its last window of keys, so a tree mask over prefix + nodes no longer
    matches its keys; past the window, rows run one per pass under the model's own mask.
    """
    window = getattr(model.config.get_text_config(), "sliding_window", None)
    return window is not None and length > window


def _run_pack(model, prefix: _Prefix, cache_row: int, rows: list[Row], members: list[int], results: list) -> None:
    """All member rows after one prefix row in ONE sequence: their suffix trie, with a tree attention mask."""
    device = prefix.last_logits.device
    trie = _trie([rows[i].ids[prefix.length:] for i in members])
    # Suffix position of the logits predicting each row's first scored token (or giving its answer logits);
    # -1 when that is the prefix's last position.
    first = [len(rows[i].ids) - 1 - rows[i].n_scored - prefix.length for i in members]
    needed = sorted({node for path, f in zip(trie.paths, first) for node in path[max(f, 0):]})
    keep = torch.zeros((1, len(trie.tokens)), dtype=torch.bool, device=device)
    keep[0, needed] = True
    positions = torch.tensor([[prefix.length + depth for depth in trie.depths]], device=device)
    if prefix.rope_deltas is not None:
        positions = positions + prefix.rope_deltas[cache_row].to(device)  # M-RoPE: text continues past the image
    dtype = model.get_input_embeddings().weight.dtype
    logits = model(input_ids=torch.tensor([trie.tokens], device=device), position_ids=positions,
                   attention_mask=_tree_mask(trie, prefix.length, dtype, device) if len(members) > 1 else None,
                   cache=prefix.row(cache_row, model.config), use_cache=True, logits_to_keep=keep).logits
    row_of_node = {node: k for k, node in enumerate(needed)}
    for i, path, f in zip(members, trie.paths, first):
        block = logits[[row_of_node[node] for node in path[max(f, 0):]]]
        before = prefix.last_logits[cache_row] if f < 0 else None
        results[i] = _outputs(block, [rows[i]], [f], [before])[0]


@torch.no_grad()
def _run_cached(model, images: list[ImageInputs], rows: list[Row], max_tokens: int) -> list[RowOutput]:
    """Each image's shared prefix once (images of equal prefix length in one pass), then per image all
    its rows' suffixes as one token trie (every shared token once) in as few packed passes as fit."""
    device = next(model.parameters()).device
    rope = stateful_rope_module(model)
    rows_of_image: dict[int | None, list[int]] = defaultdict(list)  # image index (None: blind) -> its row indices
    for i, row in enumerate(rows):
        rows_of_image[row.image].append(i)
    # Every row keeps at least one token after its prefix and no scored token inside it (the prefix's
    # last logits predict the first scored token at the latest).
    prefix_length = {image: min(_common_prefix([rows[i].ids for i in image_rows]),
                                min(len(rows[i].ids) - max(rows[i].n_scored, 1) for i in image_rows))
                     for image, image_rows in rows_of_image.items()}
    # Images whose prefixes have equal length run in one pass (no padding inside a cache); blind
    # rows never share a pass with image rows (the model's image inputs are all or nothing).
    passes: dict[tuple[int, bool], list[int | None]] = defaultdict(list)  # (prefix length, with image) -> images
    for image, length in prefix_length.items():
        passes[(length, image is not None)].append(image)
    cost, worth_a_pass = pair_cost(model), merge_pairs(model)
    results: list[RowOutput | None] = [None] * len(rows)
    for (length, with_image), pass_images in passes.items():
        ids = torch.tensor([rows[rows_of_image[image][0]].ids[:length] for image in pass_images], device=device)
        extra = {}
        if with_image:
            extra = image_tensors(images, pass_images, device) | token_inputs(images[pass_images[0]], ids)
        if rope is not None:
            rope.rope_deltas = None  # recomputed from this prefix, never carried over from another call
        out = model(input_ids=ids, **extra, use_cache=True, logits_to_keep=1)
        prefix = _Prefix(out.cache, out.logits[:, -1], length, rope.rope_deltas if rope is not None else None)
        for cache_row, image in enumerate(pass_images):  # row of the prefix cache this image's prefix is in
            image_rows = rows_of_image[image]
            suffixes = [rows[i].ids[length:] for i in image_rows]
            if _past_sliding_window(model, length + max(map(len, suffixes))):
                # A pack lists positions in image_rows; here one chain per pass: the model's own causal mask.
                packs = [[position] for position in range(len(image_rows))]
            else:
                packs = _packs(suffixes, length, max_tokens, cost, worth_a_pass)
            for pack in packs:
                _run_pack(model, prefix, cache_row, rows, [image_rows[position] for position in pack], results)
    if rope is not None:
        rope.rope_deltas = None
    return results


RUNNERS = {"naive": _run_naive, "batched": _run_batched, "cached": _run_cached}
# Where no budget is set: this share of the free CUDA memory, or this much on CPU (where a bigger
# batch gains little and the machine's memory is shared with everything else).
CUDA_FREE_SHARE = 0.5
CPU_BUDGET = 2 * 1024**3


def text_kv_bytes(text_config, dtype: torch.dtype) -> int:
    """Bytes of KV cache per token of a language model config: layers x kv heads x head dim x 2 x dtype bytes."""
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return text_config.num_hidden_layers * kv_heads * head_dim * 2 * dtype.itemsize


def kv_bytes_per_token(model: torch.nn.Module) -> int:
    """Bytes of KV cache one token takes in this model (text_kv_bytes of its text config)."""
    # The cache holds the compute dtype, which the (never quantized) input embeddings have, also under 4-bit.
    return text_kv_bytes(model.config.get_text_config(), model.get_input_embeddings().weight.dtype)


def default_memory_budget(device: torch.device) -> int:
    """Bytes of KV cache one scoring pass may hold: half the free CUDA memory, or 2 GiB on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_SHARE)
    return CPU_BUDGET


def budget_tokens(model: torch.nn.Module, memory_budget: int | None = None) -> int:
    """How many token positions of KV cache (rows x padded length, shared prefix copies included) fit the budget."""
    if memory_budget is None or memory_budget <= 0:
        memory_budget = default_memory_budget(next(model.parameters()).device)
    return max(1, memory_budget // kv_bytes_per_token(model))


@serialized
def run_rows(model: torch.nn.Module, images: list[ImageInputs], rows: list[Row], mode: str = "cached",
             memory_budget: int | None = None) -> list[RowOutput]:
    """Teacher-forced log-probs and next-token logits for every row.

    Rows run in chunks whose KV cache fits memory_budget bytes (None or 0: default_memory_budget).
    batched and cached compute identical rows once; naive computes every row (the honest baseline).
    """
    if mode not in RUNNERS:
        raise ValueError(f"mode must be one of {', '.join(RUNNERS)}, not {mode!r}")
    _check_rows(rows, len(images))
    if not rows:
        return []
    max_tokens = budget_tokens(model, memory_budget)
    if mode == "naive":
        return RUNNERS[mode](model, images, rows, max_tokens)
    unique = list(dict.fromkeys(rows))
    computed = dict(zip(unique, RUNNERS[mode](model, images, unique, max_tokens)))
    return [computed[row] for row in rows]
