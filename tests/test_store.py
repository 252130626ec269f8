"""Tests for core/data/store.py: whole rows, images stored once, duplicates, soft delete, migrations, concurrency."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import sqlite3
import threading
from dataclasses import replace

import pytest
from PIL import Image
from sqlite_utils import Database

from core.data.store import (MAX_STORED_SIDE, SCHEMA_VERSION, DuplicatePairError, NotFoundError, Pair, SchemaError,
                             Store, main, migrate, normalised_png, schema_version)


def counting_clock():
    """A clock that returns 2025-01-01T00:00:00.001, .002, ... so rows can be compared whole."""
    ticks = iter(range(1, 10_000))
    return lambda: f"2025-01-01T00:00:00.{next(ticks):03d}+00:00"


def picture(colour=(200, 30, 30), size=(8, 6)) -> Image.Image:
    return Image.new("RGB", size, colour)


def sha_of(image: Image.Image) -> str:
    return hashlib.sha256(normalised_png(image)).hexdigest()


def make_pair(**fields) -> Pair:
    values = dict(image_sha256="", prompt="Describe the image.", chosen="There is a red circle.",
                  rejected="There is a blue square.", chosen_scores={"debiased": 2.5, "raw": 1.0},
                  rejected_scores={"debiased": -0.5, "raw": 0.5}, model_id="shapes-llava", source="self")
    return Pair(**{**values, **fields})


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "selfjudge.db", clock=counting_clock())
    yield store
    store.close()


def dump(store: Store) -> list[str]:
    return list(store.db.conn.iterdump())


def test_add_pair_returns_id_and_get_pair_returns_whole_pair(store):
    image = picture()
    pair_id = store.add_pair(make_pair(note="first"), image)
    assert pair_id == 1
    # Tick 1 stamps the image row, tick 2 the pair.
    assert store.get_pair(1) == make_pair(image_sha256=sha_of(image), note="first", id=1,
                                          created_at="2025-01-01T00:00:00.002+00:00")
    assert store.db["images"].get(sha_of(image)) == {
        "sha256": sha_of(image), "width": 8, "height": 6, "size_bytes": len(normalised_png(image)),
        "created_at": "2025-01-01T00:00:00.001+00:00"}


def test_picture_is_normalised_to_rgb_and_stored_once(store, tmp_path):
    rgb = picture((10, 20, 30))
    rgba = rgb.convert("RGBA")
    sha = store.add_image(rgb)
    assert store.add_image(rgba) == sha
    store.add_pair(make_pair(), rgba)
    store.add_pair(make_pair(prompt="Another question?"), rgb)
    files = sorted(path.relative_to(tmp_path / "images").as_posix() for path in (tmp_path / "images").rglob("*"))
    assert files == [sha[:2], f"{sha[:2]}/{sha}.png"]
    assert store.db["images"].count == 1
    loaded = store.load_image(sha)
    assert (loaded.mode, loaded.size, loaded.getpixel((3, 2))) == ("RGB", (8, 6), (10, 20, 30))
    assert hashlib.sha256(store.image_bytes(sha)).hexdigest() == sha


def test_transparent_pixels_are_stored_on_white(store):
    sha = store.add_image(Image.new("RGBA", (4, 4), (0, 0, 0, 0)))
    assert store.load_image(sha).getpixel((0, 0)) == (255, 255, 255)
    assert sha == store.add_image(picture((255, 255, 255), (4, 4)))


@pytest.mark.parametrize("bad", ["../selfjudge.db", "A" * 64, "0" * 63, "0" * 64 + "/../x", ""])
def test_load_image_refuses_anything_but_a_sha256(store, bad):
    with pytest.raises(ValueError, match="not an image id"):
        store.load_image(bad)


def test_load_image_of_unknown_sha_is_not_found(store):
    with pytest.raises(NotFoundError, match="image 0{64} is not in the store"):
        store.load_image("0" * 64)


def test_duplicate_pair_raises_and_writes_nothing(store):
    image = picture()
    store.add_pair(make_pair(), image)
    before = dump(store)
    with pytest.raises(DuplicatePairError, match="already stored as #1"):
        store.add_pair(make_pair(note="same pair, other note", source="human"), image)
    assert dump(store) == before


def test_batch_with_a_duplicate_writes_nothing_unless_skipping(store):
    image = picture()
    store.add_pair(make_pair(), image)
    before = dump(store)
    batch = [(make_pair(prompt="New?"), image), (make_pair(), image)]
    with pytest.raises(DuplicatePairError):
        store.add_pairs(batch)
    assert dump(store) == before
    assert store.add_pairs(batch, skip_duplicates=True) == [2, None]
    assert [pair.prompt for pair in store.list_pairs()] == ["New?", "Describe the image."]


def test_deleted_pair_does_not_count_as_duplicate(store):
    image = picture()
    store.add_pair(make_pair(), image)
    store.delete_pair(1)
    assert store.add_pair(make_pair(), image) == 2
    with pytest.raises(DuplicatePairError, match="cannot restore pair #1: an identical pair #2 is stored"):
        store.restore_pair(1)
    assert store.get_pair(1).deleted_at == "2025-01-01T00:00:00.003+00:00"


@pytest.mark.parametrize("fields, message", [
    ({"chosen": "same", "rejected": "same"}, "chosen and rejected are identical"),
    ({"prompt": "   "}, "prompt is empty"),
    ({"rejected": ""}, "rejected is empty"),
    ({"source": "robot"}, "source must be one of human, self"),
    ({"chosen_scores": {"debiased": float("nan")}},
     r"chosen_scores\['debiased'\] must be a finite number or null, not nan"),
    ({"chosen_scores": {"kind": "x" * 65}}, r"chosen_scores\['kind'\] must be a finite number, true/false, null or a "
                                             r"short text, not 'xxx"),
    ({"rejected_scores": {"debiased": "NaN-as-string"}},
     r"rejected_scores\['debiased'\] must be a finite number or null, not 'NaN-as-string'"),
    ({"chosen": "There is a blue\u200b square. ", "rejected": "There is a blue  square."},
     "chosen and rejected are identical \\(ignoring whitespace and invisible characters\\)"),
    ({"note": "a\x00b"}, "note contains the control character U\\+0000 at position 2; remove it"),
    ({"chosen": "x" * 4001}, "chosen is 4,001 characters long; the limit is 4,000"),
    ({"created_at": "yesterday"}, "created_at must be an ISO 8601 date or time"),
    ({"model_id": 7}, "model_id must be text, not int 7"),
    ({"rejected_scores": [1.0]}, "rejected_scores must be a dict"),
    ({"image_sha256": "abc"}, "image_sha256 must be 64 lowercase hex digits"),
])
def test_invalid_pair_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        make_pair(**fields)


def test_pair_without_a_stored_image_is_refused(store):
    with pytest.raises(NotFoundError, match="is not in the store; pass the picture"):
        store.add_pair(make_pair(image_sha256="0" * 64))
    with pytest.raises(ValueError, match="a pair needs an image"):
        store.add_pair(make_pair())
    with pytest.raises(ValueError, match="does not match the image given"):
        store.add_pair(make_pair(image_sha256="0" * 64), picture())
    assert store.db["pairs"].count == 0


def test_add_pair_by_sha_of_an_already_stored_image(store):
    sha = store.add_image(picture())
    assert store.add_pair(make_pair(image_sha256=sha)) == 1
    assert store.get_pair(1).image_sha256 == sha


def test_list_pairs_filters_and_orders_newest_first(store):
    red, blue = picture((255, 0, 0)), picture((0, 0, 255))
    # Each add_pair takes two ticks (image row, then pair): pairs are stamped .002, .004, .006, .008.
    store.add_pair(make_pair(prompt="What is 100% red?"), red)
    store.add_pair(make_pair(prompt="Describe it.", source="human", model_id="other"), blue)
    store.add_pair(make_pair(prompt="Any shapes?", note="under_score"), red)
    store.add_pair(make_pair(prompt="Deleted one"), red)
    store.delete_pair(4)

    def ids(**filters):
        return [pair.id for pair in store.list_pairs(**filters)]

    assert ids() == [3, 2, 1]
    assert ids(include_deleted=True) == [4, 3, 2, 1]
    assert ids(search="100%") == [1]
    assert ids(search="0%r") == []  # % is literal, not a wildcard
    assert ids(search="a_r") == []  # _ is literal too ("a red" would match a wildcard)
    assert ids(search="UNDER_score") == [3]  # case-insensitive, searches the note
    assert ids(search="red circle") == [3, 2, 1]  # searches the answers
    assert ids(source="human") == [2]
    assert ids(model_id="shapes-llava") == [3, 1]
    assert ids(since="2025-01-01T00:00:00.004+00:00") == [3, 2]
    assert ids(limit=2) == [3, 2]
    assert ids(limit=2, offset=2) == [1]
    assert ids(limit=None, include_deleted=True) == [4, 3, 2, 1]
    assert store.count_pairs() == 3
    assert store.count_pairs(source="self", include_deleted=True) == 3
    with pytest.raises(ValueError, match="source must be one of human, self"):
        store.list_pairs(source="robot")


def test_update_pair_changes_only_the_given_fields(store):
    image = picture()
    store.add_pair(make_pair(), image)
    updated = store.update_pair(1, chosen="There is one red circle.", note="tightened")
    expected = make_pair(image_sha256=sha_of(image), chosen="There is one red circle.", note="tightened", id=1,
                         created_at="2025-01-01T00:00:00.002+00:00")
    assert updated == expected
    assert store.get_pair(1) == expected


def test_bad_updates_change_nothing(store):
    image = picture()
    store.add_pair(make_pair(), image)
    store.add_pair(make_pair(chosen="Two circles."), image)
    before = dump(store)
    with pytest.raises(ValueError, match="cannot edit created_at, id; editable: prompt, chosen"):
        store.update_pair(1, id=5, created_at="x")
    with pytest.raises(ValueError, match="chosen and rejected are identical"):
        store.update_pair(1, rejected="There is a red circle.")
    with pytest.raises(DuplicatePairError, match="pair #2 would become identical to pair #1"):
        store.update_pair(2, chosen="There is a red circle.")
    with pytest.raises(NotFoundError, match="no pair #9"):
        store.update_pair(9, note="x")
    assert dump(store) == before


def test_delete_is_soft_idempotent_and_restorable(store):
    store.add_pair(make_pair(), picture())
    store.delete_pair(1)
    store.delete_pair(1)
    assert store.get_pair(1).deleted_at == "2025-01-01T00:00:00.003+00:00"
    assert store.list_pairs() == []
    store.restore_pair(1)
    assert [pair.id for pair in store.list_pairs()] == [1]
    assert store.get_pair(1).deleted_at is None
    with pytest.raises(NotFoundError, match="no pair #2"):
        store.delete_pair(2)
    with pytest.raises(NotFoundError, match="no pair #2"):
        store.restore_pair(2)


def test_stats_counts_live_pairs_and_mean_margin(store):
    red, blue = picture((255, 0, 0)), picture((0, 0, 255))
    store.add_pair(make_pair(), red)  # margin 3.0
    store.add_pair(make_pair(prompt="Q2", chosen_scores={"debiased": 1.0}, rejected_scores={"debiased": 0.0}),
                   blue)  # margin 1.0
    store.add_pair(make_pair(prompt="Q3", source="human", model_id="", chosen_scores={},
                             rejected_scores={}), red)  # no margin
    store.add_pair(make_pair(prompt="Q4", chosen_scores={"debiased": 9.0}), red)
    store.delete_pair(4)
    assert store.stats() == {"pairs": 3, "deleted": 1, "images": 2, "by_source": {"human": 1, "self": 2},
                             "by_model": {"": 1, "shapes-llava": 2}, "mean_margin": 2.0,
                             "pairs_with_margin": 2}
    assert make_pair().margin == 3.0
    assert make_pair(chosen_scores={}).margin is None


def test_stats_of_an_empty_store(store):
    assert store.stats() == {"pairs": 0, "deleted": 0, "images": 0, "by_source": {"human": 0, "self": 0},
                             "by_model": {}, "mean_margin": None, "pairs_with_margin": 0}


def test_run_history(store):
    run_id = store.add_run("dpo beta 0.1", {"beta": 0.1, "epochs": 1})
    assert store.get_run(run_id) == {
        "id": 1, "name": "dpo beta 0.1", "params": {"beta": 0.1, "epochs": 1}, "status": "queued",
        "metrics": [], "error": "", "adapter_path": "", "created_at": "2025-01-01T00:00:00.001+00:00",
        "finished_at": None}
    store.update_run(run_id, status="running")
    store.append_run_metrics(run_id, {"step": 1, "loss": 0.69})
    store.append_run_metrics(run_id, {"step": 2, "loss": 0.5})
    store.update_run(run_id, status="finished", adapter_path="adapters/run-1")
    assert store.get_run(run_id) == {
        "id": 1, "name": "dpo beta 0.1", "params": {"beta": 0.1, "epochs": 1}, "status": "finished",
        "metrics": [{"loss": 0.69, "step": 1}, {"loss": 0.5, "step": 2}], "error": "",
        "adapter_path": "adapters/run-1", "created_at": "2025-01-01T00:00:00.001+00:00",
        "finished_at": "2025-01-01T00:00:00.002+00:00"}
    store.update_run(run_id, metrics=[{"step": 9}], finished_at="2025-02-02")
    second = store.add_run("ipo", {})
    store.update_run(second, status="failed", error="CUDA out of memory")
    runs = store.list_runs()
    assert [(run["id"], run["status"], run["error"], run["finished_at"]) for run in runs] == [
        (2, "failed", "CUDA out of memory", "2025-01-01T00:00:00.004+00:00"), (1, "finished", "", "2025-02-02")]
    assert runs[1]["metrics"] == [{"step": 9}]


@pytest.mark.parametrize("call, error, message", [
    (lambda s: s.update_run(1, status="done"), ValueError, "run status must be one of queued, running"),
    (lambda s: s.update_run(1, metrics={"loss": 1}), ValueError, "run metrics must be a list of dicts"),
    (lambda s: s.update_run(1, colour="red"), ValueError, "cannot edit colour"),
    (lambda s: s.update_run(7, status="running"), NotFoundError, "no fine-tune run #7"),
    (lambda s: s.append_run_metrics(7, {}), NotFoundError, "no fine-tune run #7"),
    (lambda s: s.add_run(" ", {}), ValueError, "a run needs a non-empty name"),
])
def test_bad_run_updates_are_refused(store, call, error, message):
    store.add_run("run", {})
    before = dump(store)
    with pytest.raises(error, match=message):
        call(store)
    assert dump(store) == before


def test_store_is_in_wal_mode_with_a_busy_timeout(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    assert schema_version(store.db) == SCHEMA_VERSION == 3


def test_migrating_a_version_1_database_keeps_its_pairs(tmp_path):
    path = tmp_path / "old.db"
    old = Database(path)
    assert migrate(old, target=1) == 1
    sha = "ab" * 32
    old["images"].insert({"sha256": sha, "width": 1, "height": 1, "size_bytes": 1, "created_at": "t0"})
    old["pairs"].insert({"image_sha256": sha, "prompt": "p", "chosen": "a", "rejected": "b",
                         "chosen_scores": '{"debiased": 1.0}', "source": "human", "created_at": "t1"})
    assert "runs" not in old.table_names()
    old.close()

    store = Store(path, clock=counting_clock())
    assert schema_version(store.db) == 3
    assert store.get_pair(1) == Pair(image_sha256=sha, prompt="p", chosen="a", rejected="b",
                                     chosen_scores={"debiased": 1.0}, rejected_scores={}, source="human", id=1,
                                     created_at="1970-01-01T00:00:00.000+00:00",
                                     problems="created_at: 't1' is not a date, set to 1970-01-01")
    assert store.add_run("new table", {}) == 1
    store.close()
    assert Store(path).get_run(1)["name"] == "new table"  # reopening runs no migration twice


def test_database_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "future.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SchemaError, match="schema version 99 is newer than this code's 3"):
        Store(path)


def test_memory_store_keeps_images_in_a_temp_dir():
    store = Store(":memory:")
    sha = store.add_image(picture())
    assert store.add_pair(make_pair(image_sha256=sha)) == 1
    assert store.load_image(sha).size == (8, 6)
    assert store.images_dir.name.startswith("selfjudge-images-")


def test_twenty_threads_writing_at_once(store):
    errors = []

    def add(index: int) -> None:
        try:
            store.add_pair(make_pair(prompt=f"Question {index}?"), picture((index, 0, 0)))
        except Exception as error:  # collected so the main thread can fail with it
            errors.append(error)

    threads = [threading.Thread(target=add, args=(index,)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count_pairs() == 20
    assert store.db["images"].count == 20
    assert sorted(pair.prompt for pair in store.list_pairs()) == sorted(f"Question {i}?" for i in range(20))
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _add_from_process(path: str, worker: int) -> None:
    store = Store(path)
    for index in range(5):
        store.add_pair(make_pair(prompt=f"Worker {worker} question {index}?"), picture((worker, index, 0)))
    store.close()


def test_four_processes_writing_at_once(tmp_path):
    path = str(tmp_path / "shared.db")
    Store(path).close()
    # fork: the children only need sqlite and PIL, and fork starts in milliseconds.
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_from_process, args=(path, worker)) for worker in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    store = Store(path)
    assert store.count_pairs() == 20
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_cli_stats_and_list(tmp_path, capsys):
    store = Store(tmp_path / "selfjudge.db", clock=counting_clock())
    image = picture()
    store.add_pair(make_pair(), image)
    store.close()
    main(["--data-dir", str(tmp_path), "stats"])
    assert json.loads(capsys.readouterr().out) == {
        "pairs": 1, "deleted": 0, "images": 1, "by_source": {"human": 0, "self": 1},
        "by_model": {"shapes-llava": 1}, "mean_margin": 3.0, "pairs_with_margin": 1}
    main(["--data-dir", str(tmp_path), "list", "--limit", "1"])
    row = json.loads(capsys.readouterr().out)
    assert Pair(**row) == replace(make_pair(), image_sha256=sha_of(image), id=1,
                                  created_at="2025-01-01T00:00:00.002+00:00")


def test_pair_normalises_its_time_and_keeps_model_ids_portable(tmp_path):
    pair = make_pair(created_at="2025-01-31T12:00:00Z", model_id=str(tmp_path / "assets" / "shapes-llava"),
                     adapter="/srv/data/adapters/dpo-1")
    assert (pair.created_at, pair.model_id, pair.adapter) == ("2025-01-31T12:00:00.000+00:00", "shapes-llava",
                                                              "dpo-1")
    assert make_pair(model_id="llava-hf/llava-1.5-7b-hf").model_id == "llava-hf/llava-1.5-7b-hf"


def test_stored_pictures_are_bounded_on_their_longest_side(store):
    sha = store.add_image(picture(size=(4000, 1000)))
    assert store.load_image(sha).size == (MAX_STORED_SIDE, 384)
    assert store.db["images"].get(sha)["width"] == MAX_STORED_SIDE


def _version_2_database_with_hostile_rows(path) -> str:
    old = Database(path)
    migrate(old, target=2)
    sha = "ab" * 32
    old["images"].insert({"sha256": sha, "width": 1, "height": 1, "size_bytes": 1, "created_at": "t0"})
    rows = [
        {"chosen": "a", "rejected": "b", "chosen_scores": '{"debiased": "NaN-as-string", "raw": 1.5}',
         "rejected_scores": '{"debiased": 0.5}', "created_at": "not a date", "model_id": "/srv/x/assets/shapes-llava"},
        {"chosen": "a\x00", "rejected": "c", "chosen_scores": "[1, 2]", "rejected_scores": "{bad json",
         "created_at": "2025-02-01T00:00:00+00:00"},
        {"chosen": "same", "rejected": "same\u200b", "created_at": "2025-02-02"},
        {"chosen": "a", "rejected": "c\x07", "created_at": "2025-02-03"},  # a copy of row 2 once repaired
    ]
    for row in rows:
        old["pairs"].insert({"image_sha256": sha, "prompt": "p", "source": "human", **row})
    old.close()
    return sha


def test_migration_3_repairs_or_flags_every_stored_row(tmp_path):
    path = tmp_path / "old.db"
    sha = _version_2_database_with_hostile_rows(path)
    store = Store(path, clock=counting_clock())
    pairs = {pair.id: pair for pair in store.list_pairs(include_deleted=True)}
    assert pairs[1] == Pair(image_sha256=sha, prompt="p", chosen="a", rejected="b", chosen_scores={"raw": 1.5},
                            rejected_scores={"debiased": 0.5}, model_id="shapes-llava", source="human", id=1,
                            created_at="1970-01-01T00:00:00.000+00:00",
                            problems="chosen_scores: debiased not a valid score, removed; "
                                     "created_at: 'not a date' is not a date, set to 1970-01-01")
    assert pairs[1].margin is None
    assert (pairs[2].chosen, pairs[2].chosen_scores, pairs[2].rejected_scores, pairs[2].problems) == (
        "a", {}, {}, "chosen: control characters removed; chosen_scores: unreadable ('[1, 2]'), emptied; "
                     "rejected_scores: unreadable ('{bad json'), emptied")
    assert pairs[3].problems == "chosen and rejected are the same text"
    assert pairs[4].deleted_at is not None
    assert pairs[4].problems == ("rejected: control characters removed; identical to another pair once repaired, "
                                 "so deleted")
    # Editing a flagged pair into a sound one settles its problems.
    assert store.update_pair(3, rejected="different").problems == ""
    assert store.get_pair(3).problems == ""
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_hostile_row_written_behind_the_stores_back_still_lists(store):
    store.add_pair(make_pair(), picture())
    store.db.execute("UPDATE pairs SET chosen_scores = '{\"debiased\": \"NaN-as-string\"}', "
                     "created_at = 'yesterday', rejected = chosen WHERE id = 1")
    [pair] = store.list_pairs(include_deleted=True)
    assert (pair.margin, pair.created_at, pair.chosen_scores) == (None, "1970-01-01T00:00:00.000+00:00", {})
    assert "chosen and rejected are the same text" in pair.problems
    assert (store.stats()["pairs"], store.stats()["mean_margin"]) == (1, None)
    store.db.execute("UPDATE pairs SET rejected_scores = '{bad json' WHERE id = 1")
    assert (store.list_pairs()[0].rejected_scores, store.stats()["pairs_with_margin"]) == ({}, 0)
