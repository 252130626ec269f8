"""Tests for selfjudge_ui/finetune.py: the Fine-tune tab's handlers with a temp store and the tiny LLaVA.

The training tests start real spawned processes (core.training.finetune.start_run), one epoch on two pairs.
"""

from __future__ import annotations

import html
import multiprocessing
import os
import pickle
import signal
import sys
import time
import types
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr
import pytest

from core.config import DataSettings, ModelSettings
from core.data.store import Pair, Store
from core.engine.loading import load_model
from core.shapes.world import make_scene, render
from core.training.dpo.settings import DPOSettings
from core.training.finetune import run_training
from selfjudge_ui.access import AccessSettings
from selfjudge_ui.finetune import (ALL, SCENES, ZERO_GPU_TRAINING, Finetune, adapter_name, build_finetune_tab,
                                   curves_figure, progress_html, run_row, since_filter)
from selfjudge_ui.settings import StudioSettings

LOCAL = AccessSettings(public=False, on_space=False, admins=(), admin_token="")
PUBLIC = AccessSettings(public=True, on_space=False, admins=(), admin_token="an-admin-token-of-24-chars")
# name, source, model, since, beta, loss, lr, epochs, batch size, LoRA r, LoRA alpha, train projector
GOOD = ["", ALL, ALL, "", 0.1, "sigmoid", 1e-3, 1, 2, 4, 8, False, 0.0]


def counting_clock():
    ticks = iter(range(1, 10_000))
    return lambda: f"2025-01-01T00:00:{next(ticks):02d}.000+00:00"


@pytest.fixture
def store(tmp_path):
    """Pair #1 self/shapes-llava at 00:00:02, #2 human/other at 00:00:04 (their images take ticks 1 and 3)."""
    store = Store(tmp_path / "data" / "selfjudge.db", clock=counting_clock())
    store.add_pair(Pair("", "Describe the image.", "A red circle.", "A blue star.", model_id="shapes-llava",
                        source="self"), render(make_scene(1)))
    store.add_pair(Pair("", "Describe the image.", "A green square.", "A red star.", model_id="other",
                        source="human"), render(make_scene(2)))
    yield store
    store.close()


def studio(tmp_path, tiny_llava_dir, access=LOCAL, model=None) -> StudioSettings:
    model = model or ModelSettings(model=str(tiny_llava_dir), device="cpu", dtype="float32", adapter="",
                                   load_in_4bit=False)
    return StudioSettings(model=model, data=DataSettings(data_dir=tmp_path / "data"), access=access)


@pytest.fixture
def tab(store, tmp_path, tiny_llava_dir):
    return Finetune(studio(tmp_path, tiny_llava_dir), lambda: store)


def error_message(call) -> str:
    with pytest.raises(gr.Error) as caught:
        call()
    return caught.value.message


def wait_until_done(handlers: Finetune, run_id: int, timeout_s: float = 300) -> tuple:
    """Poll like the page's timer until it stops, then wait for the training process to exit."""
    deadline = time.monotonic() + timeout_s
    while True:
        shown = handlers.watch(run_id)
        if not shown[3].active:
            break
        assert time.monotonic() < deadline, f"run #{run_id} did not end in {timeout_s} s"
        time.sleep(0.5)
    for process in multiprocessing.active_children():
        if process.name == f"dpo-run-{run_id}":
            process.join(timeout=60)
    return shown


# Pure helpers --------------------------------------------------------------------------------------

def test_adapter_names_are_slugs_or_dated():
    now = datetime(2026, 5, 1, 12, 30, 5, tzinfo=timezone.utc)
    assert adapter_name("My run #1!", now) == "my-run-1"
    assert adapter_name("../../etc/passwd", now) == "etc-passwd"
    assert adapter_name(".hidden", now) == "hidden"
    assert [adapter_name(typed, now) for typed in ("", None, "...", "//")] == ["dpo-20260501-123005"] * 4
    assert adapter_name("x" * 100, now) == "x" * 64


def test_since_is_read_as_utc_in_the_store_format():
    assert since_filter("") == ""
    assert since_filter("2026-05-01") == "2026-05-01T00:00:00.000+00:00"
    assert since_filter("2026-05-01 14:30+02:00") == "2026-05-01T12:30:00.000+00:00"
    assert error_message(lambda: since_filter("last week")) == (
        "'Since' must be a date like 2026-05-01 or 2026-05-01 14:30 (UTC), not 'last week'.")


def test_progress_curves_and_history_row_of_a_run():
    run = {"id": 3, "name": "a<b", "status": "running", "error": "", "adapter_path": "",
           "created_at": "2025-01-01T00:00:01.000+00:00", "finished_at": None,
           "params": {"pairs": 5, "dpo": {"beta": 0.1, "loss": "ipo", "lr": 0.0005, "epochs": 2, "batch_size": 2,
                                          "lora_r": 8, "lora_alpha": 16, "train_projector": True}},
           "metrics": [{"step": 1, "loss": 0.69, "reward_chosen": 0.01, "reward_rejected": -0.02, "margin": 0.03,
                        "accuracy": 1.0},
                       {"step": 2, "loss": 0.6, "reward_chosen": 0.05, "reward_rejected": -0.1, "margin": 0.15,
                        "accuracy": 0.5}]}
    assert progress_html(run) == ('<progress value="2" max="6" style="width:100%"></progress>'
                                  "<div>Run #3 <b>a&lt;b</b>: training, step 2/6</div>")
    figure = curves_figure(run)
    assert [(trace.name, list(trace.x), list(trace.y)) for trace in figure.data] == [
        ("loss", [1, 2], [0.69, 0.6]), ("chosen", [1, 2], [0.01, 0.05]), ("rejected", [1, 2], [-0.02, -0.1]),
        ("margin", [1, 2], [0.03, 0.15]), ("accuracy", [1, 2], [1.0, 0.5])]
    assert (figure.layout.xaxis.dtick, figure.layout.xaxis.tickformat) == (1, "d")  # whole steps, no 1.5
    long_run = {**run, "metrics": [{**run["metrics"][0], "step": step} for step in range(1, 46)]}
    assert curves_figure(long_run).layout.xaxis.dtick == 5
    assert run_row(run) == [3, "a<b", "running", 5, "ipo beta=0.1 lr=0.0005 epochs=2 batch=2 LoRA r=8/alpha=16 "
                            "+projector", 2, 0.6, 0.15, 0.5, "", "", "2025-01-01 00:00:01", ""]
    # A half-written adapter is never offered: only finished rows show their adapter path.
    assert run_row({**run, "status": "failed", "adapter_path": "/a"})[9] == ""
    assert run_row({**run, "status": "finished", "adapter_path": "/srv/data/adapters/a"})[9] == "a"  # name, no path


# Checks before anything starts --------------------------------------------------------------------

def test_pair_count_follows_the_filters(tab):
    assert tab.count_pairs(ALL, ALL, "") == ("**2 pairs** selected for training.",
                                             {"__type__": "update",
                                              "choices": [ALL, ("other", "other"), ("shapes-llava", "shapes-llava")],
                                              "value": ALL})
    assert tab.count_pairs("self", ALL, "")[0] == "**1 pairs** selected for training."
    assert tab.count_pairs(ALL, "other", "")[0] == "**1 pairs** selected for training."
    assert tab.count_pairs(ALL, ALL, "2025-01-01 00:00:03")[0] == "**1 pairs** selected for training."
    assert tab.count_pairs("self", ALL, "2025-01-01 00:00:03")[0] == "**0 pairs** selected for training."


def test_no_pairs_selected_raises_and_starts_nothing(tab, store, tmp_path):
    message = error_message(lambda: tab.start_finetune("", "self", "other", "", *GOOD[4:]))
    assert message.startswith("No pairs selected: no stored pair matches these filters.")
    assert store.list_runs() == [] and not (tmp_path / "data" / "adapters").exists()


@pytest.mark.parametrize("index, value, message", [
    (4, 0.0, "beta must be between 0.001 and 10, not 0."),
    (5, "dpo", "loss must be one of sigmoid, ipo, not 'dpo'."),
    (6, 2.0, "learning rate must be between 1e-07 and 0.1, not 2."),
    (7, 0, "epochs must be between 1 and 20, not 0."),
    (8, 2.5, "batch size must be a whole number, not 2.5."),
    (9, 1000, "LoRA r must be between 1 and 256, not 1000."),
    (10, None, "LoRA alpha must be a number between 1 and 512, not None."),
    (11, "yes", "train projector must be true or false, not 'yes'."),
    (12, -1.0, "chosen NLL weight must be between 0 and 10, not -1."),
    (1, "robot", "Source must be all, human or self, not 'robot'."),
])
def test_out_of_range_hyperparameters_raise_and_start_nothing(tab, store, index, value, message):
    values = list(GOOD)
    values[index] = value
    assert error_message(lambda: tab.start_finetune(*values)) == message
    assert store.list_runs() == []


def test_public_deployment_needs_an_admin_for_costly_actions(store, tmp_path, tiny_llava_dir):
    public = Finetune(studio(tmp_path, tiny_llava_dir, access=PUBLIC), lambda: store)
    refused = "This is a public deployment: sign in with Hugging Face as an admin, or enter the admin token, to do this"
    assert error_message(lambda: public.start_finetune(*GOOD, token="wrong")) == refused
    assert error_message(lambda: public.cancel_finetune(1)) == refused
    assert error_message(lambda: public.self_curate(SCENES, 1, 2_000_000, "debiased", 2, 8, 1.0, 0)) == refused
    assert store.list_runs() == [] and len(store.list_pairs()) == 2


def test_self_curation_takes_no_typed_folder(tab):
    assert error_message(lambda: tab.self_curate("server folder", 1, 2_000_000, "debiased", 2, 8, 1.0, 0)) == (
        "images must be one of fresh shapes scenes, not 'server folder'.")
    assert error_message(lambda: tab.self_curate(SCENES, 1, 5, "debiased", 2, 8, 1.0, 0)) == (
        "first scene seed must be between 2000000 and 2147483646, not 5.")


# Background runs (spawned processes) --------------------------------------------------------------

def test_a_run_trains_in_the_background_and_its_adapter_loads(tab, store, tmp_path, tiny_llava_dir):
    run_id, status, timer = tab.start_finetune("Tiny run!", *GOOD[1:-1], 0.5)
    assert status == ("Started run #1 **tiny-run** as local: 2 pairs, 1 steps. It trains in the background; "
                      "you can keep using the studio.")
    assert timer.active
    assert error_message(lambda: tab.adapter_for_explore(run_id)).startswith(f"Run #{run_id} is ")
    progress, _, rows, timer = wait_until_done(tab, run_id)
    adapter = tmp_path / "data" / "adapters" / "tiny-run"
    run = store.get_run(run_id)
    assert (run["status"], run["error"], run["adapter_path"], run["params"]["pairs"]) == (
        "finished", "", str(adapter), 2)
    assert [m["step"] for m in run["metrics"]] == [1]
    assert run["params"]["dpo"]["sft_weight"] == 0.5  # the chosen-NLL control reaches the trainer
    assert progress == ('<progress value="1" max="1" style="width:100%"></progress><div>Run #1 <b>tiny-run</b>: '
                        "finished after 1 steps; adapter saved as <code>tiny-run</code> (Open adapter in Explore "
                        "compares it with the base model)</div>")
    assert [row[:4] + row[5:6] + row[9:11] for row in rows] == [[1, "tiny-run", "finished", 2, 1, "tiny-run", ""]]
    assert tab.can_cancel(run_id) == {"__type__": "update", "interactive": False}  # finished: nothing to cancel
    dropdown, tabs, _, compare_section = tab.adapter_for_explore(run_id)
    assert compare_section.open  # Explore opens at the comparison
    assert (dropdown, tabs.selected) == ({"__type__": "update", "choices": ["tiny-run"], "value": "tiny-run"},
                                         "explore")
    loaded = load_model(ModelSettings(model=str(tiny_llava_dir), adapter=str(adapter), device="cpu",
                                      dtype="float32", load_in_4bit=False))
    lora = sorted(name for name, _ in loaded.model.named_parameters() if "lora_A" in name)
    assert (loaded.adapter, len(lora)) == (str(adapter), 14)  # 2 layers x 7 projections
    assert error_message(lambda: tab.start_finetune("tiny run", *GOOD[1:])) == (
        "An adapter named 'tiny-run' already exists; type another name (or leave it empty for a dated one).")


def kill_worker(run_id: int) -> None:
    """SIGKILL a run's training process (what the kernel's out-of-memory killer does) and reap it."""
    process = next(p for p in multiprocessing.active_children() if p.name == f"dpo-run-{run_id}")
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=60)


def test_cancel_marks_the_run_cancelled_and_keeps_no_adapter(tab, store, tmp_path):
    run_id, _, _ = tab.start_finetune("stop-me", *GOOD[1:])
    assert tab.cancel_finetune(run_id) == (f"Cancelling run #{run_id}: it stops before its next step and keeps "
                                           "no adapter.")
    # The worker honouring the flag is tested in tests/test_finetune.py; here it need not even start.
    kill_worker(run_id)
    progress, _, rows, timer = tab.watch(run_id)
    assert (store.get_run(run_id)["status"], rows[0][2], rows[0][9], timer.active) == (
        "cancelled", "cancelled", "", False)
    assert progress.endswith("<b>stop-me</b>: cancelled at step 0/1; no adapter was kept</div>")
    assert error_message(lambda: tab.cancel_finetune(run_id)) == (
        f"Run #{run_id} is cancelled; only a queued or running run can be cancelled.")
    assert not (tmp_path / "data" / "adapters" / "stop-me").exists()


def test_a_killed_run_shows_failed_with_the_signal(tab, store):
    run_id, _, _ = tab.start_finetune("killed", *GOOD[1:])
    assert error_message(lambda: tab.start_finetune("another", *GOOD[1:])) == (
        f"Run #{run_id} is still training; wait for it or cancel it (one run at a time).")
    kill_worker(run_id)
    progress, _, rows, timer = tab.watch(run_id)
    error = ("the training process was killed by signal 9 (Killed); SIGKILL usually means the system ran out of "
             "memory: try a smaller batch size, gradient checkpointing or a 4-bit base")
    assert (store.get_run(run_id)["status"], store.get_run(run_id)["error"], timer.active) == ("failed", error, False)
    assert rows[0][2:3] + rows[0][9:11] == ["failed", "", error]
    assert progress.endswith(f"<b>killed</b>: <b>failed</b> at step 0/1: {error}</div>")


def test_a_run_that_raises_shows_failed_with_its_error(tab, store, tmp_path):
    # The worker's own path (core.training.finetune.run_training), in this process: the model does not load.
    missing = ModelSettings(model=str(tmp_path / "no-such-model"), device="cpu", dtype="float32", adapter="",
                            load_in_4bit=False)
    with pytest.raises(RuntimeError, match="could not load"):
        run_training(store.path, "broken", tmp_path / "data" / "adapters" / "broken", DPOSettings(), missing)
    run = store.list_runs()[0]
    progress, _, rows, timer = tab.watch(run["id"])
    assert run["error"].startswith("RuntimeError: could not load 'no-such-model'")  # no server path
    assert str(tmp_path) not in run["error"]
    assert (run["status"], rows[0][2:3] + rows[0][9:11], timer.active) == ("failed", ["failed", "", run["error"]],
                                                                           False)
    assert progress.endswith(f"<b>broken</b>: <b>failed</b> at step 0: {html.escape(run['error'])}</div>")


# Self-curation --------------------------------------------------------------------------------------

def test_self_curation_stores_self_pairs_with_progress(tab, store):
    calls = []
    status, next_seed = tab.self_curate(SCENES, 2, 2_000_000, "debiased", 2, 8, 1.0, 0,
                                        progress=lambda value, desc=None: calls.append((value, desc)))
    made = [p for p in store.list_pairs(source="self") if p.note.startswith("self-curated")]
    assert next_seed == 2_000_002
    assert calls[0] == (0.0, "Loading the model")
    assert [value for value, _ in calls[1:]] == [(1, 2), (2, 2)]
    assert calls[-1][1] == f"{len(made)} pairs kept, {2 - len(made)} without preference"
    assert status.startswith(f"Self-curated 2 scenes (seeds 2000000-2000001), ranked by **debiased**: stored "
                             f"{len(made)} pairs (source self), {2 - len(made)} images gave no preference; ")
    assert {p.note for p in made} <= {f"self-curated (debiased) from scene seed {seed}"
                                      for seed in (2_000_000, 2_000_001)}
    # Stored with the model folder's name, not its server path.
    assert all(p.model_id == Path(tab.settings.model.model).name and p.chosen != p.rejected for p in made)


def fake_zero_gpu(monkeypatch, inside: list) -> list:
    """SPACES_ZERO_GPU set and a `spaces` whose GPU call marks `inside` and pickles the result (as the fork does)."""
    durations = []

    def gpu(duration):
        def wrap(fn):
            def run(*args, **kwargs):
                durations.append(duration(*args, **kwargs))
                inside.append(True)
                try:
                    return pickle.loads(pickle.dumps(fn(*args, **kwargs)))
                finally:
                    inside.pop()
            return run
        return wrap

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    return durations


def test_on_zero_gpu_self_curation_judges_in_the_gpu_call_and_writes_outside_it(monkeypatch, store, tmp_path,
                                                                                tiny_llava_dir):
    inside: list = []
    durations = fake_zero_gpu(monkeypatch, inside)

    def store_outside_the_gpu_call() -> Store:
        assert not inside, "the store was opened inside the spaces.GPU call (a forked worker on ZeroGPU)"
        return store

    zero = Finetune(studio(tmp_path, tiny_llava_dir), store_outside_the_gpu_call)
    status, next_seed = zero.self_curate(SCENES, 2, 2_000_000, "debiased", 2, 8, 1.0, 0,
                                         progress=lambda value, desc=None: None)
    made = [p for p in store.list_pairs(source="self") if p.note.startswith("self-curated")]
    assert durations == [30 + 3 * 2 * 2] and next_seed == 2_000_002
    assert status.startswith(f"Self-curated 2 scenes (seeds 2000000-2000001), ranked by **debiased**: stored "
                             f"{len(made)} pairs (source self), {2 - len(made)} images gave no preference; ")


def test_on_zero_gpu_training_is_refused_and_its_button_disabled(monkeypatch, store, tmp_path, tiny_llava_dir):
    fake_zero_gpu(monkeypatch, [])
    zero = Finetune(studio(tmp_path, tiny_llava_dir), lambda: store)
    assert error_message(lambda: zero.start_finetune(*GOOD)) == ZERO_GPU_TRAINING
    assert store.list_runs() == []
    with gr.Blocks() as demo:
        build_finetune_tab(studio(tmp_path, tiny_llava_dir), lambda: store)
    blocks = list(demo.blocks.values())
    start = next(b for b in blocks if getattr(b, "elem_id", None) == "finetune-start")
    notice = next(b for b in blocks if getattr(b, "elem_id", None) == "finetune-zero-gpu")
    assert start.interactive is False
    assert "python -m core.training.dpo --db data/selfjudge.db" in notice.value


# Wiring ---------------------------------------------------------------------------------------------

def test_every_action_has_an_api_name(store, tmp_path, tiny_llava_dir):
    with gr.Blocks() as demo:
        with gr.Tabs() as tabs:
            with gr.Tab("Explore", id="explore"):
                explore_adapter = gr.Dropdown([], allow_custom_value=True)
            with gr.Tab("Fine-tune"):
                build_finetune_tab(studio(tmp_path, tiny_llava_dir), lambda: store, explore_adapter=explore_adapter,
                                   tabs=tabs)
    names = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert names == {"start_finetune", "cancel_finetune", "list_runs", "finetune_run", "open_adapter_in_explore",
                     "self_curate"}


def test_clicking_a_history_row_watches_that_run(tab, store):
    import pandas as pd

    first, second = store.add_run("first", {}), store.add_run("second", {})
    store.update_run(first, status="finished")
    rows = pd.DataFrame(tab.list_runs())
    clicked = gr.SelectData(None, {"index": [1, 2], "value": "finished"})
    picked = tab.pick_run(rows, clicked)
    assert (picked[0], picked[1], picked[4].active) == (
        first, '<progress value="0" max="1" style="width:100%"></progress><div>Run #1 <b>first</b>: finished after 0 '
               "steps; adapter saved as <code></code> (Open adapter in Explore compares it with the base "
               "model)</div>", False)
    assert tab.pick_run(rows, gr.SelectData(None, {"index": [0, 0], "value": second}))[4].active
    # Cancel is offered only for a run that is still queued or running.
    assert [tab.can_cancel(run)["interactive"] for run in (second, first, None, 99)] == [True, False, False, False]
    assert error_message(lambda: tab.pick_run(rows, gr.SelectData(None, {"index": [5, 0], "value": 0}))) == (
        "That run is no longer listed; press Refresh.")
