"""Settings dataclasses, filled from CLI flags and SELFJUDGE_* environment variables.

Defaults work offline on CPU: the embedded model in assets/, data under data/.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_MODEL = REPO_ROOT / "assets" / "shapes-llava"
# An absolute path in a message: /a/b/c or C:\\a\\b, up to a quote, space or bracket.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~/:])(?:[A-Za-z]:\\|/)[^\s'\"<>()\[\],;]*")


def display_model_id(path_or_id: str) -> str:
    """A model or adapter as people and other machines know it: a hub id as it is, a local folder by its name.

    "llava-hf/llava-1.5-7b-hf" stays; "/srv/app/assets/shapes-llava", "./assets/shapes-llava" and
    "C:\\models\\x" become "shapes-llava" and "x", so no server path is shown or stored.
    """
    text = path_or_id.strip()
    if not text:
        return ""
    windows = len(text) > 2 and text[1] == ":" and text[2] in "\\/"
    try:
        exists = Path(text).expanduser().is_dir()
    except (OSError, ValueError):  # a name too long, or one no file system accepts
        exists = False
    local = text.startswith(("/", "\\", "./", "../", "~")) or windows or "\\" in text or exists
    if not local:
        return text
    name = text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name or text


def without_paths(message: str) -> str:
    """The message with every absolute path cut to its last part, so no server path reaches a person."""
    def last_part(match: re.Match) -> str:
        parts = [part for part in re.split(r"[\\/]", match.group()) if part]
        return parts[-1] if parts else match.group()

    return ABSOLUTE_PATH.sub(last_part, message)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SELFJUDGE_{name}", default)


def _env_int(name: str, default: int) -> int:
    value = _env(name, str(default)).strip()
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"SELFJUDGE_{name} must be a whole number, not {value!r}") from None


def _env_bool(name: str, default: bool) -> bool:
    value = _env(name, "1" if default else "0").strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(f"SELFJUDGE_{name} must be 1/0/true/false, not {value!r}")
    return value in ("1", "true", "yes")


@dataclass
class ModelSettings:
    """Which model to load and how."""

    model: str = field(default_factory=lambda: _env("MODEL", str(EMBEDDED_MODEL)))
    load_in_4bit: bool = field(default_factory=lambda: _env_bool("4BIT", False))
    adapter: str = field(default_factory=lambda: _env("ADAPTER", ""))
    device: str = field(default_factory=lambda: _env("DEVICE", "auto"))  # auto, cpu, cuda
    dtype: str = field(default_factory=lambda: _env("DTYPE", "auto"))  # auto, float32, bfloat16, float16
    # KV cache one scoring pass may hold, in MiB; 0 = per device (half the free CUDA memory, 2 GiB on CPU).
    memory_budget_mib: int = field(default_factory=lambda: _env_int("MEMORY_BUDGET_MIB", 0))

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda (SELFJUDGE_DEVICE), not {self.device!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16 (SELFJUDGE_DTYPE), not {self.dtype!r}")
        if self.memory_budget_mib < 0:
            raise ValueError(f"memory budget must be 0 (per device) or a number of MiB (--memory-budget-mib / "
                             f"SELFJUDGE_MEMORY_BUDGET_MIB), not {self.memory_budget_mib}")


@dataclass
class DataSettings:
    """Where runtime data (the SQLite store, images, adapters, exports) lives."""

    data_dir: Path = field(default_factory=lambda: Path(_env("DATA", str(REPO_ROOT / "data"))))

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.data_dir / "selfjudge.db"

    @property
    def adapters_dir(self) -> Path:
        """Where fine-tuned LoRA adapters are saved."""
        return self.data_dir / "adapters"

    @property
    def exports_dir(self) -> Path:
        """Where exported preference datasets are written (core.data.exchange)."""
        return self.data_dir / "exports"


def settings_from_args(cls, args: object):
    """Build a settings dataclass from argparse args, keeping env/defaults for missing or None values."""
    values = {f.name: getattr(args, f.name) for f in fields(cls)
              if getattr(args, f.name, None) is not None}
    return cls(**values)
