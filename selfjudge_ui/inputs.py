"""Checking what a person (or an API client) sent, and turning it into core settings.

Every problem becomes a gr.Error that says what to change; nothing past this edge sees
an unchecked value. Core dataclasses validate themselves too: their ValueError messages
are passed on as they are.
"""

from __future__ import annotations

import math

import gradio as gr
from PIL import Image

from core.images import ImageError, open_image
from core.judge import GenerationSettings, JudgeSettings
from core.prompts import JUDGE_PROMPTS
from core.world import make_scene, render
from selfjudge_ui.settings import InputLimits

CUSTOM_PROMPT = "custom"
PROMPT_CHOICES = [*JUDGE_PROMPTS, CUSTOM_PROMPT]
SCORE_KINDS = ["logit", "logprob", "log-odds"]
GENERATION_STRATEGIES = ["sample", "diverse-beam", "greedy"]
DECODE_STRATEGIES = ["debiased-judged", "raw-judged", "greedy", "beam"]
MAX_SEED = 2**31 - 1
TEST_SEEDS = 1_000_000  # scenes 0..999_999 are the test split (core.embedded trains from 1_000_000 on)


def read_image(file: str | None, limits: InputLimits) -> Image.Image:
    """The uploaded file as normalised RGB."""
    if not file:
        raise gr.Error("No image: upload one, pick an example or draw a random scene first.")
    try:
        return open_image(file, limits.image)
    except ImageError as exc:
        raise gr.Error(str(exc)) from exc


def scene_image(seed: float | int | None) -> tuple[int, Image.Image]:
    """The seed as an int and its rendered shapes scene."""
    number = check_integer("scene seed", seed, 0, MAX_SEED)
    return number, render(make_scene(number))


def check_text(name: str, text: str | None, max_chars: int, required: bool = True) -> str:
    """Stripped text within its length limit."""
    text = (text or "").strip()
    if required and not text:
        raise gr.Error(f"The {name} is empty; type one.")
    if len(text) > max_chars:
        raise gr.Error(f"The {name} is {len(text)} characters long; the limit is {max_chars}.")
    return text


def _shown(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def check_number(name: str, value: float | int | None, low: float, high: float) -> float:
    """A finite number within [low, high]."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise gr.Error(f"{name} must be a number between {_shown(low)} and {_shown(high)}, not {value!r}.")
    if not low <= value <= high:
        raise gr.Error(f"{name} must be between {_shown(low)} and {_shown(high)}, not {_shown(value)}.")
    return float(value)


def check_integer(name: str, value: float | int | None, low: int, high: int) -> int:
    """A whole number within [low, high]."""
    number = check_number(name, value, low, high)
    if number != int(number):
        raise gr.Error(f"{name} must be a whole number, not {value!r}.")
    return int(number)


def check_choice(name: str, value: str | None, choices: list[str]) -> str:
    """One of the allowed choices."""
    if value not in choices:
        raise gr.Error(f"{name} must be one of {', '.join(choices)}, not {value!r}.")
    return value


def judge_settings(alpha: float, kind: str, prompt: str, custom_template: str,
                   limits: InputLimits) -> JudgeSettings:
    """JudgeSettings from the judge controls (prompt 'custom' takes the template text box)."""
    alpha = check_number("alpha", alpha, 0.0, limits.max_alpha)
    kind = check_choice("score kind", kind, SCORE_KINDS)
    prompt = check_choice("judge prompt", prompt, PROMPT_CHOICES)
    template = prompt
    if prompt == CUSTOM_PROMPT:
        template = check_text("custom judge template", custom_template, limits.max_question_chars)
        if "{sentence}" not in template:
            raise gr.Error("A custom judge template must contain {sentence}, e.g. "
                           "'Claim: {sentence} Is it true? Answer yes or no.'")
    try:
        return JudgeSettings(alpha=alpha, kind=kind, template=template)
    except ValueError as exc:
        raise gr.Error(str(exc)) from exc


def generation_settings(n: float, strategy: str, seed: float, limits: InputLimits) -> GenerationSettings:
    """GenerationSettings from the candidate controls."""
    n = check_integer("number of candidates", n, 1, limits.max_candidates)
    strategy = check_choice("decoding strategy", strategy, GENERATION_STRATEGIES)
    seed = check_integer("seed", seed, 0, MAX_SEED)
    try:
        return GenerationSettings(n=n, strategy=strategy, seed=seed)
    except ValueError as exc:
        raise gr.Error(str(exc)) from exc
