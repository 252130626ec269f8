"""The studio's settings: which model and data folder, input limits, access rules and where to serve.

Filled from CLI flags (app.py) over SELFJUDGE_* environment variables over defaults.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from core import config
from core.config import DataSettings, ModelSettings
from core.data.store import MAX_ANSWER_CHARS, MAX_NOTE_CHARS, MAX_PROMPT_CHARS
from core.engine.images import ImageLimits
from selfjudge_ui.access import AccessSettings

# Any one upload. Pictures are held to ImageLimits (20 MiB) by core.engine.images; an import is bounded by
# core.data.exchange (512 MiB unpacked, 10,000 pairs). 200 MB lets the studio take back its own exports
# (stored pictures are at most 1536 px, a few MB even for a noisy photo).
MAX_UPLOAD = "200mb"


def _env_port() -> int | None:
    value = os.environ.get("SELFJUDGE_PORT", "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"SELFJUDGE_PORT must be a port number, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class InputLimits:
    """Bounds on what one request may ask for, so one visitor cannot tie the model up for long."""

    image: ImageLimits = field(default_factory=ImageLimits)
    # The same limits as the store's (core.data.store), so nothing typed here is refused on save or import.
    max_question_chars: int = MAX_PROMPT_CHARS
    max_note_chars: int = MAX_NOTE_CHARS
    max_answer_chars: int = MAX_ANSWER_CHARS
    max_candidates: int = 8
    max_alpha: float = 10.0
    max_new_tokens: int = 128


@dataclass
class StudioSettings:
    """Everything the studio needs to build and serve itself."""

    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    limits: InputLimits = field(default_factory=InputLimits)
    # None lets gradio decide (GRADIO_SERVER_NAME / _PORT, which Spaces set).
    host: str | None = field(default_factory=lambda: os.environ.get("SELFJUDGE_HOST") or None)
    port: int | None = field(default_factory=_env_port)
    share: bool = False
    max_file_size: str = MAX_UPLOAD

    def __post_init__(self) -> None:
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1..65535 (--port / SELFJUDGE_PORT), not {self.port}")


def parser() -> argparse.ArgumentParser:
    """The studio's command line (python app.py --help)."""
    p = argparse.ArgumentParser(prog="python app.py", description="SelfJudge Studio: find, measure and train "
                                "away hallucinations of a vision-language model with debiased self-judgment.")
    p.add_argument("--model", help="hub id or local folder of an image-text-to-text model "
                   "(default: the embedded assets/shapes-llava; env SELFJUDGE_MODEL)")
    p.add_argument("--4bit", dest="load_in_4bit", action="store_true", default=None,
                   help="load the model in 4-bit NF4 with bitsandbytes (env SELFJUDGE_4BIT=1)")
    p.add_argument("--adapter", help="LoRA adapter folder to apply to the model (env SELFJUDGE_ADAPTER)")
    p.add_argument("--memory-budget-mib", type=int, help="KV cache one scoring pass may hold, in MiB (default 0: "
                   "half the free CUDA memory, 2 GiB on CPU; env SELFJUDGE_MEMORY_BUDGET_MIB)")
    p.add_argument("--data", dest="data_dir", type=Path, help="data folder for the store, images and adapters (default data/; env SELFJUDGE_DATA)")
    p.add_argument("--host", help="address to serve on, e.g. 0.0.0.0 (default 127.0.0.1; env SELFJUDGE_HOST)")
    p.add_argument("--port", type=int, help="port to serve on (default 7860 or the next free; env SELFJUDGE_PORT)")
    p.add_argument("--share", action="store_true", help="also serve through a temporary public gradio.live link")
    p.add_argument("--private-pairs", action=argparse.BooleanOptionalAction, default=None,
                   help="on a public deployment, only admins may list and open stored pairs (default: on; "
                        "env SELFJUDGE_PRIVATE_PAIRS=1/0); a local studio shows them to everyone")
    return p


def settings_from_args(args: argparse.Namespace) -> StudioSettings:
    """Flags given on the command line win over SELFJUDGE_* variables, which win over defaults."""
    settings = StudioSettings(model=config.settings_from_args(ModelSettings, args),
                              data=config.settings_from_args(DataSettings, args), share=args.share)
    if args.host is not None:
        settings = replace(settings, host=args.host)
    if args.port is not None:
        settings = replace(settings, port=args.port)
    if getattr(args, "private_pairs", None) is not None:
        settings = replace(settings, access=replace(settings.access, private_pairs=args.private_pairs))
    return settings
