"""Fine-tune runs recorded in the store: DPO on the stored pairs, in this process or a background one.

A run's row in the store's `runs` table is its whole interface: status (queued, running,
finished, failed, cancelled), per-step metrics, error and adapter path. `start_run` trains
in a spawned process, so the UI stays responsive and a crash cannot take it down;
`cancel_run` marks the run cancelled, which the trainer sees between steps. The CLI is
`python -m core.dpo`, which runs `run_training` in the foreground.
"""

from __future__ import annotations

import math
import multiprocessing
import signal
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from core.config import ModelSettings
from core.dpo import DPOSettings, PreferenceExample, train_dpo
from core.store import Store

def stored_examples(store: Store, source: str = "", model_id: str = "", since: str = "") -> list[PreferenceExample]:
    """Every live pair in the store (optionally of one source, model, or created since a time) with its image,
    oldest first."""
    pairs = store.list_pairs(source=source, model_id=model_id, since=since, limit=None)
    return [PreferenceExample(image=store.load_image(p.image_sha256), prompt=p.prompt, chosen=p.chosen,
                              rejected=p.rejected) for p in reversed(pairs)]


def run_training(db_path: str | Path, name: str, out_dir: str | Path, settings: DPOSettings,
                 model_settings: ModelSettings, source: str = "", run_id: int | None = None,
                 on_step: Callable[[dict], None] | None = None, model_id: str = "", since: str = "") -> dict:
    """Train on the store's pairs, recording progress in run `run_id` (a new run if None); return its row."""
    store = Store(db_path)
    try:
        if run_id is None:
            run_id = store.add_run(name, run_params(settings, model_settings, source, out_dir, model_id, since))

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
            result = train_dpo(model_settings, examples, out_dir, settings, on_step=record, should_stop=cancelled)
        except Exception as error:  # recorded for the UI, then re-raised: never swallowed
            store.update_run(run_id, status="failed", error=f"{type(error).__name__}: {error}")
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


def _worker(db_path: str, run_id: int, name: str, out_dir: str, settings: dict, model_settings: dict,
            source: str, model_id: str = "", since: str = "") -> None:
    try:
        run_training(db_path, name, out_dir, DPOSettings.from_json(settings), ModelSettings(**model_settings),
                     source, run_id=run_id, model_id=model_id, since=since)
    except Exception:
        # The run row already says failed; the traceback goes to the worker's stderr for the log.
        traceback.print_exc()


def start_run(db_path: str | Path, name: str, out_dir: str | Path, settings: DPOSettings,
              model_settings: ModelSettings, source: str = "", model_id: str = "",
              since: str = "") -> tuple[int, multiprocessing.Process]:
    """Queue a run and train it in a spawned background process; return the run id and the process.

    The run row's params also record how many pairs matched (`pairs`), so a progress bar
    knows the number of steps; no pairs is a ValueError and nothing is queued.
    """
    if Path(out_dir).exists():
        raise FileExistsError(f"{out_dir} already exists; choose another adapter name")
    store = Store(db_path)
    try:
        n_pairs = store.count_pairs(source=source, model_id=model_id, since=since)
        if n_pairs == 0:
            raise ValueError("no stored pairs match these filters; add pairs (Explore, python -m core.selfcurate) "
                             "or widen the filters")
        run_id = store.add_run(name, {**run_params(settings, model_settings, source, out_dir, model_id, since),
                                      "pairs": n_pairs})
    finally:
        store.close()
    # spawn, not fork: a forked copy of a process with torch threads (and a UI server) can deadlock.
    process = multiprocessing.get_context("spawn").Process(
        target=_worker, args=(str(db_path), run_id, name, str(out_dir), asdict(settings), asdict(model_settings),
                              source, model_id, since), name=f"dpo-run-{run_id}", daemon=False)
    process.start()
    return run_id, process


def cancel_run(db_path: str | Path, run_id: int) -> None:
    """Ask a queued or running run to stop; the trainer stops before its next step and keeps no adapter."""
    store = Store(db_path)
    try:
        status = store.get_run(run_id)["status"]
        if status in ("queued", "running"):
            store.update_run(run_id, status="cancelled")
    finally:
        store.close()


def record_exit(db_path: str | Path, run_id: int, exitcode: int) -> dict:
    """After a run's process ended: a run it left queued or running died unannounced (killed, e.g. out of
    memory), so mark it failed with the exit code; return the run's row."""
    store = Store(db_path)
    try:
        if store.get_run(run_id)["status"] in ("queued", "running"):
            if exitcode < 0:
                how = f"was killed by signal {-exitcode} ({signal.strsignal(-exitcode) or 'unknown'})"
                hint = ("; SIGKILL usually means the system ran out of memory: try a smaller batch size, "
                        "gradient checkpointing or a 4-bit base" if -exitcode == signal.SIGKILL else "")
            else:
                how, hint = f"exited with code {exitcode} before finishing", ""
            store.update_run(run_id, status="failed", error=f"the training process {how}{hint}")
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
