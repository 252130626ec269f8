"""Tests for selfjudge_ui/explore.py handlers that need no model: stale marking, the off-world banner, row picks."""

from __future__ import annotations

import dataclasses

import gradio as gr
import pytest

from core.config import EMBEDDED_MODEL, DataSettings, ModelSettings
from core.engine.images import image_sha256
from core.shapes.world import make_scene, render
from selfjudge_ui.explore import Explore
from selfjudge_ui.settings import StudioSettings
from tests.test_domain import photo_of_a_house


@pytest.fixture
def explore(tmp_path):
    settings = StudioSettings(model=ModelSettings(model=str(EMBEDDED_MODEL)), data=DataSettings(data_dir=tmp_path))
    return Explore(settings, lambda: None)


@pytest.fixture
def files(tmp_path):
    scene, photo = tmp_path / "scene.png", tmp_path / "house.png"
    render(make_scene(21)).save(scene)
    photo_of_a_house().save(photo)
    return scene, photo


def _shown(markdown: gr.Markdown) -> tuple[bool, str]:
    return markdown.visible, markdown.value


def test_results_of_another_image_are_marked_stale(explore, files):
    scene, photo = files
    payload = {"result": {}, "image_sha256": image_sha256(render(make_scene(21)))}
    stale, domain = explore.image_changed(payload, str(scene))
    assert _shown(stale) == (False, "") and _shown(domain) == (False, "")  # the same image: still current
    stale, _ = explore.image_changed(payload, str(photo))
    assert stale.visible and stale.value.startswith("**Stale: the results below belong to the previous image.**")
    assert explore.image_changed(payload, None)[0].visible  # the image was cleared
    assert not explore.image_changed(None, str(photo))[0].visible  # nothing scored yet: nothing is stale


def test_a_photo_on_the_shapes_model_gets_the_banner_and_a_real_model_does_not(explore, files, tmp_path):
    scene, photo = files
    _, domain = explore.image_changed(None, str(photo))
    assert domain.visible and domain.value.startswith("**This does not look like a shapes scene.**")
    assert "python app.py --model Qwen/Qwen2-VL-2B-Instruct" in domain.value
    real = dataclasses.replace(explore.settings, model=ModelSettings(model="llava-hf/llava-1.5-7b-hf"))
    assert Explore(real, lambda: None).domain_note(render(make_scene(3)).resize((300, 300))) == ""
    assert Explore(real, lambda: None).domain_note(photo_of_a_house()) == ""


def test_a_clicked_row_picks_the_candidate_of_that_rank(explore):
    payload = {"result": {"candidates": [{"rank": 3}, {"rank": 1}, {"rank": 2}]}}
    picks = [explore.pick_row(payload, gr.SelectData(None, {"index": [row, 2], "value": ""})) for row in range(3)]
    assert picks == [2, 3, 1]  # rows are in rank order; the answer is the 1-based candidate number
    with pytest.raises(gr.Error, match="no longer shown"):
        explore.pick_row(payload, gr.SelectData(None, {"index": [5, 0], "value": ""}))
    with pytest.raises(gr.Error, match="Score an image first"):
        explore.pick_row(None, gr.SelectData(None, {"index": [0, 0], "value": ""}))


def test_an_upload_is_checked_at_once(explore, files, tmp_path):
    scene, _ = files
    assert explore.show_upload({"path": str(scene)}) == (str(scene), None, "No ground truth for uploaded images.")
    assert explore.show_upload(None) == (None, None, "")
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(gr.Error, match="not a readable image"):
        explore.show_upload({"path": str(bad)})


def test_decoding_names_the_proposals_debiasing_alone_rejected(explore, tmp_path):
    # Test scene 0 with the decode section's defaults (docs/studio.md, "To see one"): at steps 2 and 3 the
    # embedded model proposes absent orange circles (frequent in text) that the raw judge would keep.
    from core.engine.prompts import DESCRIBE_QUESTION
    from selfjudge_ui import plots

    path = tmp_path / "scene0.png"
    render(make_scene(0)).save(path)
    _text, figure, rows, _report, _run = explore.decode(str(path), DESCRIBE_QUESTION, "debiased-judged", 4, 64, 0,
                                                        1.0, "logit", "faithfulness", "", progress=lambda *a, **k: None)
    flipped = [row for row in rows if "debiasing removed it" in row[6]]
    assert sorted(row[1].strip("└ ").strip() for row in flipped) == [
        "A large orange circle is at the bottom.", "A large orange circle is at the bottom.",
        "A large orange circle is in the centre.", "A small orange circle is on the left."]
    assert ("orange", "circle") not in make_scene(0).names()
    assert flipped[0][5] < 0  # debiased log-odds below reject_below, the raw judge's above it
    assert plots.FLIPPED in {trace.name for trace in figure.data}
    raw_judged = explore.decode(str(path), DESCRIBE_QUESTION, "raw-judged", 4, 64, 0, 1.0, "logit", "faithfulness", "",
                                progress=lambda *a, **k: None)[2]
    assert not any("debiasing" in row[6] for row in raw_judged)  # alpha 0: nothing for debiasing to decide
