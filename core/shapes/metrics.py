"""Reading objects out of free text, and hallucination metrics against ground truth.

`parse_objects` returns the (colour, shape) objects a text claims: it knows synonyms
and plurals, and drops negated mentions ("there is no red circle"). CHAIR follows
Rohrbach et al. 2018: CHAIR_I = hallucinated mentions / all mentions, CHAIR_S =
captions with at least one hallucination / captions; recall = mentioned / present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.engine.sentences import split_sentences
from core.shapes.world import COLORS, PRIOR_PAIRS, SHAPES

COLOR_SYNONYMS = {c: c for c in COLORS} | {"violet": "purple", "gold": "yellow", "golden": "yellow",
                                          "navy": "blue", "scarlet": "red", "crimson": "red", "lime": "green"}
SHAPE_SYNONYMS = {s: s for s in SHAPES} | {
    "disc": "circle", "disk": "circle", "ball": "circle", "dot": "circle", "box": "square", "block": "square",
    "plus": "cross", "rhombus": "diamond", "lozenge": "diamond",
}
NEGATIONS = {"no", "not", "without", "never", "nor", "none", "neither", "isn't", "aren't", "n't", "nothing"}
# Words that may stand between a colour and its shape ("red small circle", "red and blue circles").
FILLERS = {"small", "large", "big", "little", "tiny", "huge", "bright", "dark", "light", "pale", "and", ",", "or", "a", "an"}

_TOKEN = re.compile(r"[a-z]+(?:'t)?|[.,;:!?]")


def _singular(word: str) -> str:
    if word.endswith("es") and word[:-2] in SHAPE_SYNONYMS and word[:-2] not in ("circl",):
        return word[:-2]
    if word.endswith("s") and word[:-1] in SHAPE_SYNONYMS:
        return word[:-1]
    return word


def parse_objects(text: str) -> list[tuple[str, str]]:
    """The distinct (colour, shape) objects a text claims are present, in order of first mention."""
    tokens = _TOKEN.findall(text.lower().replace("n't", " n't"))
    claims: list[tuple[str, str]] = []
    negated = False  # a negation word seen since the last clause boundary or mention
    last_negated = False  # "no red circles or blue stars": "or" carries the negation on
    pending_colors: list[str] = []
    for tok in tokens:
        if tok in (".", ";", ":", "!", "?"):
            negated, pending_colors = False, []
            continue
        if tok in ("or", "nor") and not pending_colors:
            negated = negated or last_negated
            continue
        if tok in NEGATIONS:
            negated, pending_colors = True, []
            continue
        if tok in COLOR_SYNONYMS:
            pending_colors.append(COLOR_SYNONYMS[tok])
            continue
        shape = SHAPE_SYNONYMS.get(_singular(tok))
        if shape is not None:
            for color in pending_colors:
                if not negated and (color, shape) not in claims:
                    claims.append((color, shape))
            pending_colors, last_negated, negated = [], negated, False
            continue
        if tok in FILLERS:
            continue
        if tok in ("but", "while", "whereas", "although"):
            negated = False
        pending_colors = []
    return claims


def hallucination_kind(name: tuple[str, str], present: set[tuple[str, str]]) -> str:
    """Why a claimed absent object was hallucinated: partner, colour, shape (near misses) or other."""
    for pair in PRIOR_PAIRS:
        if pair.partner == name and pair.anchor in present:
            return "partner"
    if any(p[1] == name[1] for p in present):
        return "colour"
    if any(p[0] == name[0] for p in present):
        return "shape"
    return "other"


@dataclass
class ChairResult:
    """CHAIR_S, CHAIR_I and recall over a set of captions, with the hallucination breakdown."""

    chair_s: float
    chair_i: float
    recall: float
    n_captions: int
    mean_sentences: float
    kinds: dict[str, int] = field(default_factory=dict)


def chair(captions: list[str], truths: list[set[tuple[str, str]]]) -> ChairResult:
    """CHAIR metrics of captions against the ground-truth object sets of their scenes."""
    if len(captions) != len(truths) or not captions:
        raise ValueError("chair needs one ground-truth set per caption, and at least one caption")
    mentions = hallucinated = bad_captions = found = present_total = sentences = 0
    kinds = {"partner": 0, "colour": 0, "shape": 0, "other": 0}
    for caption, truth in zip(captions, truths):
        claims = parse_objects(caption)
        wrong = [c for c in claims if c not in truth]
        mentions += len(claims)
        hallucinated += len(wrong)
        bad_captions += bool(wrong)
        found += len(truth & set(claims))
        present_total += len(truth)
        sentences += len(split_sentences(caption))
        for w in wrong:
            kinds[hallucination_kind(w, truth)] += 1
    return ChairResult(chair_s=bad_captions / len(captions), chair_i=hallucinated / max(mentions, 1),
                       recall=found / max(present_total, 1), n_captions=len(captions),
                       mean_sentences=sentences / len(captions), kinds=kinds)


def sentence_is_hallucinated(sentence: str, truth: set[tuple[str, str]]) -> bool | None:
    """True if a sentence claims an absent object, False if all its claims are present, None if it claims none."""
    claims = parse_objects(sentence)
    if not claims:
        return None
    return any(c not in truth for c in claims)
