"""Keeps README honest: every CLI it names has help text, every tab it names exists, its files exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# README and the long sections it links to (docs/*.md): every CLI they name must run.
DOCS = README + "".join(path.read_text() for path in sorted((ROOT / "docs").glob("*.md")))


def test_readme_opens_with_the_two_commands():
    body = README.split("---", 2)[2]  # after the Spaces front matter
    first_block = body.split("```bash", 1)[1].split("```", 1)[0]
    assert "pip install -r requirements-cpu.txt && python app.py" in first_block
    assert "pip install -q -r requirements-dev.txt && python -m pytest" in first_block
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -r requirements-dev.txt && python -m pytest" in ci


@pytest.mark.parametrize("module", sorted(set(re.findall(r"python -m (core(?:\.[a-z_]+)+)", DOCS))))
def test_every_cli_in_readme_has_help(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_every_tab_in_readme_exists(tiny_llava_dir, tmp_path, monkeypatch):
    from selfjudge_ui import build_app
    from selfjudge_ui.settings import parser, settings_from_args

    monkeypatch.setenv("SELFJUDGE_MODEL", str(tiny_llava_dir))
    monkeypatch.setenv("SELFJUDGE_DATA", str(tmp_path))
    demo = build_app(settings_from_args(parser().parse_args([])))
    tabs = {block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)}
    named = set(re.findall(r"^\| \*\*([A-Z][a-z-]+)\*\* \|", README, flags=re.M))
    assert named == {"Explore", "Curate", "Fine-tune"}
    assert named <= tabs


def test_files_listed_in_readme_exist():
    tree = README.split("## Files", 1)[1].split("```", 2)[1]
    folder = ""
    for line in tree.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name or name.startswith(("data/", ".ci")):
            continue
        if line.startswith("  "):
            assert (ROOT / folder / name).exists(), folder + name
        else:
            folder = name if name.endswith("/") else ""
            assert (ROOT / name).exists(), name
    assert (ROOT / ".ci" / "run").exists()


def _anchors(text: str) -> set[str]:
    """GitHub's anchors for a markdown file's headings (outside code blocks)."""
    anchors, fence = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", ["README.md", "assets/shapes-llava/README.md"]
                         + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))
def test_every_relative_link_resolves(page):
    path = ROOT / page
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{page}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked.read_text()), f"{page}: {target}"


def test_readme_is_an_overview():
    assert README.count("\n") <= 400
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in README, f"README does not link docs/{page.name}"
