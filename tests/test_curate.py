"""Tests for selfjudge_ui/curate.py: the Curate tab's handlers (exact values, errors write nothing) and its API."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from core.data.store import Pair, Store
from selfjudge_ui.access import AccessSettings
from selfjudge_ui.curate import Curate, build_curate_tab, metadata_line, score_rows

LOCAL = AccessSettings(public=False, on_space=False, admins=(), admin_token="")
TOKEN = "an-admin-token-of-24-chars"
PUBLIC = AccessSettings(public=True, on_space=False, admins=(), admin_token=TOKEN)


def counting_clock():
    ticks = iter(range(1, 10_000))
    return lambda: f"2025-01-01T00:00:{next(ticks):02d}.000+00:00"


def make_pair(**fields) -> Pair:
    values = dict(image_sha256="", prompt="Describe the image.", chosen="There is a red circle.",
                  rejected="There is a blue square.", chosen_scores={"debiased": 2.5, "raw": 1.0},
                  rejected_scores={"debiased": -0.5, "raw": 1.5}, model_id="shapes-llava", source="self")
    return Pair(**{**values, **fields})


@pytest.fixture
def store(tmp_path):
    """Two pairs: #1 self/shapes-llava on a red picture, #2 human/no model on a blue one."""
    store = Store(tmp_path / "selfjudge.db", clock=counting_clock())
    store.add_pair(make_pair(), Image.new("RGB", (200, 100), (220, 20, 20)))
    store.add_pair(make_pair(prompt="What shapes?", source="human", model_id="", chosen_scores={},
                             rejected_scores={}, note="checked by hand"), Image.new("RGB", (8, 8), (20, 20, 220)))
    return store


@pytest.fixture
def curate(store):
    return Curate(lambda: store, LOCAL)


def error_message(call) -> str:
    with pytest.raises(gr.Error) as caught:
        call()
    return caught.value.message


def dump(store: Store) -> list[str]:
    return list(store.db.conn.iterdump())


def test_list_pairs_shows_thumbnails_rows_and_ids(curate):
    thumbnails, rows, ids, summary, models = curate.list_pairs("", "all", "all", False, 1)
    assert [caption for _, caption in thumbnails] == ["#2 human", "#1 self, margin +3.00"]
    assert thumbnails[1][0].size == (160, 80)  # thumbnail keeps the aspect ratio
    assert rows == [[2, "human", "", "What shapes?", "There is a red circle.", "There is a blue square.", "",
                     "2025-01-01 00:00:04", ""],
                    [1, "self", "shapes-llava", "Describe the image.", "There is a red circle.",
                     "There is a blue square.", 3.0, "2025-01-01 00:00:02", ""]]
    assert ids == [2, 1]
    assert summary == "Showing 1-2 of 2 pairs (page 1/1)."
    # (label, value): a stored model id is shown by name, never as a server path
    assert models == {"__type__": "update", "choices": ["all", ("shapes-llava", "shapes-llava")], "value": "all"}


def test_list_pairs_filters(curate):
    assert curate.list_pairs("", "self", "all", False, 1)[2] == [1]
    assert curate.list_pairs("by hand", "all", "all", False, 1)[2] == [2]
    assert curate.list_pairs("", "all", "shapes-llava", False, 1)[2] == [1]
    empty = curate.list_pairs("nothing like this", "all", "all", False, 1)
    assert (empty[0], empty[1], empty[2], empty[3]) == ([], [], [], "Showing 0-0 of 0 pairs (page 1/1).")


def test_list_pairs_refuses_bad_filters(curate):
    assert error_message(lambda: curate.list_pairs("", "robot", "all", False, 1)) == (
        "Source must be all, human or self, not 'robot'.")
    assert error_message(lambda: curate.list_pairs("", "all", "all", False, 2)) == (
        "Page 2 does not exist; there is 1.")
    assert error_message(lambda: curate.list_pairs("x" * 501, "all", "all", False, 1)) == (
        "The search text is 501 characters long; the limit is 500.")
    assert curate.list_pairs("red\x00", "all", "all", False, 1)[3] == curate.list_pairs("red", "all", "all", False,
                                                                                         1)[3]  # NUL removed
    assert error_message(lambda: curate.list_pairs("", "all", "all", False, 1.5)) == (
        "Page must be a whole number, not 1.5.")


def test_get_pair_shows_it_side_by_side(curate, store):
    pair_id, image, prompt, chosen, rejected, scores, note, details = curate.get_pair(2)
    assert (pair_id, prompt, chosen, rejected, scores, note) == (
        2, "What shapes?", "There is a red circle.", "There is a blue square.", [], "checked by hand")
    assert (image.size, image.getpixel((0, 0))) == ((8, 8), (20, 20, 220))
    assert details == "Pair #2: source **human**, model `-`, saved 2025-01-01T00:00:04.000+00:00."
    assert curate.get_pair(1)[5] == [["raw", 1.0, 1.5, -0.5], ["debiased", 2.5, -0.5, 3.0]]


@pytest.mark.parametrize("pair_id, message", [
    (None, "Pick a pair first: click a thumbnail or a table row, or type its id."),
    (1.5, "Pair id must be a whole number from 1, not 1.5."),
    (0, "Pair id must be a whole number from 1, not 0."),
    ("abc", "Pair id must be a whole number, not 'abc'."),
    (9, "no pair #9 in the store."),
])
def test_get_pair_refuses_bad_ids(curate, pair_id, message):
    assert error_message(lambda: curate.get_pair(pair_id)) == message


def test_clicking_a_thumbnail_or_row_opens_that_pair(curate):
    assert curate.pick([2, 1], gr.SelectData(None, {"index": 1, "value": None}))[0] == 1
    assert curate.pick([2, 1], gr.SelectData(None, {"index": [0, 3], "value": "What shapes?"}))[0] == 2
    assert error_message(lambda: curate.pick([2], gr.SelectData(None, {"index": 4, "value": None}))) == (
        "That item is no longer listed; press Search to refresh the list.")


def test_scores_and_metadata_are_shown_apart():
    pair = make_pair(chosen_scores={"raw": 2.0, "debiased": 3.0, "rank": 1, "alpha": 1.0, "kind": "logit",
                                    "edited": True},
                     rejected_scores={"raw": 1.0, "debiased": -1.0, "rank": 4, "alpha": 1.0, "kind": "logit"})
    assert score_rows(pair) == [["raw", 2.0, 1.0, 1.0], ["debiased", 3.0, -1.0, 4.0]]
    assert metadata_line(pair) == ("judged with alpha 1.0, score kind logit; chosen: rank 1, edited by hand; "
                                   "rejected: rank 4")
    assert metadata_line(make_pair(chosen_scores={}, rejected_scores={})) == ""


def test_a_wrong_import_file_is_named_as_soon_as_it_is_uploaded(curate):
    assert curate.import_problem("/uploads/photo.JPG") == (
        "Upload a .zip of an export folder or a .parquet file, not a .jpg "
        "(a bare data.jsonl has no images; zip it with its images/ folder).")
    assert curate.import_problem("/uploads/export.zip") == curate.import_problem(None) == ""


def test_refresh_lists_and_counts_what_the_store_holds_now(curate, store):
    before = curate.refresh("", "all", "all", False, 1)
    store.add_pair(make_pair(chosen="A new answer."), store.load_image(store.get_pair(1).image_sha256))
    after = curate.refresh("", "all", "all", False, 1)
    assert (before[3], after[3]) == ("Showing 1-2 of 2 pairs (page 1/1).", "Showing 1-3 of 3 pairs (page 1/1).")
    assert after[5].startswith("**3 pairs**")


def test_score_rows_keep_non_numbers_readable():
    pair = make_pair(chosen_scores={"judge": "yes", "debiased": 1.0, "blind": -2},
                     rejected_scores={"debiased": 0.25, "blind": 1, "aaa": 0.5})
    assert pair.margin == 0.75
    assert score_rows(pair) == [["blind", -2, 1, -3], ["debiased", 1.0, 0.25, 0.75], ["aaa", "", 0.5, ""],
                                ["judge", "yes", "", ""]]


def test_update_pair_saves_and_shows_the_result(curate, store):
    result = curate.update_pair(1, "One red circle.", "There is a blue square.", "tightened")
    assert result[3:5] == ("One red circle.", "There is a blue square.")
    assert result[6] == "tightened"
    assert result[-1] == "Saved pair #1."
    assert (store.get_pair(1).chosen, store.get_pair(1).note) == ("One red circle.", "tightened")


@pytest.mark.parametrize("chosen, rejected, note, message", [
    ("  ", "b", "", "Chosen is empty; a pair needs two non-empty answers."),
    ("a", "a", "", "Not saved: chosen and rejected are identical (ignoring whitespace and invisible characters); "
                   "a preference needs two different answers."),
    ("a \u200b", "a", "", "Not saved: chosen and rejected are identical (ignoring whitespace and invisible "
                          "characters); a preference needs two different answers."),
    ("\x00\x1b", "b", "", "Chosen is empty; a pair needs two non-empty answers."),
    ("a" * 4001, "b", "", "Chosen is 4001 characters; the limit is 4000."),
    ("a", "b", "n" * 2001, "Note is 2001 characters; the limit is 2000."),
])
def test_bad_edits_write_nothing(curate, store, chosen, rejected, note, message):
    before = dump(store)
    assert error_message(lambda: curate.update_pair(1, chosen, rejected, note)) == message
    assert dump(store) == before


def test_edit_that_duplicates_another_pair_is_refused(curate, store):
    store.add_pair(make_pair(chosen="Two circles."), store.load_image(store.get_pair(1).image_sha256))
    before = dump(store)
    assert error_message(lambda: curate.update_pair(3, "There is a red circle.", "There is a blue square.", "")) == (
        "Not saved: pair #3 would become identical to pair #1.")
    assert dump(store) == before


def test_delete_and_restore(curate, store):
    assert curate.delete_pair(1) == "Deleted pair #1; it is hidden from lists and exports. Press Restore to undo."
    assert curate.list_pairs("", "all", "all", False, 1)[2] == [2]
    assert curate.list_pairs("", "all", "all", True, 1)[0][1][1] == "#1 self, margin +3.00 (deleted)"
    assert curate.get_pair(1)[-1] == ("Pair #1: source **self**, model `shapes-llava`, saved "
                                      "2025-01-01T00:00:02.000+00:00; **deleted** 2025-01-01T00:00:05.000+00:00 "
                                      "(Restore undoes it).")
    assert curate.restore_pair(1) == "Restored pair #1."
    assert curate.list_pairs("", "all", "all", False, 1)[2] == [2, 1]
    assert error_message(lambda: curate.delete_pair(7)) == "no pair #7 in the store."


def test_restore_that_would_duplicate_is_refused(curate, store):
    curate.delete_pair(1)
    store.add_pair(make_pair(), store.load_image(store.get_pair(1).image_sha256))
    assert error_message(lambda: curate.restore_pair(1)) == (
        "Not restored: cannot restore pair #1: an identical pair #3 is stored.")


def test_stats(curate):
    assert curate.pair_stats() == (
        "**2 pairs** (human 1, self 1) on 2 images; 0 deleted.  \n"
        "Mean debiased margin (chosen - rejected): 3.000 over 1 pairs.",
        [["human", 1], ["self", 1]], [["(none)", 1], ["shapes-llava", 1]])


def test_public_deployment_needs_the_admin_token_for_writes(store):
    curate = Curate(lambda: store, PUBLIC)
    before = dump(store)
    refused = "This is a public deployment: sign in with Hugging Face as an admin, or enter the admin token, to do this"
    assert error_message(lambda: curate.delete_pair(1, "wrong")) == refused
    assert error_message(lambda: curate.update_pair(1, "x", "y", "", "")) == refused
    assert error_message(lambda: curate.export_pairs("jsonl", "", "all", "all", "")) == refused
    assert error_message(lambda: curate.import_pairs("x.zip", "")) == refused
    assert dump(store) == before
    # Reading the pairs needs an admin too (SELFJUDGE_PRIVATE_PAIRS, on by default) ...
    hidden = ("The stored pairs are visible to admins only on this deployment: sign in with Hugging Face as an "
              "admin, or enter the admin token, then press Search")
    assert error_message(lambda: curate.list_pairs("", "all", "all", False, 1)) == hidden
    assert error_message(lambda: curate.get_pair(1, "wrong")) == hidden
    assert curate.first_view()[:4] == ([], [], [], "The stored pairs are visible to admins only on this "
                                                   "deployment: enter the admin token and press Search.")
    assert curate.list_pairs("", "all", "all", False, 1, TOKEN)[2] == [2, 1]
    assert curate.get_pair(1, TOKEN)[0] == 1
    # A live refresh (tab opened, pair accepted elsewhere) shows the notice, not an error, without the token
    assert curate.refresh("", "all", "all", False, 1)[:4] == curate.first_view()[:4]
    assert curate.refresh("", "all", "all", False, 1, TOKEN)[2] == [2, 1]
    # ... unless the deployment opens them to everyone.
    open_pairs = Curate(lambda: store, replace(PUBLIC, private_pairs=False))
    assert open_pairs.list_pairs("", "all", "all", False, 1)[2] == [2, 1]
    assert curate.delete_pair(1, TOKEN).startswith("Deleted pair #1")


def test_export_parquet_and_jsonl_downloads(curate, store, tmp_path):
    download, message = curate.export_pairs("parquet", "", "self", "all")
    exports = sorted((tmp_path / "exports").iterdir())
    assert len(exports) == 1
    assert Path(download).name == f"{exports[0].name}.parquet"
    assert Path(download).read_bytes() == (exports[0] / "data.parquet").read_bytes()
    assert message == (f"Exported 1 pairs (1 images) to `exports/{exports[0].name}` in the data folder; "
                       "the download holds the same data.")
    download, _ = curate.export_pairs("jsonl", "", "all", "all")
    names = sorted(zipfile.ZipFile(download).namelist())
    assert [name for name in names if not name.startswith("images/")] == ["data.jsonl", "manifest.json"]
    assert json.loads(zipfile.ZipFile(download).read("manifest.json"))["pairs"] == 2


def test_export_errors(curate):
    assert error_message(lambda: curate.export_pairs("csv", "", "all", "all")) == (
        "Export format must be jsonl or parquet, not 'csv'.")
    assert error_message(lambda: curate.export_pairs("jsonl", "no such text", "all", "all")) == (
        "Nothing exported: no stored pairs match these filters; nothing to export.")


def test_import_round_trip_and_errors(curate, tmp_path):
    download, _ = curate.export_pairs("jsonl", "", "all", "all")
    fresh = Store(tmp_path / "fresh" / "selfjudge.db")
    importer = Curate(lambda: fresh, LOCAL)
    assert importer.import_pairs(download) == "Imported 2 pairs; skipped 0 already stored."
    assert importer.import_pairs(download) == "Imported 0 pairs; skipped 2 already stored."
    assert error_message(lambda: importer.import_pairs(None)) == (
        "Upload an export first: a .zip of an export folder or a .parquet file.")
    assert error_message(lambda: importer.import_pairs(str(tmp_path / "data.jsonl"))) == (
        "Upload a .zip of an export folder or a .parquet file, not a .jsonl "
        "(a bare data.jsonl has no images; zip it with its images/ folder).")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    assert error_message(lambda: importer.import_pairs(str(broken))) == (
        "Nothing imported from broken.parquet: broken.parquet is not a readable Parquet file (ArrowInvalid).")
    assert fresh.count_pairs() == 2


def test_tab_exposes_named_api_endpoints(store):
    with gr.Blocks() as demo:
        with gr.Tab("Curate"):
            build_curate_tab(lambda: store, access=LOCAL)
    public = sorted(fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public")
    assert public == ["delete_pair", "export_pairs", "get_pair", "import_pairs", "list_pairs", "pair_stats",
                      "restore_pair", "update_pair"]


def test_api_through_gradio_client(store):
    from gradio_client import Client

    with gr.Blocks() as demo:
        with gr.Tab("Curate"):
            build_curate_tab(lambda: store, access=LOCAL)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        gallery, table, summary, models = client.predict("", "self", "all", False, 1, "", api_name="/list_pairs")
        assert ([item["caption"] for item in gallery], [row[0] for row in table["data"]], summary) == (
            ["#1 self, margin +3.00"], [1], "Showing 1-1 of 1 pairs (page 1/1).")
        assert client.predict(1, "", api_name="/delete_pair") == (
            "Deleted pair #1; it is hidden from lists and exports. Press Restore to undo.")
        with pytest.raises(Exception, match="no pair #99 in the store"):
            client.predict(99, "", api_name="/get_pair")
    finally:
        demo.close()
    assert store.get_pair(1).deleted_at == "2025-01-01T00:00:05.000+00:00"
