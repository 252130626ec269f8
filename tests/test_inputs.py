"""Tests for selfjudge_ui/inputs.py: UI and API values checked and turned into core settings."""

from __future__ import annotations

import math

import gradio as gr
import pytest
from PIL import Image

from core.judge import GenerationSettings, JudgeSettings
from selfjudge_ui import inputs
from selfjudge_ui.settings import InputLimits

LIMITS = InputLimits()


@pytest.mark.parametrize("value, message", [
    (None, "must be a number between 0 and 10, not None"), ("3", "not '3'"), (True, "not True"),
    (math.nan, "not nan"), (math.inf, "not inf"), (-0.1, "between 0 and 10, not -0.1"), (10.5, "not 10.5"),
])
def test_check_number_refuses(value, message):
    with pytest.raises(gr.Error, match=message):
        inputs.check_number("alpha", value, 0, 10)


def test_check_number_and_integer_accept():
    assert inputs.check_number("alpha", 10, 0, 10) == 10.0
    assert inputs.check_integer("n", 4.0, 1, 8) == 4
    with pytest.raises(gr.Error, match="n must be a whole number, not 2.5"):
        inputs.check_integer("n", 2.5, 1, 8)


def test_check_text():
    assert inputs.check_text("question", "  Describe it.  ", 20) == "Describe it."
    assert inputs.check_text("note", None, 20, required=False) == ""
    with pytest.raises(gr.Error, match="The question is empty"):
        inputs.check_text("question", " \n ", 20)
    with pytest.raises(gr.Error, match="The question is 21 characters long; the limit is 20"):
        inputs.check_text("question", "x" * 21, 20)


def test_judge_settings_from_the_controls():
    assert inputs.judge_settings(2.0, "log-odds", "safety", "ignored", LIMITS) == JudgeSettings(
        alpha=2.0, kind="log-odds", template="safety")
    custom = inputs.judge_settings(0, "logit", "custom", " Claim: {sentence} True? ", LIMITS)
    assert custom == JudgeSettings(alpha=0.0, kind="logit", template="Claim: {sentence} True?")
    with pytest.raises(gr.Error, match="must contain {sentence}"):
        inputs.judge_settings(1, "logit", "custom", "Is it true?", LIMITS)
    with pytest.raises(gr.Error, match="judge prompt must be one of faithfulness, faithfulness_last, safety, custom"):
        inputs.judge_settings(1, "logit", "kindness", "", LIMITS)


def test_generation_settings_from_the_controls():
    assert inputs.generation_settings(3, "diverse-beam", 7, LIMITS) == GenerationSettings(
        n=3, strategy="diverse-beam", seed=7)
    with pytest.raises(gr.Error, match="number of candidates must be between 1 and 8, not 9"):
        inputs.generation_settings(9, "sample", 0, LIMITS)
    with pytest.raises(gr.Error, match="decoding strategy must be one of"):
        inputs.generation_settings(2, "nucleus", 0, LIMITS)


def test_read_image_turns_image_errors_into_gr_errors(tmp_path):
    with pytest.raises(gr.Error, match="No image"):
        inputs.read_image(None, LIMITS)
    (tmp_path / "x.png").write_text("text")
    with pytest.raises(gr.Error, match="not a readable image"):
        inputs.read_image(str(tmp_path / "x.png"), LIMITS)
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(tmp_path / "a.png")
    assert inputs.read_image(str(tmp_path / "a.png"), LIMITS).getpixel((0, 0)) == (255, 255, 255)


def test_scene_image_checks_the_seed():
    seed, image = inputs.scene_image(21.0)
    assert (seed, image.size) == (21, (96, 96))
    with pytest.raises(gr.Error, match="scene seed must be between 0 and 2147483647, not -1"):
        inputs.scene_image(-1)
