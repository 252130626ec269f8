"""Tests for core/data/exchange.py: TRL conversational rows, JSONL and Parquet exports, round trips, safe imports."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

from core.data.exchange import (ExportResult, ImportResult, archive_export, export_pairs, extract_zip,
                                import_pairs, main, pair_from_row, preference_messages)
from core.data.store import Pair, Store

NOON = datetime(2025, 1, 2, 12, 0, 0, tzinfo=timezone.utc)


def fixed_clock():
    return NOON


def make_pair(**fields) -> Pair:
    values = dict(image_sha256="", prompt="Describe the image.", chosen="There is a red circle.",
                  rejected="There is a blue square.", chosen_scores={"debiased": 2.5, "raw": 1.0},
                  rejected_scores={"debiased": -0.5}, model_id="shapes-llava", adapter="adapters/run-1",
                  source="self", note="", created_at="2025-01-01T00:00:00.000+00:00")
    return Pair(**{**values, **fields})


@pytest.fixture
def store(tmp_path):
    """Three live pairs over two pictures (one shared) and one deleted pair."""
    store = Store(tmp_path / "source" / "selfjudge.db")
    red, blue = Image.new("RGB", (8, 8), (220, 20, 20)), Image.new("RGB", (8, 8), (20, 20, 220))
    store.add_pair(make_pair(note="naïve — ünïcode ✓"), red)
    store.add_pair(make_pair(prompt="What shapes?", source="human", chosen_scores={}, rejected_scores={},
                             model_id="", adapter="", created_at="2025-01-01T00:00:01.000+00:00"), blue)
    store.add_pair(make_pair(prompt="Colours?", chosen="Red.", rejected="Green.",
                             created_at="2025-01-01T00:00:02.000+00:00"), red)
    store.add_pair(make_pair(prompt="Deleted?"), red)
    store.delete_pair(4)
    return store


def without_ids(pairs: list[Pair]) -> list[Pair]:
    return [replace(pair, id=None) for pair in pairs]


def test_conversation_is_trl_vision_preference_format():
    assert preference_messages(make_pair()) == {
        "prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                {"type": "text", "text": "Describe the image."}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "There is a red circle."}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "There is a blue square."}]}]}


def test_pair_from_row_reads_standard_format_with_defaults():
    assert pair_from_row({"prompt": "Q?", "chosen": "yes", "rejected": "no"}) == Pair(
        image_sha256="", prompt="Q?", chosen="yes", rejected="no", chosen_scores={}, rejected_scores={})


@pytest.mark.parametrize("row, message", [
    ({"prompt": "Q?", "chosen": "yes"}, "the 'rejected' column is missing"),
    ({"prompt": [{"role": "assistant", "content": "Q?"}], "chosen": "a", "rejected": "b"},
     "prompt must be a string or a list with one 'user' message"),
    ({"prompt": "Q?", "chosen": [{"role": "assistant", "content": [{"type": "image"}]}], "rejected": "b"},
     "chosen must have exactly one text part, found 0"),
    ({"prompt": "Q?", "chosen": "a", "rejected": "b", "source": "robot"}, "source must be one of human, self"),
])
def test_pair_from_row_refuses_malformed_rows(row, message):
    with pytest.raises(ValueError, match=message):
        pair_from_row(row)


def test_jsonl_export_layout_and_first_row(store, tmp_path):
    result = export_pairs(store, tmp_path / "exports", "jsonl", clock=fixed_clock)
    folder = tmp_path / "exports" / "pairs-20250102T120000Z-jsonl"
    assert result == ExportResult(path=folder, format="jsonl", pairs=3, images=2)
    red_sha = store.get_pair(1).image_sha256
    blue_sha = store.get_pair(2).image_sha256
    assert sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")) == sorted(
        ["data.jsonl", "images", "manifest.json", f"images/{red_sha}.png", f"images/{blue_sha}.png"])
    assert (folder / "images" / f"{red_sha}.png").read_bytes() == store.image_bytes(red_sha)
    lines = (folder / "data.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["prompt"][0]["content"][1]["text"] for line in lines] == [
        "Describe the image.", "What shapes?", "Colours?"]  # oldest first, deleted pair left out
    assert json.loads(lines[0]) == {
        "images": [f"images/{red_sha}.png"], **preference_messages(make_pair()), "image_sha256": red_sha,
        "chosen_scores": {"debiased": 2.5, "raw": 1.0}, "rejected_scores": {"debiased": -0.5},
        "model_id": "shapes-llava", "adapter": "adapters/run-1", "source": "self", "note": "naïve — ünïcode ✓",
        "created_at": "2025-01-01T00:00:00.000+00:00"}
    assert json.loads((folder / "manifest.json").read_text()) == {
        "format": "selfjudge-preference-pairs", "version": 1, "layout": "jsonl", "pairs": 3, "images": 2,
        "exported_at": "20250102T120000Z", "store_schema_version": 3,
        "filters": {"search": "", "source": "", "model_id": ""}}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_round_trip_into_a_fresh_store_gives_identical_pairs_and_images(store, tmp_path, fmt):
    result = export_pairs(store, tmp_path / "exports", fmt, clock=fixed_clock)
    fresh = Store(tmp_path / "fresh" / "selfjudge.db")
    assert import_pairs(fresh, result.path) == ImportResult(added=3, duplicates=0)
    assert without_ids(fresh.list_pairs()) == without_ids(store.list_pairs())
    assert [pair.id for pair in fresh.list_pairs()] == [3, 2, 1]  # same order as the source
    for pair in fresh.list_pairs():
        assert fresh.image_bytes(pair.image_sha256) == store.image_bytes(pair.image_sha256)
    assert import_pairs(fresh, result.path) == ImportResult(added=0, duplicates=3)


def test_parquet_loads_with_datasets_as_images(store, tmp_path):
    from datasets import Image as ImageFeature, List, load_dataset

    result = export_pairs(store, tmp_path / "exports", "parquet", source="self", clock=fixed_clock)
    assert result.pairs == 2
    dataset = load_dataset("parquet", data_files=str(result.path / "data.parquet"), split="train",
                           cache_dir=str(tmp_path / "hf-cache"))
    assert dataset.features["images"] == List(ImageFeature())
    assert dataset.column_names == ["images", "prompt", "chosen", "rejected", "image_sha256", "chosen_scores",
                                    "rejected_scores", "model_id", "adapter", "source", "note", "created_at"]
    first = dataset[0]
    assert (first["images"][0].mode, first["images"][0].size, first["images"][0].getpixel((0, 0))) == (
        "RGB", (8, 8), (220, 20, 20))
    assert {key: first[key] for key in ("prompt", "chosen", "rejected")} == preference_messages(make_pair())
    assert json.loads(first["chosen_scores"]) == {"debiased": 2.5, "raw": 1.0}
    assert dataset[1]["prompt"][0]["content"][1]["text"] == "Colours?"


def test_zip_round_trip(store, tmp_path):
    result = export_pairs(store, tmp_path / "exports", "jsonl", clock=fixed_clock)
    archive = archive_export(result.path)
    assert archive == tmp_path / "exports" / "pairs-20250102T120000Z-jsonl.zip"
    assert sorted(zipfile.ZipFile(archive).namelist())[:2] == ["data.jsonl", "images/"]
    fresh = Store(tmp_path / "fresh" / "selfjudge.db")
    assert import_pairs(fresh, archive) == ImportResult(added=3, duplicates=0)
    assert without_ids(fresh.list_pairs()) == without_ids(store.list_pairs())
    elsewhere = archive_export(result.path, tmp_path / "downloads")
    assert elsewhere == tmp_path / "downloads" / "pairs-20250102T120000Z-jsonl.zip"
    assert elsewhere.read_bytes() == archive.read_bytes()


def test_zip_members_outside_the_layout_are_never_written(store, tmp_path):
    source = export_pairs(store, tmp_path / "exports", "jsonl", clock=fixed_clock).path
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in source.rglob("*"):
            if path.is_file():
                handle.write(path, f"export/{path.relative_to(source).as_posix()}")
        handle.writestr("../../escaped.txt", "x")
        handle.writestr("export/images/../../escaped.png", "x")
        handle.writestr("/tmp/absolute.txt", "x")
    into = tmp_path / "outer" / "middle" / "into"
    assert extract_zip(archive, into) == into
    expected = sorted(["middle", "middle/into", "middle/into/data.jsonl", "middle/into/manifest.json",
                       "middle/into/images"] + [f"middle/into/images/{image.name}"
                                                for image in (source / "images").iterdir()])
    assert sorted(path.relative_to(tmp_path / "outer").as_posix()
                  for path in (tmp_path / "outer").rglob("*")) == expected
    fresh = Store(tmp_path / "fresh" / "selfjudge.db")
    assert import_pairs(fresh, archive) == ImportResult(added=3, duplicates=0)


def test_jsonl_image_paths_are_validated_and_nothing_is_written(store, tmp_path):
    folder = export_pairs(store, tmp_path / "exports", "jsonl", clock=fixed_clock).path
    lines = (folder / "data.jsonl").read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[1])
    row["images"] = ["../../source/selfjudge.db"]
    (folder / "data.jsonl").write_text("\n".join([lines[0], json.dumps(row), lines[2]]) + "\n", encoding="utf-8")
    fresh = Store(tmp_path / "fresh" / "selfjudge.db")
    with pytest.raises(ValueError, match=r"data.jsonl line 2: image path '../../source/selfjudge.db' must look "
                                         r"like images/<sha256>.png"):
        import_pairs(fresh, folder)
    assert fresh.count_pairs(include_deleted=True) == 0


def test_bad_rows_name_the_row_and_write_nothing(store, tmp_path):
    folder = export_pairs(store, tmp_path / "exports", "jsonl", clock=fixed_clock).path
    lines = (folder / "data.jsonl").read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[2])
    row["rejected"] = row["chosen"]
    (folder / "data.jsonl").write_text("\n".join([lines[0], lines[1], json.dumps(row)]), encoding="utf-8")
    fresh = Store(tmp_path / "fresh" / "selfjudge.db")
    with pytest.raises(ValueError, match="data.jsonl line 3: chosen and rejected are identical"):
        import_pairs(fresh, folder / "data.jsonl")
    assert fresh.count_pairs(include_deleted=True) == 0


def test_importing_something_that_is_not_an_export(tmp_path):
    store = Store(tmp_path / "selfjudge.db")
    with pytest.raises(ValueError, match="is not an export: give a folder with data.jsonl or data.parquet"):
        import_pairs(store, tmp_path)


def test_export_with_no_matching_pairs_leaves_nothing(store, tmp_path):
    with pytest.raises(ValueError, match="no stored pairs match these filters; nothing to export"):
        export_pairs(store, tmp_path / "exports", "jsonl", model_id="no-such-model")
    with pytest.raises(ValueError, match="export format must be one of jsonl, parquet, not 'csv'"):
        export_pairs(store, tmp_path / "exports", "csv")


def test_failed_export_leaves_no_folder(store, tmp_path, monkeypatch):
    def broken(sha256):
        raise OSError("disk full")

    monkeypatch.setattr(store, "image_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        export_pairs(store, tmp_path / "exports", "parquet", clock=fixed_clock)
    assert list((tmp_path / "exports").iterdir()) == []


def test_exports_in_the_same_second_get_distinct_names(store, tmp_path):
    names = [export_pairs(store, tmp_path / "exports", "parquet", clock=fixed_clock).path.name for _ in range(3)]
    assert names == ["pairs-20250102T120000Z-parquet", "pairs-20250102T120000Z-parquet-2",
                     "pairs-20250102T120000Z-parquet-3"]


def test_cli_export_then_import(store, tmp_path, capsys):
    data_dir = tmp_path / "source"
    main(["--data-dir", str(data_dir), "export", "--format", "jsonl", "--source", "human", "--zip"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    folder = Path(lines[0].split(" to ", 1)[1])
    assert lines[0] == f"exported 1 pairs (1 images) to {folder}"
    assert folder.parent == data_dir / "exports"
    assert lines[1] == f"zipped to {folder}.zip"
    main(["--data-dir", str(tmp_path / "other"), "import", f"{folder}.zip"])
    assert capsys.readouterr().out == f"imported 1 pairs from {folder}.zip; skipped 0 already stored\n"
    assert [pair.prompt for pair in Store(tmp_path / "other" / "selfjudge.db").list_pairs()] == ["What shapes?"]


def test_parquet_export_feeds_trl_vision_preference_collator(store, tmp_path):
    from datasets import load_dataset
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from core.shapes.embedded import EmbeddedConfig, build_processor, build_tokenizer

    config = EmbeddedConfig(vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=48, text_layers=2,
                            text_heads=4, text_intermediate=96, seed=0)
    processor = build_processor(build_tokenizer(config.vocab_size, config.seed), config)
    result = export_pairs(store, tmp_path / "exports", "parquet", clock=fixed_clock)
    dataset = load_dataset("parquet", data_files=str(result.path / "data.parquet"), split="train",
                           cache_dir=str(tmp_path / "hf-cache"))
    batch = DataCollatorForVisionPreference(processor)([dict(row) for row in dataset])
    # Chosen rows first, then rejected: 3 pairs -> 6 rows, each with its 96x96 picture.
    assert batch["pixel_values"].shape == (6, 3, 96, 96)
    assert batch["input_ids"].shape[0] == 6
    assert batch["completion_mask"].sum(dim=1).gt(0).tolist() == [True] * 6
