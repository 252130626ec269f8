"""Keeping a tab's view of the store current: one refresh handler, wired to every event that concerns it
(the tab being opened, a pair accepted elsewhere), so no one has to press Search to see what is there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class LiveView:
    """A refresh handler with its input and output components."""

    fn: Callable
    inputs: list
    outputs: list

    def refresh_on(self, listener: Callable) -> None:
        """Run the refresh on an event listener, e.g. a gr.Tab's .select or an event's .success."""
        listener(self.fn, self.inputs, self.outputs, api_visibility="private", show_progress="hidden")
