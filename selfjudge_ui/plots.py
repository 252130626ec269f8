"""Plotly figures for the Explore tab, built from the JSON of a judge or decode result.

Presentation only: every number drawn here was computed by core.engine.judge / core.engine.decoding.
"""

from __future__ import annotations

import plotly.graph_objects as go

from core.engine.decoding import DecodeOptions, flipped_by_debiasing

# What each token view shows, read from a token's JSON (core.engine.judge.TokenScore).
TOKEN_VIEWS = {
    "visual gain": ("visual_gain", "log p(token | image) - log p(token | no image)"),
    "debiased": ("debiased", "(1+alpha) log p(token | image) - alpha log p(token | no image)"),
    "raw": ("logprob_image", "log p(token | image, prompt)"),
    "blind": ("logprob_blind", "log p(token | prompt, no image)"),
}
# Views whose sign means something: above 0 the image supports the token, below 0 the language prior drives it.
SIGNED_VIEWS = ("visual gain",)
DEFAULT_TOKEN_VIEW = "visual gain"

# One palette for the whole studio: green = grounded in the image, red = prior-driven or hallucinated;
# blue shades only say "higher" for scores without a grounded/prior sign (log-probabilities).
GROUNDED = "#1a9850"
PRIOR = "#d73027"
NEUTRAL = "#8d99ae"
HIGHER = "#2c7bb6"
SIGNED_COLOURS = [[0.0, PRIOR], [0.5, "#ffffff"], [1.0, GROUNDED]]
LEVEL_COLOURS = [[0.0, "#ffffff"], [1.0, HIGHER]]
VERDICT_COLOURS = {"correct": GROUNDED, "hallucinated": PRIOR, "no object claimed": NEUTRAL,
                   "no ground truth": "#6c757d"}
REJECTED = f"rejected by the judge (debiased log-odds < {DecodeOptions().reject_below:g})"
FLIPPED = "rejected by debiasing (the raw judge would keep it)"
MAX_TOKEN_LABEL = 7  # characters of a token written inside its heatmap cell
MAX_LABELLED_TOKENS = 24  # beyond this many positions a cell is too narrow for a label: hover shows the token


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"  # core writes non-finite numbers as null


def _cell_label(token: str) -> str:
    """A token as written in its heatmap cell: trimmed, and cut short so it never runs into the next cell."""
    token = token.strip() or "␣"
    return token if len(token) <= MAX_TOKEN_LABEL else token[: MAX_TOKEN_LABEL - 1] + "…"


def token_heatmap(result: dict, view: str) -> go.Figure:
    """Candidates x token positions, coloured by the chosen per-token value; hover shows the exact value."""
    key, meaning = TOKEN_VIEWS[view]
    candidates = result["candidates"]
    width = max((len(c["tokens"]) for c in candidates), default=0)
    z, text, hover = [], [], []
    for c in candidates:
        values = [t[key] for t in c["tokens"]]
        tokens = [t["token"] for t in c["tokens"]]
        pad = width - len(values)
        z.append(values + [None] * pad)
        text.append([_cell_label(tok) for tok in tokens] + [""] * pad)
        hover.append([f"{tok!r}<br>{view} = {_fmt(val)}" for tok, val in zip(tokens, values)] + [""] * pad)
    labels = [f"#{i + 1} (rank {c['rank']})" for i, c in enumerate(candidates)]
    signed = view in SIGNED_VIEWS
    legend = "green: the image supports it, red: the prior drives it" if signed else "darker: higher"
    figure = go.Figure(go.Heatmap(
        z=z, x=list(range(width)), y=labels, text=text,
        texttemplate="%{text}" if width <= MAX_LABELLED_TOKENS else "", textfont={"size": 10},
        hovertext=hover, hoverinfo="text", colorscale=SIGNED_COLOURS if signed else LEVEL_COLOURS,
        zmid=0 if signed else None, xgap=3, ygap=3, colorbar={"title": view}))
    figure.update_layout(title=f"Per-token {view} ({legend})", xaxis_title=f"token position; {view} = {meaning}",
                         yaxis={"autorange": "reversed"}, height=140 + 40 * len(candidates),
                         margin={"l": 10, "r": 10, "t": 40, "b": 30})
    return figure


def sentence_scatter(result: dict, verdicts: list[list[str]]) -> go.Figure:
    """Each sentence at (blind score, raw score), with the diagonal; far above it = grounded in the image."""
    figure = go.Figure()
    points: dict[str, dict[str, list]] = {}
    for index, (candidate, candidate_verdicts) in enumerate(zip(result["candidates"], verdicts)):
        for sentence, verdict in zip(candidate["sentences"], candidate_verdicts):
            group = points.setdefault(verdict, {"x": [], "y": [], "hover": []})
            group["x"].append(sentence["blind"])
            group["y"].append(sentence["raw"])
            group["hover"].append(f"#{index + 1}: {sentence['text']}<br>raw {_fmt(sentence['raw'])}, "
                                  f"blind {_fmt(sentence['blind'])}, debiased {_fmt(sentence['debiased'])}")
    for verdict, group in points.items():
        figure.add_trace(go.Scatter(x=group["x"], y=group["y"], mode="markers", name=verdict,
                                    hovertext=group["hover"], hoverinfo="text",
                                    marker={"size": 10, "color": VERDICT_COLOURS.get(verdict)}))
    every = [v for g in points.values() for v in g["x"] + g["y"] if v is not None]
    low, high = (min(every), max(every)) if every else (-1.0, 1.0)
    pad = 0.05 * (high - low or 1.0)
    figure.add_trace(go.Scatter(x=[low - pad, high + pad], y=[low - pad, high + pad], mode="lines",
                                name="raw = blind", line={"dash": "dash", "color": "#999"}, hoverinfo="skip"))
    figure.update_layout(title="Sentences: raw (with image) vs blind (no image) judge score",
                         xaxis_title="blind score (no image)", yaxis_title="raw score (with image)",
                         height=420, margin={"l": 10, "r": 10, "t": 40, "b": 30})
    return figure


def _node_hover(node: dict) -> str:
    """A search-tree node's sentence, selection score and (for judged proposals) the judge's verdict."""
    hover = f"step {node['step']}: {node['text'] or '(end of answer)'}<br>score {_fmt(node['score'])}"
    if node.get("log_odds") is not None:
        threshold = DecodeOptions().reject_below
        verdict = f"rejected: < {threshold:g}" if node.get("accepted") is False else f"accepted: ≥ {threshold:g}"
        hover += f"<br>debiased log-odds {_fmt(node['log_odds'])} ({verdict})"
    if node.get("raw_log_odds") is not None and node.get("log_odds") is not None:
        hover += f"<br>raw log-odds {_fmt(node['raw_log_odds'])}"
    return hover


def _flipped(node: dict) -> bool:
    return flipped_by_debiasing(node.get("log_odds"), node.get("raw_log_odds"), DecodeOptions().reject_below)


def decode_tree(decoded: dict) -> go.Figure:
    """The self-judged decoding search: one column per step, edges to the parent, chosen path highlighted."""
    nodes = decoded["nodes"]
    rows_at_step: dict[int, int] = {}
    positions = []
    for node in nodes:
        row = rows_at_step.get(node["step"], 0)
        rows_at_step[node["step"]] = row + 1
        positions.append((node["step"], -row))
    figure = go.Figure()
    for index, node in enumerate(nodes):
        parent = node["parent"]
        if parent is None:
            continue
        both_chosen = node["chosen"] and nodes[parent]["chosen"]
        figure.add_trace(go.Scatter(
            x=[positions[parent][0], positions[index][0]], y=[positions[parent][1], positions[index][1]],
            mode="lines", line={"color": GROUNDED if both_chosen else "#ccc", "width": 3 if both_chosen else 1},
            hoverinfo="skip", showlegend=False))
    kinds = {  # name: (which nodes, marker size, colour, symbol)
        # An end proposal ("") is not judged: it is the model's wish to stop, not a rejection.
        "proposed, not chosen": (lambda n: not n["chosen"] and (n.get("accepted", True) is not False or not n["text"]),
                                 9, NEUTRAL, "circle"),
        REJECTED: (lambda n: not n["chosen"] and n.get("accepted") is False and n["text"] and not _flipped(n), 9,
                   PRIOR, "x"),
        FLIPPED: (lambda n: not n["chosen"] and n.get("accepted") is False and n["text"] and _flipped(n), 12, PRIOR,
                  "x-open"),
        "chosen": (lambda n: n["chosen"], 14, GROUNDED, "circle"),
    }
    for name, (belongs, size, colour, symbol) in kinds.items():
        picked = [i for i, n in enumerate(nodes) if belongs(n)]
        if not picked:
            continue
        figure.add_trace(go.Scatter(
            x=[positions[i][0] for i in picked], y=[positions[i][1] for i in picked], mode="markers+text",
            name=name, text=[_fmt(nodes[i]["score"], 2) for i in picked], textposition="top center",
            hovertext=[_node_hover(nodes[i]) for i in picked], hoverinfo="text",
            marker={"size": size, "color": colour, "symbol": symbol}))
    deepest = max(rows_at_step.values(), default=1)
    figure.update_layout(title=f"Search tree ({decoded['strategy']}): number = selection score; hover for the sentence",
                         xaxis={"title": "step (sentence)", "dtick": 1},
                         yaxis={"visible": False, "range": [-deepest + 0.5, 0.6]},  # room for the top labels
                         height=200 + 30 * deepest, margin={"l": 10, "r": 10, "t": 40, "b": 30})
    return figure
