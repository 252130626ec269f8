"""SQLite store of preference pairs, their images and fine-tune run history.

One small class (`Store`) over one sqlite-utils `Database`:
- pictures are normalised to RGB (core.engine.images: alpha on white, first frame, ...), shrunk to
  at most MAX_STORED_SIDE pixels on their longest side, encoded as PNG (lossless: the pixels
  stored are the pixels a model is shown), hashed with sha256 and kept once under
  <db dir>/images/<sha[:2]>/<sha>.png, so file paths only ever come from hex we computed;
- every pair is validated before it is written (texts without control characters and within
  the UI's length limits, finite numeric scores, an ISO 8601 time, a portable model id), and
  a row that is already stored but breaks a rule is repaired when read, so no stored row can
  break a listing (migration 3 writes the repairs back and records them in `problems`);
- pairs and runs live in tables whose schema is versioned by PRAGMA user_version and
  brought up to date by the ordered `MIGRATIONS` when a store is opened;
- every write is one `BEGIN IMMEDIATE` transaction under a per-store lock, the database is
  in WAL mode with a busy timeout, so gradio's handler threads and other processes can write
  at the same time.

CLI: `python -m core.data.store stats` or `python -m core.data.store list --limit 5`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import math
import sqlite3
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image
from sqlite_utils import Database

from core.config import display_model_id
from core.engine.images import normalise_image

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
SOURCES = ("human", "self")
RUN_STATUSES = ("queued", "running", "finished", "failed", "cancelled")
FINAL_RUN_STATUSES = ("finished", "failed", "cancelled")
EDITABLE_PAIR_FIELDS = ("prompt", "chosen", "rejected", "chosen_scores", "rejected_scores", "model_id",
                        "adapter", "source", "note")
EDITABLE_RUN_FIELDS = ("name", "params", "status", "metrics", "error", "adapter_path", "finished_at")
# Text limits shared by the UI (selfjudge_ui.settings.InputLimits) and imports (core.data.exchange).
MAX_PROMPT_CHARS = 500
MAX_ANSWER_CHARS = 4000
MAX_NOTE_CHARS = 2000
MAX_NAME_CHARS = 200  # model_id and adapter
TEXT_LIMITS = {"prompt": MAX_PROMPT_CHARS, "chosen": MAX_ANSWER_CHARS, "rejected": MAX_ANSWER_CHARS,
               "note": MAX_NOTE_CHARS, "model_id": MAX_NAME_CHARS, "adapter": MAX_NAME_CHARS}
# The longest side of a stored picture. No supported processor looks at more by default (embedded
# shapes-llava: 96; LLaVA-1.5: 336; LLaVA-NeXT: grids up to 1008; Idefics3/SmolVLM: 4 x 364 = 1456;
# Qwen2-VL: max_pixels 1,003,520, about 1002x1002), so pairs keep what the model saw, while a
# 4096x4096 photo costs 3.5 MiB instead of 40.5 MiB (python -m bench.bench_reliability).
MAX_STORED_SIDE = 1536
# Scores that are numbers (or null where undefined); the margin and the statistics read "debiased".
NUMERIC_SCORES = ("raw", "blind", "debiased", "min_debiased", "likelihood", "alpha", "hallucinated", "recall")
MAX_SCORE_TEXT = 64
# C0 and C1 control characters except tab, line feed and carriage return (NUL, escape, DEL, ...).
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class NotFoundError(KeyError):
    """No pair, run or image with that id."""

    def __str__(self) -> str:
        # KeyError quotes its message; this one is read by people.
        return str(self.args[0]) if self.args else ""


class DuplicatePairError(ValueError):
    """A live pair with the same image, prompt, chosen and rejected already exists."""


class SchemaError(RuntimeError):
    """The database was written by a newer SelfJudge than this one."""


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _shown(value: object, length: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= length else text[:length - 1] + "…"


def check_text(name: str, text: object, max_chars: int, required: bool = True) -> str:
    """The text itself if it is a string within max_chars with no control character; else ValueError saying why."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be text, not {type(text).__name__} {_shown(text)}")
    if required and not text.strip():
        raise ValueError(f"{name} is empty; a pair needs a prompt and two non-empty answers")
    if len(text) > max_chars:
        raise ValueError(f"{name} is {len(text):,} characters long; the limit is {max_chars:,}")
    found = CONTROL_CHARACTER.search(text)
    if found:
        raise ValueError(f"{name} contains the control character U+{ord(found.group()):04X} at position "
                         f"{found.start() + 1}; remove it (tabs and line breaks are fine)")
    return text


def strip_control_characters(text: str) -> str:
    """The text with control characters removed and its ends stripped.

    The studio applies it to what is typed (control characters are invisible) and to model output
    (a random model can emit them); `check_text`, used by Pair, refuses them in imports and direct calls.
    """
    return CONTROL_CHARACTER.sub("", text).strip()


def comparable_text(text: str) -> str:
    """The text as compared for sameness: invisible format characters (zero-width space, BOM, soft hyphen...)
    dropped, runs of whitespace (any kind) made one space, ends stripped."""
    visible = "".join(char for char in text if unicodedata.category(char) != "Cf")
    return " ".join(visible.split())


def is_score(value: object) -> bool:
    """Whether a score value is a finite number (not a bool, not a string)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def score_problem(key: object, value: object) -> str:
    """Why a score entry cannot be stored ('' if it can): known scores are finite numbers or null, other
    entries (the judge's kind, whether the text was edited, ...) short JSON scalars."""
    if not isinstance(key, str) or not key or len(key) > MAX_SCORE_TEXT:
        return f"score names must be 1-{MAX_SCORE_TEXT} characters of text, not {_shown(key)}"
    if key in NUMERIC_SCORES:
        return "" if value is None or is_score(value) else "must be a finite number or null"
    if value is None or isinstance(value, bool) or is_score(value):
        return ""
    if isinstance(value, str) and len(value) <= MAX_SCORE_TEXT and not CONTROL_CHARACTER.search(value):
        return ""
    return "must be a finite number, true/false, null or a short text"


def _scores_json(name: str, scores: dict) -> str:
    if not isinstance(scores, dict):
        raise ValueError(f"{name} must be a dict of score name -> number, not {type(scores).__name__}")
    for key, value in scores.items():
        problem = score_problem(key, value)
        if problem:
            raise ValueError(f"{name}[{_shown(key)}] {problem}, not {_shown(value)}" if isinstance(key, str)
                             and key and len(key) <= MAX_SCORE_TEXT else f"{name}: {problem}")
    return json.dumps(scores, sort_keys=True, allow_nan=False)


def json_text(name: str, value: object) -> str:
    """JSON of a run's params or metrics, or ValueError naming the field (NaN and infinities are refused)."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be JSON-serialisable with finite numbers: {error}") from None


def timestamp(text: object) -> str:
    """An ISO 8601 date or time as the store writes it (UTC, milliseconds); naive times are taken as UTC."""
    if not isinstance(text, str):
        raise ValueError(f"created_at must be an ISO 8601 date or time as text, not {_shown(text)}")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"created_at must be an ISO 8601 date or time like 2025-01-31T12:00:00Z, "
                         f"not {_shown(text)}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Pair:
    """One preference pair: for this image and prompt, `chosen` is preferred over `rejected`."""

    image_sha256: str
    prompt: str
    chosen: str
    rejected: str
    chosen_scores: dict = field(default_factory=dict)
    rejected_scores: dict = field(default_factory=dict)
    model_id: str = ""
    adapter: str = ""
    source: str = "human"
    note: str = ""
    id: int | None = None
    created_at: str = ""
    deleted_at: str | None = None
    problems: str = ""  # what a migration repaired or found wrong in a stored row ('' for a sound one)
    validate: InitVar[bool] = True

    def __post_init__(self, validate: bool) -> None:
        if not validate:
            return
        # Model and adapter are kept as portable names (a hub id, or a local folder's name), never server paths.
        for name in ("model_id", "adapter"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, display_model_id(getattr(self, name)))
        for name, limit in TEXT_LIMITS.items():
            check_text(name, getattr(self, name), limit, required=name in ("prompt", "chosen", "rejected"))
        if comparable_text(self.chosen) == comparable_text(self.rejected):
            raise ValueError("chosen and rejected are identical (ignoring whitespace and invisible characters); "
                             "a preference needs two different answers")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {_shown(self.source)}")
        sha = self.image_sha256
        if not isinstance(sha, str) or (sha and not SHA256_PATTERN.match(sha)):
            raise ValueError(f"image_sha256 must be 64 lowercase hex digits, not {_shown(self.image_sha256)}")
        _scores_json("chosen_scores", self.chosen_scores)
        _scores_json("rejected_scores", self.rejected_scores)
        if self.created_at:
            self.created_at = timestamp(self.created_at)

    @property
    def margin(self) -> float | None:
        """Debiased score of chosen minus rejected, when both are finite numbers."""
        chosen = self.chosen_scores.get("debiased") if isinstance(self.chosen_scores, dict) else None
        rejected = self.rejected_scores.get("debiased") if isinstance(self.rejected_scores, dict) else None
        if is_score(chosen) and is_score(rejected):
            return float(chosen) - float(rejected)
        return None


def stored_image(image: Image.Image) -> Image.Image:
    """The picture as the store keeps it: normalised like every input, longest side at most MAX_STORED_SIDE."""
    image = normalise_image(image)
    if max(image.size) > MAX_STORED_SIDE:
        image = image.copy()
        image.thumbnail((MAX_STORED_SIDE, MAX_STORED_SIDE), Image.Resampling.LANCZOS)
    return image


def normalised_png(image: Image.Image) -> bytes:
    """The picture as stored (`stored_image`), encoded as PNG with no metadata."""
    buffer = io.BytesIO()
    stored_image(image).save(buffer, format="PNG")
    return buffer.getvalue()


def repair_pair_row(row: dict) -> tuple[dict, list[str]]:
    """A stored pairs row made readable whatever it holds, and what was changed or is still wrong.

    Repairs: control characters stripped from texts, scores that are not finite numbers dropped,
    an unreadable created_at replaced by the epoch, model id and adapter made portable. Found but
    left (an admin decides): over-long texts, empty texts, chosen equal to rejected.
    """
    row, notes = dict(row), []
    for name in TEXT_LIMITS:
        value = row.get(name)
        text = value if isinstance(value, str) else ("" if value is None else str(value))
        cleaned = CONTROL_CHARACTER.sub("", text)
        if cleaned != value:
            notes.append(f"{name}: control characters removed" if isinstance(value, str)
                         else f"{name}: was {_shown(value)}, made text")
        row[name] = cleaned
    for name in ("model_id", "adapter"):
        portable = display_model_id(row[name])
        if portable != row[name]:
            row[name] = portable[:MAX_NAME_CHARS]
    for name in ("chosen_scores", "rejected_scores"):
        value = row.get(name)
        try:
            scores = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            scores = None
        if not isinstance(scores, dict):
            notes.append(f"{name}: unreadable ({_shown(value)}), emptied")
            scores = {}
        dropped = sorted(str(key)[:MAX_SCORE_TEXT] for key, score in scores.items() if score_problem(key, score))
        if dropped:
            notes.append(f"{name}: {', '.join(dropped)} not a valid score, removed")
        row[name] = {key: score for key, score in scores.items() if not score_problem(key, score)}
    try:
        row["created_at"] = timestamp(row.get("created_at"))
    except ValueError:
        notes.append(f"created_at: {_shown(row.get('created_at'))} is not a date, set to 1970-01-01")
        row["created_at"] = "1970-01-01T00:00:00.000+00:00"
    if row.get("source") not in SOURCES:
        notes.append(f"source: {_shown(row.get('source'))} is not one of {', '.join(SOURCES)}, set to human")
        row["source"] = "human"
    for name, limit in TEXT_LIMITS.items():
        if len(row[name]) > limit:
            notes.append(f"{name}: {len(row[name]):,} characters, over the limit of {limit:,}")
    for name in ("prompt", "chosen", "rejected"):
        if not row[name].strip():
            notes.append(f"{name}: empty")
    if comparable_text(row["chosen"]) == comparable_text(row["rejected"]):
        notes.append("chosen and rejected are the same text")
    return row, notes


def _migration_1_pairs(db: Database) -> None:
    # Raw SQL because CHECK constraints and a partial unique index are part of the contract
    # and sqlite-utils' create() cannot express them.
    db.execute("""CREATE TABLE images (
        sha256 TEXT PRIMARY KEY CHECK (length(sha256) = 64),
        width INTEGER NOT NULL, height INTEGER NOT NULL, size_bytes INTEGER NOT NULL,
        created_at TEXT NOT NULL)""")
    db.execute("""CREATE TABLE pairs (
        id INTEGER PRIMARY KEY,
        image_sha256 TEXT NOT NULL REFERENCES images(sha256),
        prompt TEXT NOT NULL, chosen TEXT NOT NULL, rejected TEXT NOT NULL,
        chosen_scores TEXT NOT NULL DEFAULT '{}', rejected_scores TEXT NOT NULL DEFAULT '{}',
        model_id TEXT NOT NULL DEFAULT '', adapter TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL CHECK (source IN ('human', 'self')),
        note TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, deleted_at TEXT)""")
    # Duplicates are refused by the database itself, so two writers cannot both slip one in.
    db.execute("""CREATE UNIQUE INDEX pairs_live_unique ON pairs (image_sha256, prompt, chosen, rejected)
        WHERE deleted_at IS NULL""")
    db.execute("CREATE INDEX pairs_created_at ON pairs (created_at)")


def _migration_2_runs(db: Database) -> None:
    db.execute("""CREATE TABLE runs (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, params TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'finished', 'failed', 'cancelled')),
        metrics TEXT NOT NULL DEFAULT '[]', error TEXT NOT NULL DEFAULT '',
        adapter_path TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL, finished_at TEXT)""")


def _migration_3_repair_pairs(db: Database) -> None:
    # Rows imported before import validated every field (a score "NaN-as-string", created_at
    # "yesterday", a NUL in a text, a server path as model id) are repaired in place; what was
    # done, or what is still wrong, goes to `problems`, which Curate shows.
    db.execute("ALTER TABLE pairs ADD COLUMN problems TEXT NOT NULL DEFAULT ''")
    columns = [column.name for column in db["pairs"].columns]
    for values in db.execute("SELECT * FROM pairs ORDER BY id").fetchall():
        row = dict(zip(columns, values))
        repaired, notes = repair_pair_row(row)
        repaired = {**repaired, "chosen_scores": json.dumps(repaired["chosen_scores"], sort_keys=True),
                    "rejected_scores": json.dumps(repaired["rejected_scores"], sort_keys=True)}
        changed = {name: value for name, value in repaired.items() if value != row[name]}
        if notes:
            changed["problems"] = "; ".join(notes)
        if not changed:
            continue
        try:
            db["pairs"].update(row["id"], changed)
        except sqlite3.IntegrityError as error:
            if not _is_duplicate(error):
                raise
            # Repaired, it is a copy of a live pair: keep it, deleted, so nothing is lost.
            changed["problems"] = "; ".join([*notes, "identical to another pair once repaired, so deleted"])
            db["pairs"].update(row["id"], {**changed, "deleted_at": now_iso()})


# Append only: migration i (1-based) takes a database from user_version i-1 to i.
MIGRATIONS: list[Callable[[Database], None]] = [_migration_1_pairs, _migration_2_runs, _migration_3_repair_pairs]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: Database) -> int:
    """The database's PRAGMA user_version (0 for a new file)."""
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: Database, target: int = SCHEMA_VERSION) -> int:
    """Run the migrations the database lacks, up to `target`, in one transaction; return the new version."""
    with _immediate(db.conn):
        current = schema_version(db)
        if current > SCHEMA_VERSION:
            raise SchemaError(f"database schema version {current} is newer than this code's {SCHEMA_VERSION}; "
                              "update SelfJudge Studio or open a different SELFJUDGE_DATA directory")
        for version in range(current + 1, target + 1):
            MIGRATIONS[version - 1](db)
            db.execute(f"PRAGMA user_version = {version:d}")
        return max(current, target)


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes
    # fails with SQLITE_BUSY (no waiting) when another process committed in between.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _is_duplicate(error: sqlite3.IntegrityError) -> bool:
    return "pairs.image_sha256, pairs.prompt, pairs.chosen, pairs.rejected" in str(error)


class Store:
    """Preference pairs, their images and fine-tune runs in one SQLite file."""

    def __init__(self, path: str | Path, images_dir: str | Path | None = None, busy_timeout_s: float = 30.0,
                 clock: Callable[[], str] = now_iso):
        """Open (creating and migrating as needed) the store; ':memory:' keeps images in a temp dir."""
        self.path = str(path)
        self._clock = clock
        self._lock = threading.RLock()
        if self.path == ":memory:":
            self._temp_images = tempfile.TemporaryDirectory(prefix="selfjudge-images-")
            default_images = Path(self._temp_images.name)
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            default_images = Path(self.path).resolve().parent / "images"
        self.images_dir = Path(images_dir) if images_dir is not None else default_images
        # One connection shared by all threads, serialised by self._lock; other processes are
        # handled by WAL (readers never block the writer) and the busy timeout.
        conn = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False)
        self.db = Database(conn)
        self.db.execute("PRAGMA foreign_keys = ON")
        if self.path != ":memory:":
            self.db.enable_wal()
        with self._lock:
            migrate(self.db)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """One write transaction: everything inside commits together or not at all."""
        with self._lock, _immediate(self.db.conn):
            yield self.db

    # Images ---------------------------------------------------------------------------------

    def _image_path(self, sha256: str) -> Path:
        if not isinstance(sha256, str) or not SHA256_PATTERN.match(sha256):
            raise ValueError(f"not an image id (64 lowercase hex digits): {sha256!r}")
        return self.images_dir / sha256[:2] / f"{sha256}.png"

    def _write_image_file(self, image: Image.Image) -> tuple[str, dict]:
        # The file goes first, outside the transaction: an orphan file left by a failed write is
        # harmless (content-addressed, reused next time), a row without its file is not.
        image = stored_image(image)
        png = normalised_png(image)
        sha256 = hashlib.sha256(png).hexdigest()
        path = self._image_path(sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
                handle.write(png)
            os.replace(handle.name, path)
        row = {"sha256": sha256, "width": image.width, "height": image.height, "size_bytes": len(png),
               "created_at": self._clock()}
        return sha256, row

    def add_image(self, image: Image.Image) -> str:
        """Store a picture once; return the sha256 of its normalised PNG bytes."""
        sha256, row = self._write_image_file(image)
        with self.transaction() as db:
            db["images"].insert(row, ignore=True)
        return sha256

    def load_image(self, sha256: str) -> Image.Image:
        """The stored picture with this sha256, as an RGB image."""
        return Image.open(io.BytesIO(self.image_bytes(sha256))).convert("RGB")

    def image_bytes(self, sha256: str) -> bytes:
        """The stored PNG bytes of this picture."""
        path = self._image_path(sha256)
        if not path.exists():
            raise NotFoundError(f"image {sha256} is not in the store (its file is missing from the images folder)")
        return path.read_bytes()

    # Pairs ----------------------------------------------------------------------------------

    def add_pair(self, pair: Pair, image: Image.Image | None = None) -> int:
        """Save one pair (with its image, if given) in one transaction; return its id."""
        return self.add_pairs([(pair, image)])[0]

    def add_pairs(self, items: Iterable[tuple[Pair, Image.Image | None]],
                  skip_duplicates: bool = False) -> list[int | None]:
        """Save many pairs in one transaction; ids in order, None for duplicates skipped."""
        rows, images = [], {}
        for pair, image in items:
            sha256 = pair.image_sha256
            if image is not None:
                sha256, images[sha256] = self._write_image_file(image)
                if pair.image_sha256 and pair.image_sha256 != sha256:
                    raise ValueError(f"pair.image_sha256 {pair.image_sha256} does not match the image given "
                                     f"({sha256}); leave it empty to take the image's")
            elif not sha256:
                raise ValueError("a pair needs an image: pass image= or set image_sha256 of a stored image")
            rows.append(self._pair_row(dataclasses.replace(pair, image_sha256=sha256)))
        ids: list[int | None] = []
        with self.transaction() as db:
            for image_row in images.values():
                db["images"].insert(image_row, ignore=True)
            for row in rows:
                if db["images"].count_where("sha256 = ?", [row["image_sha256"]]) == 0:
                    raise NotFoundError(f"image {row['image_sha256']} is not in the store; "
                                        "pass the picture as image= to add_pair")
                try:
                    ids.append(db["pairs"].insert(row).last_pk)
                except sqlite3.IntegrityError as error:
                    if not _is_duplicate(error):
                        raise
                    if not skip_duplicates:
                        raise DuplicatePairError(
                            f"an identical pair (same image, prompt, chosen and rejected) is already stored "
                            f"as #{self._live_duplicate_id(row)}; edit or delete that one instead") from None
                    ids.append(None)
        return ids

    def _pair_row(self, pair: Pair) -> dict:
        row = dataclasses.asdict(pair)
        row.pop("id")
        row.pop("problems")
        row["chosen_scores"] = _scores_json("chosen_scores", pair.chosen_scores)
        row["rejected_scores"] = _scores_json("rejected_scores", pair.rejected_scores)
        row["created_at"] = pair.created_at or self._clock()
        return row

    def _live_duplicate_id(self, row: dict) -> int:
        found = self.db.execute(
            "SELECT id FROM pairs WHERE image_sha256 = ? AND prompt = ? AND chosen = ? AND rejected = ? "
            "AND deleted_at IS NULL", [row["image_sha256"], row["prompt"], row["chosen"], row["rejected"]]
        ).fetchone()
        return found[0]

    @staticmethod
    def _pair_from_row(row: dict) -> Pair:
        # Whatever a row holds, reading it gives a Pair whose fields have their types, so that
        # no stored row can break a listing; one that still breaks a rule keeps its problems noted.
        repaired, notes = repair_pair_row(row)
        parts = [*(row.get("problems") or "").split("; "), *notes]
        problems = "; ".join(dict.fromkeys(part for part in parts if part))
        try:
            return Pair(**{**repaired, "problems": problems})
        except ValueError:
            return Pair(**{**repaired, "problems": problems}, validate=False)

    def get_pair(self, pair_id: int) -> Pair:
        """The pair with this id (deleted ones too)."""
        with self._lock:
            rows = list(self.db.query("SELECT * FROM pairs WHERE id = ?", [pair_id]))
        if not rows:
            raise NotFoundError(f"no pair #{pair_id} in the store")
        return self._pair_from_row(rows[0])

    @staticmethod
    def _pair_filter(search: str, source: str, model_id: str, since: str,
                     include_deleted: bool) -> tuple[str, list]:
        clauses, params = [], []
        if search:
            # LIKE with our own escape character, so % and _ in a search are literal.
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", search) + "%"
            clauses.append("(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column in
                                             ("prompt", "chosen", "rejected", "note")) + ")")
            params += [pattern] * 4
        if source:
            if source not in SOURCES:
                raise ValueError(f"source must be one of {', '.join(SOURCES)} (or empty for all), not {source!r}")
            clauses.append("source = ?")
            params.append(source)
        if model_id:
            clauses.append("model_id = ?")
            params.append(model_id)
        if since:
            clauses.append("created_at >= ?")
            params.append(since)
        if not include_deleted:
            clauses.append("deleted_at IS NULL")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list_pairs(self, search: str = "", source: str = "", model_id: str = "", since: str = "",
                   include_deleted: bool = False, limit: int | None = 100, offset: int = 0) -> list[Pair]:
        """Pairs matching the filters, newest first; `search` matches prompt, answers and note."""
        where, params = self._pair_filter(search, source, model_id, since, include_deleted)
        sql = f"SELECT * FROM pairs{where} ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._lock:
            rows = list(self.db.query(sql, params + [-1 if limit is None else limit, offset]))
        return [self._pair_from_row(row) for row in rows]

    def count_pairs(self, search: str = "", source: str = "", model_id: str = "", since: str = "",
                    include_deleted: bool = False) -> int:
        """How many pairs match the filters of `list_pairs`."""
        where, params = self._pair_filter(search, source, model_id, since, include_deleted)
        with self._lock:
            return self.db.execute(f"SELECT count(*) FROM pairs{where}", params).fetchone()[0]

    def update_pair(self, pair_id: int, **fields) -> Pair:
        """Change some of a pair's editable fields in one transaction; return the updated pair."""
        unknown = sorted(set(fields) - set(EDITABLE_PAIR_FIELDS))
        if unknown:
            raise ValueError(f"cannot edit {', '.join(unknown)}; editable: {', '.join(EDITABLE_PAIR_FIELDS)}")
        with self.transaction() as db:
            updated = dataclasses.replace(self.get_pair(pair_id), **fields, problems="")
            # It passed every check just now: whatever a migration noted about it is settled.
            row = {**{name: value for name, value in self._pair_row(updated).items() if name in fields},
                   "problems": ""}
            try:
                db["pairs"].update(pair_id, row)
            except sqlite3.IntegrityError as error:
                if not _is_duplicate(error):
                    raise
                raise DuplicatePairError(f"pair #{pair_id} would become identical to pair "
                                         f"#{self._live_duplicate_id(self._pair_row(updated))}") from None
        return updated

    def delete_pair(self, pair_id: int) -> None:
        """Soft-delete: hide the pair from lists and exports until `restore_pair`."""
        with self.transaction() as db:
            if self.get_pair(pair_id).deleted_at is None:
                db["pairs"].update(pair_id, {"deleted_at": self._clock()})

    def restore_pair(self, pair_id: int) -> None:
        """Undo `delete_pair`; DuplicatePairError if an identical pair was added since."""
        with self.transaction() as db:
            pair = self.get_pair(pair_id)
            try:
                db["pairs"].update(pair_id, {"deleted_at": None})
            except sqlite3.IntegrityError as error:
                if not _is_duplicate(error):
                    raise
                raise DuplicatePairError(f"cannot restore pair #{pair_id}: an identical pair "
                                         f"#{self._live_duplicate_id(self._pair_row(pair))} is stored") from None

    def stats(self) -> dict:
        """Counts of live pairs by source and model, deleted pairs, images, and the mean debiased margin."""
        live = "FROM pairs WHERE deleted_at IS NULL"
        # Nested CASE so that a row with unreadable JSON (written behind the store's back) is skipped,
        # never an error: SQLite does not promise to short-circuit AND.
        numeric = ("json_type({0}, '$.debiased') IN ('integer', 'real')")
        margin = (f"(CASE WHEN json_valid(chosen_scores) AND json_valid(rejected_scores) THEN "
                  f"(CASE WHEN {numeric.format('chosen_scores')} AND {numeric.format('rejected_scores')} THEN "
                  "json_extract(chosen_scores, '$.debiased') - json_extract(rejected_scores, '$.debiased') END) END)")
        with self._lock:
            by_source = dict(self.db.execute(f"SELECT source, count(*) {live} GROUP BY source"))
            by_model = dict(self.db.execute(f"SELECT model_id, count(*) {live} GROUP BY model_id ORDER BY model_id"))
            pairs, mean_margin, with_margin = self.db.execute(
                f"SELECT count(*), avg({margin}), count({margin}) {live}").fetchone()
            deleted = self.db.execute("SELECT count(*) FROM pairs WHERE deleted_at IS NOT NULL").fetchone()[0]
            images = self.db.execute("SELECT count(*) FROM images").fetchone()[0]
        return {"pairs": pairs, "deleted": deleted, "images": images,
                "by_source": {source: by_source.get(source, 0) for source in SOURCES},
                "by_model": by_model, "mean_margin": mean_margin, "pairs_with_margin": with_margin}

    # Fine-tune runs -------------------------------------------------------------------------

    def add_run(self, name: str, params: dict) -> int:
        """Record a queued fine-tune run with its settings; return its id."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a run needs a non-empty name")
        if not isinstance(params, dict):
            raise ValueError(f"run params must be a dict of settings, not {type(params).__name__}")
        row = {"name": name, "params": json_text("params", params), "status": "queued", "metrics": "[]",
               "error": "", "adapter_path": "", "created_at": self._clock(), "finished_at": None}
        with self.transaction() as db:
            return db["runs"].insert(row).last_pk

    def update_run(self, run_id: int, **fields) -> None:
        """Change a run's status, metrics (list of dicts), error, adapter_path or finished_at.

        Moving to finished, failed or cancelled stamps finished_at unless it is given or already set.
        """
        unknown = sorted(set(fields) - set(EDITABLE_RUN_FIELDS))
        if unknown:
            raise ValueError(f"cannot edit {', '.join(unknown)}; editable: {', '.join(EDITABLE_RUN_FIELDS)}")
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES)}, not {fields['status']!r}")
        if "metrics" in fields and not (isinstance(fields["metrics"], list)
                                        and all(isinstance(item, dict) for item in fields["metrics"])):
            raise ValueError("run metrics must be a list of dicts (one per logged step)")
        row = dict(fields)
        for name in ("params", "metrics"):
            if name in row:
                row[name] = json_text(name, row[name])
        with self.transaction() as db:
            current = self.get_run(run_id)
            if (fields.get("status") in FINAL_RUN_STATUSES and "finished_at" not in fields
                    and current["finished_at"] is None):
                row["finished_at"] = self._clock()
            db["runs"].update(run_id, row)

    def append_run_metrics(self, run_id: int, metrics: dict) -> None:
        """Append one step's metrics to a run, atomically (safe from a training callback)."""
        encoded = json.dumps(metrics, sort_keys=True, allow_nan=False)
        with self.transaction() as db:
            self.get_run(run_id)
            db.execute("UPDATE runs SET metrics = json_insert(metrics, '$[#]', json(?)) WHERE id = ?",
                       [encoded, run_id])

    def get_run(self, run_id: int) -> dict:
        """One run as a dict, with params and metrics decoded from JSON."""
        with self._lock:
            rows = list(self.db.query("SELECT * FROM runs WHERE id = ?", [run_id]))
        if not rows:
            raise NotFoundError(f"no fine-tune run #{run_id} in the store")
        return {**rows[0], "params": json.loads(rows[0]["params"]), "metrics": json.loads(rows[0]["metrics"])}

    def list_runs(self) -> list[dict]:
        """All runs, newest first."""
        with self._lock:
            ids = [row[0] for row in self.db.execute("SELECT id FROM runs ORDER BY id DESC")]
        return [self.get_run(run_id) for run_id in ids]


def main(argv: list[str] | None = None) -> None:
    """Print store statistics or the newest pairs."""
    from core.config import DataSettings

    parser = argparse.ArgumentParser(prog="python -m core.data.store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data directory holding selfjudge.db (default: SELFJUDGE_DATA or data/)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("stats", help="pair counts by source and model, mean debiased margin")
    listing = commands.add_parser("list", help="the newest live pairs, one JSON object per line")
    listing.add_argument("--limit", type=int, default=10, help="how many pairs (default 10)")
    args = parser.parse_args(argv)
    data = DataSettings(data_dir=args.data_dir) if args.data_dir else DataSettings()
    store = Store(data.db_path)
    if args.command == "stats":
        print(json.dumps(store.stats(), indent=2))
    else:
        for pair in store.list_pairs(limit=args.limit):
            print(json.dumps(dataclasses.asdict(pair)))


if __name__ == "__main__":
    main()
