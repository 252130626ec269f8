"""Text generators for the shapes world: descriptions, POPE-style questions, counting,
colour questions and self-judgment examples, labelled from ground truth or, like a real
LVLM's instruction data, from captions (with the captioners' habits).

Two kinds of caption exist. An *image caption* (caption_sentences) names every object in the
scene and, after an anchor, its absent partner 70% of the time: the model's descriptions learn
from these. A *text caption* (text_caption) is what the language model's text corpus says about a
scene: the same, with the corpus's own habits (CorpusHabits): naming a frequent-in-text object (a
prior partner) that the scene may not hold, and calling an object by its colour's typical name.
Everything the model learns without the image, and a share of its yes/no and judgment labels (and
optionally of its descriptions) with the image, come from text captions, so its judgment carries
the text prior that debiased self-judgment subtracts (docs/language-prior.md).
"""

from __future__ import annotations

import functools
import random
import re
from collections import Counter
from dataclasses import dataclass, replace

from core.engine.prompts import DESCRIBE_QUESTION, JUDGE_PROMPTS, judge_prompt
from core.engine.sentences import split_sentences
from core.shapes.metrics import parse_objects
from core.shapes.world import COLORS, POSITIONS, PRIOR_PAIRS, SHAPES, SIZES, Scene, SceneObject, make_scene, partner_of

POSITION_PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top",
                   "bottom": "at the bottom", "centre": "in the centre"}
SENTENCE_TEMPLATES = (
    "A {size} {color} {shape} is {where}.",
    "There is a {size} {color} {shape} {where}.",
    "I can see a {size} {color} {shape} {where}.",
)
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
# Training descriptions, like human captions, name an anchor's partner from expectation even when
# it is not in the picture: this often. It is where the model's prior hallucination comes from
# (COCO captioners write "fork" beside "knife"); the yes/no and judge answers follow the image.
PRIOR_MENTION_RATE = 0.7
# The text corpus's own object statistics: captioners habitually name a few plausible objects
# (COCO's "dining table", "chair", "person"); here the prior partners. A text caption names one of
# them that it has not named yet this often, whether or not the scene holds it.
FREQUENT_IN_TEXT = tuple(pair.partner for pair in PRIOR_PAIRS)
HABIT_MENTION_RATE = 0.5
# The corpus also names an object by its colour's most frequent name, whatever its shape (COCO
# captions say "dining table" for any table, "chair" for any seat): each colour's pair object.
# So when the image leaves the shape in doubt, the prior says the typical one, and the model's own
# shape errors become prior-driven ones that a blind judge also believes.
TYPICAL_SHAPE = {obj[0]: obj[1] for pair in PRIOR_PAIRS for obj in (pair.anchor, pair.partner)}
TYPICAL_NAME_RATE = 0.3
# Share of yes/no and judgment labels, *with* the image, written from a text caption rather than
# the pixels (LLaVA-Instruct's labels were written by a text-only model from captions).
CAPTION_LABEL_RATE = 0.5
# Share of descriptions *with* the image written from a text caption (LLaVA-Instruct's
# descriptions were written by a text-only model from captions, habits included).
CAPTION_DESCRIBE_RATE = 0.25
# The judge templates the model learns judgments in (core.engine.prompts.JUDGE_PROMPTS keys).
JUDGE_TEMPLATES = ("faithfulness", "faithfulness_last")


@dataclass(frozen=True)
class CorpusHabits:
    """How the text corpus departs from the pixels (habitual mentions, typical names), and the order
    every description names objects in (mention_order)."""

    mention_rate: float = HABIT_MENTION_RATE  # one unnamed frequent-in-text object is added this often
    typical_name_rate: float = TYPICAL_NAME_RATE  # an object is called by its colour's typical name this often
    order: str = "position"  # a MENTION_ORDERS key

    def __post_init__(self) -> None:
        for name in ("mention_rate", "typical_name_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.order not in MENTION_ORDERS:
            raise ValueError(f"order must be one of {', '.join(MENTION_ORDERS)}")


@dataclass(frozen=True)
class Example:
    """One question/answer pair about a scene; `use_image` False means the text-only prior."""

    question: str
    answer: str
    task: str
    use_image: bool = True
    prefix: str = ""  # the start of the answer, written by the model itself: context, not a target
    # a blind judgment's soft target: the P("Yes") the text corpus gives the object it judges (blind_yes_rates),
    # trained at the answer token instead of the drawn label's; None: the drawn label
    soft_yes: float | None = None


# The orders descriptions can name a scene's objects in. "position" (every model up to v10): left to
# right, partners right after anchors; to name the next object the model must find the leftmost one
# it has not named, a comparison of coordinates it first has to look up in the image. "kind": by
# (colour, shape) in one fixed order (kind_rank), so the next object is the present one that ranks
# just above the last one named, a lookup keyed by words already in the text. "kind-left": kind's colours,
# but two objects of one colour left to right (a frequent-in-text one still first, an anchor still last):
# telling them apart by shape means comparing two shapes' ranks, by place one coordinate.
MENTION_ORDERS = ("position", "kind", "kind-left")
# Each anchor's colour is followed by its partner's, so that nothing can rank between the two.
KIND_COLOR_ORDER = ("red", "green", "yellow", "blue", "purple", "orange")


def kind_rank(name: tuple[str, str]) -> tuple[int, int]:
    """An object's place in the "kind" order: colour first (KIND_COLOR_ORDER), then shape (SHAPES), with
    anchors last in their colour and partners first in theirs, so a partner always follows its anchor."""
    shape_place = (-1 if name in FREQUENT_IN_TEXT else len(SHAPES) if partner_of(name) else SHAPES.index(name[1]))
    return KIND_COLOR_ORDER.index(name[0]), shape_place


def _kind_left_key(obj: SceneObject) -> tuple[int, int, float]:
    """An object's place in the "kind-left" order: colour as in kind_rank, then frequent-in-text first and
    anchors last (so a partner still follows its anchor), then left to right."""
    colour_place, shape_place = kind_rank(obj.name)
    return colour_place, -1 if shape_place < 0 else 1 if shape_place == len(SHAPES) else 0, obj.x


def mention_order(scene: Scene, order: str = "position") -> list[SceneObject]:
    """Objects in the order descriptions mention them (a MENTION_ORDERS key); partners right after anchors."""
    if order == "kind":
        return sorted(scene.objects, key=lambda o: kind_rank(o.name))
    if order == "kind-left":
        return sorted(scene.objects, key=_kind_left_key)
    if order != "position":
        raise ValueError(f"order must be one of {', '.join(MENTION_ORDERS)}")
    ordered = sorted(scene.objects, key=lambda o: (o.x, o.y))
    by_name = {o.name: o for o in ordered}
    result: list[SceneObject] = []
    anchored = {partner_of(o.name) for o in ordered} - {None}
    for obj in ordered:
        if obj in result or obj.name in anchored:  # a partner waits for its anchor
            continue
        result.append(obj)
        partner = partner_of(obj.name)
        if partner in by_name and by_name[partner] not in result:
            result.append(by_name[partner])
    return result


def object_sentence(obj: SceneObject, template: str, color: str | None = None, shape: str | None = None) -> str:
    """One sentence about one object (colour or shape can be overridden to make a false one)."""
    return template.format(size=obj.size, color=color or obj.color, shape=shape or obj.shape,
                           where=POSITION_PHRASE[obj.position])


def describe_sentences(scene: Scene, rng: random.Random) -> list[str]:
    """The reference description as a list of sentences, one per object, all in one template.

    One template per description (not per sentence) so that, after an anchor, "go on" is one
    next word rather than three: otherwise greedy decoding stops where the prior says go on,
    and the model never shows the partner hallucination the world is built to produce.
    """
    return caption_sentences(scene, rng, prior_mention_rate=0.0)


def describe(scene: Scene, rng: random.Random) -> str:
    """The reference multi-sentence description (true to the scene)."""
    return " ".join(describe_sentences(scene, rng))


def caption_sentences(scene: Scene, rng: random.Random, prior_mention_rate: float = PRIOR_MENTION_RATE,
                      order: str = "position") -> list[str]:
    """A training caption: the true sentences (in mention `order`), plus an absent partner named after
    its anchor with probability `prior_mention_rate` (the captioner's expectation, not the image)."""
    return [sentence for sentence, _name, _slot in _caption(scene, rng, prior_mention_rate, order=order)[1]]


def _caption(scene: Scene, rng: random.Random, prior_mention_rate: float, template: str | None = None,
             said: frozenset | set = frozenset(), order: str = "position"
             ) -> tuple[str, list[tuple[str, tuple[str, str], SceneObject]]]:
    """The caption's template (drawn unless given), and its sentences with the object each names and
    the scene object whose slot it takes; objects and partners in `said` are left out (a caption's
    rest, after a start that named them). At rate 0 no random number is drawn for prior mentions."""
    template = template or rng.choice(SENTENCE_TEMPLATES)
    present = scene.names()
    sentences = []
    for obj in mention_order(scene, order):
        if obj.name in said:
            continue
        sentences.append((object_sentence(obj, template), obj.name, obj))
        partner = partner_of(obj.name)
        if (partner and partner not in present and partner not in said and prior_mention_rate > 0
                and rng.random() < prior_mention_rate):
            sentences.append((_absent_sentence(partner, template, rng), partner, obj))
    return template, sentences


def _habitual_mention(named: set, rng: random.Random, habits: CorpusHabits) -> tuple[str, str] | None:
    """The frequent-in-text object a text caption adds by habit (at `habits.mention_rate`), among
    those it has not named; None when it adds none."""
    if habits.mention_rate > 0 and rng.random() < habits.mention_rate:
        frequent = [name for name in FREQUENT_IN_TEXT if name not in named]
        if frequent:
            return rng.choice(frequent)
    return None


def _absent_sentence(name: tuple[str, str], template: str, rng: random.Random) -> str:
    """A sentence naming an object the scene does not hold, at a random size and place."""
    return template.format(size=rng.choice(SIZES), color=name[0], shape=name[1],
                           where=POSITION_PHRASE[rng.choice(POSITIONS)])


def correction_example(scene: Scene, description: str, rng: random.Random,
                       describe_mention_rate: float = PRIOR_MENTION_RATE, caption_describe_rate: float = 0.0,
                       habits: CorpusHabits = CorpusHabits()) -> Example | None:
    """Teach the model to go on from its own description: keep the longest start of `description`
    that an image caption could have written (each sentence names one new object, present or an
    absent partner right after its anchor), then continue it as the training descriptions would: the
    objects not named yet, in mention order, each absent partner after its anchor at
    `describe_mention_rate`, then the end; or, at `caption_describe_rate`, as a text caption would
    (partners at PRIOR_MENTION_RATE, then one frequent-in-text object not named yet at
    `habits.mention_rate`; typical names are left out). A description in none of the templates keeps
    no start. None when there is nothing to correct.

    Teacher forcing only ever shows correct starts; greedy decoding then meets its own, and repeats
    an object it has named instead of finding the next one (docs/language-prior.md, "v7").
    """
    sentences = split_sentences(description)
    template = next((t for t in SENTENCE_TEMPLATES if sentences and sentences[0].startswith(t.split("{")[0])),
                    None)
    present = scene.names()
    kept: list[str] = []
    named: list[tuple[str, str]] = []
    for sentence in sentences:
        objects = parse_objects(sentence)
        if template is None or len(objects) != 1 or objects[0] in named:
            break
        if objects[0] not in present and not (named and partner_of(named[-1]) == objects[0]):
            break
        kept.append(sentence)
        named.append(objects[0])
    remaining = [obj for obj in mention_order(scene, habits.order) if obj.name not in named]
    if len(kept) == len(sentences) and not remaining:
        return None
    template = template or rng.choice(SENTENCE_TEMPLATES)
    as_text = caption_describe_rate > 0 and rng.random() < caption_describe_rate
    _template, rest = _caption(scene, rng, PRIOR_MENTION_RATE if as_text else describe_mention_rate, template,
                               said=set(named), order=habits.order)
    continuation = [sentence for sentence, _name, _slot in rest]
    said = set(named) | {name for _sentence, name, _slot in rest}  # a habit never names one twice
    habitual = _habitual_mention(said, rng, habits) if as_text else None
    if habitual:
        continuation.append(_absent_sentence(habitual, template, rng))
    return Example(DESCRIBE_QUESTION, " ".join(continuation), "describe", prefix=" ".join(kept))


_OBJECT_WORDS = re.compile(r"\b(" + "|".join(COLORS) + r") (" + "|".join(SHAPES) + r")\b")


def repeat_negatives(description: str) -> list[tuple[int, list[str]]]:
    """Where a description could start naming an object it has already named, and with which words.

    For each object mention (colour word, shape word) in order: at the colour word, the colours of
    objects already named that no later mention uses (saying one can only repeat or invent); at the
    shape word, the shapes already named in the same colour. Returns (character offset of the word,
    its negative words) wherever there are some; unlikelihood training pushes those words down, since
    no training description names an object twice but the small model copies one under doubt.
    """
    mentions = [(m.start(1), m.start(2), m.group(1), m.group(2)) for m in _OBJECT_WORDS.finditer(description)]
    negatives: list[tuple[int, list[str]]] = []
    for index, (color_at, shape_at, color, shape) in enumerate(mentions):
        named = {(c, s) for _ca, _sa, c, s in mentions[:index]}
        later_colors = {c for _ca, _sa, c, _s in mentions[index:]}
        spent_colors = sorted({c for c, _s in named} - later_colors)
        if spent_colors:
            negatives.append((color_at, spent_colors))
        spent_shapes = sorted({s for c, s in named if c == color and s != shape})
        if spent_shapes:
            negatives.append((shape_at, spent_shapes))
    return negatives


def _all_names() -> list[tuple[str, str]]:
    return [(c, s) for c in COLORS for s in SHAPES]


def object_frequencies(n_scenes: int = 4000, seed: int = 10_000_000) -> Counter:
    """How often each (colour, shape) appears in training-like scenes (for 'popular' negatives)."""
    counts: Counter = Counter()
    for i in range(n_scenes):
        counts.update(make_scene(seed + i).names())
    return counts


_POPULAR: list[tuple[str, str]] | None = None


def popular_objects() -> list[tuple[str, str]]:
    """Objects sorted from most to least frequent (computed once, deterministic)."""
    global _POPULAR
    if _POPULAR is None:
        freq = object_frequencies()
        _POPULAR = sorted(_all_names(), key=lambda nm: (-freq[nm], nm))
    return _POPULAR


def pope_question(name: tuple[str, str]) -> str:
    """The POPE-style yes/no object question."""
    return f"Is there a {name[0]} {name[1]} in the image?"


POPE_SPLITS = ("random", "popular", "adversarial", "near-miss")


def near_misses(scene: Scene) -> list[tuple[str, str]]:
    """Absent objects that share a colour or a shape with a present one: telling them apart needs
    colour and shape bound to one object, not just seen somewhere in the image."""
    present = scene.names()
    return [nm for nm in _all_names() if nm not in present and any(nm[0] == p[0] or nm[1] == p[1] for p in present)]


def pope_negative(scene: Scene, split: str, rng: random.Random) -> tuple[str, str]:
    """An absent object: random, popular (most frequent), adversarial (absent prior partner) or
    near-miss (sharing a colour or a shape with a present object)."""
    present = scene.names()
    if split == "random":
        return rng.choice([nm for nm in _all_names() if nm not in present])
    if split == "popular":
        return next(nm for nm in popular_objects() if nm not in present)
    if split == "adversarial":
        # sorted: a set's order changes with Python's hash seed, and so would the draw below
        partners = [partner_of(nm) for nm in sorted(present)]
        partners = [p for p in partners if p and p not in present]
        if partners:
            return rng.choice(partners)
    if split in ("adversarial", "near-miss"):  # adversarial without an absent partner: a near miss
        return rng.choice(near_misses(scene))
    raise ValueError(f"POPE split must be one of {', '.join(POPE_SPLITS)}, not {split!r}")


def pope_examples(scene: Scene, split: str, rng: random.Random) -> list[Example]:
    """One yes and one no question for a scene."""
    positive = rng.choice(sorted(scene.names()))
    negative = pope_negative(scene, split, rng)
    return [Example(pope_question(positive), "Yes.", f"pope-{split}"),
            Example(pope_question(negative), "No.", f"pope-{split}")]


def count_example(scene: Scene) -> Example:
    """How many objects are there?"""
    n = len(scene.objects)
    answer = "There is one object." if n == 1 else f"There are {NUMBER_WORDS[n]} objects."
    return Example("How many objects are there?", answer, "count")


def colour_example(scene: Scene, rng: random.Random) -> Example | None:
    """What colour is the <shape>? (only for shapes that appear once)."""
    shapes = Counter(o.shape for o in scene.objects)
    unique = [o for o in scene.objects if shapes[o.shape] == 1]
    if not unique:
        return None
    obj = rng.choice(unique)
    return Example(f"What colour is the {obj.shape}?", f"The {obj.shape} is {obj.color}.", "colour")


def false_sentence(scene: Scene, obj: SceneObject, rng: random.Random,
                   template: str = SENTENCE_TEMPLATES[0]) -> tuple[str, str]:
    """A hallucinated sentence about `obj`'s slot, and its kind (partner, colour, shape, other)."""
    present = scene.names()
    kinds = []
    for pair in PRIOR_PAIRS:
        if pair.anchor in present and pair.partner not in present:
            kinds.append(("partner", pair.partner))
    colour_alt = [(c, obj.shape) for c in COLORS if (c, obj.shape) not in present]
    shape_alt = [(obj.color, s) for s in SHAPES if (obj.color, s) not in present]
    other = [nm for nm in _all_names() if nm not in present and nm[0] != obj.color and nm[1] != obj.shape]
    if colour_alt:
        kinds.append(("colour", rng.choice(colour_alt)))
    if shape_alt:
        kinds.append(("shape", rng.choice(shape_alt)))
    kinds.append(("other", rng.choice(other)))
    kind, (color, shape) = rng.choice(kinds)
    return object_sentence(obj, template, color=color, shape=shape), kind


def judge_example(scene: Scene, rng: random.Random, with_context: bool | None = None,
                  template: str = "faithfulness", order: str = "position") -> tuple[Example, bool]:
    """A self-judgment example (a JUDGE_PROMPTS template) labelled from ground truth, and whether it is true;
    its context sentences name objects in mention `order`."""
    ordered = mention_order(scene, order)
    sentence_template = rng.choice(SENTENCE_TEMPLATES)
    sentences = [object_sentence(o, sentence_template) for o in ordered]
    index = rng.randrange(len(ordered))
    truthful = rng.random() < 0.5
    sentence = (sentences[index] if truthful
                else false_sentence(scene, ordered[index], rng, sentence_template)[0])
    if with_context is None:
        with_context = rng.random() < 0.5
    context = " ".join(sentences[:index]) if with_context else ""
    question = judge_prompt(sentence, JUDGE_PROMPTS[template], context)
    return Example(question, "Yes." if truthful else "No.", "judge"), truthful


def typical_name(name: tuple[str, str]) -> tuple[str, str]:
    """The name the text corpus most often gives an object of this colour."""
    return (name[0], TYPICAL_SHAPE[name[0]])


def text_caption(scene: Scene, rng: random.Random, habits: CorpusHabits = CorpusHabits()
                 ) -> tuple[str, list[tuple[str, tuple[str, str], SceneObject]]]:
    """A caption as the text corpus writes it: the image caption (prior mentions included) with,
    at `habits.typical_name_rate`, an object called by its colour's typical name (when that name is
    not used yet), then, at `habits.mention_rate`, one frequent-in-text object it has not named.
    Returns its template and its sentences with the object each names and a scene object as slot."""
    template, sentences = _caption(scene, rng, PRIOR_MENTION_RATE, order=habits.order)
    if habits.typical_name_rate > 0:
        named = {name for _sentence, name, _slot in sentences}
        for index, (_sentence, name, slot) in enumerate(sentences):
            typical = typical_name(name)
            if typical not in named and rng.random() < habits.typical_name_rate:
                sentences[index] = (object_sentence(slot, template, color=typical[0], shape=typical[1]), typical, slot)
                named = (named - {name}) | {typical}
    habitual = _habitual_mention({name for _sentence, name, _slot in sentences}, rng, habits)
    if habitual:
        sentences.append((_absent_sentence(habitual, template, rng), habitual, rng.choice(scene.objects)))
    return template, sentences


def _caption_judgment(scene: Scene, rng: random.Random, with_context: bool | None, use_image: bool, template: str,
                      habits: CorpusHabits) -> tuple[Example, tuple[str, str]]:
    """caption_judge_example's example, and the object its judged sentence names."""
    template_text, caption = text_caption(scene, rng, habits)
    index = rng.randrange(len(caption))
    truthful = rng.random() < 0.5
    sentence, name, slot = caption[index]
    if not truthful:
        named = {name for _sentence, name, _slot in caption}
        unnamed = [nm for nm in _all_names() if nm not in named and (nm[0] == slot.color or nm[1] == slot.shape)]
        name = rng.choice(unnamed or [nm for nm in _all_names() if nm not in named])
        sentence = object_sentence(slot, template_text, color=name[0], shape=name[1])
    if with_context is None:
        with_context = rng.random() < 0.5
    context = " ".join(s for s, _name, _slot in caption[:index]) if with_context else ""
    question = judge_prompt(sentence, JUDGE_PROMPTS[template], context)
    return Example(question, "Yes." if truthful else "No.", "judge", use_image=use_image), name


def caption_judge_example(scene: Scene, rng: random.Random, with_context: bool | None = None,
                          use_image: bool = False, template: str = "faithfulness",
                          habits: CorpusHabits = CorpusHabits(),
                          yes_rates: dict[tuple[str, str], float] | None = None) -> Example:
    """A judgment labelled from a text caption, not from the pixels: a sentence of the caption
    (prior and habitual mentions included) is "accurate", one naming an object the caption does not
    name is not. Without the image it is the text prior that the blind score measures; with the
    image it is an instruction label written from captions (the prior leaks into the raw score).
    With `yes_rates` (blind_yes_rates), the example also carries the corpus's P("Yes") for the
    object it judges as a soft target."""
    example, name = _caption_judgment(scene, rng, with_context, use_image, template, habits)
    return replace(example, soft_yes=yes_rates[name]) if yes_rates is not None else example


@functools.lru_cache(maxsize=8)
def blind_yes_rates(habits: CorpusHabits = CorpusHabits(), partner_rate: float | None = None,
                    n_scenes: int = 20_000, seed: int = 30_000_000) -> dict[tuple[str, str], float]:
    """For each object, the share of "Yes" among blind caption judgments about it (counted over n_scenes
    training-like scenes): the answer a language model that has read the whole corpus gives without the
    image. An object never judged gets the overall share. Deterministic, computed once per setting."""
    rng = random.Random(seed)
    yes: Counter = Counter()
    total: Counter = Counter()
    for i in range(n_scenes):
        example, name = _caption_judgment(make_scene(seed + i, partner_rate=partner_rate), rng, None, False,
                                          "faithfulness", habits)
        total[name] += 1
        yes[name] += example.answer == "Yes."
    overall = sum(yes.values()) / sum(total.values())
    return {name: yes[name] / total[name] if total[name] else overall for name in _all_names()}


def caption_pope_example(scene: Scene, rng: random.Random, use_image: bool = False,
                         habits: CorpusHabits = CorpusHabits()) -> Example:
    """A yes/no object question labelled from a text caption: "Yes" for an object it names, "No" for
    one it does not (a random one, or a near miss of a named one)."""
    _template, caption = text_caption(scene, rng, habits)
    named = sorted({name for _sentence, name, _slot in caption})
    if rng.random() < 0.5:
        return Example(pope_question(rng.choice(named)), "Yes.", "pope-caption", use_image)
    unnamed = [nm for nm in _all_names() if nm not in named]
    near = [nm for nm in unnamed if any(nm[0] == p[0] or nm[1] == p[1] for p in named)]
    pool = near if near and rng.random() < 0.5 else unnamed
    return Example(pope_question(rng.choice(pool)), "No.", "pope-caption", use_image)


def text_description(scene: Scene, rng: random.Random, habits: CorpusHabits = CorpusHabits(),
                     use_image: bool = False) -> Example:
    """A description as the text corpus writes it (shown with the image: an instruction written from captions)."""
    return Example(DESCRIBE_QUESTION, " ".join(s for s, _name, _slot in text_caption(scene, rng, habits)[1]),
                   "describe", use_image=use_image)


TEXT_TASKS = ("describe", "pope", "judge")
TEXT_TASK_WEIGHTS = (40, 20, 40)


def text_example(scene: Scene, rng: random.Random, judge_templates: tuple[str, ...] = JUDGE_TEMPLATES,
                 habits: CorpusHabits = CorpusHabits(),
                 blind_yes_rates: dict[tuple[str, str], float] | None = None,
                 task_weights: tuple[int, ...] = TEXT_TASK_WEIGHTS) -> Example:
    """One example of the text-only pretraining stage: descriptions, yes/no questions and judgments
    (TEXT_TASKS, mixed by `task_weights`), all without the image and all labelled from text captions (the
    language model's knowledge); judgments carry soft targets where `blind_yes_rates` is given."""
    task = rng.choices(TEXT_TASKS, weights=task_weights)[0]
    if task == "describe":
        return text_description(scene, rng, habits)
    if task == "pope":
        return caption_pope_example(scene, rng, False, habits)
    return caption_judge_example(scene, rng, template=rng.choice(judge_templates), habits=habits,
                                 yes_rates=blind_yes_rates)


TASKS = ("describe", "pope", "count", "colour", "judge")
TASK_WEIGHTS = (45, 20, 7, 8, 20)
# A second describing instruction whose answer names the objects in the "kind" order, whatever the main
# order: choosing which of two same-colour objects comes next in it takes their shapes, bound to the colour.
KIND_LIST_QUESTION = "List the objects in the image by kind."


def training_example(scene: Scene, rng: random.Random, text_only_rate: float = 0.15,
                     task_weights: tuple[int, ...] = TASK_WEIGHTS, caption_label_rate: float = 0.0,
                     judge_templates: tuple[str, ...] = ("faithfulness",),
                     habits: CorpusHabits = CorpusHabits(), caption_describe_rate: float = 0.0,
                     describe_mention_rate: float = PRIOR_MENTION_RATE,
                     pope_caption_label_rate: float | None = None, pope_near_miss_rate: float = 0.0,
                     blind_yes_rates: dict[tuple[str, str], float] | None = None,
                     kind_list_rate: float = 0.0) -> Example:
    """One training example from the task mixture.

    Descriptions with the image follow image captions (an absent partner named after its anchor at
    `describe_mention_rate`), or text captions at `caption_describe_rate`. With probability `caption_label_rate` a
    yes/no or judgment example with the image is labelled from a text caption (caption_pope_example,
    caption_judge_example), otherwise from the pixels; `pope_caption_label_rate`, where given, replaces
    it for yes/no questions; a pixel-labelled yes/no question asks about a near miss at `pope_near_miss_rate`,
    otherwise its negative is random, popular or adversarial. A share `text_only_rate` of descriptions
    and judgments is shown without the image, and those follow text captions (the text prior); with
    `blind_yes_rates` those judgments carry the corpus's P("Yes") as a soft target (Example.soft_yes).
    A pixel-captioned description is asked as KIND_LIST_QUESTION, in the "kind" order, at `kind_list_rate`.
    """
    task = rng.choices(TASKS, weights=task_weights)[0]
    blind = task in ("describe", "judge") and rng.random() < text_only_rate
    if task == "describe":
        if blind:
            return text_description(scene, rng, habits)
        if caption_describe_rate > 0 and rng.random() < caption_describe_rate:
            return text_description(scene, rng, habits, use_image=True)
        # the rate is drawn only when set, so every earlier recipe keeps its random stream
        listed = kind_list_rate > 0 and rng.random() < kind_list_rate
        question, order = (KIND_LIST_QUESTION, "kind") if listed else (DESCRIBE_QUESTION, habits.order)
        return Example(question, " ".join(caption_sentences(scene, rng, describe_mention_rate, order)), "describe")
    if task == "pope":
        pope_rate = caption_label_rate if pope_caption_label_rate is None else pope_caption_label_rate
        if pope_rate > 0 and rng.random() < pope_rate:
            return caption_pope_example(scene, rng, True, habits)
        # the rate is drawn only when set, so every earlier recipe keeps its random stream
        near = pope_near_miss_rate > 0 and rng.random() < pope_near_miss_rate
        return rng.choice(pope_examples(scene, "near-miss" if near else rng.choice(POPE_SPLITS[:3]), rng))
    if task == "count":
        return count_example(scene)
    if task == "colour":
        return colour_example(scene, rng) or count_example(scene)
    template = rng.choice(judge_templates)
    if blind:
        return caption_judge_example(scene, rng, template=template, habits=habits, yes_rates=blind_yes_rates)
    if caption_label_rate > 0 and rng.random() < caption_label_rate:
        return caption_judge_example(scene, rng, use_image=True, template=template, habits=habits)
    return judge_example(scene, rng, template=template, order=habits.order)[0]


def corpus(n_scenes: int = 3000, seed: int = 20_000_000) -> list[str]:
    """Text for training the tokenizer: every kind of question and answer."""
    texts = []
    for i in range(n_scenes):
        rng = random.Random(seed + i)
        scene = make_scene(seed + i)
        for _ in range(3):
            ex = training_example(scene, rng, judge_templates=JUDGE_TEMPLATES)
            texts.append(ex.question + " " + ex.answer)
    texts += [JUDGE_PROMPTS["safety"], JUDGE_PROMPTS["faithfulness_last"]]
    return texts
