"""End-to-end tests of the studio through gradio_client: the app runs in-process on a free
localhost port with the tiny model (SELFJUDGE_MODEL) and a temporary data folder (SELFJUDGE_DATA)."""

from __future__ import annotations

import sqlite3
import struct
import zlib
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from core.data.store import Store, strip_control_characters
from core.shapes.world import make_scene, render
from selfjudge_ui import launch_options
from selfjudge_ui.settings import parser, settings_from_args
from tests.running_studio import start_studio

QUESTION = "Describe the image."
# score(image, scene seed, question, N, generation, seed, alpha, kind, judge prompt, custom template)
SCORE_DEFAULTS = dict(scene_seed=None, question=QUESTION, n=2, strategy="sample", seed=0, alpha=1.0, kind="logit",
                      prompt="faithfulness", custom="")


@pytest.fixture(scope="module")
def studio(tiny_llava_dir, tmp_path_factory):
    """(client, settings, workdir) for a running studio on the tiny model."""
    data = tmp_path_factory.mktemp("studio_data")
    demo, url, settings = start_studio(tiny_llava_dir, data)
    assert settings.model.model == str(tiny_llava_dir) and settings.data.data_dir == data
    client = Client(url, verbose=False)
    yield client, settings, tmp_path_factory.mktemp("studio_files")
    client.close()
    demo.close()


def _score(client, image_path, **overrides):
    args = {**SCORE_DEFAULTS, **overrides}
    return client.predict(handle_file(str(image_path)), args["scene_seed"], args["question"], args["n"],
                          args["strategy"], args["seed"], args["alpha"], args["kind"], args["prompt"],
                          args["custom"], api_name="/score")


def _pairs(settings) -> list:
    return Store(settings.data.db_path).list_pairs(limit=None)


def _scene_file(workdir: Path, seed: int) -> Path:
    path = workdir / f"scene_{seed}.png"
    render(make_scene(seed)).save(path)
    return path


def test_score_accept_and_the_pair_is_in_the_store(studio):
    client, settings, workdir = studio
    scene_file, seed, _preview, truth = client.predict(api_name="/random_scene")
    assert 0 <= seed < 1_000_000 and truth.startswith(f"**Ground truth, scene {seed}:**")
    scored, candidates, sentences, _heatmap, _scatter, status = _score(client, scene_file, scene_seed=seed)
    result = scored["result"]
    assert len(result["candidates"]) == 2 == len(candidates["data"])
    assert status == f"Scored 2 candidates with {Path(settings.model.model).name}."  # a name, not a server path
    assert scored["truth"] == sorted([list(n) for n in make_scene(seed).names()])
    verdicts = {row[-1] for row in sentences["data"]}
    assert verdicts <= {"correct", "hallucinated", "no object claimed"}
    by_debiased = sorted(range(2), key=lambda i: result["candidates"][i]["mean_debiased"])
    chosen_number, rejected_number = by_debiased[-1] + 1, by_debiased[0] + 1
    best, worst = result["candidates"][chosen_number - 1], result["candidates"][rejected_number - 1]
    before = len(_pairs(settings))
    message = client.predict(scored, handle_file(scene_file), chosen_number, rejected_number,
                             best["text"] + " Edited.", "looks right", api_name="/accept_pair")
    pairs = _pairs(settings)
    assert len(pairs) == before + 1
    pair = pairs[0]
    assert message == f"Saved pair #{pair.id}: chosen #{chosen_number}, rejected #{rejected_number}."
    # Control characters (the random tiny model emits some) are removed; the model is named, not its path.
    assert (pair.prompt, pair.chosen, pair.rejected, pair.note, pair.source, pair.model_id) == (
        QUESTION, strip_control_characters(best["text"] + " Edited."), strip_control_characters(worst["text"]),
        "looks right", "human", Path(settings.model.model).name)
    assert pair.chosen_scores == {"raw": best["mean_raw"], "blind": best["mean_blind"],
                                  "debiased": best["mean_debiased"], "min_debiased": best["min_debiased"],
                                  "likelihood": best["likelihood"], "rank": best["rank"], "alpha": 1.0,
                                  "kind": "logit", "edited": True}
    stored = Store(settings.data.db_path).load_image(pair.image_sha256)
    assert stored.tobytes() == render(make_scene(seed)).tobytes()
    with pytest.raises(AppError, match="already stored as #"):
        client.predict(scored, handle_file(scene_file), chosen_number, rejected_number,
                       best["text"] + " Edited.", "", api_name="/accept_pair")
    assert len(_pairs(settings)) == before + 1


def test_a_seed_that_does_not_match_the_image_gives_no_ground_truth(studio):
    client, _settings, workdir = studio
    outputs = _score(client, _scene_file(workdir, 5), scene_seed=6)
    assert outputs[0]["truth"] is None
    assert "Scene seed 6 does not match this image" in outputs[-1]


def test_rgba_and_animated_uploads_are_converted_and_scored(studio):
    client, _settings, workdir = studio
    rgba = render(make_scene(3)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(workdir / "rgba.png")
    frames = [render(make_scene(4)), render(make_scene(5))]
    frames[0].save(workdir / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    for name in ("rgba.png", "anim.gif"):
        assert len(_score(client, workdir / name)[0]["result"]["candidates"]) == 2


def _bomb(path: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 8)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("make_file, overrides, message", [
    (lambda d: (d / "notes.png").write_text("not an image") and d / "notes.png", {}, "not a readable image"),
    (lambda d: _bomb(d / "bomb.png"), {}, "too many pixels"),
    (None, {"question": "   "}, "The question is empty"),
    (None, {"question": "x" * 501}, "limit is 500"),
    # inputs.number_box / slider_box check their bounds first, naming the field; inputs.check_number repeats it
    (None, {"n": 0}, r"Candidates \(N\) must be at least 1, not 0"),
    (None, {"n": 9}, r"Candidates \(N\) must be at most 8, not 9"),
    (None, {"n": 2.5}, "number of candidates must be a whole number"),
    (None, {"n": "many"}, r"Candidates \(N\) must be a number, not 'many'"),
    (None, {"alpha": -0.5}, "alpha must be at least 0, not -0.5"),
    (None, {"alpha": 11}, "alpha must be at most 10, not 11"),
    (None, {"seed": -1}, "Seed must be at least 0, not -1"),
    (None, {"seed": 1.5}, "seed must be a whole number, not 1.5"),
    (None, {"prompt": "custom", "custom": "Is it true?"}, "must contain {sentence}"),
    (None, {"kind": "probability"}, "not in the list of choices"),
])
def test_bad_input_gives_a_clear_error_and_writes_nothing(studio, make_file, overrides, message):
    client, settings, workdir = studio
    path = make_file(workdir) if make_file else _scene_file(workdir, 7)
    before = len(_pairs(settings))
    with pytest.raises(AppError, match=message):
        _score(client, path, **overrides)
    assert len(_pairs(settings)) == before


def test_accept_refuses_tampered_results_and_changed_images(studio):
    client, settings, workdir = studio
    path = _scene_file(workdir, 8)
    scored = _score(client, path)[0]
    forged = {**scored, "result": {**scored["result"], "model_id": "someone-else"}}
    before = len(_pairs(settings))
    with pytest.raises(AppError, match="not scored by this server"):
        client.predict(forged, handle_file(str(path)), 1, 2, "A red square.", "", api_name="/accept_pair")
    with pytest.raises(AppError, match="image changed since it was scored"):
        client.predict(scored, handle_file(str(_scene_file(workdir, 9))), 1, 2, "A red square.", "",
                       api_name="/accept_pair")
    with pytest.raises(AppError, match="Score an image first"):
        client.predict(None, handle_file(str(path)), 1, 2, "A red square.", "", api_name="/accept_pair")
    with pytest.raises(AppError, match="chosen candidate must be between 1 and 2"):
        client.predict(scored, handle_file(str(path)), 3, 2, "A red square.", "", api_name="/accept_pair")
    assert len(_pairs(settings)) == before


def test_twenty_simultaneous_accepts_are_all_saved(studio):
    client, settings, workdir = studio
    path = _scene_file(workdir, 11)
    scored = _score(client, path)[0]
    before = len(_pairs(settings))
    jobs = [client.submit(scored, handle_file(str(path)), 1, 2, f"Answer number {i}.", f"note {i}",
                          api_name="/accept_pair") for i in range(20)]
    messages = [job.result(timeout=120) for job in jobs]
    assert all(m.startswith("Saved pair #") for m in messages)
    pairs = _pairs(settings)
    assert len(pairs) == before + 20
    assert {p.chosen for p in pairs} >= {f"Answer number {i}." for i in range(20)}
    with sqlite3.connect(settings.data.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_decode_shows_what_core_decoding_returns(studio):
    from core.engine.decoding import decode
    from core.engine.judge import JudgeSettings
    from core.engine.loading import get_model

    client, settings, workdir = studio
    path = _scene_file(workdir, 12)
    text, tree, rows, safety = client.predict(handle_file(str(path)), QUESTION, "debiased-judged", 2, 16, 3, 1.0,
                                              "logit", "faithfulness", "", False, 0.5, api_name="/decode")
    expected = decode(get_model(settings.model), render(make_scene(12)), QUESTION, "debiased-judged",
                      JudgeSettings(alpha=1.0, kind="logit", template="faithfulness"), k=2, max_new_tokens=16,
                      seed=3)
    assert text == f"**debiased-judged:** {expected.text}"
    assert rows["headers"] == ["step", "sentence (indented under its parent)", "score", "raw", "blind",
                               "debiased log-odds", "judge", "chosen"]
    assert len(rows["data"]) == len(expected.nodes)
    assert sorted(row[0] for row in rows["data"]) == sorted(node.step for node in expected.nodes)
    assert tree["type"] == "plotly"
    assert safety == ""


@pytest.mark.parametrize("threshold", [0.01, 0.99])
def test_decode_with_the_safety_defence_shows_its_verdict(studio, threshold):
    from core.engine.decoding import DecodeOptions, decode
    from core.engine.judge import JudgeSettings
    from core.engine.loading import get_model
    from core.engine.safety import SafetySettings, format_verdict

    client, settings, workdir = studio
    path = _scene_file(workdir, 13)
    text, _, _, safety = client.predict(handle_file(str(path)), QUESTION, "greedy", 2, 16, 3, 1.0, "logit",
                                        "faithfulness", "", True, threshold, api_name="/decode")
    expected = decode(get_model(settings.model), render(make_scene(13)), QUESTION, "greedy",
                      JudgeSettings(alpha=1.0, kind="logit", template="faithfulness"), k=2, max_new_tokens=16, seed=3,
                      options=DecodeOptions(safety=SafetySettings.from_probability(threshold)))
    assert text == f"**greedy:** {expected.text}"
    assert safety == format_verdict(expected.safety)
    assert expected.safety.tripped.text in safety


def test_compare_runs_base_and_adapter(studio, tiny_llava_dir, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    import core.engine.loading

    client, settings, workdir = studio
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(settings.data.adapters_dir / "tiny-lora")
    path = _scene_file(workdir, 13)
    base_model = core.engine.loading.get_model(settings.model)
    loads, load_model = [], core.engine.loading.load_model
    monkeypatch.setattr(core.engine.loading, "load_model", lambda s: (loads.append(s), load_model(s))[1])
    for click in range(2):
        summary, base, tuned = client.predict(handle_file(str(path)), 13, QUESTION, 2, "sample", 0, 1.0, "logit",
                                              "faithfulness", "", "tiny-lora", api_name="/compare")
        assert summary.startswith("**base**: mean debiased") and "**tiny-lora**: mean debiased" in summary
        # side by side, each best rank first; a fresh LoRA (B = 0) changes nothing, and the studio says so
        assert [row[0] for row in base["data"]] == [row[0] for row in tuned["data"]] == [1, 2]
        assert [row[2] for row in base["data"]] == [row[2] for row in tuned["data"]]
        assert "**The outputs are identical**" in summary
    # one copy of the weights: no model was loaded for either click, the adapter went into the cached base
    assert loads == [] and core.engine.loading.get_model(settings.model) is base_model
    # attached once to the cached base (other tests that ran earlier in the session may have attached theirs)
    assert [Path(folder).name for folder in base_model.adapter_names].count("tiny-lora") == 1
    with pytest.raises(AppError, match="No adapter named '../tiny-lora'"):
        client.predict(handle_file(str(path)), 13, QUESTION, 2, "sample", 0, 1.0, "logit", "faithfulness", "",
                       "../tiny-lora", api_name="/compare")


def test_cli_flags_fill_the_settings(tmp_path):
    args = parser().parse_args(["--model", "org/model", "--4bit", "--adapter", "ad", "--data", str(tmp_path),
                                "--host", "0.0.0.0", "--port", "7001", "--share", "--memory-budget-mib", "512"])
    settings = settings_from_args(args)
    assert (settings.model.model, settings.model.load_in_4bit, settings.model.adapter) == ("org/model", True, "ad")
    assert settings.model.memory_budget_mib == 512
    assert (settings.data.data_dir, settings.host, settings.port, settings.share) == (tmp_path, "0.0.0.0", 7001,
                                                                                      True)
    assert launch_options(settings)["max_file_size"] == "200mb"
    assert settings.access.private_pairs is True  # the default: on a public deployment only admins read pairs
    assert settings_from_args(parser().parse_args(["--no-private-pairs"])).access.private_pairs is False


def test_shipped_examples_are_the_scenes_of_their_seeds():
    # Picked with `python -m core.shapes.examples --out assets/examples --n 4 --scan 300` (test-split scenes where the
    # embedded model's raw judge prefers a hallucinating candidate and the debiased judge a faithful one); rerun it when
    # the world or the model changes.
    import json

    from selfjudge_ui.explore import EXAMPLES_DIR, example_scenes

    examples = example_scenes()
    rows = [json.loads(line) for line in (EXAMPLES_DIR / "scenes.jsonl").read_text().splitlines()]
    assert len(examples) == 4 and [seed for _, seed in examples] == [row["seed"] for row in rows]
    assert all(seed < 1_000_000 and row["flip"]["raw"][0] >= row["flip"]["raw"][1]
               and row["flip"]["debiased"][1] >= row["flip"]["debiased"][0] for (_, seed), row in zip(examples, rows))
    for path, seed in examples:
        assert Image.open(path).convert("RGB").tobytes() == render(make_scene(seed)).tobytes(), path
