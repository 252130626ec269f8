"""Epoch checkpoints of a DPO run, resuming from them, and publishing the finished adapter atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import asdict
from pathlib import Path

import torch

from core.engine.loading import LoadedModel
from core.training.dpo.settings import SETTINGS_FILE, SUMMARY_FILE, DPOSettings, PreferenceExample

# Every write under a run's .partial folder holds this lock, so a worker abandoning its run (its
# studio died) can delete the checkpoints knowing none is half-written and none comes after
# (seal_checkpoint_writes). A lock, not data: the one process-wide object this module keeps.
_CHECKPOINT_WRITES = threading.Lock()


def seal_checkpoint_writes() -> None:
    """Wait for a checkpoint write in progress, then block every later one in this process (before it exits)."""
    _CHECKPOINT_WRITES.acquire()


def partial_dir(out_dir: Path) -> Path:
    """Where a run keeps its epoch checkpoints until the adapter is complete (hidden beside it)."""
    return out_dir.parent / f".{out_dir.name}.partial"


def pairs_fingerprint(pairs: list[PreferenceExample]) -> str:
    """A hash of the training pairs, so a resume refuses to continue on different data."""
    digest = hashlib.sha256()
    for pair in pairs:
        for text in (pair.prompt, pair.chosen, pair.rejected):
            digest.update(text.encode() + b"\0")
        digest.update(pair.image.convert("RGB").tobytes())
    return digest.hexdigest()


def _publish(tmp: Path, final: Path) -> None:
    # A directory rename is atomic: readers see either no folder or a complete one.
    os.replace(tmp, final)


def save_checkpoint(work: Path, epoch: int, model, optimizer, step: int, metrics: list[dict]) -> Path:
    """Adapter + optimizer + step + RNG after `epoch`, written to a temp folder and renamed when complete."""
    tmp = work / f".epoch-{epoch}.tmp"
    final = work / f"epoch-{epoch}"
    with _CHECKPOINT_WRITES:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))
        torch.save({"optimizer": optimizer.state_dict(), "step": step, "epoch": epoch, "metrics": metrics,
                    "torch_rng": torch.get_rng_state()}, tmp / "trainer_state.pt")
        _publish(tmp, final)
    return final


def last_checkpoint(work: Path) -> Path | None:
    """The newest complete epoch checkpoint in a run folder (temp folders are half-written, ignored)."""
    done = [p for p in work.glob("epoch-*") if p.is_dir() and p.name.split("-")[1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def load_checkpoint(checkpoint: Path, model, optimizer) -> dict:
    """Restore adapter weights, optimizer and RNG; return the saved trainer state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return state


def prepare_work_dir(work: Path, settings: DPOSettings, fingerprint: str, run_key: str = "") -> Path | None:
    """Create the run folder, or check an existing one belongs to this run; return its last checkpoint.

    Checkpoints are resumed only by the same run (`run_key`, e.g. the store's run id) with the same
    settings and pairs. Those of another run (one cancelled, failed or abandoned) are deleted, never
    resumed; the same run with other settings or pairs is refused.
    """
    identity = {"settings": asdict(settings), "pairs_sha256": fingerprint, "run": run_key}
    run_file = work / "run.json"
    checkpoint = last_checkpoint(work) if run_file.exists() else None
    if checkpoint is not None:
        try:
            saved = json.loads(run_file.read_text())
        except ValueError:
            saved = {}
        if saved == identity:
            return checkpoint
        if isinstance(saved, dict) and saved.get("run", "") == run_key:
            raise ValueError(f"the checkpoints in {work.name} are of a run with other settings or pairs; delete "
                             "that folder to start over, or resume with the same settings and pairs")
    # Nothing of this run to resume (a new run, one that failed in its first epoch, or another
    # run's leftovers): start afresh.
    with _CHECKPOINT_WRITES:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(identity, indent=2) + "\n")
    return None


def discard_partial(out_dir: str | Path) -> None:
    """Delete a run's epoch checkpoints (its hidden .NAME.partial folder), so nothing ever resumes them."""
    shutil.rmtree(partial_dir(Path(out_dir)), ignore_errors=True)


def finish_adapter(work: Path, out_dir: Path, settings: DPOSettings, loaded: LoadedModel, n_pairs: int,
                   metrics: list[dict]) -> None:
    """Turn the last epoch checkpoint into the adapter folder (settings + summary beside it), atomically."""
    last = metrics[-1] if metrics else {}
    summary = {"base_model": loaded.model_id, "quantized": loaded.quantized, "pairs": n_pairs,
               "steps": len(metrics), "final": last}
    with _CHECKPOINT_WRITES:
        final = last_checkpoint(work)
        (final / "trainer_state.pt").unlink()
        (final / SETTINGS_FILE).write_text(json.dumps(asdict(settings), indent=2) + "\n")
        (final / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _publish(final, out_dir)
        shutil.rmtree(work)
