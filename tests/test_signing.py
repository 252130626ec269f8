"""Tests for selfjudge_ui/signing.py: what a result signature accepts and refuses."""

from __future__ import annotations

from selfjudge_ui.signing import ResultSigner

PAYLOAD = {"result": {"candidates": [{"mean_debiased": 2.0, "text": "A red square."}]}, "truth": None,
           "image_sha256": "ab" * 32}


def test_a_signed_payload_verifies_and_survives_a_browser_round_trip():
    signer = ResultSigner(b"k" * 32)
    signed = signer.sign(PAYLOAD)
    assert signer.is_signed(signed)
    # JavaScript returns 2.0 as 2; the signature is over the canonical form, so it still verifies.
    browser = {**signed, "result": {"candidates": [{"mean_debiased": 2, "text": "A red square."}]}}
    assert signer.is_signed(browser)


def test_edits_other_keys_and_missing_signatures_are_refused():
    signer = ResultSigner(b"k" * 32)
    signed = signer.sign(PAYLOAD)
    edited = {**signed, "result": {"candidates": [{"mean_debiased": 2.5, "text": "A red square."}]}}
    assert not signer.is_signed(edited)
    assert not signer.is_signed({**signed, "image_sha256": "cd" * 32})
    assert not signer.is_signed(PAYLOAD)
    assert not signer.is_signed({**PAYLOAD, "signature": 12})
    assert not ResultSigner(b"j" * 32).is_signed(signed)
    assert ResultSigner().sign(PAYLOAD)["signature"] != ResultSigner().sign(PAYLOAD)["signature"]
