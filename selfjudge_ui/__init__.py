"""The studio's user interface: gradio components and thin handlers over core/.

`build_app(settings)` returns the whole gr.Blocks; `require_admin` is the one access
check every tab uses for destructive or costly actions on a public deployment.
"""

from __future__ import annotations

from selfjudge_ui.access import AccessSettings, require_admin

__all__ = ["AccessSettings", "build_app", "launch_options", "require_admin"]


def __getattr__(name: str):
    # Imported on first use: importing one small selfjudge_ui module (e.g. for require_admin)
    # must not import every tab and the model stack with it.
    if name in ("build_app", "launch_options"):
        from selfjudge_ui import app

        return getattr(app, name)
    raise AttributeError(f"module 'selfjudge_ui' has no attribute {name!r}")
