"""The whole studio as one gr.Blocks: a header, the admin controls, and the tabs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from core.config import display_model_id
from core.training.finetune import recover_runs
from core.data.store import Store
from selfjudge_ui.access import admin_controls
from selfjudge_ui.curate import build_curate_tab
from selfjudge_ui.explore import EXAMPLES_DIR, build_explore_tab
from selfjudge_ui.finetune import build_finetune_tab
from selfjudge_ui.settings import StudioSettings

QUEUE_SIZE = 64  # requests waiting beyond this are refused with "queue full" rather than piling up
# Layout touches gradio's defaults do not give: table headers that never wrap letter by letter,
# token chips, small help text, stale results faded, and a compact page on a phone.
STUDIO_CSS = """
.sj-table [role=grid] * { font-family: var(--font) !important; }
.sj-table [role=columnheader] * { word-break: keep-all !important; overflow-wrap: normal !important;
  font-size: 0.95em; }
.sj-help { font-size: 0.85em; opacity: 0.85; }
.sj-tokens { display: flex; flex-wrap: wrap; gap: 3px; margin-top: 6px; }
.sj-token { padding: 1px 4px; border-radius: 4px; border: 1px solid #ddd; font-family: monospace; }
.sj-legend { font-size: 0.9em; }
.sj-banner { background: #fff4e5; border-left: 4px solid #f0a020; padding: 4px 10px !important;
  border-radius: 4px; }
#explore-results:has(#explore-stale) #explore-candidates, #explore-results:has(#explore-stale) #explore-sentences,
#explore-results:has(#explore-stale) #explore-tokens, #explore-results:has(#explore-stale) .js-plotly-plot {
  opacity: 0.4; }
.sj-table [role=grid] { font-size: 0.9em; }
@media (max-width: 640px) {
  .gradio-container { padding: 4px !important; }
  #explore-image { max-height: 200px; }
  h1 { font-size: 1.3em; }
}
"""


def store_opener(db_path: Path) -> Callable[[], Store]:
    """A function returning the one Store of this app, opened on first use (Store is thread-safe)."""
    opened: list[Store] = []
    lock = threading.Lock()

    def store() -> Store:
        with lock:
            if not opened:
                opened.append(Store(db_path))
            return opened[0]

    return store


def _header(settings: StudioSettings) -> str:
    model = settings.model
    extras = [f"adapter {display_model_id(model.adapter)}" if model.adapter else "",
              "4-bit" if model.load_in_4bit else ""]
    details = ", ".join(e for e in extras if e)
    # Names only: the page never shows where things live on the server.
    return ("# SelfJudge Studio\nFind, measure and train away hallucinations with the debiased self-judgment "
            "score S = (1+alpha) Score(image) - alpha Score(no image) (Yang et al., arXiv 2508.20655).  \n"
            f"Model: `{display_model_id(model.model)}`{' (' + details + ')' if details else ''}; loaded on first "
            f"use. Data folder: `{settings.data.data_dir.name}`.")


def build_app(settings: StudioSettings | None = None) -> gr.Blocks:
    """The studio's Blocks, queued (one run per action at a time; the rest wait their turn)."""
    settings = settings or StudioSettings()
    store_factory = store_opener(settings.data.db_path)
    recover_runs(settings.data.db_path)  # runs a killed studio left "running" are marked failed
    # Uploaded and generated files are removed from gradio's cache after a day.
    with gr.Blocks(title="SelfJudge Studio", delete_cache=(3600, 86400)) as demo:
        gr.Markdown(_header(settings))
        admin_token = admin_controls(settings.access)
        with gr.Tabs() as tabs:
            with gr.Tab("Explore", id="explore"):
                explore = build_explore_tab(settings, store_factory)
            with gr.Tab("Curate", id="curate") as curate_tab:
                curate = build_curate_tab(store_factory, admin_token=admin_token, access=settings.access,
                                          limits=settings.limits)
            with gr.Tab("Fine-tune", id="finetune") as finetune_tab:
                finetune = build_finetune_tab(settings, store_factory, admin_token=admin_token,
                                              explore_adapter=explore.adapter_picker, tabs=tabs,
                                              explore_compare=explore.compare_section)
        # Each tab shows the store as it is now: when it is opened, and after a pair is accepted.
        for listener in (curate_tab.select, explore.accepted.success):
            curate.live.refresh_on(listener)
        for listener in (finetune_tab.select, explore.accepted.success):
            finetune.live.refresh_on(listener)
    return demo.queue(max_size=QUEUE_SIZE)


def launch_options(settings: StudioSettings) -> dict:
    """Keyword arguments for Blocks.launch: where to serve, upload size cap, the example folder, the studio's CSS."""
    return {"server_name": settings.host, "server_port": settings.port, "share": settings.share,
            "max_file_size": settings.max_file_size, "allowed_paths": [str(EXAMPLES_DIR)], "css": STUDIO_CSS}
