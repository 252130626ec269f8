"""Tests for core/finetune.py: runs recorded in the real store, in the foreground and in a spawned process."""

from __future__ import annotations

import pytest

from core.config import ModelSettings
from core.dpo import DPOSettings, partial_dir
from core.finetune import (cancel_run, list_runs, planned_steps, record_exit, run_training, start_run,
                           stored_examples)
from core.store import Pair, Store
from core.world import make_scene, render


@pytest.fixture
def db_with_pairs(tmp_path):
    """A store with three self pairs and one human pair."""
    path = tmp_path / "selfjudge.db"
    store = Store(path)
    for seed, source in [(1, "self"), (2, "self"), (3, "self"), (4, "human")]:
        store.add_pair(Pair("", "Describe the image.", f"A red circle {seed}.", "A blue star.", source=source),
                       image=render(make_scene(seed)))
    store.close()
    return path


@pytest.fixture
def tiny_settings(tiny_llava_dir):
    return ModelSettings(model=str(tiny_llava_dir), device="cpu", dtype="float32", adapter="", load_in_4bit=False)


def test_stored_examples_are_oldest_first_with_images(db_with_pairs):
    store = Store(db_with_pairs)
    examples = stored_examples(store, source="self")
    assert [e.chosen for e in examples] == ["A red circle 1.", "A red circle 2.", "A red circle 3."]
    assert examples[0].image.tobytes() == render(make_scene(1)).tobytes()
    assert len(stored_examples(store)) == 4
    store.close()


def test_finished_run_records_metrics_per_step_and_the_adapter(db_with_pairs, tiny_settings, tmp_path):
    out = tmp_path / "adapters" / "first"
    run = run_training(db_with_pairs, "first", out, DPOSettings(batch_size=2, lr=1e-2), tiny_settings, "self")
    assert (run["status"], run["adapter_path"], run["error"]) == ("finished", str(out), "")
    assert [m["step"] for m in run["metrics"]] == [1, 2]
    assert sorted(run["metrics"][0]) == ["accuracy", "chosen_nll", "epoch", "loss", "margin", "reward_chosen",
                                         "reward_rejected", "seconds", "step"]
    assert run["params"]["dpo"]["batch_size"] == 2 and run["params"]["source"] == "self"
    assert (out / "adapter_config.json").exists()
    assert [r["id"] for r in list_runs(db_with_pairs)] == [run["id"]]


def test_failed_run_is_marked_failed_with_its_error_and_leaves_no_adapter(db_with_pairs, tiny_settings, tmp_path):
    out = tmp_path / "adapters" / "broken"

    def explode(row: dict) -> None:
        raise RuntimeError("out of memory (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        run_training(db_with_pairs, "broken", out, DPOSettings(batch_size=2), tiny_settings, on_step=explode)
    run = list_runs(db_with_pairs)[0]
    assert (run["status"], run["error"], run["adapter_path"]) == ("failed", "RuntimeError: out of memory (simulated)",
                                                                  "")
    assert run["finished_at"] is not None
    assert not out.exists()


def test_cancelled_run_stops_and_leaves_nothing(db_with_pairs, tiny_settings, tmp_path):
    out = tmp_path / "adapters" / "stopped"
    store = Store(db_with_pairs)
    run_id = store.add_run("stopped", {})
    store.close()
    run = run_training(db_with_pairs, "stopped", out, DPOSettings(batch_size=1), tiny_settings, run_id=run_id,
                       on_step=lambda row: cancel_run(db_with_pairs, run_id) if row["step"] == 2 else None)
    assert (run["status"], [m["step"] for m in run["metrics"]], run["adapter_path"]) == ("cancelled", [1, 2], "")
    assert not out.exists() and not partial_dir(out).exists()


def test_background_run_trains_in_a_spawned_process(db_with_pairs, tiny_settings, tmp_path):
    out = tmp_path / "adapters" / "background"
    run_id, process = start_run(db_with_pairs, "background", out, DPOSettings(batch_size=4), tiny_settings)
    process.join(timeout=240)
    assert process.exitcode == 0
    run = Store(db_with_pairs).get_run(run_id)
    assert (run["status"], run["adapter_path"], len(run["metrics"])) == ("finished", str(out), 1)
    with pytest.raises(FileExistsError, match="an adapter named .background. already exists; choose another adapter name"):
        start_run(db_with_pairs, "again", out, DPOSettings(), tiny_settings)


def test_cancel_ignores_finished_runs(db_with_pairs):
    store = Store(db_with_pairs)
    run_id = store.add_run("done", {})
    store.update_run(run_id, status="finished")
    store.close()
    cancel_run(db_with_pairs, run_id)
    assert list_runs(db_with_pairs)[0]["status"] == "finished"


def test_filters_choose_the_pairs_and_no_match_queues_nothing(db_with_pairs, tiny_settings, tmp_path):
    store = Store(db_with_pairs)
    since = store.get_pair(3).created_at
    assert [e.chosen for e in stored_examples(store, since=since)] == ["A red circle 3.", "A red circle 4."]
    assert [e.chosen for e in stored_examples(store, source="self", since=since)] == ["A red circle 3."]
    assert stored_examples(store, model_id="other-model") == []
    store.close()
    with pytest.raises(ValueError, match="no stored pairs match these filters"):
        start_run(db_with_pairs, "none", tmp_path / "none", DPOSettings(), tiny_settings, model_id="other-model")
    assert list_runs(db_with_pairs) == []


def test_planned_steps_counts_batches_per_epoch_within_max_pairs():
    assert planned_steps(5, DPOSettings(batch_size=2, epochs=3)) == 9
    assert planned_steps(5, DPOSettings(batch_size=2, epochs=1, max_pairs=2)) == 1
    assert planned_steps(4, DPOSettings(batch_size=4)) == 1


def test_record_exit_fails_a_run_its_process_left_running(db_with_pairs):
    store = Store(db_with_pairs)
    killed, crashed, done = (store.add_run(name, {}) for name in ("killed", "crashed", "done"))
    store.update_run(killed, status="running")
    store.update_run(done, status="finished", adapter_path="/x")
    store.close()
    assert record_exit(db_with_pairs, killed, -9)["error"] == (
        "the training process was killed by signal 9 (Killed); SIGKILL usually means the system ran out of memory: "
        "try a smaller batch size, gradient checkpointing or a 4-bit base")
    assert record_exit(db_with_pairs, crashed, 1)["error"] == "the training process exited with code 1 before finishing"
    assert [record_exit(db_with_pairs, i, 0)["status"] for i in (killed, crashed, done)] == ["failed", "failed",
                                                                                             "finished"]
