"""Tests for selfjudge_ui/access.py: who may delete, export and fine-tune on a public deployment."""

from __future__ import annotations

import gradio as gr
import pytest

from selfjudge_ui.access import AccessSettings, require_admin

TOKEN = "a-long-enough-admin-token"


def _profile(username: str) -> gr.OAuthProfile:
    return gr.OAuthProfile({"name": username.title(), "preferred_username": username,
                            "profile": f"https://huggingface.co/{username}", "picture": ""})


PUBLIC = AccessSettings(public=True, on_space=True, oauth=True, admins=("alice",), admin_token=TOKEN)


def test_everything_is_allowed_locally():
    assert require_admin(None, "", AccessSettings(public=False, admins=(), admin_token="")) == "local"


def test_an_admin_signed_in_with_hugging_face_is_allowed():
    assert require_admin(_profile("alice"), "", PUBLIC) == "alice"


def test_the_admin_token_is_allowed_without_sign_in():
    assert require_admin(None, TOKEN, PUBLIC) == "admin-token"
    assert require_admin(_profile("bob"), TOKEN, PUBLIC) == "admin-token"


@pytest.mark.parametrize("profile, token, message", [
    (None, "", "sign in with Hugging Face as an admin, or enter the admin token"),
    (None, "wrong-token-of-some-length", "sign in with Hugging Face as an admin"),
    (None, TOKEN[:-1], "sign in with Hugging Face as an admin"),
    ("bob", "", "bob is not an admin of this deployment"),
])
def test_everyone_else_is_refused(profile, token, message):
    with pytest.raises(gr.Error, match=message):
        require_admin(_profile(profile) if profile else None, token, PUBLIC)


def test_no_token_configured_means_no_token_accepted():
    settings = AccessSettings(public=True, on_space=False, oauth=False, admins=(), admin_token="")
    with pytest.raises(gr.Error):
        require_admin(None, "", settings)


def test_settings_come_from_the_environment(monkeypatch):
    for name in ("SPACE_ID", "OAUTH_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SELFJUDGE_PUBLIC", "0")
    monkeypatch.setenv("SELFJUDGE_ADMINS", " alice, bob ,,")
    monkeypatch.setenv("SELFJUDGE_ADMIN_TOKEN", TOKEN)
    assert AccessSettings() == AccessSettings(public=False, on_space=False, oauth=False, admins=("alice", "bob"),
                                              admin_token=TOKEN)
    monkeypatch.setenv("SPACE_ID", "someone/selfjudge")
    assert (AccessSettings().public, AccessSettings().sign_in) == (True, False)  # Space without hf_oauth
    monkeypatch.setenv("OAUTH_CLIENT_ID", "client-id")
    assert AccessSettings().sign_in is True
    monkeypatch.setenv("SELFJUDGE_PUBLIC", "maybe")
    with pytest.raises(ValueError, match="SELFJUDGE_PUBLIC must be 1/0/true/false"):
        AccessSettings()


def test_public_app_without_sign_in_offers_the_token_box_only():
    import gradio as gr

    from selfjudge_ui.access import admin_controls

    with gr.Blocks() as demo:
        box = admin_controls(AccessSettings(public=True, on_space=True, oauth=False, admins=(), admin_token=TOKEN))
    assert box.label == "Admin token" and box.type == "password"
    assert not any(isinstance(block, gr.LoginButton) for block in demo.blocks.values())


def test_short_admin_tokens_are_refused():
    with pytest.raises(ValueError, match="at least 16 characters"):
        AccessSettings(public=True, admin_token="short")
