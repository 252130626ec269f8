"""The Curate tab: browse, search and filter the stored preference pairs, look at one side by side,
edit, soft-delete and restore it, see statistics, and export or import the dataset.

Handlers are methods of `Curate` (bound to a store factory) so that tests and gradio_client can
call them; each turns UI values into one core.data.store / core.data.exchange call and the result into UI
values. Bad input raises gr.Error before anything is written; the store writes in one transaction.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from core.config import DataSettings, display_model_id, without_paths
from core.data.exchange import FORMATS, archive_export, export_pairs, import_pairs
from core.data.store import (CONTROL_CHARACTER, SOURCES, DuplicatePairError, NotFoundError, Pair, Store,
                        strip_control_characters)
from selfjudge_ui import inputs
from selfjudge_ui.access import AccessSettings, require_admin, require_reader
from selfjudge_ui.live import LiveView
from selfjudge_ui.settings import InputLimits

PAGE_SIZE = 48
ALL = "all"
PAIR_COLUMNS = ["id", "source", "model", "prompt", "chosen", "rejected", "margin", "created", "deleted"]
SCORE_COLUMNS = ["score", "chosen", "rejected", "chosen - rejected"]
SCORE_ORDER = ("raw", "blind", "debiased", "min_debiased", "likelihood")  # then any others, by name
# Saved with the scores but not scores: shown in the pair's details line, not in the score table.
METADATA = ("alpha", "kind", "rank", "edited")
IMPORTS = (".zip", ".parquet")
SCROLL_TO_PAIR = ("() => { setTimeout(() => document.getElementById('curate-details')"
                  "?.scrollIntoView({behavior: 'smooth', block: 'start'}), 200); }")
NO_PAIR = "Pick a pair first: click a thumbnail or a table row, or type its id."
THUMBNAIL = (160, 160)


def _short(text: str, length: int = 60) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _number(value: float | None) -> float | str:
    return "" if value is None else round(value, 3)


def _cell(value: object) -> float | str:
    return _number(value) if value is None or isinstance(value, (int, float)) else str(value)


def score_rows(pair: Pair) -> list[list]:
    """Chosen vs rejected, one row per score name (raw, blind, debiased, ...), with the difference."""
    names = sorted({*pair.chosen_scores, *pair.rejected_scores} - set(METADATA),
                   key=lambda name: (SCORE_ORDER.index(name) if name in SCORE_ORDER else len(SCORE_ORDER), name))
    rows = []
    for name in names:
        chosen, rejected = pair.chosen_scores.get(name), pair.rejected_scores.get(name)
        numeric = all(isinstance(value, (int, float)) for value in (chosen, rejected))
        rows.append([name, _cell(chosen), _cell(rejected), _number(chosen - rejected) if numeric else ""])
    return rows


def metadata_line(pair: Pair) -> str:
    """The judge settings and each side's rank and edit flag, in words ('' when the pair saved none)."""
    chosen, rejected = pair.chosen_scores, pair.rejected_scores
    parts = []
    if "alpha" in chosen or "kind" in chosen:
        parts.append(f"judged with alpha {chosen.get('alpha', '?')}, score kind {chosen.get('kind', '?')}")
    for side, scores in (("chosen", chosen), ("rejected", rejected)):
        facts = [f"rank {scores['rank']}" if "rank" in scores else "",
                 "edited by hand" if scores.get("edited") else ""]
        if any(facts):
            parts.append(f"{side}: {', '.join(f for f in facts if f)}")
    return "; ".join(parts)


def pair_row(pair: Pair) -> list:
    """One line of the pairs table."""
    return [pair.id, pair.source, display_model_id(pair.model_id), _short(pair.prompt), _short(pair.chosen),
            _short(pair.rejected),
            _number(pair.margin), pair.created_at[:19].replace("T", " "), "yes" if pair.deleted_at else ""]


def stats_markdown(stats: dict) -> str:
    """The store statistics as a short Markdown summary."""
    margin = ("n/a (no pair has debiased scores on both sides)" if stats["mean_margin"] is None else
              f"{stats['mean_margin']:.3f} over {stats['pairs_with_margin']} pairs")
    sources = ", ".join(f"{source} {count}" for source, count in stats["by_source"].items())
    return (f"**{stats['pairs']} pairs** ({sources}) on {stats['images']} images; {stats['deleted']} deleted.  \n"
            f"Mean debiased margin (chosen - rejected): {margin}.")


class Curate:
    """The tab's handlers, bound to a store factory, the access rule and input limits."""

    def __init__(self, store_factory: Callable[[], Store], access: AccessSettings | None = None,
                 limits: InputLimits | None = None):
        self.store_factory = store_factory
        self.access = access or AccessSettings()
        self.limits = limits or InputLimits()
        # Downloads are copied from here into gradio's cache; the folder goes when the process ends.
        self._downloads = tempfile.TemporaryDirectory(prefix="selfjudge-downloads-")

    # Reading ---------------------------------------------------------------------------------

    def _filters(self, search: str | None, source: str | None, model_id: str | None) -> dict:
        source = "" if source in (None, "", ALL) else source
        if source not in ("", *SOURCES):
            raise gr.Error(f"Source must be {ALL}, {' or '.join(SOURCES)}, not {source!r}.")
        search = inputs.check_text("search text", search, self.limits.max_question_chars, required=False)
        if model_id is not None and not isinstance(model_id, str):
            raise gr.Error(f"Model must be {ALL} or a model name, not {model_id!r}.")
        model_id = "" if model_id in (None, ALL) else strip_control_characters(model_id)
        return {"search": search, "source": source, "model_id": model_id}

    def list_pairs(self, search: str | None, source: str | None, model_id: str | None, include_deleted: bool,
                   page: float | None, token: str = "", profile: gr.OAuthProfile | None = None) -> tuple:
        """Thumbnails, table rows, the ids shown (in order), a summary line and the model choices."""
        require_reader(profile, token, self.access)
        filters = self._filters(search, source, model_id)
        page = 1 if page is None else inputs.check_integer("Page", page, 1, inputs.MAX_SEED)
        store = self.store_factory()
        total = store.count_pairs(**filters, include_deleted=bool(include_deleted))
        pages = max(1, math.ceil(total / PAGE_SIZE))
        if not 1 <= page <= pages:
            raise gr.Error(f"Page {page} does not exist; there {'is' if pages == 1 else 'are'} {pages}.")
        pairs = store.list_pairs(**filters, include_deleted=bool(include_deleted), limit=PAGE_SIZE,
                                 offset=(page - 1) * PAGE_SIZE)
        thumbnails = []
        for pair in pairs:
            image = store.load_image(pair.image_sha256)
            image.thumbnail(THUMBNAIL)
            margin = "" if pair.margin is None else f", margin {pair.margin:+.2f}"
            thumbnails.append((image, f"#{pair.id} {pair.source}{margin}{' (deleted)' if pair.deleted_at else ''}"))
        first = (page - 1) * PAGE_SIZE + 1 if pairs else 0
        summary = f"Showing {first}-{first + len(pairs) - 1 if pairs else 0} of {total} pairs (page {page}/{pages})."
        models = [ALL, *((display_model_id(model), model) for model in store.stats()["by_model"] if model)]
        model_choice = gr.update(choices=models, value=filters["model_id"] or ALL)  # "" would mean "all"
        return thumbnails, [pair_row(pair) for pair in pairs], [pair.id for pair in pairs], summary, model_choice

    def _pair_id(self, pair_id: float | str | None) -> int:
        if pair_id is None or (isinstance(pair_id, str) and not pair_id.strip()):
            raise gr.Error(NO_PAIR)
        try:
            number = float(pair_id)
        except (TypeError, ValueError):
            raise gr.Error(f"Pair id must be a whole number, not {pair_id!r}.") from None
        if not number.is_integer() or number < 1:
            raise gr.Error(f"Pair id must be a whole number from 1, not {pair_id!r}.")
        return int(number)

    def get_pair(self, pair_id: float | str | None, token: str = "", profile: gr.OAuthProfile | None = None
                 ) -> tuple:
        """One pair side by side: image, prompt, chosen, rejected, score table, note, details."""
        require_reader(profile, token, self.access)
        number = self._pair_id(pair_id)
        store = self.store_factory()
        try:
            pair = store.get_pair(number)
            image = store.load_image(pair.image_sha256)
        except NotFoundError as error:
            raise gr.Error(f"{error}.") from error
        metadata = metadata_line(pair)
        deleted = f"; **deleted** {pair.deleted_at} (Restore undoes it)" if pair.deleted_at else ""
        settings = f"  \n{metadata[0].upper()}{metadata[1:]}." if metadata else ""  # a second line
        details = (f"Pair #{pair.id}: source **{pair.source}**, model `{display_model_id(pair.model_id) or '-'}`"
                   f"{', adapter `' + display_model_id(pair.adapter) + '`' if pair.adapter else ''}, saved "
                   f"{pair.created_at}{deleted}.{settings}")
        if pair.problems:
            details += f"  \nRepaired or found when the store was checked: {pair.problems}"
        return (number, image, pair.prompt, pair.chosen, pair.rejected, score_rows(pair), pair.note, details)

    def pick(self, ids: list[int] | None, evt: gr.SelectData, token: str = "",
             profile: gr.OAuthProfile | None = None) -> tuple:
        """The pair under a clicked thumbnail or table row."""
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not ids or not isinstance(index, int) or not 0 <= index < len(ids):
            raise gr.Error("That item is no longer listed; press Search to refresh the list.")
        return self.get_pair(ids[index], token, profile)

    def pair_stats(self) -> tuple[str, list[list], list[list]]:
        """Summary Markdown, counts by source, counts by model."""
        stats = self.store_factory().stats()
        return (stats_markdown(stats), [[source, count] for source, count in stats["by_source"].items()],
                [[display_model_id(model) or "(none)", count] for model, count in stats["by_model"].items()])

    def first_view(self) -> tuple:
        """What the tab shows when the page loads: the newest pairs (unless only admins may read them) and
        the statistics."""
        if self.access.pairs_need_admin:
            return self._hidden()
        return (*self.list_pairs("", ALL, ALL, False, 1), *self.pair_stats())

    def _hidden(self) -> tuple:
        hidden = ("The stored pairs are visible to admins only on this deployment: enter the admin token and press "
                  "Search.")
        return ([], [], [], hidden, gr.update(choices=[ALL], value=ALL), *self.pair_stats())

    def refresh(self, search: str | None, source: str | None, model_id: str | None, include_deleted: bool,
                page: float | None, token: str = "", profile: gr.OAuthProfile | None = None) -> tuple:
        """The list under the current filters and the statistics, as they are in the store now (for a reader
        who may see pairs; else the same notice as on page load, not an error on every refresh)."""
        try:
            require_reader(profile, token, self.access)
        except gr.Error:
            return self._hidden()
        return (*self.list_pairs(search, source, model_id, include_deleted, page, token, profile), *self.pair_stats())

    # Writing (admin on a public deployment) -------------------------------------------------

    def _check_text(self, name: str, text: str | None, limit: int, required: bool = True) -> str:
        if text is not None and not isinstance(text, str):
            raise gr.Error(f"{name} must be text, not {type(text).__name__}.")
        text = CONTROL_CHARACTER.sub("", text or "")  # invisible, so removed rather than refused
        if required and not text.strip():
            raise gr.Error(f"{name} is empty; a pair needs two non-empty answers.")
        if len(text) > limit:
            raise gr.Error(f"{name} is {len(text)} characters; the limit is {limit}.")
        return text

    def update_pair(self, pair_id: float | None, chosen: str | None, rejected: str | None, note: str | None,
                    token: str = "", profile: gr.OAuthProfile | None = None) -> tuple:
        """Save edits to chosen, rejected and note; returns the refreshed pair view and a status line."""
        require_admin(profile, token, self.access)
        number = self._pair_id(pair_id)
        fields = {"chosen": self._check_text("Chosen", chosen, self.limits.max_answer_chars),
                  "rejected": self._check_text("Rejected", rejected, self.limits.max_answer_chars),
                  "note": self._check_text("Note", note, self.limits.max_note_chars, required=False)}
        try:
            self.store_factory().update_pair(number, **fields)
        except (NotFoundError, DuplicatePairError, ValueError) as error:
            raise gr.Error(f"Not saved: {error}.") from error
        return (*self.get_pair(number), f"Saved pair #{number}.")

    def delete_pair(self, pair_id: float | None, token: str = "", profile: gr.OAuthProfile | None = None) -> str:
        """Soft-delete a pair (Restore undoes it)."""
        require_admin(profile, token, self.access)
        number = self._pair_id(pair_id)
        try:
            self.store_factory().delete_pair(number)
        except NotFoundError as error:
            raise gr.Error(f"{error}.") from error
        return f"Deleted pair #{number}; it is hidden from lists and exports. Press Restore to undo."

    def restore_pair(self, pair_id: float | None, token: str = "", profile: gr.OAuthProfile | None = None) -> str:
        """Undo a delete."""
        require_admin(profile, token, self.access)
        number = self._pair_id(pair_id)
        try:
            self.store_factory().restore_pair(number)
        except (NotFoundError, DuplicatePairError) as error:
            raise gr.Error(f"Not restored: {error}.") from error
        return f"Restored pair #{number}."

    def _exports_dir(self, store: Store) -> Path:
        # Exports sit beside the database they came from.
        return DataSettings().exports_dir if store.path == ":memory:" else Path(store.path).parent / "exports"

    def export_pairs(self, fmt: str, search: str | None, source: str | None, model_id: str | None,
                     token: str = "", profile: gr.OAuthProfile | None = None) -> tuple[str, str]:
        """Export the live pairs matching the filters; returns a download file and a status line."""
        require_admin(profile, token, self.access)
        if fmt not in FORMATS:
            raise gr.Error(f"Export format must be {' or '.join(FORMATS)}, not {fmt!r}.")
        store = self.store_factory()
        try:
            result = export_pairs(store, self._exports_dir(store), fmt, **self._filters(search, source, model_id))
        except ValueError as error:
            raise gr.Error(f"Nothing exported: {error}.") from error
        downloads = Path(self._downloads.name)
        if fmt == "parquet":
            download = downloads / f"{result.path.name}.parquet"
            shutil.copyfile(result.path / "data.parquet", download)
        else:
            download = archive_export(result.path, downloads)
        return str(download), (f"Exported {result.pairs} pairs ({result.images} images) to "
                               f"`exports/{result.path.name}` in the data folder; the download holds the same data.")

    def import_problem(self, file: str | None) -> str:
        """Why an uploaded file cannot be imported ('' when it may be), said as soon as it is uploaded."""
        suffix = Path(file).suffix.lower() if file else ""
        if not file or suffix in IMPORTS:
            return ""
        return (f"Upload a .zip of an export folder or a .parquet file, not a {suffix or 'file without extension'} "
                "(a bare data.jsonl has no images; zip it with its images/ folder).")

    def import_pairs(self, file: str | None, token: str = "", profile: gr.OAuthProfile | None = None) -> str:
        """Add the pairs of an uploaded export (.zip of a folder, or .parquet), skipping stored ones."""
        require_admin(profile, token, self.access)
        if not file or not isinstance(file, str):
            raise gr.Error("Upload an export first: a .zip of an export folder or a .parquet file.")
        path = Path(file)
        problem = self.import_problem(str(path))
        if problem:
            raise gr.Error(problem)
        try:
            result = import_pairs(self.store_factory(), path)
        except (ValueError, OSError) as error:
            raise gr.Error(f"Nothing imported from {path.name}: {without_paths(str(error))}.") from error
        return f"Imported {result.added} pairs; skipped {result.duplicates} already stored."


@dataclass
class CurateTab:
    """The tab's handlers, and its list and statistics as a view other events can refresh."""

    handlers: Curate
    live: LiveView


def build_curate_tab(store_factory: Callable[[], Store], admin_token: gr.Textbox | None = None,
                     access: AccessSettings | None = None, limits: InputLimits | None = None) -> CurateTab:
    """Lay out the Curate tab inside the current gr.Tab and wire its events (api names as below)."""
    handlers = Curate(store_factory, access, limits)
    limits = handlers.limits
    if admin_token is None:
        # Self-contained: ask for the admin token here when the app did not share its box.
        admin_token = gr.Textbox(label="Admin token", type="password", max_lines=1,
                                 visible=handlers.access.public,
                                 placeholder="needed for edit, delete, restore, export and import")
    with gr.Row():
        search = gr.Textbox(label="Search prompt, answers and note (Enter)", max_lines=1, scale=3, min_width=200,
                            max_length=limits.max_question_chars, elem_id="curate-search")
        source = gr.Dropdown([ALL, *SOURCES], value=ALL, label="Source", scale=1, min_width=110)
        model = gr.Dropdown([ALL], value=ALL, label="Model", allow_custom_value=True, scale=2, min_width=140)
        include_deleted = gr.Checkbox(label="Show deleted", value=False, scale=1, min_width=110)
        page = inputs.number_box(label="Page", value=1, precision=0, minimum=1, scale=1, min_width=80)
        search_button = gr.Button("Search", variant="primary", scale=1, min_width=90, elem_id="curate-search-button")
    summary = gr.Markdown(elem_id="curate-summary")
    gallery = gr.Gallery(label="Pairs (click one to open it)", columns=8, height=260, allow_preview=False,
                         format="png", elem_id="curate-gallery")
    table = gr.Dataframe(headers=PAIR_COLUMNS, label="Pairs", interactive=False, wrap=True, elem_id="curate-table",
                         column_widths=[48, 70, 120, 170, 230, 230, 70, 160, 72], elem_classes=["sj-table"])
    shown_ids = gr.State([])
    with gr.Row():
        # A text box, not gr.Number: an empty Number shows 0, which is no pair. Curate._pair_id checks it
        # (a whole number from 1) with a message naming the field.
        pair_id = gr.Textbox(label="Pair id", placeholder="type an id, e.g. 12, and press Enter", max_lines=1,
                             max_length=12, scale=1, elem_id="curate-pair-id")
        open_button = gr.Button("Open", scale=1, elem_id="curate-open")
    details = gr.Markdown(elem_id="curate-details")
    with gr.Row():
        image = gr.Image(label="Image", type="pil", format="png", interactive=False, height=240, scale=1)
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", interactive=False, lines=2)
            with gr.Row():
                chosen = gr.Textbox(label="Chosen (preferred)", lines=4, max_length=limits.max_answer_chars,
                                    elem_id="curate-chosen")
                rejected = gr.Textbox(label="Rejected", lines=4, max_length=limits.max_answer_chars,
                                      elem_id="curate-rejected")
            note = gr.Textbox(label="Note", max_length=limits.max_note_chars, elem_id="curate-note")
    scores = gr.Dataframe(headers=SCORE_COLUMNS, label="Scores: chosen vs rejected (judge settings and ranks are in "
                          "the details line above)", interactive=False, elem_id="curate-scores",
                          elem_classes=["sj-table"])
    with gr.Row():
        save_button = gr.Button("Save edits", variant="primary", elem_id="curate-save")
        delete_button = gr.Button("Delete", variant="stop", elem_id="curate-delete")
        restore_button = gr.Button("Restore (undo delete)", elem_id="curate-restore")
    status = gr.Markdown(elem_id="curate-status")
    with gr.Accordion("Statistics", open=False):
        stats_button = gr.Button("Refresh statistics", elem_id="curate-stats-button")
        stats_text = gr.Markdown(elem_id="curate-stats")
        with gr.Row():
            by_source = gr.Dataframe(headers=["source", "pairs"], label="By source", interactive=False,
                                     elem_classes=["sj-table"])
            by_model = gr.Dataframe(headers=["model", "pairs"], label="By model", interactive=False,
                                    elem_classes=["sj-table"])
    with gr.Accordion("Export and import (TRL preference dataset)", open=False):
        gr.Markdown("Export writes the listed filters' live pairs under the data folder's `exports/` and offers "
                    "a download: Parquet (images embedded) or a zip of data.jsonl + images/. "
                    "Import takes either and skips pairs already stored.")
        with gr.Row():
            export_format = gr.Radio(list(FORMATS), value="parquet", label="Format")
            export_button = gr.Button("Export", elem_id="curate-export")
        export_file = gr.File(label="Download", interactive=False)
        # Any file is accepted here, so a wrong one gets a message rather than being silently refused.
        import_file = gr.File(label="Import (.zip or .parquet)", type="filepath", elem_id="curate-import-file")
        import_button = gr.Button("Import", elem_id="curate-import")
        exchange_status = gr.Markdown(elem_id="curate-exchange-status")

    private = {"api_visibility": "private"}
    filters = [search, source, model]
    list_inputs = [*filters, include_deleted, page, admin_token]
    list_outputs = [gallery, table, shown_ids, summary, model]
    pair_view = [pair_id, image, prompt, chosen, rejected, scores, note, details]
    stats_outputs = [stats_text, by_source, by_model]
    gr.on(None, handlers.first_view, None, [*list_outputs, *stats_outputs], **private)  # page load
    search_button.click(handlers.list_pairs, list_inputs, list_outputs, api_name="list_pairs")
    # Filters apply as soon as a person changes them (.input: not when a handler sets them).
    for trigger in (search.submit, source.input, model.input, include_deleted.input, page.submit):
        trigger(handlers.list_pairs, list_inputs, list_outputs, **private)
    open_button.click(handlers.get_pair, [pair_id, admin_token], pair_view, api_name="get_pair")
    pair_id.submit(handlers.get_pair, [pair_id, admin_token], pair_view, **private)
    for picker in (gallery, table):
        picker.select(handlers.pick, [shown_ids, admin_token], pair_view, **private).then(None, js=SCROLL_TO_PAIR)
    save_button.click(handlers.update_pair, [pair_id, chosen, rejected, note, admin_token], [*pair_view, status],
                      api_name="update_pair").success(handlers.list_pairs, list_inputs, list_outputs, **private)
    for button, handler, name in ((delete_button, handlers.delete_pair, "delete_pair"),
                                  (restore_button, handlers.restore_pair, "restore_pair")):
        button.click(handler, [pair_id, admin_token], [status], api_name=name).success(
            handlers.get_pair, [pair_id, admin_token], pair_view, **private).success(
            handlers.list_pairs, list_inputs, list_outputs, **private)
    stats_button.click(handlers.pair_stats, None, stats_outputs, api_name="pair_stats")
    export_button.click(handlers.export_pairs, [export_format, *filters, admin_token], [export_file, exchange_status],
                        api_name="export_pairs")
    import_file.upload(handlers.import_problem, [import_file], [exchange_status], **private)
    import_button.click(handlers.import_pairs, [import_file, admin_token], [exchange_status],
                        api_name="import_pairs").success(handlers.refresh, list_inputs,
                                                         [*list_outputs, *stats_outputs], **private)
    return CurateTab(handlers=handlers, live=LiveView(handlers.refresh, list_inputs, [*list_outputs, *stats_outputs]))
