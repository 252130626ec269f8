"""Export the stored preference pairs as a TRL vision preference dataset, and import one back.

Both layouts are a folder with a generated name, written to a temp folder under
<data dir>/exports/ and renamed into place only when complete:
- jsonl:   data.jsonl (one pair per line) + images/<sha256>.png, referenced by relative path;
- parquet: data.parquet with the pictures embedded as a `datasets` Image feature, so
  `datasets.load_dataset("parquet", data_files=...)` returns PIL images.
Columns: `images`, `prompt`, `chosen`, `rejected` in TRL's conversational format, then
image_sha256, chosen_scores, rejected_scores, model_id, adapter, source, note and created_at so
that nothing is lost. A manifest.json records what was exported and how.

Import reads either layout (a folder, its data file, or a .zip of the folder), validates every
field of every row and every picture first (a bad one is refused with its line or row number,
and nothing is written), then adds all the pairs in one transaction, skipping those already
stored. What an import may hold is bounded before anything is unpacked or decoded:
MAX_IMPORT_BYTES unpacked, MAX_DATA_FILE_BYTES for data.jsonl, MAX_IMPORT_MEMBERS files in
a zip, MAX_IMPORT_PAIRS rows, and IMPORT_IMAGE_LIMITS per picture (bytes and pixels, read
from its header). Rows are read one at a time, so memory holds the pictures' bytes (at most
MAX_IMPORT_BYTES) and one decoded picture.

    python -m core.data.exchange export --format parquet [--source self] [--model-id ID] [--search TEXT]
    python -m core.data.exchange import data/exports/pairs-20250101T120000Z-parquet
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from core.config import DataSettings
from core.data.store import SCHEMA_VERSION, SOURCES, Pair, Store
from core.engine.images import ImageLimits, decode_image

FORMATS = ("jsonl", "parquet")
MANIFEST_NAME = "selfjudge-preference-pairs"
MANIFEST_VERSION = 1
EXTRA_COLUMNS = ("image_sha256", "chosen_scores", "rejected_scores", "model_id", "adapter", "source", "note",
                 "created_at")
SCORE_COLUMNS = ("chosen_scores", "rejected_scores")
IMAGE_REFERENCE = re.compile(r"^images/([0-9a-f]{64})\.png$")
# What may come out of an imported zip: an optional top folder, then only these names.
ZIP_MEMBER = re.compile(r"^(?:[^/]+/)?(data\.jsonl|data\.parquet|manifest\.json|images/[0-9a-f]{64}\.png)$")
# Bounds on one import, checked from the zip's directory and the Parquet footer before anything
# is unpacked or read; a picture's pixels are checked from its header before it is decoded.
MAX_IMPORT_BYTES = 256 * 1024**2  # a little over the studio's 200 MB upload cap
MAX_DATA_FILE_BYTES = 64 * 1024**2  # data.jsonl: 10,000 rows at the text limits fit in about 150 MB; ours ~1 KB each
MAX_IMPORT_MEMBERS = 10_002  # up to 10,000 pictures + data file + manifest
MAX_IMPORT_PAIRS = 10_000
IMPORT_IMAGE_LIMITS = ImageLimits()


@dataclass
class ExportResult:
    """Where an export went and what it holds."""

    path: Path
    format: str
    pairs: int
    images: int


@dataclass
class ImportResult:
    """How many pairs an import added, and how many it skipped as already stored."""

    added: int
    duplicates: int


def preference_messages(pair: Pair) -> dict:
    """The pair's prompt, chosen and rejected as TRL conversational messages (one image placeholder)."""
    def answer(text: str) -> list[dict]:
        return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]

    # text is spelled out on the image part so every content part has the same keys, which
    # Arrow needs (a struct column) and which load_dataset gives back anyway.
    prompt = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": pair.prompt}]}]
    return {"prompt": prompt, "chosen": answer(pair.chosen), "rejected": answer(pair.rejected)}


def message_text(messages: object, role: str, column: str) -> str:
    """The text of a one-message conversation column (or the string of a standard-format column)."""
    if isinstance(messages, str):
        return messages
    if not (isinstance(messages, list) and len(messages) == 1 and isinstance(messages[0], dict)
            and messages[0].get("role") == role):
        raise ValueError(f"{column} must be a string or a list with one {role!r} message")
    content = messages[0].get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(f"{column}'s content must be a string or a list of parts")
    texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
    if len(texts) != 1 or not isinstance(texts[0], str):
        raise ValueError(f"{column} must have exactly one text part, found {len(texts)}")
    return texts[0]


def _scores(row: dict, column: str) -> object:
    value = row.get(column)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise ValueError(f"{column} must be a JSON object of score name -> number, not {value[:40]!r}") from None
    return {} if value is None else value


def pair_from_row(row: object) -> Pair:
    """A Pair from one dataset row (ours, or any TRL preference row with one image), every field checked."""
    if not isinstance(row, dict):
        raise ValueError(f"a row must be a JSON object, not {type(row).__name__}")
    for column in ("prompt", "chosen", "rejected"):
        if column not in row:
            raise ValueError(f"the {column!r} column is missing")
    optional = {column: row.get(column) for column in ("model_id", "adapter", "note", "created_at")
                if row.get(column) is not None}
    return Pair(image_sha256="", prompt=message_text(row["prompt"], "user", "prompt"),
                chosen=message_text(row["chosen"], "assistant", "chosen"),
                rejected=message_text(row["rejected"], "assistant", "rejected"),
                chosen_scores=_scores(row, "chosen_scores"), rejected_scores=_scores(row, "rejected_scores"),
                source=row.get("source") or "human", **optional)


def _extras(pair: Pair) -> dict:
    return {column: getattr(pair, column) for column in EXTRA_COLUMNS}


def _write_jsonl(store: Store, pairs: list[Pair], folder: Path) -> None:
    (folder / "images").mkdir()
    with open(folder / "data.jsonl", "w", encoding="utf-8") as handle:
        for pair in pairs:
            image_file = folder / "images" / f"{pair.image_sha256}.png"
            if not image_file.exists():
                image_file.write_bytes(store.image_bytes(pair.image_sha256))
            row = {"images": [f"images/{pair.image_sha256}.png"], **preference_messages(pair), **_extras(pair)}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def parquet_features():
    """The `datasets` Features of the Parquet layout (images as a list of Image)."""
    from datasets import Features, Image as ImageFeature, List, Value

    text = Value("string")
    messages = List({"role": text, "content": List({"type": text, "text": text})})
    return Features({"images": List(ImageFeature()), "prompt": messages, "chosen": messages, "rejected": messages,
                     **{column: text for column in EXTRA_COLUMNS}})


def _write_parquet(store: Store, pairs: list[Pair], folder: Path) -> None:
    rows = []
    for pair in pairs:
        extras = _extras(pair)
        for column in SCORE_COLUMNS:
            # JSON text, not a struct: score dicts differ in keys and a struct would add nulls.
            extras[column] = json.dumps(extras[column], sort_keys=True)
        image = {"bytes": store.image_bytes(pair.image_sha256), "path": f"{pair.image_sha256}.png"}
        rows.append({"images": [image], **preference_messages(pair), **extras})
    # The schema carries the datasets feature metadata, which is what makes load_dataset decode images.
    pq.write_table(pa.Table.from_pylist(rows, schema=parquet_features().arrow_schema), folder / "data.parquet")


WRITERS: dict[str, Callable[[Store, list[Pair], Path], None]] = {"jsonl": _write_jsonl, "parquet": _write_parquet}


def export_pairs(store: Store, exports_dir: Path, fmt: str = "parquet", search: str = "", source: str = "",
                 model_id: str = "", clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
                 ) -> ExportResult:
    """Write the live pairs matching the filters, oldest first, to a new folder under exports_dir."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    pairs = store.list_pairs(search=search, source=source, model_id=model_id, limit=None)[::-1]
    if not pairs:
        raise ValueError("no stored pairs match these filters; nothing to export")
    exports_dir = Path(exports_dir)
    exports_dir.mkdir(parents=True, exist_ok=True)
    stamp = clock().strftime("%Y%m%dT%H%M%SZ")
    temp = Path(tempfile.mkdtemp(prefix=".export-", dir=exports_dir))
    try:
        WRITERS[fmt](store, pairs, temp)
        images = len({pair.image_sha256 for pair in pairs})
        manifest = {"format": MANIFEST_NAME, "version": MANIFEST_VERSION, "layout": fmt, "pairs": len(pairs),
                    "images": images, "exported_at": stamp, "store_schema_version": SCHEMA_VERSION,
                    "filters": {"search": search, "source": source, "model_id": model_id}}
        (temp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        final = _rename_into_place(temp, exports_dir, f"pairs-{stamp}-{fmt}")
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return ExportResult(path=final, format=fmt, pairs=len(pairs), images=images)


def _rename_into_place(temp: Path, exports_dir: Path, name: str) -> Path:
    # Two exports in the same second get -2, -3, ...; rename refuses a non-empty target,
    # so a concurrent export that won the name is never overwritten.
    for attempt in range(1, 1000):
        target = exports_dir / (name if attempt == 1 else f"{name}-{attempt}")
        if target.exists():
            continue
        try:
            os.rename(temp, target)
            return target
        except OSError:
            if not target.exists():
                raise
    raise FileExistsError(f"could not find a free export name like {name} in {exports_dir}")


def archive_export(folder: Path, out_dir: Path | None = None) -> Path:
    """A .zip of an export folder (beside it, or in out_dir) with its files at the zip's root."""
    folder = Path(folder)
    out_dir = Path(out_dir) if out_dir is not None else folder.parent
    temp = Path(shutil.make_archive(str(out_dir / f".{folder.name}-zip"), "zip", root_dir=folder))
    return temp.replace(out_dir / f"{folder.name}.zip")


# Reading an import: (pair, picture bytes) per row, every picture checked by decoding it once;
# import_pairs decodes them again one at a time while writing, so memory holds one picture.
ImportRows = list[tuple[Pair, bytes]]


def _image(data: bytes) -> bytes:
    decode_image(data, IMPORT_IMAGE_LIMITS)  # refuses bombs, damaged files and non-images
    return data


def _check_rows(count: int, what: str) -> None:
    if count > MAX_IMPORT_PAIRS:
        raise ValueError(f"{what} holds {count:,} rows; an import takes at most {MAX_IMPORT_PAIRS:,} pairs: "
                         "split it into smaller exports")


def _read_jsonl(data_file: Path) -> ImportRows:
    if data_file.stat().st_size > MAX_DATA_FILE_BYTES:
        raise ValueError(f"{data_file.name} is over {MAX_DATA_FILE_BYTES // 2**20} MiB; split it into smaller exports")
    items, image_bytes = [], 0
    with open(data_file, encoding="utf-8") as handle:
        for number, line in enumerate(_lines(handle, data_file.name), start=1):
            if not line.strip():
                continue
            _check_rows(len(items) + 1, data_file.name)
            try:
                pair, image_file = _jsonl_row(line, data_file.parent)
                image_bytes += image_file.stat().st_size
                if image_bytes > MAX_IMPORT_BYTES:
                    raise ValueError(f"the pictures so far add up to over {MAX_IMPORT_BYTES // 2**20} MiB; split "
                                     "the export into smaller ones")
                items.append((pair, _image(image_file.read_bytes())))
            except ValueError as error:  # JSONDecodeError and ImageError are ValueErrors too
                raise ValueError(f"{data_file.name} line {number}: {error}") from None
    return items


def _lines(handle: IO[str], name: str) -> Iterator[str]:
    try:
        yield from handle
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not UTF-8 text") from None


def _jsonl_row(line: str, folder: Path) -> tuple[Pair, Path]:
    try:
        row = json.loads(line)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    references = row.get("images") if isinstance(row, dict) else None
    if not (isinstance(references, list) and len(references) == 1 and isinstance(references[0], str)):
        raise ValueError("images must list exactly one image path")
    match = IMAGE_REFERENCE.match(references[0])
    if not match:
        raise ValueError(f"image path {references[0][:80]!r} must look like images/<sha256>.png")
    # The path is rebuilt from validated hex only, never from the file's string.
    image_file = folder / "images" / f"{match.group(1)}.png"
    if not image_file.is_file():
        raise ValueError(f"its image images/{match.group(1)}.png is not in the export")
    if image_file.stat().st_size > IMPORT_IMAGE_LIMITS.max_bytes:
        raise ValueError(f"its image is over {IMPORT_IMAGE_LIMITS.max_bytes // 2**20} MiB")
    return pair_from_row(row), image_file


def _read_parquet(data_file: Path) -> ImportRows:
    try:
        parquet = pq.ParquetFile(data_file)
        metadata = parquet.metadata
        _check_rows(metadata.num_rows, data_file.name)
        unpacked = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        if unpacked > MAX_IMPORT_BYTES:
            raise ValueError(f"{data_file.name} unpacks to {unpacked / 2**20:,.0f} MiB; an import takes at most "
                             f"{MAX_IMPORT_BYTES // 2**20} MiB: split it into smaller exports")
        rows = (row for batch in parquet.iter_batches(batch_size=64) for row in batch.to_pylist())
        items = []
        for number, row in enumerate(rows, start=1):
            try:
                items.append(_parquet_row(row))
            except ValueError as error:
                raise ValueError(f"{data_file.name} row {number}: {error}") from None
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{data_file.name} is not a readable Parquet file ({type(error).__name__})") from None
    return items


def _parquet_row(row: dict) -> tuple[Pair, bytes]:
    images = row.get("images")
    if not (isinstance(images, list) and len(images) == 1 and isinstance(images[0], dict)
            and isinstance(images[0].get("bytes"), bytes) and images[0]["bytes"]):
        raise ValueError("images must hold exactly one embedded image (bytes)")
    pair = pair_from_row(row)
    return pair, _image(images[0]["bytes"])


def extract_zip(archive_path: Path, into: Path) -> Path:
    """Unpack only an export's own files (data file, manifest, images/<sha256>.png) into a folder.

    The zip's directory is checked first (number of files, unpacked bytes, one picture's size),
    and files are streamed to disk, so a zip bomb is refused before it is unpacked.
    """
    try:
        with zipfile.ZipFile(archive_path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_IMPORT_MEMBERS:
                raise ValueError(f"the zip holds {len(infos):,} files; an import takes at most "
                                 f"{MAX_IMPORT_MEMBERS:,}: split it into smaller exports")
            members = [(info, ZIP_MEMBER.match(info.filename)) for info in infos if not info.is_dir()]
            wanted = [(info, match.group(1)) for info, match in members if match]
            if not any(name in ("data.jsonl", "data.parquet") for _, name in wanted):
                raise ValueError("the zip holds no data.jsonl or data.parquet; zip an export folder "
                                 "(made by Export or python -m core.data.exchange export)")
            unpacked = sum(info.file_size for info, _ in wanted)
            if unpacked > MAX_IMPORT_BYTES:
                raise ValueError(f"the zip unpacks to {unpacked / 2**20:,.0f} MiB; an import takes at most "
                                 f"{MAX_IMPORT_BYTES // 2**20} MiB: split it into smaller exports")
            for info, name in wanted:
                if name.startswith("images/") and info.file_size > IMPORT_IMAGE_LIMITS.max_bytes:
                    raise ValueError(f"{name} unpacks to {info.file_size / 2**20:,.0f} MiB; a picture may have "
                                     f"at most {IMPORT_IMAGE_LIMITS.max_bytes // 2**20} MiB")
                target = into / name  # name matched ZIP_MEMBER: no '..', no absolute path
                target.parent.mkdir(parents=True, exist_ok=True)
                # zipfile reads no more than the declared size and checks the CRC at the end.
                with archive.open(info) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1024 * 1024)
    except zipfile.BadZipFile:
        raise ValueError("the file is not a zip archive, or it is damaged; upload the .zip made by Export") from None
    except (zipfile.LargeZipFile, NotImplementedError, RuntimeError) as error:
        # Encrypted or unsupported compression: zipfile says which.
        raise ValueError(f"the zip cannot be unpacked ({error})") from None
    return into


def _check_manifest(folder: Path) -> None:
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return  # a plain TRL dataset folder has none
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        raise ValueError("manifest.json is not readable JSON; remove it or export again") from None
    version = data.get("version") if isinstance(data, dict) else None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"manifest.json's version must be a whole number from 1, not {str(version)[:40]!r}; "
                         "was the manifest edited by hand?")
    if version > MANIFEST_VERSION:
        raise ValueError(f"the export was made by a newer SelfJudge (manifest version {version}, this one reads "
                         f"{MANIFEST_VERSION}); update before importing it")


def read_dataset(path: Path) -> ImportRows:
    """Every pair and its picture bytes in an export (folder, data.jsonl, data.parquet or .zip), all validated."""
    path = Path(path)
    if path.is_file() and path.suffix == ".zip":
        with tempfile.TemporaryDirectory(prefix="selfjudge-import-") as temp:
            return read_dataset(extract_zip(path, Path(temp)))
    if path.is_dir():
        _check_manifest(path)
        candidates = [path / "data.jsonl", path / "data.parquet"]
        path = next((candidate for candidate in candidates if candidate.exists()), path)
    if path.is_file() and path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.is_file() and path.suffix == ".parquet":
        return _read_parquet(path)
    raise ValueError(f"{path.name or 'that'} is not an export: give a folder with data.jsonl or data.parquet, "
                     "one of those files, or a .zip of such a folder")


def import_pairs(store: Store, path: Path) -> ImportResult:
    """Add every pair of an export to the store in one transaction, skipping ones already stored.

    Every row and picture is validated before anything is written; a bad one raises ValueError
    naming its line (jsonl) or row (Parquet).
    """
    items = read_dataset(path)
    if not items:
        raise ValueError(f"{Path(path).name} holds no pairs")
    ids = store.add_pairs(((pair, decode_image(data, IMPORT_IMAGE_LIMITS)) for pair, data in items),
                          skip_duplicates=True)
    added = sum(pair_id is not None for pair_id in ids)
    return ImportResult(added=added, duplicates=len(ids) - added)


def main(argv: list[str] | None = None) -> None:
    """Export or import preference pairs from the command line."""
    parser = argparse.ArgumentParser(prog="python -m core.data.exchange", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data directory holding selfjudge.db (default: SELFJUDGE_DATA or data/)")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write the live pairs to a new folder under <data dir>/exports")
    export.add_argument("--format", choices=FORMATS, default="parquet",
                        help="parquet (images embedded) or jsonl (data.jsonl + images/); default parquet")
    export.add_argument("--source", choices=SOURCES, default="", help="only pairs from this source (default: all)")
    export.add_argument("--model-id", default="", help="only pairs made with this model id")
    export.add_argument("--search", default="", help="only pairs whose prompt, answers or note contain this text")
    export.add_argument("--zip", action="store_true", help="also write a .zip of the export folder")
    importing = commands.add_parser("import", help="add the pairs of an export (folder, data file or .zip)")
    importing.add_argument("path", type=Path, help="an export folder, its data.jsonl/data.parquet, or a .zip")
    args = parser.parse_args(argv)
    data = DataSettings(data_dir=args.data_dir) if args.data_dir else DataSettings()
    store = Store(data.db_path)
    if args.command == "export":
        result = export_pairs(store, data.exports_dir, args.format, args.search, args.source, args.model_id)
        print(f"exported {result.pairs} pairs ({result.images} images) to {result.path}")
        if args.zip:
            print(f"zipped to {archive_export(result.path)}")
    else:
        result = import_pairs(store, args.path)
        print(f"imported {result.added} pairs from {args.path}; skipped {result.duplicates} already stored")


if __name__ == "__main__":
    main()
