"""Fine-tune runs recorded in the store: DPO on the stored pairs, in this process or a background one.

A run's row in the store's `runs` table is its whole interface: status (queued, running,
finished, failed, cancelled), per-step metrics, error and adapter path. `start_run` trains
in a spawned process, so the UI stays responsive and a crash cannot take it down;
`cancel_run` marks the run cancelled, which the trainer sees between steps. The CLI is
`python -m core.training.dpo`, which runs `run_training` in the foreground.

Lifecycle, so that a killed studio leaves nothing running or half-kept:
- One run trains at a time, across processes and restarts: the training process holds an
  exclusive flock on <data dir>/training.lock (released by the kernel however it dies) and
  writes its run id there; `start_run` holds <data dir>/training-start.lock until the new
  worker has taken the first, so two starts cannot both slip in.
- The worker watches the studio that started it and, when it dies, marks the run failed,
  removes its checkpoints and exits (no orphan finishes and publishes an adapter).
- `recover_runs` (at start-up) marks failed, with a message, every run left queued or
  running by a process that no longer holds the lock.
- A failed or cancelled run's epoch checkpoints are deleted, and a run never resumes another
  run's checkpoints (core.training.dpo.checkpoints.prepare_work_dir keys them by run id).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import multiprocessing
import os
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import IO

from core.config import ModelSettings, without_paths
from core.data.store import Store
from core.training.dpo.checkpoints import discard_partial, seal_checkpoint_writes
from core.training.dpo.loop import train_dpo
from core.training.dpo.settings import DPOSettings, PreferenceExample

ACTIVE_STATUSES = ("queued", "running")
LOCK_FILE = "training.lock"
START_LOCK_FILE = "training-start.lock"
PARENT_POLL_SECONDS = 1.0
HANDOVER_SECONDS = 600  # how long a start waits for its worker to take the training lock


class RunBusyError(ValueError):
    """Another run is training or being started; one run trains at a time."""


# The training lock -----------------------------------------------------------------------------

def _lock_path(db_path: str | Path, name: str) -> Path:
    return Path(db_path).resolve().parent / name


def _try_lock(path: Path) -> IO[str] | None:
    """The open lock file if this process now holds its exclusive flock, else None (someone else does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _write_owner(handle: IO[str], run_id: int | None) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"run": run_id, "pid": os.getpid()}) + "\n")
    handle.flush()


def training_owner(db_path: str | Path) -> dict | None:
    """{"run": id or None, "pid": pid} of the live process training on this store, or None if none is."""
    path = _lock_path(db_path, LOCK_FILE)
    handle = _try_lock(path)
    if handle is not None:
        handle.close()
        return None
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        owner = None
    # Held but not yet labelled (a run is being registered): someone is training, run unknown.
    return owner if isinstance(owner, dict) else {"run": None, "pid": None}


def _busy_message(owner: dict) -> str:
    which = f"run #{owner['run']}" if owner.get("run") else "another run"
    return f"{which} is training on this data folder; wait for it to finish or cancel it (one run trains at a time)"


@contextlib.contextmanager
def training_lock(db_path: str | Path) -> Iterator[IO[str]]:
    """Hold the store's training lock inside the block; RunBusyError if another process holds it."""
    handle = _try_lock(_lock_path(db_path, LOCK_FILE))
    if handle is None:
        raise RunBusyError(_busy_message(training_owner(db_path) or {}))
    try:
        _write_owner(handle, None)
        yield handle
    finally:
        handle.close()


def _end_run(store: Store, run: dict, status: str, error: str = "", died: bool = False) -> None:
    """Mark a run failed or cancelled (if it is still active) and delete its checkpoints, so nothing of it
    is resumed. `died`: its process ended unannounced, so an adapter folder it published without
    recording it (a run only starts when that folder does not exist) is deleted too."""
    if run["status"] in ACTIVE_STATUSES:
        store.update_run(run["id"], status=status, **({"error": error} if error else {}))
    out_dir = run["params"].get("out_dir")
    if out_dir:
        discard_partial(out_dir)
        if died and run["status"] in ACTIVE_STATUSES and Path(out_dir).exists():
            shutil.rmtree(out_dir, ignore_errors=True)


def stored_examples(store: Store, source: str = "", model_id: str = "", since: str = "") -> list[PreferenceExample]:
    """Every live pair in the store (optionally of one source, model, or created since a time) with its image,
    oldest first."""
    pairs = store.list_pairs(source=source, model_id=model_id, since=since, limit=None)
    return [PreferenceExample(image=store.load_image(p.image_sha256), prompt=p.prompt, chosen=p.chosen,
                              rejected=p.rejected) for p in reversed(pairs)]


def run_training(db_path: str | Path, name: str, out_dir: str | Path, settings: DPOSettings,
                 model_settings: ModelSettings, source: str = "", run_id: int | None = None,
                 on_step: Callable[[dict], None] | None = None, model_id: str = "", since: str = "") -> dict:
    """Train on the store's pairs, recording progress in run `run_id` (a new run if None); return its row.

    Holds the store's training lock throughout (RunBusyError if another run trains).
    """
    with training_lock(db_path) as lock:
        return _train_recorded(db_path, lock, name, out_dir, settings, model_settings, source, run_id, on_step,
                               model_id, since)


def _train_recorded(db_path: str | Path, lock: IO[str], name: str, out_dir: str | Path, settings: DPOSettings,
                    model_settings: ModelSettings, source: str, run_id: int | None,
                    on_step: Callable[[dict], None] | None, model_id: str, since: str) -> dict:
    store = Store(db_path)
    try:
        if run_id is None:
            run_id = store.add_run(name, run_params(settings, model_settings, source, out_dir, model_id, since))
        _write_owner(lock, run_id)

        def record(row: dict) -> None:
            store.append_run_metrics(run_id, row)
            if on_step is not None:
                on_step(row)

        def cancelled() -> bool:
            return store.get_run(run_id)["status"] == "cancelled"

        if cancelled():
            return store.get_run(run_id)
        store.update_run(run_id, status="running")
        try:
            examples = stored_examples(store, source, model_id, since)
            result = train_dpo(model_settings, examples, out_dir, settings, on_step=record, should_stop=cancelled,
                               run_key=f"run-{run_id}")
        except Exception as error:  # recorded for the UI, then re-raised: never swallowed
            _end_run(store, store.get_run(run_id), "failed", f"{type(error).__name__}: {without_paths(str(error))}")
            raise
        if result.status == "finished":
            store.update_run(run_id, status="finished", adapter_path=result.adapter_path)
        return store.get_run(run_id)
    finally:
        store.close()


def run_params(settings: DPOSettings, model_settings: ModelSettings, source: str, out_dir: str | Path,
               model_id: str = "", since: str = "") -> dict:
    """What a run row keeps of its inputs (enough to repeat it)."""
    return {"dpo": asdict(settings), "model": asdict(model_settings), "source": source, "model_id": model_id,
            "since": since, "out_dir": str(out_dir)}


def planned_steps(n_pairs: int, settings: DPOSettings) -> int:
    """How many optimizer steps train_dpo takes on `n_pairs` pairs (for progress bars)."""
    used = min(n_pairs, settings.max_pairs) if settings.max_pairs else n_pairs
    return settings.epochs * math.ceil(used / settings.batch_size)


def _watch_parent(parent_pid: int, db_path: str, run_id: int) -> None:
    """In the worker: when the studio that started it dies, fail the run, drop its checkpoints and exit."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        # The training thread runs on until os._exit: let it finish a checkpoint it is writing and
        # write none after, or one could survive the deletion below and be resumed later.
        seal_checkpoint_writes()
        store = Store(db_path)
        try:
            _end_run(store, store.get_run(run_id), "failed",
                     "the studio process that started this run stopped, so the run was abandoned; start it again",
                     died=True)
        finally:
            store.close()
            os._exit(1)

    threading.Thread(target=watch, name=f"watch-studio-{parent_pid}", daemon=True).start()


def _worker(db_path: str, run_id: int, name: str, out_dir: str, settings: dict, model_settings: dict,
            source: str, model_id: str, since: str, parent_pid: int, ready: Connection) -> None:
    _watch_parent(parent_pid, db_path, run_id)
    # The starter holds the start lock until we hold the training lock, so it is free; a few tries
    # cover the moment a finished worker takes to exit.
    lock = None
    for _ in range(50):
        lock = _try_lock(_lock_path(db_path, LOCK_FILE))
        if lock is not None:
            break
        time.sleep(0.1)
    if lock is None:
        ready.close()
        store = Store(db_path)
        _end_run(store, store.get_run(run_id), "failed", _busy_message(training_owner(db_path) or {}))
        store.close()
        return
    _write_owner(lock, run_id)
    ready.send(run_id)
    ready.close()
    try:
        _train_recorded(db_path, lock, name, out_dir, DPOSettings.from_json(settings),
                        ModelSettings(**model_settings), source, run_id, None, model_id, since)
    except Exception:
        # The run row already says failed; the traceback goes to the worker's stderr for the log.
        traceback.print_exc()
    finally:
        lock.close()


def _hand_over(start_lock: IO[str], ready: Connection, process: multiprocessing.Process) -> None:
    # Keep other starts out until the worker holds the training lock (or died trying).
    try:
        wait([ready, process.sentinel], timeout=HANDOVER_SECONDS)
    finally:
        ready.close()
        start_lock.close()


def start_run(db_path: str | Path, name: str, out_dir: str | Path, settings: DPOSettings,
              model_settings: ModelSettings, source: str = "", model_id: str = "",
              since: str = "") -> tuple[int, multiprocessing.Process]:
    """Queue a run and train it in a spawned background process; return the run id and the process.

    The run row's params also record how many pairs matched (`pairs`), so a progress bar
    knows the number of steps; no pairs is a ValueError and nothing is queued. Another run
    training (or starting) on the same store is a RunBusyError, and nothing is queued.
    """
    start_lock = _try_lock(_lock_path(db_path, START_LOCK_FILE))
    if start_lock is None:
        raise RunBusyError("another run is being started right now; wait a few seconds and look at the run list")
    try:
        owner = training_owner(db_path)
        if owner is not None:
            raise RunBusyError(_busy_message(owner))
        if Path(out_dir).exists():
            raise FileExistsError(f"an adapter named {Path(out_dir).name!r} already exists; "
                                  "choose another adapter name")
        store = Store(db_path)
        try:
            n_pairs = store.count_pairs(source=source, model_id=model_id, since=since)
            if n_pairs == 0:
                raise ValueError("no stored pairs match these filters; add pairs (Explore, python -m core.training.selfcurate) "
                                 "or widen the filters")
            run_id = store.add_run(name, {**run_params(settings, model_settings, source, out_dir, model_id, since),
                                          "pairs": n_pairs})
        finally:
            store.close()
        context = multiprocessing.get_context("spawn")
        ready, worker_end = context.Pipe(duplex=False)
        # spawn, not fork: a forked copy of a process with torch threads (and a UI server) can deadlock.
        process = context.Process(
            target=_worker, args=(str(db_path), run_id, name, str(out_dir), asdict(settings), asdict(model_settings),
                                  source, model_id, since, os.getpid(), worker_end),
            name=f"dpo-run-{run_id}", daemon=False)
        process.start()
        worker_end.close()
    except BaseException:
        start_lock.close()
        raise
    threading.Thread(target=_hand_over, args=(start_lock, ready, process), name=f"hand-over-run-{run_id}",
                     daemon=True).start()
    return run_id, process


def recover_runs(db_path: str | Path) -> list[int]:
    """At start-up: mark failed every run left queued or running by a process that is gone; return their ids.

    A run is left alone while a start is under way, or while a live process holds the training
    lock for it. Each run failed here loses its checkpoints (they are never resumed).
    """
    start_lock = _try_lock(_lock_path(db_path, START_LOCK_FILE))
    if start_lock is None:
        return []
    try:
        owner = training_owner(db_path)
        if owner is not None and owner.get("run") is None:
            return []  # a run is being registered by a live process: nothing can be told apart yet
        store = Store(db_path)
        try:
            stale = [run for run in store.list_runs() if run["status"] in ACTIVE_STATUSES
                     and (owner is None or run["id"] != owner["run"])]
            for run in stale:
                _end_run(store, run, "failed", f"the process training this run stopped while it was {run['status']} "
                                               "(the studio was stopped or killed); start it again", died=True)
        finally:
            store.close()
        return [run["id"] for run in stale]
    finally:
        start_lock.close()


def cancel_run(db_path: str | Path, run_id: int) -> None:
    """Ask a queued or running run to stop; the trainer stops before its next step and keeps no adapter."""
    store = Store(db_path)
    try:
        run = store.get_run(run_id)
        if run["status"] in ACTIVE_STATUSES:
            store.update_run(run_id, status="cancelled")
            owner = training_owner(db_path)
            if owner is None or owner.get("run") not in (None, run_id):
                # No live worker will see the cancel and clean up after itself: do it here.
                _end_run(store, run, "cancelled")
    finally:
        store.close()


def record_exit(db_path: str | Path, run_id: int, exitcode: int) -> dict:
    """After a run's process ended: a run it left queued or running died unannounced (killed, e.g. out of
    memory), so mark it failed with the exit code and delete its checkpoints; return the run's row."""
    store = Store(db_path)
    try:
        run = store.get_run(run_id)
        if run["status"] in ACTIVE_STATUSES:
            if exitcode < 0:
                how = f"was killed by signal {-exitcode} ({signal.strsignal(-exitcode) or 'unknown'})"
                hint = ("; SIGKILL usually means the system ran out of memory: try a smaller batch size, "
                        "gradient checkpointing or a 4-bit base" if -exitcode == signal.SIGKILL else "")
            else:
                how, hint = f"exited with code {exitcode} before finishing", ""
            _end_run(store, run, "failed", f"the training process {how}{hint}", died=True)
        elif run["status"] in ("failed", "cancelled"):
            _end_run(store, run, run["status"])
        return store.get_run(run_id)
    finally:
        store.close()


def list_runs(db_path: str | Path) -> list[dict]:
    """All fine-tune runs, newest first, as the store keeps them."""
    store = Store(db_path)
    try:
        return store.list_runs()
    finally:
        store.close()
