"""Turning core results (as their JSON) into what the Explore tab shows: rows, highlights, labels.

Plain functions over plain data, no gradio and no model, so each is tested on its own.
"""

from __future__ import annotations


from core.engine.judge import json_safe
from core.shapes.metrics import sentence_is_hallucinated
from core.shapes.world import Scene
from selfjudge_ui.plots import TOKEN_VIEWS

CANDIDATE_COLUMNS = ["#", "rank", "text", "raw", "blind", "debiased", "min debiased", "likelihood",
                     "hallucinated sentences"]
SENTENCE_COLUMNS = ["#", "sentence", "raw", "blind", "debiased", "verdict"]
DECODE_COLUMNS = ["step", "sentence (indented under its parent)", "score", "raw", "blind", "accepted", "chosen"]
COMPARE_COLUMNS = ["model", "#", "rank", "text", "debiased", "min debiased", "hallucinated sentences"]
SCORE_FIELDS = {"raw": "mean_raw", "blind": "mean_blind", "debiased": "mean_debiased",
                "min_debiased": "min_debiased", "likelihood": "likelihood", "rank": "rank"}
NO_TRUTH = "no ground truth"


finite = json_safe  # one implementation, in core


def _r(value: float | None) -> float | None:
    # core results write non-finite numbers (an answer with no sentence has no mean) as null
    return None if value is None else round(float(value), 3)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def scene_truth(scene: Scene | None) -> list[list[str]] | None:
    """The (colour, shape) objects of a scene as JSON-friendly lists; None when there is no scene."""
    return None if scene is None else sorted([list(name) for name in scene.names()])


def describe_truth(scene: Scene) -> str:
    """Ground truth of a shapes scene as Markdown."""
    objects = ", ".join(f"{o.size} {o.color} {o.shape} ({o.position}{', faint' if o.low_contrast else ''})"
                        for o in scene.objects)
    return f"**Ground truth, scene {scene.seed}:** {objects}."


def verdicts(result: dict, truth: list[list[str]] | None) -> list[list[str]]:
    """For every candidate, every sentence: correct, hallucinated, no object claimed, or no ground truth."""
    present = None if truth is None else {tuple(name) for name in truth}
    words = {True: "hallucinated", False: "correct", None: "no object claimed"}
    return [[NO_TRUTH if present is None else words[sentence_is_hallucinated(s["text"], present)]
             for s in c["sentences"]] for c in result["candidates"]]


def _hallucinated_count(candidate_verdicts: list[str]) -> str:
    if NO_TRUTH in candidate_verdicts or not candidate_verdicts:
        return "-"
    return f"{candidate_verdicts.count('hallucinated')}/{len(candidate_verdicts)}"


def candidate_rows(result: dict, truth: list[list[str]] | None) -> list[list]:
    """One table row per candidate, in generation order."""
    return [[i + 1, c["rank"], c["text"], _r(c["mean_raw"]), _r(c["mean_blind"]), _r(c["mean_debiased"]),
             _r(c["min_debiased"]), _r(c["likelihood"]), _hallucinated_count(v)]
            for i, (c, v) in enumerate(zip(result["candidates"], verdicts(result, truth)))]


def sentence_rows(result: dict, truth: list[list[str]] | None) -> list[list]:
    """One table row per sentence of every candidate, with its verdict against the ground truth."""
    return [[i + 1, s["text"], _r(s["raw"]), _r(s["blind"]), _r(s["debiased"]), verdict]
            for i, (c, vs) in enumerate(zip(result["candidates"], verdicts(result, truth)))
            for s, verdict in zip(c["sentences"], vs)]


def candidate_choices(result: dict) -> list[tuple[str, int]]:
    """Dropdown choices (label, 1-based candidate number)."""
    return [(f"#{i + 1} (rank {c['rank']}, debiased {_fmt(c['mean_debiased'])}): {c['text'][:60]}", i + 1)
            for i, c in enumerate(result["candidates"])]


def best_and_worst(result: dict) -> tuple[int, int]:
    """1-based numbers of the first- and last-ranked candidates (rank 1 = highest mean debiased score,
    or the lowest where "yes" is bad, as for the safety prompt)."""
    order = sorted(range(len(result["candidates"])), key=lambda i: result["candidates"][i]["rank"])
    return order[0] + 1, order[-1] + 1


def token_highlights(candidate: dict, view: str) -> tuple[list[tuple[str, float]], str]:
    """(token, value in [-1, 1]) for gr.HighlightedText, and the Markdown scale that maps colour back to value.

    Log-probabilities (raw, blind) are all <= 0, so they are stretched min..max onto -1..1;
    debiased and visual gain are signed, so they are divided by their largest magnitude and 0 stays 0.
    """
    key, meaning = TOKEN_VIEWS[view]
    tokens = [t["token"] for t in candidate["tokens"]]
    known = [float(t[key]) for t in candidate["tokens"] if t[key] is not None]
    if not known:
        return [(tok, 0.0) for tok in tokens], "No token scores."
    middle = (min(known) + max(known)) / 2 if view in ("raw", "blind") else 0.0
    values = [middle if t[key] is None else float(t[key]) for t in candidate["tokens"]]
    if view in ("debiased", "visual gain"):
        top = max(abs(v) for v in values) or 1.0
        scaled = [v / top for v in values]
        scale = (f"{view} = {meaning}. Shade = value / {top:.3f}: full purple = {-top:.3f}, clear = 0, "
                 f"full red = {top:.3f}.")
    else:
        low, high = min(values), max(values)
        half = (high - low) / 2
        scaled = [(v - low) / half - 1 if half else 0.0 for v in values]
        scale = (f"{view} = {meaning}. Shade: full purple = {low:.3f} (least likely), clear = {(low + high) / 2:.3f}, "
                 f"full red = {high:.3f} (most likely).")
    return [(tok, round(s, 4)) for tok, s in zip(tokens, scaled)], scale


def pair_scores(candidate: dict, judge_settings: dict) -> dict:
    """The scores saved with one side of a pair: the candidate's means plus the judge settings used."""
    scores = {name: candidate[key] for name, key in SCORE_FIELDS.items()}  # exact, null where undefined
    scores.update({"alpha": judge_settings["alpha"], "kind": judge_settings["kind"]})
    return scores


def decode_rows(decoded: dict) -> list[list]:
    """The search tree as an indented table, depth-first from each root."""
    nodes = decoded["nodes"]
    children: dict[int | None, list[int]] = {}
    for index, node in enumerate(nodes):
        children.setdefault(node["parent"], []).append(index)
    rows: list[list] = []

    def visit(index: int, depth: int) -> None:
        node = nodes[index]
        text = node["text"] or "(end of answer)"
        rows.append([node["step"], "    " * depth + ("└ " if depth else "") + text, _r(node["score"]),
                     _r(node.get("raw")), _r(node.get("blind")), "no" if node.get("accepted") is False else "yes",
                     "yes" if node["chosen"] else ""])
        for child in children.get(index, []):
            visit(child, depth + 1)

    for root in children.get(None, []):
        visit(root, 0)
    return rows


def compare_rows(label: str, result: dict, truth: list[list[str]] | None) -> list[list]:
    """Candidate rows of one model in the side-by-side comparison."""
    return [[label, i + 1, c["rank"], c["text"], _r(c["mean_debiased"]), _r(c["min_debiased"]),
             _hallucinated_count(v)]
            for i, (c, v) in enumerate(zip(result["candidates"], verdicts(result, truth)))]


def compare_summary(label: str, result: dict, truth: list[list[str]] | None) -> str:
    """One Markdown line: mean debiased score, and the hallucinated-sentence rate where truth is known."""
    candidates = result["candidates"]
    known = [c["mean_debiased"] for c in candidates if c["mean_debiased"] is not None]
    mean = sum(known) / len(known) if known else None
    line = f"**{label}**: mean debiased {_fmt(mean, 3)} over {len(candidates)} candidates"
    flat = [v for vs in verdicts(result, truth) for v in vs]
    claimed = [v for v in flat if v in ("correct", "hallucinated")]
    if truth is not None and claimed:
        line += (f"; {claimed.count('hallucinated')}/{len(claimed)} sentences that name an object are "
                 f"hallucinated ({claimed.count('hallucinated') / len(claimed):.0%})")
    return line
