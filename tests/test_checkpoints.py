"""Tests for core/training/dpo/checkpoints.py: a worker abandoning its run never leaves a checkpoint behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from core.training.dpo import checkpoints
from core.training.dpo.checkpoints import discard_partial, partial_dir, save_checkpoint, seal_checkpoint_writes


class _SlowAdapter:
    """Stands in for a PEFT model whose save takes a while, so a deletion can land in the middle of it."""

    def __init__(self, saving: threading.Event):
        self.saving = saving

    def save_pretrained(self, path: str) -> None:
        Path(path).mkdir(parents=True)
        self.saving.set()
        time.sleep(0.4)
        (Path(path) / "adapter_model.safetensors").write_bytes(b"weights")


def test_sealing_waits_for_the_checkpoint_being_written_and_blocks_every_later_one(tmp_path):
    out = tmp_path / "adapters" / "killed"
    work = partial_dir(out)
    work.mkdir(parents=True)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    saving = threading.Event()
    first = threading.Thread(target=save_checkpoint, args=(work, 1, _SlowAdapter(saving), optimizer, 1, []))
    first.start()
    assert saving.wait(10)
    # The watcher's order: seal, then delete. Sealing returns only once epoch-1 is whole.
    seal_checkpoint_writes()
    try:
        assert sorted(p.name for p in (work / "epoch-1").iterdir()) == ["adapter_model.safetensors",
                                                                         "trainer_state.pt"]
        discard_partial(out)
        later_saving = threading.Event()
        later = threading.Thread(target=save_checkpoint, args=(work, 2, _SlowAdapter(later_saving), optimizer, 2, []),
                                 daemon=True)
        later.start()
        later.join(0.5)
        # The training thread's next epoch waits for the process to exit and writes nothing meanwhile.
        assert later.is_alive() and not later_saving.is_set() and not work.exists()
    finally:
        checkpoints._CHECKPOINT_WRITES.release()  # only a test outlives a sealed process
    later.join(10)
    first.join(10)
