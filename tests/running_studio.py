"""Start the studio in-process on a free localhost port, configured only through SELFJUDGE_* variables
(as a deployment would be), for the gradio_client and browser tests."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from selfjudge_ui import build_app, launch_options
from selfjudge_ui.settings import StudioSettings

UNSET = ("SPACE_ID", "SELFJUDGE_PUBLIC", "SELFJUDGE_ADAPTER", "SELFJUDGE_4BIT", "SELFJUDGE_HOST", "SELFJUDGE_PORT")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_studio(model_dir: Path, data_dir: Path):
    """(demo, url, settings) of a running studio on model_dir with its data in data_dir; close demo after."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SELFJUDGE_MODEL", str(model_dir))
        env.setenv("SELFJUDGE_DATA", str(data_dir))
        env.setenv("SELFJUDGE_DEVICE", "cpu")
        env.setenv("SELFJUDGE_DTYPE", "float32")
        for name in UNSET:
            env.delenv(name, raising=False)
        settings = StudioSettings()
    demo = build_app(settings)
    options = {**launch_options(settings), "server_name": "127.0.0.1", "server_port": free_port()}
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **options)
    return demo, url, settings
