"""Turning core results (as their JSON) into what the Explore tab shows: rows, highlights, labels.

Plain functions over plain data, no gradio and no model, so each is tested on its own.
"""

from __future__ import annotations

import html

from core.engine.decoding import DecodeOptions, flipped_by_debiasing
from core.shapes.metrics import sentence_is_hallucinated
from core.shapes.world import Scene
from selfjudge_ui.plots import GROUNDED, HIGHER, PRIOR, SIGNED_VIEWS, TOKEN_VIEWS

CANDIDATE_COLUMNS = ["rank", "#", "answer", "raw", "blind", "debiased", "min debiased", "likelihood",
                     "raw rank", "hallucinated"]
SENTENCE_COLUMNS = ["rank", "#", "sentence", "raw", "blind", "debiased", "verdict"]
# Column widths in pixels: they fit a desktop's results column, and a phone scrolls the table sideways
# rather than squeezing each header into one letter per line.
CANDIDATE_WIDTHS = [52, 34, 150, 62, 62, 84, 84, 84, 60, 100]
SENTENCE_WIDTHS = [52, 34, 300, 62, 62, 84, 130]
DECODE_COLUMNS = ["step", "sentence (indented under its parent)", "score", "raw", "blind", "debiased log-odds",
                  "judge", "chosen"]
DECODE_RUN_COLUMNS = ["run", "strategy", "k", "answer", "why it stopped", "hallucinated"]
COMPARE_COLUMNS = ["rank", "#", "answer", "debiased", "min debiased", "hallucinated"]
SCORE_FIELDS = {"raw": "mean_raw", "blind": "mean_blind", "debiased": "mean_debiased",
                "min_debiased": "min_debiased", "likelihood": "likelihood", "rank": "rank"}
NO_TRUTH = "no ground truth"
# What core.engine.decoding's judged strategies do with each proposal, from its own defaults.
REJECT_RULE = f"rejected: debiased log-odds < {DecodeOptions().reject_below:g} (the debiased judge says no)"
SELECTION_RULE = (f"Rule: a proposal is kept only if its debiased log-odds ≥ {DecodeOptions().reject_below:g}; "
                  f"among those, the highest selection score (debiased judge score + "
                  f"{DecodeOptions().likelihood_weight:g} × mean token log-prob) is chosen.")

# Above the results: what a first-time reader needs, in three lines.
HOW_TO_READ = (
    "**How to read this.** The model writes N answers; each sentence is judged twice, *with* the image (**raw**) "
    "and *without* it (**blind**).  \n"
    "**debiased** = (1+alpha) raw - alpha blind: what the image supports beyond the language prior. "
    "Rank 1 (highlighted) has the highest mean debiased score.  \n"
    "Colours: **green = grounded in the image**, **red = prior-driven or hallucinated** "
    "(checked against the scene's ground truth when there is one). Click a row to see its tokens.")
# Under the candidates table: one short explanation per score column.
SCORE_HELP = (
    "**raw**: the judge's yes-score for a sentence with the image (mean over sentences). "
    "**blind**: the same question without the image (what the language prior alone says). "
    "**debiased**: (1+alpha) raw - alpha blind. **min debiased**: the weakest sentence. "
    "**likelihood**: mean log-probability of the answer's tokens given the image. "
    "**raw rank**: the rank by mean raw score alone (where it differs, debiasing changed the order). "
    "**hallucinated**: sentences naming an object that is not in the scene / sentences. "
    "Score kind **logit**: the yes-token's logit; **logprob**: log p(yes); **log-odds**: log p(yes) - log p(no).")


def _styler(rows: list[list], headers: list[str], cell_style):
    """A pandas Styler of the rows: cell_style(row, column name, value) -> CSS; numbers to 3 decimals."""
    import pandas as pd  # gradio's own dependency; only the Styler needs it

    frame = pd.DataFrame(rows, columns=headers)
    styles = pd.DataFrame([[cell_style(row, name, value) for name, value in zip(headers, row)] for row in rows],
                          columns=headers, index=frame.index)
    return frame.style.apply(lambda _: styles, axis=None).format(precision=3, na_rep="n/a")


BEST_ROW = "background-color: #e3f4e8; font-weight: 600"
VERDICT_STYLE = {"correct": f"color: {GROUNDED}; font-weight: 600", "hallucinated": f"color: {PRIOR}; font-weight: 600"}


def styled_candidates(rows: list[list]):
    """The candidates table with the rank-1 row highlighted and hallucination counts above 0 in red."""
    def style(row: list, name: str, value) -> str:
        if name == "hallucinated" and isinstance(value, str) and "/" in value and not value.startswith("0/"):
            return VERDICT_STYLE["hallucinated"]
        return BEST_ROW if row[0] == 1 else ""

    return _styler(rows, CANDIDATE_COLUMNS, style)


def styled_sentences(rows: list[list]):
    """The sentences table with correct verdicts in green and hallucinated ones in red."""
    return _styler(rows, SENTENCE_COLUMNS, lambda row, name, value: VERDICT_STYLE.get(value, "")
                   if name == "verdict" else "")


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


def rank_order(result: dict) -> list[int]:
    """0-based candidate indices, best rank first (rank 1 = highest mean debiased, or lowest for the safety prompt)."""
    return sorted(range(len(result["candidates"])), key=lambda i: result["candidates"][i]["rank"])


def candidate_rows(result: dict, truth: list[list[str]] | None) -> list[list]:
    """One table row per candidate, best rank first; the first column is the rank, the second its number."""
    every = verdicts(result, truth)
    rows = []
    for i in rank_order(result):
        c = result["candidates"][i]
        rows.append([c["rank"], i + 1, c["text"], _r(c["mean_raw"]), _r(c["mean_blind"]), _r(c["mean_debiased"]),
                     _r(c["min_debiased"]), _r(c["likelihood"]), c["raw_rank"], _hallucinated_count(every[i])])
    return rows


def sentence_rows(result: dict, truth: list[list[str]] | None) -> list[list]:
    """One table row per sentence of every candidate (best rank first), with its verdict against the ground truth."""
    every = verdicts(result, truth)
    return [[result["candidates"][i]["rank"], i + 1, s["text"], _r(s["raw"]), _r(s["blind"]), _r(s["debiased"]),
             verdict]
            for i in rank_order(result) for s, verdict in zip(result["candidates"][i]["sentences"], every[i])]


def hallucinated_sentences(result: dict, truth: list[list[str]] | None, number: int) -> list[str]:
    """The sentences of candidate `number` (1-based) that name an object absent from the ground truth."""
    candidate_verdicts = verdicts(result, truth)[number - 1]
    return [s["text"] for s, v in zip(result["candidates"][number - 1]["sentences"], candidate_verdicts)
            if v == "hallucinated"]


def chosen_warning(result: dict, truth: list[list[str]] | None, number: int) -> str:
    """A warning when the chosen candidate names an object the scene does not have ('' when it does not)."""
    wrong = hallucinated_sentences(result, truth, number)
    if not wrong:
        return ""
    clean = [i + 1 for i in rank_order(result) if not hallucinated_sentences(result, truth, i + 1)]
    advice = (f"candidate #{clean[0]} has no hallucinated sentence: pick it as chosen, or edit the text"
              if clean else "no candidate is free of them: edit the chosen text to remove them")
    quoted = "; ".join(f"\"{text}\"" for text in wrong)
    return (f"**Chosen candidate #{number} names an object that is not in the scene** (ground truth): "
            f"{html.escape(quoted)}. {advice[0].upper() + advice[1:]}.")


def candidate_choices(result: dict) -> list[tuple[str, int]]:
    """Dropdown choices (label, 1-based candidate number)."""
    return [(f"#{i + 1} (rank {c['rank']}, debiased {_fmt(c['mean_debiased'])}): {c['text'][:60]}", i + 1)
            for i, c in enumerate(result["candidates"])]


def best_and_worst(result: dict) -> tuple[int, int]:
    """1-based numbers of the first- and last-ranked candidates (rank 1 = highest mean debiased score,
    or the lowest where "yes" is bad, as for the safety prompt)."""
    order = sorted(range(len(result["candidates"])), key=lambda i: result["candidates"][i]["rank"])
    return order[0] + 1, order[-1] + 1


def _mix(colour: str, share: float) -> str:
    """`share` of a #rrggbb colour over white, as an rgb() CSS colour."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "rgb({}, {}, {})".format(*(round(255 + share * (c - 255)) for c in rgb))


def token_shades(candidate: dict, view: str) -> tuple[list[tuple[str, float]], str]:
    """(token, shade) for every token, and a legend in words that maps shade back to value.

    The signed view (visual gain) keeps its sign: shade = value / largest magnitude, in [-1, 1]
    (green above 0: the image supports the token; red below: the prior drives it). The other views
    are levels, stretched min..max onto [0, 1] (darker blue = higher).
    """
    key, meaning = TOKEN_VIEWS[view]
    tokens = [t["token"] for t in candidate["tokens"]]
    known = [float(t[key]) for t in candidate["tokens"] if t[key] is not None]
    if not known:
        return [(tok, 0.0) for tok in tokens], "No token scores."
    if view in SIGNED_VIEWS:
        values = [0.0 if t[key] is None else float(t[key]) for t in candidate["tokens"]]
        top = max(abs(v) for v in values) or 1.0
        shades = [v / top for v in values]
        legend = (f"**{view}** = {meaning}. Green: the image makes the token more likely (grounded); "
                  f"red: it is likelier without the image (prior-driven). Full colour = ±{top:.3f}, white = 0.")
    else:
        low, high = min(known), max(known)
        values = [(low + high) / 2 if t[key] is None else float(t[key]) for t in candidate["tokens"]]
        shades = [(v - low) / (high - low) if high > low else 0.0 for v in values]
        legend = (f"**{view}** = {meaning}. Darker blue = higher: white = {low:.3f}, "
                  f"full blue = {high:.3f}. (No green or red: this score alone does not say grounded or prior.)")
    return [(tok, round(s, 4)) for tok, s in zip(tokens, shades)], legend


def token_html(candidate: dict, view: str) -> str:
    """The candidate's tokens as coloured, separated chips (hover shows the exact value), with the legend above."""
    shades, legend = token_shades(candidate, view)
    key = TOKEN_VIEWS[view][0]
    chips = []
    for (token, shade), score in zip(shades, candidate["tokens"]):
        colour = (GROUNDED if shade >= 0 else PRIOR) if view in SIGNED_VIEWS else HIGHER
        value = "n/a" if score[key] is None else f"{score[key]:.3f}"
        chips.append(f"<span class='sj-token' style='background:{_mix(colour, 0.85 * abs(shade))}' "
                     f"title='{html.escape(view)} = {value}'>{html.escape(token.strip() or '␣')}</span>")
    return f"<div class='sj-legend'>{_markdown_bold(legend)}</div><div class='sj-tokens'>{''.join(chips)}</div>"


def _markdown_bold(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<b>{part}</b>" if i % 2 else part for i, part in enumerate(parts))


def pair_scores(candidate: dict, judge_settings: dict) -> dict:
    """The scores saved with one side of a pair: the candidate's means plus the judge settings used."""
    scores = {name: candidate[key] for name, key in SCORE_FIELDS.items()}  # exact, null where undefined
    scores.update({"alpha": judge_settings["alpha"], "kind": judge_settings["kind"]})
    return scores


def _judge_cell(node: dict) -> str:
    threshold = DecodeOptions().reject_below
    if not node["text"]:
        return "the model proposed to end here"
    decided = flipped_by_debiasing(node.get("log_odds"), node.get("raw_log_odds"), threshold)
    if node.get("accepted") is False:
        cell = f"rejected: debiased log-odds {_fmt(node.get('log_odds'))} < {threshold:g}"
        return cell + (f"; raw {_fmt(node['raw_log_odds'])} would keep it: debiasing removed it"
                       if decided else "")
    if node.get("log_odds") is None:
        return "accepted"
    cell = f"accepted: log-odds {_fmt(node.get('log_odds'))} ≥ {threshold:g}" if threshold is not None else "accepted"
    return cell + (f"; raw {_fmt(node['raw_log_odds'])} would reject it: debiasing kept it" if decided else "")


def decode_rows(decoded: dict) -> list[list]:
    """The search tree as an indented table, depth-first from each root, with the judge's rule per node."""
    nodes = decoded["nodes"]
    children: dict[int | None, list[int]] = {}
    for index, node in enumerate(nodes):
        children.setdefault(node["parent"], []).append(index)
    rows: list[list] = []

    def visit(index: int, depth: int) -> None:
        node = nodes[index]
        text = node["text"] or "(end of answer)"
        rows.append([node["step"], "    " * depth + ("└ " if depth else "") + text, _r(node["score"]),
                     _r(node.get("raw")), _r(node.get("blind")), _r(node.get("log_odds")), _judge_cell(node),
                     "yes" if node["chosen"] else ""])
        for child in children.get(index, []):
            visit(child, depth + 1)

    for root in children.get(None, []):
        visit(root, 0)
    return rows


def stop_reason(decoded: dict, max_new_tokens: int) -> str:
    """Why decoding ended, read from the search tree (core.engine.decoding's stopping rules, in words)."""
    nodes = decoded["nodes"]
    if not nodes:
        return "the model wrote nothing"
    chosen = [n for n in nodes if n["chosen"]]
    used = sum(n.get("n_tokens", 0) for n in chosen)
    last_step = max(n["step"] for n in nodes)
    last = [n for n in nodes if n["step"] == last_step]
    if any(n["chosen"] for n in last):
        if any(n["chosen"] and n.get("ended") for n in last):
            return "the chosen sentence ended the answer"
        if used >= max_new_tokens:
            return f"the token budget ({max_new_tokens} new tokens) was used up"
        return "the answer ended"
    proposals = [n for n in last if n["text"]]
    if not proposals:
        return f"at step {last_step} the model only proposed to end the answer"
    if all(n.get("accepted") is False for n in proposals):
        ends = len(last) - len(proposals)
        if ends:
            return (f"at step {last_step}, {ends} of {len(last)} proposals were to end the answer and the "
                    f"other{'s were' if len(proposals) > 1 else ' was'} {REJECT_RULE}")
        return f"at step {last_step} every proposal was {REJECT_RULE}"
    return f"at step {last_step} the model itself would rather end (p(end) ≥ 0.5)"


def decode_run_row(number: int, decoded: dict, k: int, max_new_tokens: int, truth: list[list[str]] | None) -> list:
    """One line of this session's decoding runs, so greedy and judged answers can be compared."""
    chosen = [n for n in decoded["nodes"] if n["chosen"] and n["text"]]
    if truth is None:
        wrong = "-"
    else:
        present = {tuple(name) for name in truth}
        flags = [sentence_is_hallucinated(n["text"], present) for n in chosen]
        claimed = [f for f in flags if f is not None]
        wrong = f"{sum(claimed)}/{len(claimed)}" if claimed else "-"
    judged = decoded["strategy"].endswith("judged")
    return [number, decoded["strategy"], k if judged else "-", decoded["text"], stop_reason(decoded, max_new_tokens),
            wrong]


def compare_rows(result: dict, truth: list[list[str]] | None) -> list[list]:
    """Candidate rows of one model in the side-by-side comparison, best rank first."""
    every = verdicts(result, truth)
    return [[result["candidates"][i]["rank"], i + 1, result["candidates"][i]["text"],
             _r(result["candidates"][i]["mean_debiased"]), _r(result["candidates"][i]["min_debiased"]),
             _hallucinated_count(every[i])] for i in rank_order(result)]


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


def same_answers(base: dict, tuned: dict) -> bool:
    """Whether the adapter wrote exactly the base model's answers (same texts, in the same order)."""
    return [c["text"] for c in base["candidates"]] == [c["text"] for c in tuned["candidates"]]
