"""Who may run destructive or costly actions (delete, export, fine-tune) on a public deployment.

A deployment is public when SELFJUDGE_PUBLIC=1 or it runs on a Hugging Face Space
(SPACE_ID is set). There, an action needs either a Hugging Face sign-in whose user
name is in SELFJUDGE_ADMINS (comma-separated), or the admin token from
SELFJUDGE_ADMIN_TOKEN typed into the "Admin token" box. Locally everything is allowed.
Every tab calls the one helper here, `require_admin`, so the rule lives in one place.

Reading stored pairs (Curate's list and pair view, their API) is admin-only on a public
deployment too, unless SELFJUDGE_PRIVATE_PAIRS=0 (or --no-private-pairs): visitors' pairs
may hold what they typed. `require_reader` applies that rule.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field

import gradio as gr


def _admins_from_env() -> tuple[str, ...]:
    return tuple(name.strip() for name in os.environ.get("SELFJUDGE_ADMINS", "").split(",") if name.strip())


def _private_pairs_from_env() -> bool:
    flag = os.environ.get("SELFJUDGE_PRIVATE_PAIRS", "1").strip().lower()
    if flag not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(f"SELFJUDGE_PRIVATE_PAIRS must be 1/0/true/false, not {flag!r}")
    return flag in ("1", "true", "yes")


def _public_from_env() -> bool:
    flag = os.environ.get("SELFJUDGE_PUBLIC", "0").strip().lower()
    if flag not in ("1", "0", "true", "false", "yes", "no", ""):
        raise ValueError(f"SELFJUDGE_PUBLIC must be 1/0/true/false, not {flag!r}")
    return flag in ("1", "true", "yes") or bool(os.environ.get("SPACE_ID"))


@dataclass(frozen=True)
class AccessSettings:
    """Whether the deployment is public, and who counts as an admin there."""

    public: bool = field(default_factory=_public_from_env)
    on_space: bool = field(default_factory=lambda: bool(os.environ.get("SPACE_ID")))
    # A Space with `hf_oauth: true` in its README sets OAUTH_CLIENT_ID.
    oauth: bool = field(default_factory=lambda: bool(os.environ.get("OAUTH_CLIENT_ID")))
    admins: tuple[str, ...] = field(default_factory=_admins_from_env)
    admin_token: str = field(default_factory=lambda: os.environ.get("SELFJUDGE_ADMIN_TOKEN", ""), repr=False)
    # On a public deployment, only admins may read the stored pairs (default); no effect locally.
    private_pairs: bool = field(default_factory=_private_pairs_from_env)

    @property
    def pairs_need_admin(self) -> bool:
        """Whether listing and opening stored pairs needs an admin here."""
        return self.public and self.private_pairs

    @property
    def sign_in(self) -> bool:
        """Whether to offer "Sign in with Hugging Face": only on a Space with OAuth enabled, where
        gradio's OAuth routes can start (elsewhere they refuse, or mock a login from a local token)."""
        return self.on_space and self.oauth

    def __post_init__(self) -> None:
        if self.admin_token and len(self.admin_token) < 16:
            raise ValueError("SELFJUDGE_ADMIN_TOKEN must be at least 16 characters; "
                             "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'")


def require_admin(profile: gr.OAuthProfile | None, token: str = "", settings: AccessSettings | None = None) -> str:
    """Who is acting ("local", the HF user name, or "admin-token"); raises gr.Error if not allowed."""
    settings = settings or AccessSettings()
    if not settings.public:
        return "local"
    username = getattr(profile, "username", None) if profile is not None else None
    if username and username in settings.admins:
        return username
    # compare_digest: the time taken does not reveal how much of the token was right.
    if settings.admin_token and token and hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        return "admin-token"
    if username:
        raise gr.Error(f"{username} is not an admin of this deployment (SELFJUDGE_ADMINS); "
                       "ask the owner, or enter the admin token")
    raise gr.Error("This is a public deployment: sign in with Hugging Face as an admin, "
                   "or enter the admin token, to do this")


def require_reader(profile: gr.OAuthProfile | None, token: str = "", settings: AccessSettings | None = None) -> str:
    """Who is reading stored pairs; on a public deployment with private pairs, an admin, else gr.Error."""
    settings = settings or AccessSettings()
    if not settings.pairs_need_admin:
        return "anyone"
    try:
        return require_admin(profile, token, settings)
    except gr.Error:
        raise gr.Error("The stored pairs are visible to admins only on this deployment: sign in with Hugging Face "
                       "as an admin, or enter the admin token, then press Search") from None


def admin_controls(settings: AccessSettings) -> gr.Textbox:
    """The sign-in button (on a Space) and the admin-token box; returns the box for handlers' inputs."""
    with gr.Row(visible=settings.public):
        if settings.sign_in:
            gr.LoginButton()
        needed = ("reading pairs, delete, export, fine-tune" if settings.pairs_need_admin
                  else "delete, export, fine-tune")
        token = gr.Textbox(label="Admin token", type="password", placeholder=f"needed for {needed}",
                           max_lines=1, scale=3)
    return token
