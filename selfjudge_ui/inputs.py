"""Checking what a person (or an API client) sent, and turning it into core settings.

Every problem becomes a gr.Error that says what to change; nothing past this edge sees
an unchecked value. Core dataclasses validate themselves too: their ValueError messages
are passed on as they are.

Control characters (NUL, escape, ...; not tab or line breaks) are invisible, so the studio
removes them from what is typed before checking it (core refuses them, with the field and
position, in imports and direct calls). Numbers come through
`number_box` / `slider_box`, which name their field when a value is not a number or is out
of range (gradio's own message names neither) and never round: a whole-number field
given 1.5 is refused by `check_integer`, not silently made 2.
"""

from __future__ import annotations

import math

import gradio as gr
from PIL import Image

from core.data.store import strip_control_characters
from core.engine.generation import GenerationSettings
from core.engine.images import ImageError, open_image
from core.engine.judge import JudgeSettings
from core.engine.prompts import JUDGE_PROMPTS
from core.shapes.world import make_scene, render
from selfjudge_ui.settings import InputLimits

CUSTOM_PROMPT = "custom"
PROMPT_CHOICES = [*JUDGE_PROMPTS, CUSTOM_PROMPT]
SCORE_KINDS = ["logit", "logprob", "log-odds"]
GENERATION_STRATEGIES = ["sample", "diverse-beam", "greedy"]
DECODE_STRATEGIES = ["debiased-judged", "raw-judged", "greedy", "beam"]
MAX_SEED = 2**31 - 1
TEST_SEEDS = 1_000_000  # scenes 0..999_999 are the test split (core.shapes.embedded trains from 1_000_000 on)


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
    """Text with control characters removed and ends stripped, within its length limit."""
    if text is not None and not isinstance(text, str):
        raise gr.Error(f"The {name} must be text, not {type(text).__name__}.")
    text = strip_control_characters(text or "")
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


def _field_number(label: str | None, payload: object, minimum: float | None, maximum: float | None
                  ) -> float | int | None:
    name = label or "This number"
    if payload is None:
        return None
    if isinstance(payload, str):
        try:
            payload = float(payload)
        except ValueError:
            raise gr.Error(f"{name} must be a number, not {payload[:40]!r}.") from None
    if isinstance(payload, bool) or not isinstance(payload, (int, float)) or not math.isfinite(payload):
        raise gr.Error(f"{name} must be a number, not {str(payload)[:40]!r}.")
    if minimum is not None and payload < minimum:
        raise gr.Error(f"{name} must be at least {_shown(minimum)}, not {_shown(payload)}.")
    if maximum is not None and payload > maximum:
        raise gr.Error(f"{name} must be at most {_shown(maximum)}, not {_shown(payload)}.")
    return payload


def number_box(*args, **kwargs) -> gr.Number:
    """A gr.Number whose errors name the field, and which passes the value on unrounded (see check_integer)."""
    box = gr.Number(*args, **kwargs)
    # On the instance, not a subclass: gradio's component metaclass would write a .pyi beside this file.
    box.preprocess = lambda payload: _field_number(box.label, payload, box.minimum, box.maximum)
    return box


def slider_box(*args, **kwargs) -> gr.Slider:
    """A gr.Slider whose errors name the field (an API client can send anything)."""
    slider = gr.Slider(*args, **kwargs)

    def preprocess(payload: object) -> float | int:
        value = _field_number(slider.label, payload, slider.minimum, slider.maximum)
        if value is None:
            raise gr.Error(f"{slider.label or 'This slider'} needs a value.")
        return value

    slider.preprocess = preprocess
    return slider


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
