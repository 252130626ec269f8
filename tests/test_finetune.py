"""Tests for core/training/finetune.py: runs recorded in the real store, in the foreground and in a spawned process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.config import ModelSettings
from core.training.dpo.checkpoints import partial_dir
from core.training.dpo.settings import DPOSettings
from core.training.finetune import (RunBusyError, cancel_run, list_runs, planned_steps, record_exit, recover_runs,
                                    run_training, start_run, stored_examples, training_lock, training_owner)
from core.data.store import Pair, Store
from core.shapes.world import make_scene, render
from tests.running_studio import UNSET, free_port


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
    with pytest.raises(FileExistsError, match="an adapter named 'background' already exists; choose another "):
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


def test_a_second_run_is_refused_while_one_holds_the_training_lock(db_with_pairs, tiny_settings, tmp_path):
    with training_lock(db_with_pairs) as lock:
        lock.seek(0)
        lock.truncate()
        lock.write('{"run": 7, "pid": 1}\n')
        lock.flush()
        assert training_owner(db_with_pairs) == {"run": 7, "pid": 1}
        with pytest.raises(RunBusyError, match=r"run #7 is training on this data folder; wait for it to finish or "
                                               r"cancel it \(one run trains at a time\)"):
            start_run(db_with_pairs, "second", tmp_path / "second", DPOSettings(), tiny_settings)
        with pytest.raises(RunBusyError, match="run #7 is training"):
            run_training(db_with_pairs, "second", tmp_path / "second", DPOSettings(), tiny_settings)
    assert list_runs(db_with_pairs) == []
    assert training_owner(db_with_pairs) is None


def _leave_active_runs(db_path, out_root):
    store = Store(db_path)
    ids = []
    for name, status in [("queued", "queued"), ("running", "running"), ("done", "finished")]:
        run_id = store.add_run(name, {"out_dir": str(out_root / name)})
        store.update_run(run_id, status=status)
        ids.append(run_id)
    store.close()
    (partial_dir(out_root / "running") / "epoch-1").mkdir(parents=True)
    return ids


def test_recover_runs_fails_runs_a_dead_process_left_active_and_drops_their_checkpoints(db_with_pairs, tmp_path):
    queued, running, done = _leave_active_runs(db_with_pairs, tmp_path / "adapters")
    assert recover_runs(db_with_pairs) == [running, queued]
    runs = {run["id"]: run for run in list_runs(db_with_pairs)}
    assert [runs[i]["status"] for i in (queued, running, done)] == ["failed", "failed", "finished"]
    assert runs[running]["error"] == ("the process training this run stopped while it was running (the studio was "
                                      "stopped or killed); start it again")
    assert not partial_dir(tmp_path / "adapters" / "running").exists()
    assert recover_runs(db_with_pairs) == []


def test_recover_runs_leaves_the_run_a_live_process_trains(db_with_pairs, tmp_path):
    queued, running, _ = _leave_active_runs(db_with_pairs, tmp_path / "adapters")
    with training_lock(db_with_pairs) as lock:
        lock.seek(0)
        lock.truncate()
        lock.write(json.dumps({"run": running, "pid": os.getpid()}))
        lock.flush()
        assert recover_runs(db_with_pairs) == [queued]
    assert Store(db_with_pairs).get_run(running)["status"] == "running"
    assert partial_dir(tmp_path / "adapters" / "running").exists()


def test_a_new_run_never_resumes_a_cancelled_runs_checkpoints(db_with_pairs, tiny_settings, tmp_path):
    out = tmp_path / "adapters" / "same-name"
    settings = DPOSettings(batch_size=2, epochs=2)
    store = Store(db_with_pairs)
    first = store.add_run("same-name", {"out_dir": str(out)})
    store.close()
    # Cancelled in epoch 2, after the epoch-1 checkpoint was written.
    run = run_training(db_with_pairs, "same-name", out, settings, tiny_settings, run_id=first,
                       on_step=lambda row: cancel_run(db_with_pairs, first) if row["step"] == 3 else None)
    assert run["status"] == "cancelled" and not partial_dir(out).exists()
    # Even checkpoints left behind (a crash before the clean-up) are another run's: never resumed.
    (partial_dir(out) / "epoch-1").mkdir(parents=True)
    (partial_dir(out) / "run.json").write_text(json.dumps({"run": f"run-{first}"}))
    again = run_training(db_with_pairs, "same-name", out, settings, tiny_settings)
    assert (again["status"], [m["step"] for m in again["metrics"]]) == ("finished", [1, 2, 3, 4])


def _process_gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting for a reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _launch_studio(model_dir, data_dir, log_path):
    """`python app.py` in its own process (as a person starts it); returns (process, url) once it answers."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k not in UNSET}, "SELFJUDGE_MODEL": str(model_dir),
           "SELFJUDGE_DATA": str(data_dir), "SELFJUDGE_DEVICE": "cpu", "SELFJUDGE_DTYPE": "float32",
           "SELFJUDGE_HOST": "127.0.0.1", "SELFJUDGE_PORT": str(port), "OMP_NUM_THREADS": "1"}
    log = open(log_path, "ab")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=Path(__file__).resolve().parent.parent, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def answers() -> bool:
        assert process.poll() is None, Path(log_path).read_text(errors="replace")[-3000:]
        try:
            return urllib.request.urlopen(url, timeout=2).status == 200
        except OSError:
            return False

    _wait_for(answers, 180, "the studio to answer")
    return process, url


def _start_finetune(url: str, name: str, epochs: int) -> int:
    from gradio_client import Client

    client = Client(url, verbose=False)
    try:
        # name, source, model, since, beta, loss, lr, epochs, batch size, LoRA r, LoRA alpha, projector, NLL weight
        run_id, _, _ = client.predict(name, "all", "all", "", 0.1, "sigmoid", 1e-3, epochs, 1, 4, 8, False, 0.0, "",
                                      api_name="/start_finetune")
    finally:
        client.close()
    return int(run_id)


def test_kill_9_of_the_studio_during_a_fine_tune(db_with_pairs, tiny_llava_dir, tmp_path):
    data = db_with_pairs.parent
    out = data / "adapters" / "killed"
    studio, url = _launch_studio(tiny_llava_dir, data, tmp_path / "studio.log")
    try:
        run_id = _start_finetune(url, "killed", epochs=20)
        # Into epoch 2: the epoch-1 checkpoint is on disk, ready to be (wrongly) resumed.
        _wait_for(lambda: len(Store(db_with_pairs).get_run(run_id)["metrics"]) >= 5, 120, "five training steps")
        assert (partial_dir(out) / "epoch-1").is_dir()
        worker = training_owner(db_with_pairs)
        assert worker["run"] == run_id and worker["pid"] != studio.pid
        studio.send_signal(signal.SIGKILL)
        studio.wait(10)
        # No orphan: the worker sees its studio gone, fails the run and exits. Its lock goes with its
        # last thread, which can be a moment after its main thread shows as a zombie.
        _wait_for(lambda: _process_gone(worker["pid"]) and training_owner(db_with_pairs) is None, 30,
                  "the orphaned worker to exit")
    finally:
        if studio.poll() is None:
            studio.kill()
    run = Store(db_with_pairs).get_run(run_id)
    assert (run["status"], run["adapter_path"]) == ("failed", "")
    assert "the studio process that started this run stopped" in run["error"]
    assert not out.exists() and not partial_dir(out).exists()
    assert training_owner(db_with_pairs) is None

    restarted, url = _launch_studio(tiny_llava_dir, data, tmp_path / "studio.log")
    try:
        again = _start_finetune(url, "killed", epochs=20)  # same name and settings as the killed run
        first = _wait_for(lambda: Store(db_with_pairs).get_run(again)["metrics"], 120, "the new run's first step")
        assert (first[0]["step"], first[0]["epoch"]) == (1, 1)  # from scratch, not from epoch-1
        cancel_run(db_with_pairs, again)
        _wait_for(lambda: training_owner(db_with_pairs) is None, 60, "the cancelled run to stop")
    finally:
        restarted.kill()
        restarted.wait(10)
    run = Store(db_with_pairs).get_run(again)
    assert run["status"] == "cancelled" and not out.exists() and not partial_dir(out).exists()
    assert [r["status"] for r in list_runs(db_with_pairs)] == ["cancelled", "failed"]


def test_studio_start_up_fails_the_runs_a_killed_studio_left_running(db_with_pairs, tiny_settings, tmp_path):
    from core.config import DataSettings
    from selfjudge_ui import build_app
    from selfjudge_ui.settings import StudioSettings

    _, running, done = _leave_active_runs(db_with_pairs, tmp_path / "adapters")
    build_app(StudioSettings(model=tiny_settings, data=DataSettings(data_dir=db_with_pairs.parent)))
    runs = {run["id"]: run for run in list_runs(db_with_pairs)}
    assert [runs[i]["status"] for i in (running, done)] == ["failed", "finished"]
    assert "start it again" in runs[running]["error"]


def test_a_run_refused_for_an_existing_adapter_name_leaves_that_adapter_alone(db_with_pairs, tiny_settings,
                                                                              tmp_path):
    taken = tmp_path / "adapters" / "taken"
    taken.mkdir(parents=True)
    (taken / "adapter_config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="an adapter named 'taken' already exists"):
        run_training(db_with_pairs, "taken", taken, DPOSettings(), tiny_settings)
    assert list_runs(db_with_pairs)[0]["status"] == "failed"
    assert (taken / "adapter_config.json").read_text() == "{}"
