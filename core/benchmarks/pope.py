"""POPE, polling-based object probing (Li et al. 2023, "Evaluating Object Hallucination in Large VLMs").

Each sampled image (with at least 3 annotated objects) gets 3 questions "Is there a <object>
in the image?" about its first 3 annotated objects (answer yes) and 3 about absent objects
(answer no), one negative drawn after each positive as the published sampling does:
- random: any object seen in the sampled images that this image lacks;
- popular: the most frequent such object (frequency over the sampled images);
- adversarial: the object most often seen together with the positive just asked, else random.
Frequency and co-occurrence count each image once per object, over the sampled images.

The answer is read one of three ways:
- answer: the model's generated reply, read as POPE's evaluation reads it (first sentence;
  "no", "No" or "not" among its words means no, anything else yes);
- raw: the judge's log-odds log P(yes) - log P(no) for the question with the image, > 0;
- debiased: (1 + alpha) * raw - alpha * blind (the same question without the image), > 0.
Metrics take "yes" as the positive class: accuracy, precision, recall, F1 and the yes-ratio.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from PIL import Image

from core.benchmarks.coco import CocoAnnotations
from core.engine.chat import check_supported, prepare_image, prompt_ids
from core.engine.generation import GenerationSettings, generate_batch
from core.engine.judge import JudgeItem, JudgeSettings, judge_sentences
from core.engine.loading import LoadedModel

SPLITS = ("random", "popular", "adversarial")
ANSWER_MODES = ("answer", "raw", "debiased")
POSITIVES_PER_IMAGE = 3
QUESTION = "Is there {article} {object} in the image?"


@dataclass(frozen=True)
class PopeQuestion:
    """One yes/no question about one image."""

    image_id: int
    object: str
    label: bool  # True: the object is in the image
    text: str


def question_text(obj: str) -> str:
    """POPE's question for an object, with "a" or "an"."""
    return QUESTION.format(article="an" if obj[0] in "aeiou" else "a", object=obj)


def _ranked(counts: Counter) -> list[str]:
    return [name for name, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def build_questions(annotations: CocoAnnotations, image_ids: list[int], split: str, seed: int) -> list[PopeQuestion]:
    """The split's questions for these images: per image 3 positives, each followed by one negative."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    objects = {i: annotations.images[i].instance_objects for i in image_ids}
    short = [i for i, objs in objects.items() if len(objs) < POSITIVES_PER_IMAGE]
    if short:
        raise ValueError(f"POPE needs images with at least {POSITIVES_PER_IMAGE} annotated objects; "
                         f"images {short[:5]} have fewer (sample with min_objects={POSITIVES_PER_IMAGE})")
    frequency: Counter = Counter(o for objs in objects.values() for o in objs)
    together: dict[str, Counter] = defaultdict(Counter)
    for objs in objects.values():
        for a in objs:
            together[a].update(b for b in objs if b != a)
    every, popular = sorted(frequency), _ranked(frequency)
    rng = random.Random(seed)
    questions = []
    for image_id in image_ids:
        present, asked = set(objects[image_id]), set()
        for positive in objects[image_id][:POSITIVES_PER_IMAGE]:
            asked.add(positive)
            questions.append(PopeQuestion(image_id, positive, True, question_text(positive)))
            free = [o for o in every if o not in asked and o not in present]
            if not free:
                raise ValueError(f"image {image_id} shows every object of the sample; sample more images")
            ranking = {"random": [], "popular": popular, "adversarial": _ranked(together[positive])}[split]
            negative = next((o for o in ranking if o not in asked and o not in present), None) or rng.choice(free)
            asked.add(negative)
            questions.append(PopeQuestion(image_id, negative, False, question_text(negative)))
    return questions


def reads_as_yes(reply: str) -> bool:
    """POPE's reading of a reply: its first sentence, commas removed; "No", "no" or "not" among the words is no."""
    first = reply.split(".")[0].replace(",", "")
    return not {"No", "no", "not"} & set(first.split(" "))


@dataclass
class PopeMetrics:
    """POPE's metrics with "yes" as the positive class."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float
    tp: int
    fp: int
    tn: int
    fn: int


def pope_metrics(labels: list[bool], predictions: list[bool]) -> PopeMetrics:
    """Accuracy, precision, recall, F1 and yes-ratio of yes/no predictions (NaN where a ratio is 0/0)."""
    if len(labels) != len(predictions) or not labels:
        raise ValueError(f"need as many predictions as labels, and at least one ({len(predictions)} vs {len(labels)})")
    pairs = list(zip(labels, predictions))
    tp, fp = pairs.count((True, True)), pairs.count((False, True))
    tn, fn = pairs.count((False, False)), pairs.count((True, False))

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else math.nan
    return PopeMetrics(accuracy=(tp + tn) / len(pairs), precision=precision, recall=recall, f1=f1,
                       yes_ratio=(tp + fp) / len(pairs), tp=tp, fp=fp, tn=tn, fn=fn)


@dataclass
class PopeAnswer:
    """The model's answer to one question: yes or no, and the score or reply it came from."""

    question: PopeQuestion
    yes: bool
    score: float  # log-odds (raw or debiased); NaN for generated replies
    reply: str = ""


def answer_questions(loaded: LoadedModel, images: dict[int, Image.Image], questions: list[PopeQuestion], mode: str,
                     alpha: float = 1.0, images_per_batch: int = 8) -> list[PopeAnswer]:
    """Answer the questions with the model, images_per_batch images (and all their questions) per batched run."""
    if mode not in ANSWER_MODES:
        raise ValueError(f"mode must be one of {', '.join(ANSWER_MODES)}, not {mode!r}")
    check_supported(loaded.model, loaded.processor)
    settings = JudgeSettings(alpha=alpha if mode == "debiased" else 0.0, kind="log-odds", template="{sentence}")
    order = list(dict.fromkeys(q.image_id for q in questions))
    answers: dict[int, PopeAnswer] = {}
    for start in range(0, len(order), images_per_batch):
        chunk = order[start:start + images_per_batch]
        prepared = [prepare_image(loaded.processor, images[i]) for i in chunk]
        where = {image_id: n for n, image_id in enumerate(chunk)}
        batch = [(k, q) for k, q in enumerate(questions) if q.image_id in where]
        if mode == "answer":
            gen = GenerationSettings(n=1, strategy="greedy", max_new_tokens=8)
            prompts = [prompt_ids(loaded.processor, q.text, prepared[where[q.image_id]]) for _, q in batch]
            replies = generate_batch(loaded, prepared, prompts, [where[q.image_id] for _, q in batch], 1, gen,
                                     mode="greedy")
            tokenizer = loaded.processor.tokenizer
            for (k, q), reply in zip(batch, replies):
                text = tokenizer.decode(reply[0].token_ids, skip_special_tokens=True).strip()
                answers[k] = PopeAnswer(q, reads_as_yes(text), math.nan, text)
        else:
            verdicts = judge_sentences(loaded, prepared, [JudgeItem(where[q.image_id], q.text) for _, q in batch],
                                       settings)
            for (k, q), verdict in zip(batch, verdicts):
                score = verdict.debiased("log-odds", settings.alpha)
                answers[k] = PopeAnswer(q, score > 0, score)
    return [answers[k] for k in range(len(questions))]
