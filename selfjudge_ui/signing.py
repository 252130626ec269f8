"""Signed results: a scored result goes to the browser or API client as JSON and comes back to
"Accept"; the signature proves it is exactly what this server scored, for exactly that image.

The key is made when the server starts and never leaves the process, so a result scored
before a restart must be scored again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets


def _canonical(value):
    """JSON data as a browser sends it back: JavaScript has one number type, so 2.0 returns as 2."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


class ResultSigner:
    """HMAC-SHA256 over a canonical JSON form of a payload (its "signature" key excluded)."""

    def __init__(self, key: bytes | None = None):
        self._key = key if key is not None else secrets.token_bytes(32)

    def _signature(self, payload: dict) -> str:
        body = json.dumps(_canonical({k: v for k, v in payload.items() if k != "signature"}), sort_keys=True)
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def sign(self, payload: dict) -> dict:
        """The payload with its signature added."""
        return {**payload, "signature": self._signature(payload)}

    def is_signed(self, payload: dict) -> bool:
        """Whether the payload carries this signer's signature of its exact content."""
        signature = payload.get("signature")
        return isinstance(signature, str) and hmac.compare_digest(signature, self._signature(payload))
