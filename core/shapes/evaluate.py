"""Measure a model on the held-out shapes-world test split (seeds 0..n-1; training uses seeds >= 1,000,000).

Prints description recall and CHAIR (with what was hallucinated, and how often a caption names
one object twice), POPE-style yes/no accuracy on the random, popular, adversarial and near-miss
splits, the self-judgment AUROC of P(yes) with and without the image, and "the language prior in the
judgment" (prior_section): on the model's own sampled sentences the AUROC of the raw, blind and debiased
scores (with a bootstrap interval of debiased minus raw), and the raw judge's P(yes) for absent
plausible objects (an anchor's partner) against absent implausible ones in the same slot.

Run:  python -m core.shapes.evaluate --n 500            (the embedded model)
      python -m core.shapes.evaluate --n 500 --4bit     (the same in 4-bit NF4)
      python -m core.shapes.evaluate --first-seed 4000000 --prior-only   (validation scenes, prior section only)
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch
from PIL import Image

from core.config import ModelSettings
from core.engine.auroc import auroc
from core.engine.chat import prepare_image
from core.engine.judge import CONTEXTS, JudgeItem, JudgeSettings, answer_tokens, debias, judge_sentences
from core.engine.loading import LoadedModel, load_model
from core.engine.prompts import DESCRIBE_QUESTION, JUDGE_PROMPTS, judge_prompt
from core.engine.sentences import split_sentences
from core.shapes.metrics import ChairResult, chair, hallucination_kind, parse_objects, sentence_is_hallucinated
from core.shapes.texts import (FREQUENT_IN_TEXT, POPE_SPLITS, POSITION_PHRASE, SENTENCE_TEMPLATES, judge_example,
                               pope_examples, pope_question, typical_name)
from core.shapes.world import COLORS, PRIOR_PAIRS, SHAPES, WorldOptions, make_scene, partner_of, render


def chat_prompt(processor, question: str, with_image: bool) -> str:
    """The generation prompt for one user turn, built with the processor's chat template."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def model_inputs(loaded: LoadedModel, questions: list[str], images: list[Image.Image] | None) -> dict:
    """A left-padded batch of prompts, with one image per prompt or none at all."""
    processor = loaded.processor
    prompts = [chat_prompt(processor, q, images is not None) for q in questions]
    # Left padding (generation continues from the right edge), asked per call: the shared tokenizer is not changed.
    if images is None:
        inputs = processor.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                                     padding_side="left")
    else:
        inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True, add_special_tokens=False,
                           padding_side="left")
    return {k: v.to(loaded.device) for k, v in inputs.items()}


@torch.no_grad()
def describe_batch(loaded: LoadedModel, images: list[Image.Image], question: str = DESCRIBE_QUESTION,
                   max_new_tokens: int = 64, samples: int = 0, seed: int = 0) -> list[str]:
    """Greedy answers for a batch of images; with `samples` > 0, that many sampled answers per image
    (temperature 1, seeded), image by image in order."""
    inputs = model_inputs(loaded, [question] * len(images), images)
    if samples:
        torch.manual_seed(seed)
        out = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0,
                                    top_p=1.0, top_k=0, num_return_sequences=samples)
    else:
        out = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = out[:, inputs["input_ids"].shape[1]:]
    return [t.strip() for t in loaded.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


@torch.no_grad()
def p_yes(loaded: LoadedModel, questions: list[str], images: list[Image.Image] | None) -> list[float]:
    """P(yes) / (P(yes) + P(no)) at the first answer position, for a batch of questions (every
    spelling of the answers that this tokenizer writes as one token: core.engine.judge.answer_tokens)."""
    answers = answer_tokens(loaded.processor.tokenizer)
    inputs = model_inputs(loaded, questions, images)
    logprobs = torch.log_softmax(loaded.model(**inputs).logits[:, -1, :].float(), dim=-1)
    yes = torch.logsumexp(logprobs[:, list(answers.yes)], dim=-1)
    no = torch.logsumexp(logprobs[:, list(answers.no)], dim=-1)
    return torch.sigmoid(yes - no).tolist()


@dataclass
class BaseEvaluation:
    """The embedded model's numbers on the held-out split."""

    n_scenes: int
    describe: ChairResult
    pope_accuracy: dict[str, float]
    judge_auroc_image: float
    judge_auroc_blind: float
    examples: list[dict]
    faint_named: float = float("nan")  # share of faint objects the descriptions name
    absent_partner_named: float = float("nan")  # share of (anchor present, partner absent) scenes naming it
    repeated_object: float = float("nan")  # share of greedy captions naming one object twice
    # of those, the share that leave an object of the scene unnamed (a repeat stands in for it)
    repeats_missing_an_object: float = float("nan")
    recall_by_objects: dict[int, float] = field(default_factory=dict)  # objects in the scene -> recall
    recall_by_visibility: dict[str, float] = field(default_factory=dict)  # clear, low contrast, faint -> recall
    # share of all objects left unnamed, by what the caption did instead (missed_objects_by_cause)
    missed_by_cause: dict[str, float] = field(default_factory=dict)
    # "shared colour" / "distinct colours" scenes -> {"scenes", "recall", "repeats"} (describe_by_colours)
    describe_by_colours: dict[str, dict[str, float]] = field(default_factory=dict)
    # "shared colour" / "distinct colours" scenes -> (hallucinated objects of kind shape, scenes)
    shape_errors_by_colours: dict[str, tuple[int, int]] = field(default_factory=dict)
    prior: "PriorSection | None" = None


def pope_items(scenes: list, split: str) -> list:
    """(scene, question) pairs: each scene's yes and no question of a POPE split, seeded per scene and split."""
    return [(s, ex) for s in scenes for ex in pope_examples(s, split, random.Random(f"{split}-{s.seed}"))]


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def names_an_object_twice(caption: str) -> bool:
    """True if two sentences of the caption name the same (colour, shape)."""
    names = [name for sentence in split_sentences(caption) for name in set(parse_objects(sentence))]
    return len(set(names)) < len(names)


def repeated_object_rate(captions: list[str]) -> float:
    """Share of captions in which two sentences name the same (colour, shape)."""
    return sum(map(names_an_object_twice, captions)) / max(len(captions), 1)


def repeats_missing_an_object(captions: list[str], scenes: list) -> float:
    """Of the captions that name one object twice, the share that leave an object of their scene unnamed."""
    repeating = [(caption, scene) for caption, scene in zip(captions, scenes) if names_an_object_twice(caption)]
    missing = sum(any(obj.name not in set(parse_objects(caption)) for obj in scene.objects)
                  for caption, scene in repeating)
    return missing / len(repeating) if repeating else float("nan")


MISS_CAUSES = ("repeat", "short", "substituted")


def missed_objects_by_cause(captions: list[str], scenes: list) -> dict[str, float]:
    """Share of all objects left unnamed, by cause: the caption names one object twice ("repeat"), else it has
    fewer sentences than the scene has objects ("short"), else it names another object instead ("substituted")."""
    missed = Counter()
    for caption, scene in zip(captions, scenes):
        claims = set(parse_objects(caption))
        cause = ("repeat" if names_an_object_twice(caption) else
                 "short" if len(split_sentences(caption)) < len(scene.objects) else "substituted")
        missed[cause] += sum(obj.name not in claims for obj in scene.objects)
    total = max(sum(len(scene.objects) for scene in scenes), 1)
    return {cause: missed[cause] / total for cause in MISS_CAUSES}


def recall_by_objects(captions: list[str], scenes: list) -> dict[int, float]:
    """Object recall of the descriptions, by how many objects their scene holds."""
    return _recall_by(captions, scenes, lambda scene, obj: len(scene.objects))


def recall_by_visibility(captions: list[str], scenes: list) -> dict[str, float]:
    """Object recall of the descriptions, by how visible the object is rendered (clear, low contrast, faint)."""
    def visibility(scene, obj) -> str:
        return "faint" if obj.faint else "low contrast" if obj.low_contrast else "clear"

    by = _recall_by(captions, scenes, visibility)
    return {key: by[key] for key in ("clear", "low contrast", "faint") if key in by}


def _colour_group(scene) -> str:
    return "shared colour" if scene.shares_a_colour() else "distinct colours"


def describe_by_colours(captions: list[str], scenes: list) -> dict[str, dict[str, float]]:
    """Scenes, object recall and share of captions naming one object twice, in scenes where two objects share a
    colour and in the rest: telling two objects of one colour apart is where the small model loses both."""
    result = {}
    for group in ("shared colour", "distinct colours"):
        pairs = [(caption, scene) for caption, scene in zip(captions, scenes) if _colour_group(scene) == group]
        if pairs:
            recall = _recall_by([c for c, _s in pairs], [s for _c, s in pairs], lambda scene, obj: "all")["all"]
            result[group] = {"scenes": len(pairs), "recall": recall,
                             "repeats": repeated_object_rate([c for c, _s in pairs])}
    return result


def shape_errors_by_colours(captions: list[str], scenes: list) -> dict[str, tuple[int, int]]:
    """Hallucinated objects of kind "shape" (a present colour, a wrong shape) and the number of scenes, in
    scenes where two objects share a colour and in the rest: where telling same-colour objects apart fails."""
    counts = {"shared colour": [0, 0], "distinct colours": [0, 0]}
    for caption, scene in zip(captions, scenes):
        group = counts[_colour_group(scene)]
        truth = scene.names()
        group[0] += sum(hallucination_kind(name, truth) == "shape" for name in parse_objects(caption) if name not in truth)
        group[1] += 1
    return {key: (errors, n) for key, (errors, n) in counts.items()}


def _recall_by(captions: list[str], scenes: list, key) -> dict:
    named, total = Counter(), Counter()
    for caption, scene in zip(captions, scenes):
        claims = set(parse_objects(caption))
        for obj in scene.objects:
            total[key(scene, obj)] += 1
            named[key(scene, obj)] += obj.name in claims
    return {group: named[group] / total[group] for group in sorted(total)}


def evaluate(loaded: LoadedModel, n: int = 500, batch_size: int = 50, start_seed: int = 0,
             template: str = "faithfulness", world: WorldOptions = WorldOptions()) -> BaseEvaluation:
    """Describe, POPE and self-judgment numbers on scenes start_seed..start_seed+n-1."""
    scenes = [world.scene(start_seed + i) for i in range(n)]
    captions: list[str] = []
    for chunk in _batches(scenes, batch_size):
        captions += describe_batch(loaded, [render(s) for s in chunk])
    describe = chair(captions, [s.names() for s in scenes])
    faint_named, absent_partner_named = prior_rates(scenes, captions)

    pope: dict[str, float] = {}
    for split in POPE_SPLITS:
        correct = total = 0
        for chunk in _batches(scenes, batch_size):
            items = pope_items(chunk, split)
            probs = p_yes(loaded, [ex.question for _, ex in items], [render(s) for s, _ in items])
            correct += sum((p > 0.5) == (ex.answer == "Yes.") for p, (_, ex) in zip(probs, items))
            total += len(items)
        pope[split] = correct / total

    labels: list[bool] = []
    with_image: list[float] = []
    blind: list[float] = []
    for chunk in _batches(scenes, batch_size):
        items = [(s, *judge_example(s, random.Random(f"judge-{s.seed}"), with_context=False, template=template))
                 for s in chunk]
        questions = [ex.question for _, ex, _ in items]
        with_image += p_yes(loaded, questions, [render(s) for s, _, _ in items])
        blind += p_yes(loaded, questions, None)
        labels += [truthful for _, _, truthful in items]
    examples = [{"seed": s.seed, "truth": sorted(" ".join(nm) for nm in s.names()), "greedy": c}
                for s, c in zip(scenes[:5], captions[:5])]
    return BaseEvaluation(n_scenes=n, describe=describe, pope_accuracy=pope,
                          judge_auroc_image=auroc(with_image, labels), judge_auroc_blind=auroc(blind, labels),
                          examples=examples, faint_named=faint_named, absent_partner_named=absent_partner_named,
                          repeated_object=repeated_object_rate(captions),
                          repeats_missing_an_object=repeats_missing_an_object(captions, scenes),
                          recall_by_objects=recall_by_objects(captions, scenes),
                          recall_by_visibility=recall_by_visibility(captions, scenes),
                          missed_by_cause=missed_objects_by_cause(captions, scenes),
                          describe_by_colours=describe_by_colours(captions, scenes),
                          shape_errors_by_colours=shape_errors_by_colours(captions, scenes))


def prior_rates(scenes: list, captions: list[str]) -> tuple[float, float]:
    """How often captions name a faint object, and an anchor's partner that is not in the scene."""
    absent = absent_hits = 0
    for scene, caption in zip(scenes, captions):
        claims, present = set(parse_objects(caption)), scene.names()
        for obj in scene.objects:
            partner = partner_of(obj.name)
            if partner and partner not in present:
                absent += 1
                absent_hits += partner in claims
    # a faint object named is the recall of faint objects: one count, shared with recall_by_visibility
    return recall_by_visibility(captions, scenes).get("faint", 0.0), absent_hits / max(absent, 1)


@dataclass
class PriorSection:
    """The language prior in the judgment, and what debiasing removes (issue 9's measures)."""

    n_scenes: int
    first_seed: int
    template: str
    kind: str
    samples: int
    n_faithful: int
    n_hallucinated: int
    # context -> {"raw": AUROC, "blind": AUROC, "debiased a=ALPHA": AUROC}; faithful is the positive class
    auroc: dict[str, dict[str, float]]
    # context -> alpha -> [2.5%, 50%, 97.5%] of debiased minus raw AUROC over scenes resampled with replacement
    gain_interval: dict[str, dict[str, list[float]]]
    n_pairs: int  # scenes with an anchor present and its partner absent
    plausible_yes: float  # raw P(yes) that the absent partner is there
    implausible_yes: float  # raw P(yes) for an absent implausible object in the same slot
    plausible_blind_yes: float
    implausible_blind_yes: float
    # sentence context: "faithful|hallucinated, OBJECT_KIND" -> {"n", "raw", "blind"} (mean scores of
    # that kind): shows whether the hallucinations are the ones the text prior (blind score) favours
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    # context -> the same columns as `auroc`, counting only (faithful, hallucinated) pairs of one scene:
    # what choosing among one image's candidates needs (preference pairs, judged decoding), where the
    # pooled AUROC also rewards scores that compare across images (a threshold, rejection)
    within_scene: dict[str, dict[str, float]] = field(default_factory=dict)


def object_kind(name: tuple[str, str] | None) -> str:
    """How the text corpus sees an object: a frequent-in-text partner, another colour's typical name, or other."""
    if name in FREQUENT_IN_TEXT:
        return "frequent in text"
    if name is not None and name == typical_name(name):
        return "typical name"
    return "other"


def kind_means(pool: list[tuple[int, str, str, bool]], verdicts: list, kind: str) -> dict[str, dict[str, float]]:
    """Mean raw and blind score per (faithful or hallucinated, object kind of the sentence's first object)."""
    groups: dict[str, list] = {}
    for (_i, _c, sentence, hallucinated), verdict in zip(pool, verdicts):
        names = parse_objects(sentence)
        key = f"{'hallucinated' if hallucinated else 'faithful'}, {object_kind(names[0] if names else None)}"
        groups.setdefault(key, []).append(verdict)
    return {key: {"n": len(vs), "raw": sum(v.raw[kind] for v in vs) / len(vs),
                  "blind": sum(v.blind[kind] for v in vs) / len(vs)} for key, vs in sorted(groups.items())}


def sampled_sentences(loaded: LoadedModel, scenes: list, samples: int, batch_size: int, seed: int = 0
                      ) -> list[tuple[int, str, str, bool]]:
    """Distinct (scene index, preceding sentences, sentence, hallucinated) of `samples` sampled
    descriptions per scene; sentences that name no object are left out."""
    pool: dict[tuple[int, str, str], bool] = {}
    for first in range(0, len(scenes), batch_size):
        chunk = scenes[first:first + batch_size]
        texts = describe_batch(loaded, [render(s) for s in chunk], samples=samples, seed=seed + first)
        for offset, text in enumerate(texts):
            index = first + offset // samples
            sentences = split_sentences(text)
            for j, sentence in enumerate(sentences):
                label = sentence_is_hallucinated(sentence, scenes[index].names())
                if label is not None:
                    pool[(index, " ".join(sentences[:j]), sentence)] = label
    return [(i, c, s, h) for (i, c, s), h in sorted(pool.items(), key=lambda item: item[0][0])]


def absent_object_pairs(n: int, first_seed: int, world: WorldOptions = WorldOptions()
                        ) -> list[tuple[object, str, str]]:
    """Up to n scenes with an anchor present and its partner absent, each with two sentences in the
    same slot (template, size, position): one naming the partner (plausible: prior partner and
    frequent in text), one naming an absent implausible object (neither a partner nor an anchor,
    and a near miss of a present object exactly when the partner is)."""
    special = set(FREQUENT_IN_TEXT) | {pair.anchor for pair in PRIOR_PAIRS}
    found = []
    for seed in range(first_seed, first_seed + 40 * n):
        if len(found) >= n:
            break
        scene = world.scene(seed)
        present = scene.names()
        partners = [pair.partner for pair in PRIOR_PAIRS if pair.anchor in present and pair.partner not in present]
        if not partners:
            continue
        rng = random.Random(f"prior-pair-{seed}")
        partner = rng.choice(partners)

        def near(name: tuple[str, str]) -> bool:
            return any(name[0] == p[0] or name[1] == p[1] for p in present)

        implausible = [(c, sh) for c in COLORS for sh in SHAPES
                       if (c, sh) not in present and (c, sh) not in special and near((c, sh)) == near(partner)]
        if not implausible:
            continue
        other = rng.choice(implausible)
        template, size, where = (rng.choice(SENTENCE_TEMPLATES), rng.choice(["small", "large"]),
                                 rng.choice(list(POSITION_PHRASE.values())))
        found.append((scene, *(template.format(size=size, color=c, shape=sh, where=where) for c, sh in (partner, other))))
    return found


def _bootstrap_gain(verdicts: list, labels: list[bool], scene_of: list[int], kind: str, alphas: list[float],
                    rounds: int = 400, seed: int = 0) -> dict[str, list[float]]:
    """Percentile interval of AUROC(debiased) - AUROC(raw), resampling scenes with replacement."""
    by_scene: dict[int, list[int]] = {}
    for index, scene in enumerate(scene_of):
        by_scene.setdefault(scene, []).append(index)
    groups = list(by_scene.values())
    rng = random.Random(seed)
    gains: dict[str, list[float]] = {str(a): [] for a in alphas}
    for _ in range(rounds):
        rows = [i for _ in groups for i in rng.choice(groups)]
        y = [labels[i] for i in rows]
        if not 0 < sum(y) < len(y):
            continue
        raw = auroc([verdicts[i].raw[kind] for i in rows], y)
        for a in alphas:
            gains[str(a)].append(auroc([verdicts[i].debiased(kind, a) for i in rows], y) - raw)
    result = {}
    for a, values in gains.items():
        values.sort()
        pick = (lambda q: values[min(len(values) - 1, int(q * len(values)))]) if values else (lambda q: float("nan"))
        result[a] = [pick(0.025), pick(0.5), pick(0.975)]
    return result


def within_scene_auroc(scores: list[float], labels: list[bool], scene_of: list[int]) -> float:
    """P(a faithful sentence outscores a hallucinated one of the same scene), ties half; NaN without such pairs."""
    by_scene: dict[int, tuple[list[float], list[float]]] = {}
    for score, label, scene in zip(scores, labels, scene_of):
        by_scene.setdefault(scene, ([], []))[0 if label else 1].append(score)
    wins = pairs = 0.0
    for positives, negatives in by_scene.values():
        for p in positives:
            for n in negatives:
                wins += 1.0 if p > n else 0.5 if p == n else 0.0
        pairs += len(positives) * len(negatives)
    return wins / pairs if pairs else float("nan")


def prior_section(loaded: LoadedModel, n: int = 150, first_seed: int = 0, samples: int = 4, batch_size: int = 25,
                  template: str = "faithfulness", kind: str = "logit", alphas: tuple[float, ...] = (0.5, 1, 2, 4),
                  seed: int = 0, world: WorldOptions = WorldOptions()) -> PriorSection:
    """On `samples` sampled descriptions of n scenes: AUROC of the raw, blind and debiased scores per
    judge context; and the raw judge's P(yes) for absent plausible against implausible objects."""
    scenes = [world.scene(first_seed + i) for i in range(n)]
    pool = sampled_sentences(loaded, scenes, samples, batch_size, seed)
    faithful = [not hallucinated for _i, _c, _s, hallucinated in pool]
    if not 0 < sum(faithful) < len(faithful):
        raise ValueError("the sampled sentences need both faithful and hallucinated ones; use more scenes")
    table: dict[str, dict[str, float]] = {}
    within: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, list[float]]] = {}
    by_kind: dict[str, dict[str, float]] = {}
    scene_of = [item[0] for item in pool]
    for context in CONTEXTS:
        settings = JudgeSettings(context=context, template=template, kind=kind)
        verdicts = []
        for first in range(0, n, batch_size):
            chunk = [item for item in pool if first <= item[0] < first + batch_size]
            if not chunk:
                continue
            images = [prepare_image(loaded.processor, render(s)) for s in scenes[first:first + batch_size]]
            items = [JudgeItem(image=i - first, sentence=s, context=c) for i, c, s, _h in chunk]
            verdicts += judge_sentences(loaded, images, items, settings)
        row = {"raw": auroc([v.raw[kind] for v in verdicts], faithful),
               "blind": auroc([v.blind[kind] for v in verdicts], faithful)}
        row |= {f"debiased a={a}": auroc([v.debiased(kind, a) for v in verdicts], faithful) for a in alphas}
        table[context] = row
        within[context] = {"raw": within_scene_auroc([v.raw[kind] for v in verdicts], faithful, scene_of),
                           "blind": within_scene_auroc([v.blind[kind] for v in verdicts], faithful, scene_of)}
        within[context] |= {f"debiased a={a}": within_scene_auroc([v.debiased(kind, a) for v in verdicts], faithful,
                                                                  scene_of) for a in alphas}
        if context == "sentence":
            by_kind = kind_means(pool, verdicts, kind)
        intervals[context] = _bootstrap_gain(verdicts, faithful, scene_of, kind, list(alphas))
    pairs = absent_object_pairs(n, first_seed, world)
    plausible, implausible, plausible_blind, implausible_blind = [], [], [], []
    question = JUDGE_PROMPTS.get(template, template)
    for first in range(0, len(pairs), batch_size):
        chunk = pairs[first:first + batch_size]
        images = [render(scene) for scene, _p, _o in chunk]
        for sentences, image_scores, blind_scores in (
                ([p for _s, p, _o in chunk], plausible, plausible_blind),
                ([o for _s, _p, o in chunk], implausible, implausible_blind)):
            questions = [judge_prompt(s, question) for s in sentences]
            image_scores += p_yes(loaded, questions, images)
            blind_scores += p_yes(loaded, questions, None)
    mean = (lambda xs: sum(xs) / len(xs) if xs else float("nan"))
    return PriorSection(n_scenes=n, first_seed=first_seed, template=template, kind=kind, samples=samples,
                        n_faithful=sum(faithful), n_hallucinated=len(faithful) - sum(faithful), auroc=table,
                        gain_interval=intervals, n_pairs=len(pairs), plausible_yes=mean(plausible),
                        implausible_yes=mean(implausible), plausible_blind_yes=mean(plausible_blind),
                        implausible_blind_yes=mean(implausible_blind), by_kind=by_kind, within_scene=within)


def format_prior(section: PriorSection) -> str:
    """The prior section as Markdown: AUROC per context and score, and the plausible/implausible P(yes)."""
    columns = list(next(iter(section.auroc.values())))
    lines = [f"Language prior in the judgment: {section.n_scenes} scenes from seed {section.first_seed}, "
             f"{section.samples} sampled descriptions each ({section.n_faithful} faithful, {section.n_hallucinated} "
             f"hallucinated sentences), template {section.template}, score kind {section.kind}.", "",
             "| context | " + " | ".join(f"AUROC {c}" for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for context, row in section.auroc.items():
        lines.append(f"| {context} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    if section.within_scene:
        lines += ["", "Within one scene only (faithful and hallucinated sentences of the same scene: choosing among "
                      "one image's candidates; the pooled AUROC above also rewards scores that compare across images):",
                  "", "| context | " + " | ".join(f"AUROC {c}" for c in columns) + " |", "|---|" + "---|" * len(columns)]
        for context, row in section.within_scene.items():
            lines.append(f"| {context} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    lines += ["", "| context | alpha | debiased - raw AUROC, median [95% bootstrap over scenes] |", "|---|---|---|"]
    for context, gains in section.gain_interval.items():
        for alpha, (low, mid, high) in gains.items():
            lines.append(f"| {context} | {alpha} | {mid:+.3f} [{low:+.3f}, {high:+.3f}] |")
    ratio = section.plausible_yes / max(section.implausible_yes, 1e-9)
    lines += ["", f"Absent objects, same slot ({section.n_pairs} scenes with an anchor and without its partner):", "",
              "| object | raw P(yes) | blind P(yes) |", "|---|---|---|",
              f"| plausible (the anchor's partner, frequent in text) | {section.plausible_yes:.3f} | "
              f"{section.plausible_blind_yes:.3f} |",
              f"| implausible (matched size, position, near-miss status) | {section.implausible_yes:.3f} | "
              f"{section.implausible_blind_yes:.3f} |",
              f"| ratio plausible / implausible | {ratio:.1f}x | |"]
    if section.by_kind:
        lines += ["", f"Mean scores ({section.kind}) by sentence and object kind, sentence context "
                      "(debiasing helps only where hallucinations are what the blind score favours):", "",
                  "| sentences | n | raw | blind |", "|---|---|---|---|"]
        lines += [f"| {key} | {row['n']} | {row['raw']:.2f} | {row['blind']:.2f} |"
                  for key, row in section.by_kind.items()]
    return "\n".join(lines)


def format_report(result: BaseEvaluation) -> str:
    """The evaluation as a Markdown table."""
    d = result.describe
    kinds = ", ".join(f"{k} {v}" for k, v in d.kinds.items())
    rows = [
        f"| held-out scenes | {result.n_scenes} |",
        f"| description object recall | {d.recall:.3f} |",
        f"| greedy CHAIR_S | {d.chair_s:.1%} |",
        f"| greedy CHAIR_I | {d.chair_i:.1%} |",
        f"| hallucinated objects by kind | {kinds} |",
        f"| faint objects named | {result.faint_named:.1%} |",
        f"| absent partner of a present anchor named | {result.absent_partner_named:.1%} |",
        f"| mean sentences per description | {d.mean_sentences:.2f} |",
        f"| greedy captions naming one object twice | {result.repeated_object:.1%} |",
        f"| of those, leaving an object of the scene unnamed | {result.repeats_missing_an_object:.1%} |",
    ] + [f"| description object recall, scenes of {count} object{'s' * (count > 1)} | {value:.3f} |"
         for count, value in result.recall_by_objects.items()] + [
        f"| description object recall, {group} objects | {value:.3f} |"
        for group, value in result.recall_by_visibility.items() if group != "faint"  # = faint objects named
    ] + [f"| objects left unnamed, caption {cause} | {share:.1%} of all objects |"
         for cause, share in result.missed_by_cause.items()
    ] + [row for group, values in result.describe_by_colours.items() for row in (
        f"| description object recall, scenes with {group} ({values['scenes']:.0f}) | {values['recall']:.3f} |",
        f"| greedy captions naming one object twice, scenes with {group} | {values['repeats']:.1%} |")
    ] + [f"| wrong-shape objects named, scenes with {group} | {errors} in {n} scenes |"
         for group, (errors, n) in result.shape_errors_by_colours.items()] + [f"| yes/no accuracy, {k} | {v:.1%} |" for k, v in result.pope_accuracy.items()] + [
        f"| self-judgment AUROC of P(yes), with image | {result.judge_auroc_image:.3f} |",
        f"| self-judgment AUROC of P(yes), without image (blind) | {result.judge_auroc_blind:.3f} |",
    ]
    return "| metric | value |\n|---|---|\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """CLI: evaluate a model on the held-out split."""
    parser = argparse.ArgumentParser(prog="python -m core.shapes.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="number of held-out scenes (seeds 0..n-1)")
    parser.add_argument("--model", default=None, help="model id or path (default: the embedded model)")
    parser.add_argument("--4bit", dest="load_in_4bit", action="store_true", help="load in 4-bit NF4")
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="first scene (0: the test split; 4000000: validation scenes for choosing settings)")
    parser.add_argument("--template", default=JudgeSettings().template,
                        help="judge template (a core.engine.prompts.JUDGE_PROMPTS key)")
    parser.add_argument("--prior-n", type=int, default=150, help="scenes of the language-prior section (0: skip it)")
    parser.add_argument("--samples", type=int, default=4, help="sampled descriptions per scene in the prior section")
    parser.add_argument("--alphas", default="0.5,1,2,4", help="debiasing strengths of the prior section")
    parser.add_argument("--kind", default=JudgeSettings.kind, help="score kind: logit | logprob | log-odds")
    parser.add_argument("--prior-only", action="store_true", help="only the language-prior section")
    WorldOptions.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error("--n must be at least 2")
    if args.template not in JUDGE_PROMPTS:
        parser.error(f"--template must be one of {', '.join(JUDGE_PROMPTS)}")
    settings = ModelSettings(**{k: v for k, v in {"model": args.model, "adapter": args.adapter,
                                                   "load_in_4bit": args.load_in_4bit or None}.items() if v})
    loaded = load_model(settings)
    world = WorldOptions.from_args(args)
    result = None if args.prior_only else evaluate(loaded, args.n, args.batch_size, args.first_seed, args.template,
                                                   world)
    prior = None
    if args.prior_n or args.prior_only:
        prior = prior_section(loaded, args.prior_n or 150, args.first_seed, args.samples, template=args.template,
                              kind=args.kind, alphas=tuple(float(a) for a in args.alphas.split(",")),
                              world=world)
    if result is not None:
        result.prior = prior
    if args.json:
        print(json.dumps(asdict(result) if result is not None else asdict(prior), indent=2))
        return
    if result is not None:
        print(format_report(result))
        for ex in result.examples:
            print(f"seed {ex['seed']}: truth {ex['truth']}\n  greedy: {ex['greedy']}")
    if prior is not None:
        print()
        print(format_prior(prior))


if __name__ == "__main__":
    main()
