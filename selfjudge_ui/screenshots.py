"""Screenshots of every tab for the README, taken in a real browser (Playwright + Debian's chromium).

Starts the studio in-process on a throw-away data folder, draws a shapes scene by its seed,
scores it, accepts the default pair, runs self-judged decoding on a second scene (one where debiasing
alone rejects a proposal), opens the pair in Curate and shows the Fine-tune tab.

Run:  python -m selfjudge_ui.screenshots --out docs            # the embedded model, desktop width
      python -m selfjudge_ui.screenshots --out docs --width 390  # a phone (390x844): *-390.png
      python -m selfjudge_ui.screenshots --model /path/to/model --out /tmp/shots
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from core.config import DataSettings, ModelSettings
from selfjudge_ui.app import build_app, launch_options
from selfjudge_ui.settings import StudioSettings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


DESKTOP_WIDTH = 1280
PHONE_HEIGHT = 844  # an iPhone 12-14 sized screen


def take_screenshots(model: str, out: Path, seed: int = 6, port: int = 7891, timeout_ms: int = 600_000,
                     width: int = DESKTOP_WIDTH, decode_seed: int = 0) -> list[Path]:
    """Drive the studio through its main flow and save one PNG per tab (and one of the decoding tree).

    At the desktop width the PNGs are <tab>.png, whole pages; at any other width they are <tab>-<width>.png,
    and Explore is also shot as the first screen a person sees after scoring (explore-<width>-results.png).
    """
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="selfjudge-shots-") as scratch:
        # Named "data" like the default folder, since the page header shows the data folder's name.
        settings = StudioSettings(model=ModelSettings(model=model), data=DataSettings(data_dir=Path(scratch) / "data"))
        demo = build_app(settings)
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                                **{**launch_options(settings), "server_name": "127.0.0.1", "server_port": port})
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                height = 900 if width == DESKTOP_WIDTH else PHONE_HEIGHT
                page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
                page.set_default_timeout(timeout_ms)
                suffix = "" if width == DESKTOP_WIDTH else f"-{width}"
                saved = (_explore(page, url, out, seed, suffix, decode_seed) + _curate(page, out, suffix)
                         + _finetune(page, out, suffix))
                browser.close()
        finally:
            demo.close()
    return saved


def _draw_scene(page, seed: int) -> None:
    page.locator("#explore-scene-seed input").fill(str(seed))
    page.locator("#explore-scene-seed input").press("Enter")
    page.locator("#explore-truth", has_text=f"scene {seed}:").wait_for()


def _explore(page, url: str, out: Path, seed: int, suffix: str, decode_seed: int) -> list[Path]:
    page.goto(url)
    _draw_scene(page, seed)
    page.click("#explore-score")
    page.locator("#explore-status", has_text="Scored").wait_for()
    page.wait_for_timeout(1500)  # plots finish drawing, the view finishes scrolling to the results
    saved = [out / f"explore{suffix}.png"]
    if suffix:
        saved.append(out / f"explore{suffix}-results.png")
        page.screenshot(path=saved[-1])  # what the person sees right after pressing the button
    page.screenshot(path=saved[0], full_page=True)
    page.click("#explore-accept")
    page.locator("#explore-accepted", has_text="Saved pair").wait_for()
    _draw_scene(page, decode_seed)
    page.get_by_text("Self-judged decoding").click()
    page.click("#explore-decode")
    page.locator("#explore-decoded", has_text="debiased-judged").wait_for()
    page.locator("#explore-decode-stop", has_text="Stopped because").wait_for()
    page.wait_for_timeout(1500)
    page.locator("#explore-decode-section").screenshot(path=out / f"decode{suffix}.png")
    return [*saved, out / f"decode{suffix}.png"]


def _curate(page, out: Path, suffix: str) -> list[Path]:
    page.get_by_role("tab", name="Curate").click()
    page.locator("#curate-summary", has_text="of 1 pairs").wait_for()  # listed without pressing Search
    page.locator("#curate-gallery img").first.wait_for()
    page.locator("#curate-pair-id input, #curate-pair-id textarea").first.fill("1")
    page.click("#curate-open")
    page.locator("#curate-details", has_text="Pair #1").wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=out / f"curate{suffix}.png", full_page=True)
    return [out / f"curate{suffix}.png"]


def _finetune(page, out: Path, suffix: str) -> list[Path]:
    page.get_by_role("tab", name="Fine-tune").click()
    page.wait_for_timeout(1500)
    page.screenshot(path=out / f"finetune{suffix}.png", full_page=True)
    return [out / f"finetune{suffix}.png"]


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m selfjudge_ui.screenshots", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=ModelSettings().model, help="model folder or hub id (default: embedded)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs (default docs/)")
    parser.add_argument("--seed", type=int, default=6, help="shapes scene to explore (default 6, one of Explore's "
                        "examples: the raw judge prefers a candidate that adds an absent orange circle, frequent in "
                        "text; the debiased judge prefers a faithful one)")
    parser.add_argument("--decode-seed", type=int, default=0, help="shapes scene to decode (default 0: at steps 2 "
                        "and 3 debiasing alone rejects absent orange circles, frequent in text, that the raw judge "
                        "would keep)")
    parser.add_argument("--port", type=int, default=7891, help="local port for the temporary server")
    parser.add_argument("--width", type=int, default=DESKTOP_WIDTH,
                        help=f"browser width in pixels (default {DESKTOP_WIDTH}; e.g. 390 for a phone, "
                             f"{PHONE_HEIGHT} px tall)")
    args = parser.parse_args(argv)
    for path in take_screenshots(args.model, args.out, args.seed, args.port, width=args.width,
                                 decode_seed=args.decode_seed):
        print(path)


if __name__ == "__main__":
    main()
