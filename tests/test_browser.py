"""A real browser (Debian's chromium, driven by Playwright) walks the studio as a person does and checks what
they see: results in view after scoring, a busy button, the best candidate highlighted, stale results marked,
no error overlay on the tables, the off-world banner for a photo, Curate up to date without a click, judged
decoding's rule, stop reason and kept runs, no server path anywhere, a usable phone layout, and the
fine-tune -> compare hand-off.
Skipped where /usr/bin/chromium is absent (CI installs it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.config import EMBEDDED_MODEL, REPO_ROOT
from core.data.store import Store
from core.shapes.world import make_scene, render
from selfjudge_ui.explore import BUSY_LABEL
from tests.running_studio import start_studio
from tests.test_domain import photo_of_a_house

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CHOSEN = "A browser-chosen answer about a purple cross."
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
BEST_ROW = "rgb(227, 244, 232)"  # views.BEST_ROW's background

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install chromium")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _page(browser, viewport: dict):
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(180_000)  # generous: CI machines may be busy
    return page


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """(url, settings) of a running studio on the embedded shapes model, as a first-time user meets it."""
    demo, url, settings = start_studio(EMBEDDED_MODEL, tmp_path_factory.mktemp("embedded_data"))
    yield url, settings
    demo.close()


@pytest.fixture(scope="module")
def tiny(tiny_llava_dir, tmp_path_factory):
    """(url, settings) of a running studio on the tiny model (fast to fine-tune)."""
    demo, url, settings = start_studio(tiny_llava_dir, tmp_path_factory.mktemp("browser_data"))
    yield url, settings
    demo.close()


def _in_viewport(page, selector: str) -> bool:
    box = page.locator(selector).first.bounding_box()
    height = page.viewport_size["height"]
    return box is not None and box["y"] >= -2 and box["y"] + min(box["height"], 80) <= height  # -2: sub-pixel scroll


def _server_paths(page, settings) -> list[str]:
    """Absolute server paths in the page's visible text (there should be none)."""
    text = page.inner_text("body")
    roots = {str(settings.data.data_dir), str(REPO_ROOT), str(Path(settings.model.model).parent), "/tmp/", "/root/",
             "/home/"}
    return [root for root in roots if root in text]


def _draw_scene(page, seed: int) -> None:
    box = page.locator("#explore-scene-seed input")
    box.fill(str(seed))
    box.press("Enter")
    page.locator("#explore-truth", has_text=f"scene {seed}:").wait_for()


def _set_number(page, box, value: str, tries: int = 5) -> None:
    """Type a number and make sure it stays before anything is clicked: twice the default 20 reached the
    server instead of the typed value (our guess, not shown: a box in a just-opened accordion still mounting)."""
    for _ in range(tries):
        box.fill(value)
        box.press("Tab")  # commit the value before a click sends it
        page.wait_for_timeout(400)
        if box.input_value() == value:
            return
    raise AssertionError(f"the number box kept {box.input_value()!r}, not {value!r}")


def _watch_button_labels(page) -> None:
    page.evaluate("""() => { window.seenLabels = [];
        const button = document.getElementById('explore-score');
        new MutationObserver(() => window.seenLabels.push(button.textContent.trim()))
            .observe(button, {childList: true, subtree: true, characterData: true, attributes: true}); }""")


def test_a_first_visit_on_the_embedded_model(browser, embedded, tmp_path):
    url, settings = embedded
    page = _page(browser, DESKTOP)
    page.goto(url)
    page.locator("#explore-score").wait_for()
    assert _server_paths(page, settings) == []
    assert not page.locator("#explore-accept-section").is_visible()  # nothing to accept before scoring

    # Score a scene: the button says it is working, and the results appear in view.
    _draw_scene(page, 23)
    _watch_button_labels(page)
    page.click("#explore-score")
    page.locator("#explore-status", has_text="Scored 4 candidates with shapes-llava.").wait_for()
    assert any(BUSY_LABEL in label for label in page.evaluate("window.seenLabels"))
    page.locator("#explore-score", has_text="Generate and score").wait_for()
    assert _in_viewport(page, "#explore-status") and _in_viewport(page, "#explore-candidates [data-testid=cell-0-2]")
    # Best rank first and highlighted.
    assert page.locator("#explore-candidates [data-testid=cell-0-0]").inner_text().strip() == "1"
    assert page.locator("#explore-candidates [data-testid=cell-0-0]").evaluate(
        "el => getComputedStyle(el).backgroundColor") == BEST_ROW
    # Clicking the rank-2 row shows that candidate's tokens.
    second = page.locator("#explore-candidates [data-testid=cell-1-1]").inner_text().strip()
    page.locator("#explore-candidates [data-testid=cell-1-2]").click()
    page.wait_for_function("label => [...document.querySelectorAll('input')].some(i => i.value.startsWith(label))",
                           arg=f"#{second} (rank 2")
    assert page.locator("#explore-tokens .sj-token").count() > 3

    # Accept the default pair; Curate already lists it when opened, with no Search click.
    page.locator("#explore-accept-section").scroll_into_view_if_needed()
    page.click("#explore-accept")
    page.locator("#explore-accepted", has_text="Saved pair #1").wait_for()
    page.get_by_role("tab", name="Curate").click()
    page.locator("#curate-summary", has_text="of 1 pairs").wait_for()
    page.locator("#curate-table", has_text="shapes-llava").wait_for()
    assert _server_paths(page, settings) == []
    page.get_by_role("tab", name="Fine-tune").click()
    page.locator("#finetune-pair-count", has_text="1 pairs").wait_for()
    assert not page.locator("#finetune-cancel").is_enabled()  # no run is going on

    # Another scene: the old results are marked stale (and faded) until the next scoring.
    page.get_by_role("tab", name="Explore").click()
    _draw_scene(page, 21)
    page.locator("#explore-stale", has_text="belong to the previous image").wait_for()
    assert float(page.locator("#explore-candidates").evaluate("el => getComputedStyle(el).opacity")) < 0.5
    # A mistake gets a message, not red "Error" boxes over the tables.
    page.get_by_label("Question").fill("")
    page.click("#explore-score")
    page.get_by_text("The question is empty").first.wait_for()
    page.locator("#explore-score", has_text="Generate and score").wait_for()
    for table in ("#explore-candidates", "#explore-sentences"):
        assert not re.search(r"\bError\b", page.locator(table).inner_text()), table

    # A photo on the shapes-only model gets a banner that says what to do instead.
    photo = tmp_path / "house.png"
    photo_of_a_house().save(photo)
    page.locator("#explore-image input[type=file]").set_input_files(str(photo))
    page.locator("#explore-domain", has_text="does not look like a shapes scene").wait_for()
    assert "python app.py --model" in page.locator("#explore-domain").inner_text()
    _draw_scene(page, 22)
    page.locator("#explore-domain").wait_for(state="hidden")

    # Judged decoding says why it stopped and by which rule, and keeps each run for comparison.
    page.get_by_label("Question").fill("Describe the image.")
    page.get_by_text("Self-judged decoding").click()
    page.click("#explore-decode")
    page.locator("#explore-decode-stop", has_text="Stopped because").wait_for()
    assert "debiased log-odds ≥ -1" in page.locator("#explore-decode-stop").inner_text()
    page.locator("#explore-decode-section").get_by_label("greedy").check()
    page.click("#explore-decode")
    page.locator("#explore-decode-runs [data-testid=cell-1-1]", has_text="debiased-judged").wait_for()
    assert page.locator("#explore-decode-runs [data-testid=cell-0-1]").inner_text().strip() == "greedy"
    # With the safety defence ticked, its verdict is shown under the answer, naming the highest sentence.
    page.locator("#explore-decode-section").get_by_label("Safety defence").check()
    page.click("#explore-decode")
    page.locator("#explore-decode-runs [data-testid=cell-2-1]", has_text="debiased-judged").wait_for()
    report = page.locator("#explore-safety")
    assert report.is_visible()
    assert re.match(r"(Refused by|Passed) the safety defence \(threshold log-odds \+0\.00, P 0\.50\)\. "
                    r"Highest sentence: ", report.inner_text()), report.inner_text()
    assert _server_paths(page, settings) == []
    page.close()


def test_a_phone_sees_the_button_and_then_the_results(browser, embedded):
    url, _settings = embedded
    page = _page(browser, PHONE)
    page.goto(url)
    _draw_scene(page, 20)
    assert _in_viewport(page, "#explore-score")  # the button is on the first screen
    page.click("#explore-score")
    page.locator("#explore-status", has_text="Scored 4 candidates").wait_for()
    page.wait_for_timeout(800)  # the smooth scroll settles
    assert _in_viewport(page, "#explore-status")
    # Headers keep their words whole (one line, or two at a space), never a letter per line.
    heights = page.locator("#explore-candidates [role=columnheader]").evaluate_all(
        "cells => cells.map(c => c.querySelector('span').getBoundingClientRect().height)")
    assert heights and max(heights) < 50
    page.close()


def test_upload_score_accept_and_find_it_in_curate(browser, tiny, tmp_path):
    url, settings = tiny
    page = _page(browser, {"width": 1280, "height": 1000})
    image_path = tmp_path / "upload.png"
    render(make_scene(22)).save(image_path)
    page.goto(url)
    page.locator("#explore-image input[type=file]").set_input_files(str(image_path))
    page.locator("#explore-truth", has_text="No ground truth for uploaded images").wait_for()
    page.click("#explore-score")
    page.locator("#explore-status", has_text="Scored 4 candidates").wait_for()
    chosen_box = page.get_by_label("Chosen text (edit to correct it)")
    page.wait_for_function("el => el.value.length > 0", arg=chosen_box.element_handle())
    chosen_box.fill(CHOSEN)
    page.get_by_label("Note (optional)").fill("from the browser test")
    page.click("#explore-accept")
    page.locator("#explore-accepted", has_text="Saved pair #1").wait_for()

    page.get_by_role("tab", name="Curate").click()
    page.locator("#curate-table", has_text=CHOSEN).wait_for()  # listed without pressing Search
    assert page.locator("#curate-pair-id input").evaluate("el => el.value") == ""  # no 0, no red border
    page.set_viewport_size({"width": 1280, "height": 600})
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#curate-gallery img").first.click()  # the pair opens further down, and the page goes there
    page.locator("#curate-details", has_text="Pair #1").wait_for()
    page.wait_for_timeout(800)
    assert _in_viewport(page, "#curate-details")
    page.locator("#curate-search input, #curate-search textarea").first.fill("nothing like this")
    page.locator("#curate-search input, #curate-search textarea").first.press("Enter")
    page.locator("#curate-summary", has_text="of 0 pairs").wait_for()

    [pair] = Store(settings.data.db_path).list_pairs()
    assert (pair.chosen, pair.note, pair.source, pair.chosen_scores["edited"]) == (
        CHOSEN, "from the browser test", "human", True)
    page.close()


def test_self_curate_fine_tune_and_open_the_adapter_in_explore(browser, tiny):
    url, settings = tiny
    page = _page(browser, {"width": 1280, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_text("Self-curation: the model makes its own pairs").click()
    _set_number(page, page.get_by_label("Images (N)"), "3")
    page.click("#finetune-self-curate")
    status = page.locator("#finetune-curate-status", has_text="Self-curated")
    status.wait_for()
    assert "Self-curated 3 scenes" in status.inner_text()
    page.get_by_label("Adapter name (letters, digits, - and _; empty: dated)").fill("browser run")
    page.click("#finetune-start")
    page.locator("#finetune-status", has_text="Started run #1 **browser-run**").or_(
        page.locator("#finetune-status", has_text="Started run #1 browser-run")).wait_for()
    page.locator("#finetune-progress", has_text="finished after").wait_for(timeout=240_000)
    page.wait_for_function("() => document.querySelector('#finetune-cancel').disabled")  # finished: nothing to cancel
    assert _server_paths(page, settings) == []
    page.click("#finetune-explore")
    # Explore opens at the comparison, with the run's adapter picked.
    page.locator("#explore-compare").wait_for(state="visible")
    page.wait_for_timeout(800)
    assert _in_viewport(page, "#explore-compare")
    _draw_scene(page, 22)
    page.click("#explore-compare")
    page.locator("#explore-comparison", has_text="browser-run").wait_for()
    assert page.locator("#explore-compare-base").is_visible() and page.locator("#explore-compare-adapter").is_visible()

    run = Store(settings.data.db_path).get_run(1)
    assert (run["status"], run["error"], Path(run["adapter_path"]).name) == ("finished", "", "browser-run")
    assert (Path(run["adapter_path"]) / "adapter_model.safetensors").is_file()
    assert Store(settings.data.db_path).count_pairs(source="self") >= 1
    page.close()
