"""A real browser (Debian's chromium, driven by Playwright) uploads an image, scores it, edits and accepts
a pair, and finds that pair in the Curate tab. Skipped where /usr/bin/chromium is absent (CI installs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.data.store import Store
from core.shapes.world import make_scene, render
from tests.running_studio import start_studio

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CHOSEN = "A browser-chosen answer about a purple cross."

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install chromium")


@pytest.fixture(scope="module")
def page(tiny_llava_dir, tmp_path_factory):
    """(page, url, settings): a chromium page next to a running studio on the tiny model."""
    from playwright.sync_api import sync_playwright

    demo, url, settings = start_studio(tiny_llava_dir, tmp_path_factory.mktemp("browser_data"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(180_000)  # generous: CI machines may be busy
        yield page, url, settings
        browser.close()
    demo.close()


def test_upload_score_accept_and_find_it_in_curate(page, tmp_path):
    page, url, settings = page
    image_path = tmp_path / "upload.png"
    render(make_scene(22)).save(image_path)
    page.goto(url)
    page.locator("#explore-image-file input[type=file]").set_input_files(str(image_path))
    page.locator("#explore-preview img").wait_for()
    page.click("#explore-score")
    page.locator("#explore-status", has_text="Scored 4 candidates").wait_for()
    chosen_box = page.get_by_label("Chosen text (edit to correct it)")
    page.wait_for_function("el => el.value.length > 0", arg=chosen_box.element_handle())
    chosen_box.fill(CHOSEN)
    page.get_by_label("Note (optional)").fill("from the browser test")
    page.click("#explore-accept")
    page.locator("#explore-accepted", has_text="Saved pair #1").wait_for()

    page.get_by_role("tab", name="Curate").click()
    page.locator("#curate-search input, #curate-search textarea").first.fill("browser-chosen")
    page.click("#curate-search-button")
    page.locator("#curate-table", has_text=CHOSEN).wait_for()

    [pair] = Store(settings.data.db_path).list_pairs()
    assert (pair.chosen, pair.note, pair.source, pair.chosen_scores["edited"]) == (
        CHOSEN, "from the browser test", "human", True)


def test_self_curate_fine_tune_and_open_the_adapter_in_explore(page):
    page, url, settings = page
    page.goto(url)
    page.get_by_role("tab", name="Fine-tune").click()
    page.get_by_text("Self-curation: the model makes its own pairs").click()
    page.get_by_label("Images (N)").fill("3")
    page.click("#finetune-self-curate")
    page.locator("#finetune-curate-status", has_text="Self-curated 3 scenes").wait_for()
    page.get_by_label("Adapter name (letters, digits, - and _; empty: dated)").fill("browser run")
    page.click("#finetune-start")
    page.locator("#finetune-status", has_text="Started run #1 **browser-run**").or_(
        page.locator("#finetune-status", has_text="Started run #1 browser-run")).wait_for()
    page.locator("#finetune-progress", has_text="finished after").wait_for(timeout=240_000)
    page.click("#finetune-explore")
    page.locator("#explore-score").wait_for(state="visible")  # the Explore tab is open again
    seed_box = page.get_by_label("Scene seed (Enter to draw it)")
    seed_box.fill("22")
    seed_box.press("Enter")
    page.locator("#explore-preview img").wait_for()
    page.get_by_role("button", name="Base model vs fine-tuned adapter").click()
    page.click("#explore-compare")  # the adapter the run made is already picked
    page.locator("#explore-comparison", has_text="browser-run").wait_for()

    run = Store(settings.data.db_path).get_run(1)
    assert (run["status"], run["error"], Path(run["adapter_path"]).name) == ("finished", "", "browser-run")
    assert (Path(run["adapter_path"]) / "adapter_model.safetensors").is_file()
    assert Store(settings.data.db_path).count_pairs(source="self") >= 1
