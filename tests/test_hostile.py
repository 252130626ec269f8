"""Hostile inputs, one test per attack found when the studio was attacked on purpose (issue 11):
rows that would break a listing, zip and image bombs, over-long texts, control and invisible
characters, fractional and non-numeric numbers, server paths in messages, and reading pairs on
a public deployment. Each test asserts the exact refusal and that nothing was written."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import gradio as gr
import pyarrow.parquet as pq
import pytest
from PIL import Image

import core.data.exchange as exchange
from core.config import display_model_id, without_paths
from core.data.exchange import export_pairs, import_pairs
from core.data.store import MAX_STORED_SIDE, Pair, Store
from core.engine.images import ImageError, open_image
from core.shapes.world import make_scene, render
from selfjudge_ui import inputs
from selfjudge_ui.access import AccessSettings
from selfjudge_ui.curate import Curate, build_curate_tab
from selfjudge_ui.finetune import Finetune
from selfjudge_ui.settings import StudioSettings

TOKEN = "an-admin-token-of-24-chars"
LOCAL = AccessSettings(public=False, on_space=False, admins=(), admin_token="")
PUBLIC = AccessSettings(public=True, on_space=False, admins=(), admin_token=TOKEN)


def error_message(call) -> str:
    with pytest.raises(gr.Error) as caught:
        call()
    return caught.value.message


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "source" / "selfjudge.db")
    store.add_pair(Pair("", "Describe the image.", "A red circle.", "A blue star.", {"debiased": 1.0},
                        {"debiased": -1.0}, model_id="shapes-llava", source="self"), render(make_scene(1)))
    store.add_pair(Pair("", "What shapes?", "A green square.", "A red star.", source="human"), render(make_scene(2)))
    yield store
    store.close()


@pytest.fixture
def fresh(tmp_path):
    store = Store(tmp_path / "fresh" / "selfjudge.db")
    yield store
    store.close()


def jsonl_export(store: Store, tmp_path: Path, edit=None) -> Path:
    """A jsonl export folder whose second row is changed by `edit(row)`."""
    folder = export_pairs(store, tmp_path / "exports", "jsonl").path
    lines = (folder / "data.jsonl").read_text(encoding="utf-8").splitlines()
    if edit is not None:
        row = json.loads(lines[1])
        edit(row)
        lines[1] = json.dumps(row, ensure_ascii=False)
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def refused(fresh: Store, path: Path, message: str) -> None:
    """Importing `path` raises ValueError matching `message` and writes nothing."""
    with pytest.raises(ValueError, match=message):
        import_pairs(fresh, path)
    assert fresh.count_pairs(include_deleted=True) == 0
    assert fresh.db["images"].count == 0


def png_bomb() -> bytes:
    """A 30000x30000 PNG header (900 million pixels) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 8)) + chunk(b"IEND", b""))


# 1. Rows that would break the Curate tab are refused by import, with their line ------------------

@pytest.mark.parametrize("edit, message", [
    (lambda row: row.update(chosen_scores={"debiased": "NaN-as-string"}),
     r"data.jsonl line 2: chosen_scores\['debiased'\] must be a finite number or null, not 'NaN-as-string'"),
    (lambda row: row.update(rejected_scores='{"debiased": Infinity}'),
     r"data.jsonl line 2: rejected_scores\['debiased'\] must be a finite number or null, not inf"),
    (lambda row: row.update(chosen_scores="{not json"),
     r"data.jsonl line 2: chosen_scores must be a JSON object of score name -> number"),
    (lambda row: row.update(created_at="yesterday"),
     "data.jsonl line 2: created_at must be an ISO 8601 date or time like 2025-01-31T12:00:00Z, not 'yesterday'"),
    (lambda row: row.update(model_id=12), "data.jsonl line 2: model_id must be text, not int 12"),
    (lambda row: row.update(source=["self"]), r"data.jsonl line 2: source must be one of human, self, not \['self'\]"),
])
def test_import_refuses_rows_with_bad_types_numbers_or_dates(store, fresh, tmp_path, edit, message):
    refused(fresh, jsonl_export(store, tmp_path, edit), message)


def test_import_refuses_texts_over_the_ui_limits(store, fresh, tmp_path):
    def three_megabytes(row):
        row["chosen"][0]["content"][0]["text"] = "x" * 3_000_000

    refused(fresh, jsonl_export(store, tmp_path, three_megabytes),
            "data.jsonl line 2: chosen is 3,000,000 characters long; the limit is 4,000")


def test_import_refuses_nul_and_control_characters(store, fresh, tmp_path):
    refused(fresh, jsonl_export(store, tmp_path, lambda row: row.update(note="fine\x00then NUL")),
            "data.jsonl line 2: note contains the control character U\\+0000 at position 5; remove it")


def test_import_refuses_chosen_equal_to_rejected_but_for_a_zero_width_space(store, fresh, tmp_path):
    def same(row):
        row["chosen"][0]["content"][0]["text"] = "A red\u200b star. "
        row["rejected"][0]["content"][0]["text"] = "A red  star."

    refused(fresh, jsonl_export(store, tmp_path, same),
            r"data.jsonl line 2: chosen and rejected are identical \(ignoring whitespace and invisible characters\)")


def test_a_hostile_row_already_stored_cannot_break_curate(store):
    # As an older version's import left it: a string score and a created_at that is not a date.
    store.db.execute("UPDATE pairs SET chosen_scores = '{\"debiased\": \"NaN-as-string\"}', "
                     "created_at = 'not a date' WHERE id = 2")
    curate = Curate(lambda: store, LOCAL)
    _, rows, ids, summary, _ = curate.list_pairs("", "all", "all", False, 1)
    assert (ids, summary, [row[6] for row in rows]) == ([2, 1], "Showing 1-2 of 2 pairs (page 1/1).", ["", 2.0])
    assert "chosen_scores: debiased not a valid score, removed" in curate.get_pair(2)[7]
    store.delete_pair(2)
    assert curate.list_pairs("", "all", "all", True, 1)[2] == [2, 1]  # "Show deleted" too
    assert curate.pair_stats()[0].startswith("**1 pairs**")


# 2. Bounded resources ------------------------------------------------------------------------------

def test_a_zip_bomb_is_refused_before_it_is_unpacked(fresh, tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        info = zipfile.ZipInfo("data.jsonl")
        info.compress_type = zipfile.ZIP_DEFLATED
        with handle.open(info, "w", force_zip64=True) as member:
            for _ in range(300):  # 300 MiB of spaces, about 300 KB compressed
                member.write(b" " * 2**20)
    assert archive.stat().st_size < 1_000_000
    refused(fresh, archive, "the zip unpacks to 300 MiB; an import takes at most 256 MiB: split it into smaller "
                            "exports")


def test_a_zip_with_too_many_members_is_refused(fresh, tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("data.jsonl", "")
        for index in range(exchange.MAX_IMPORT_MEMBERS):
            handle.writestr(f"junk/{index}", "")
    refused(fresh, archive, "the zip holds 10,003 files; an import takes at most 10,002")


def test_an_image_bomb_in_a_zip_is_refused_with_its_line(store, fresh, tmp_path):
    folder = jsonl_export(store, tmp_path)
    second = json.loads((folder / "data.jsonl").read_text(encoding="utf-8").splitlines()[1])
    (folder / second["images"][0]).write_bytes(png_bomb())
    archive = exchange.archive_export(folder)
    refused(fresh, archive, r"data.jsonl line 2: the image has too many pixels \(limit 16,777,216\); use a smaller "
                            "image")


def test_an_image_bomb_in_parquet_is_refused_with_its_row(store, fresh, tmp_path):
    folder = export_pairs(store, tmp_path / "exports", "parquet").path
    table = pq.read_table(folder / "data.parquet")
    rows = table.to_pylist()
    rows[1]["images"][0]["bytes"] = png_bomb()
    pq.write_table(table.from_pylist(rows, schema=table.schema), folder / "data.parquet")
    refused(fresh, folder / "data.parquet", r"data.parquet row 2: the image has too many pixels \(limit 16,777,216\)")


def test_a_parquet_file_that_unpacks_past_the_cap_is_refused_from_its_footer(store, fresh, tmp_path, monkeypatch):
    folder = export_pairs(store, tmp_path / "exports", "parquet").path
    monkeypatch.setattr(exchange, "MAX_IMPORT_BYTES", 1000)
    refused(fresh, folder / "data.parquet", "data.parquet unpacks to 0 MiB; an import takes at most 0 MiB")


def test_a_large_upload_is_stored_bounded_and_its_export_imports_again(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.effect_noise((4000, 3000), 60).convert("RGB").save(photo, quality=95)
    assert photo.stat().st_size > 5_000_000
    store = Store(tmp_path / "big" / "selfjudge.db")
    store.add_pair(Pair("", "Describe it.", "Noise.", "A cat."), open_image(photo))
    stored = store.list_pairs()[0]
    assert store.load_image(stored.image_sha256).size == (MAX_STORED_SIDE, 1152)
    curate = Curate(lambda: store, LOCAL)  # kept: its downloads folder goes with it
    download, _ = curate.export_pairs("parquet", "", "all", "all")
    assert Path(download).stat().st_size < 20 * 2**20  # well under the 200 MB upload cap
    again = Store(tmp_path / "again" / "selfjudge.db")
    assert Curate(lambda: again, LOCAL).import_pairs(download) == "Imported 1 pairs; skipped 0 already stored."
    assert again.image_bytes(stored.image_sha256) == store.image_bytes(stored.image_sha256)


# 3. Clear errors for broken uploads ----------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda path: path.write_bytes(b"PK\x03\x04 this is not really a zip"),
     "Nothing imported from upload.zip: the file is not a zip archive, or it is damaged; upload the .zip made "
     "by Export."),
    (lambda path: zipfile.ZipFile(path, "w").close(),
     "Nothing imported from upload.zip: the zip holds no data.jsonl or data.parquet; zip an export folder (made "
     "by Export or python -m core.data.exchange export)."),
])
def test_bad_and_empty_zips_get_specific_messages(fresh, tmp_path, make, message):
    path = tmp_path / "gradio" / "0123abcd" / "upload.zip"
    path.parent.mkdir(parents=True)
    make(path)
    assert error_message(lambda: Curate(lambda: fresh, LOCAL).import_pairs(str(path))) == message


def test_a_string_manifest_version_gets_a_specific_message(store, fresh, tmp_path):
    folder = jsonl_export(store, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "version": "1"}))
    refused(fresh, folder, "manifest.json's version must be a whole number from 1, not '1'; was the manifest "
                           "edited by hand\\?")


def test_no_server_path_in_messages(store, tmp_path):
    upload = tmp_path / "gradio" / "0123abcd" / "photo.jpg"
    upload.parent.mkdir(parents=True)
    upload.write_text("not a picture")
    with pytest.raises(ImageError) as caught:
        open_image(upload)
    assert str(tmp_path) not in str(caught.value)
    curate = Curate(lambda: store, LOCAL)
    _, status = curate.export_pairs("jsonl", "", "all", "all")
    assert str(tmp_path) not in status and status.endswith("in the data folder; the download holds the same data.")
    assert without_paths(f"cannot open '{upload}' (see https://huggingface.co/a/b)") == (
        "cannot open 'photo.jpg' (see https://huggingface.co/a/b)")
    assert display_model_id(str(tmp_path / "assets" / "shapes-llava")) == "shapes-llava"
    assert display_model_id("llava-hf/llava-1.5-7b-hf") == "llava-hf/llava-1.5-7b-hf"
    pair = Pair("", "Q?", "a", "b", model_id=str(tmp_path / "assets" / "shapes-llava"))
    assert pair.model_id == "shapes-llava"


@pytest.mark.parametrize("model_id, shown", [
    ("/srv/app/assets/shapes-llava", "shapes-llava"), ("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-1.5-7b-hf"),
    ("/tmp/data/adapters/run-1", "run-1"), ("", ""), ("assets/shapes-llava", "shapes-llava"),
    ("./assets/shapes-llava/", "shapes-llava"), ("C:\\models\\x", "x")])
def test_display_model_id_never_shows_a_server_path(model_id, shown, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # "assets/shapes-llava" is a folder from the repo root
    assert display_model_id(model_id) == shown


# 4. Numbers and texts at the UI edge ----------------------------------------------------------------

def test_a_fractional_whole_number_is_refused_not_rounded(tmp_path):
    epochs = inputs.number_box(1, label="Epochs", precision=0, minimum=1, maximum=20)
    assert epochs.preprocess(1.5) == 1.5  # passed on as sent, not rounded to 2
    tab = Finetune(StudioSettings(access=LOCAL), lambda: Store(":memory:"))
    assert error_message(lambda: tab.dpo_settings(0.1, "sigmoid", 1e-3, 1.5, 2, 4, 8, False)) == (
        "epochs must be a whole number, not 1.5.")


def test_numbers_that_are_not_numbers_name_their_field():
    page = inputs.number_box(1, label="Page", precision=0, minimum=1)
    alpha = inputs.slider_box(0, 10, label="alpha")
    assert error_message(lambda: page.preprocess("abc")) == "Page must be a number, not 'abc'."
    assert error_message(lambda: page.preprocess(0)) == "Page must be at least 1, not 0."
    assert error_message(lambda: alpha.preprocess([1])) == "alpha must be a number, not '[1]'."
    assert error_message(lambda: alpha.preprocess(float("nan"))) == "alpha must be a number, not 'nan'."
    assert page.preprocess("3") == 3.0


def test_control_characters_are_removed_from_typed_text():
    assert inputs.check_text("question", " What\x00 is\x1b here?\n", 500) == "What is here?"
    assert error_message(lambda: inputs.check_text("question", "\x00\x07", 500)) == "The question is empty; type one."


def test_through_the_api_a_non_numeric_page_a_nul_search_and_private_pairs(store):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    with gr.Blocks() as demo:
        build_curate_tab(lambda: store, access=PUBLIC)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        with pytest.raises(AppError, match="Page must be a number, not 'two'"):
            client.predict("", "all", "all", False, "two", TOKEN, api_name="/list_pairs")
        with pytest.raises(AppError, match="The stored pairs are visible to admins only on this deployment"):
            client.predict("", "all", "all", False, 1, "", api_name="/list_pairs")
        with pytest.raises(AppError, match="The stored pairs are visible to admins only on this deployment"):
            client.predict(1, "", api_name="/get_pair")
        _, table, summary, _ = client.predict("red\x00", "all", "all", False, 1, TOKEN, api_name="/list_pairs")
        assert ([row[0] for row in table["data"]], summary) == ([2, 1], "Showing 1-2 of 2 pairs (page 1/1).")
        assert client.predict(1, TOKEN, api_name="/get_pair")[2] == "Describe the image."
    finally:
        demo.close()


def test_an_unreadable_image_inside_an_import_names_its_line(store, fresh, tmp_path):
    folder = jsonl_export(store, tmp_path)
    second = json.loads((folder / "data.jsonl").read_text(encoding="utf-8").splitlines()[1])
    buffer = io.BytesIO()
    render(make_scene(2)).save(buffer, format="PNG")
    (folder / second["images"][0]).write_bytes(buffer.getvalue()[:200])  # cut short
    refused(fresh, folder, r"data.jsonl line 2: the file is not a readable image \(")
