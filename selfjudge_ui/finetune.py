"""The Fine-tune tab: train a LoRA-DPO adapter on the stored pairs in a background process, watch its
curves live, cancel it, browse past runs and open a finished adapter in Explore; and self-curate
new pairs (the model judges its own candidates, core.training.selfcurate).

Training runs in a spawned process (core.training.finetune.start_run), so this server keeps answering
while it trains; the run's row in the store's `runs` table is its whole interface, and a
gr.Timer polls it. Fine-tune and self-curation are costly: on a public deployment they need
an admin (selfjudge_ui.access.require_admin). Bad input raises gr.Error before anything starts.
"""

from __future__ import annotations

import dataclasses
import html
import math
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.training.dpo.losses import LOSSES
from core.training.dpo.settings import DPOSettings
from core.training.finetune import cancel_run, list_runs, planned_steps, record_exit, start_run
from core.engine.generation import GenerationSettings
from core.engine.judge import JudgeSettings
from core.engine.loading import display_model_id, get_model
from core.training.selfcurate import (FRESH_SEED_OFFSET, RANKERS, CurationProgress, CurationSettings, Curated, curated,
                            store_curated)
from core.data.store import SOURCES, NotFoundError, Store
from selfjudge_ui import inputs
from selfjudge_ui.access import require_admin
from selfjudge_ui.explore import adapter_folders
from selfjudge_ui.gpu import on_gpu, zero_gpu
from selfjudge_ui.live import LiveView
from selfjudge_ui.settings import StudioSettings

ALL = "all"
SCROLL_TO_COMPARE = ("() => { setTimeout(() => document.getElementById('explore-compare-section')"
                     "?.scrollIntoView({behavior: 'smooth', block: 'start'}), 300); }")
SCENES = "fresh shapes scenes"
FOLDER = "server folder"
ACTIVE = ("queued", "running")
POLL_SECONDS = 2.0
RUN_COLUMNS = ["id", "name", "status", "pairs", "settings", "steps", "loss", "margin", "accuracy", "adapter",
               "error", "created", "finished"]
# The four panels of the live curves: (title, [(metric key, line name)]).
CURVES = [("DPO loss", [("loss", "loss")]),
          ("implicit reward beta * log-ratio", [("reward_chosen", "chosen"), ("reward_rejected", "rejected")]),
          ("reward margin (chosen - rejected)", [("margin", "margin")]),
          ("accuracy (chosen reward > rejected)", [("accuracy", "accuracy")])]


# Why the Fine-tune tab does not train on ZeroGPU, and where training runs instead (docs/gpu-and-spaces.md).
ZERO_GPU_TRAINING = (
    "Fine-tuning is off on this ZeroGPU Space: ZeroGPU lends a GPU only inside one request, for minutes "
    "(with a daily quota), and a DPO run needs one for its whole length. Self-curation below works here. "
    "To train, export the pairs (Curate tab, Export) and either duplicate this Space on dedicated GPU "
    "hardware, where this tab trains, or train locally: `python -m core.data.exchange import EXPORT` then "
    "`python -m core.training.dpo --db data/selfjudge.db --out data/adapters/NAME --model MODEL --4bit`.")


def _env_folder() -> str:
    return os.environ.get("SELFJUDGE_CURATE_FOLDER", "").strip()


@dataclass(frozen=True)
class FinetuneLimits:
    """Bounds on one fine-tune or self-curation request, and the admin's server-side image folder."""

    max_epochs: int = 20
    max_batch_size: int = 64
    max_lora_r: int = 256
    max_lora_alpha: int = 512
    max_curate_images: int = 500
    # Self-curation may read images from this folder (set by the admin, SELFJUDGE_CURATE_FOLDER);
    # visitors only choose "server folder", never type a path.
    curate_folder: str = field(default_factory=_env_folder)


# Pure helpers -------------------------------------------------------------------------------------

def adapter_name(typed: str | None, now: datetime) -> str:
    """A safe adapter folder name: the typed name reduced to [a-z0-9_-] (at most 64), else dpo-<UTC time>."""
    # No dots or slashes survive, so the name can be neither hidden, '..', nor a path.
    slug = re.sub(r"[^a-z0-9_-]+", "-", (typed or "").strip().lower()).strip("-_")[:64].strip("-_")
    return slug or "dpo-" + now.astimezone(timezone.utc).strftime("%Y%m%d-%H%M%S")


def since_filter(text: str | None) -> str:
    """A typed date or time (UTC unless it says otherwise) as the store's created_at format, '' for none."""
    text = (text or "").strip()
    if not text:
        return ""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise gr.Error(f"'Since' must be a date like 2026-05-01 or 2026-05-01 14:30 (UTC), not {text!r}.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def settings_summary(params: dict) -> str:
    """A run's DPO settings in one short line ('' for a row that recorded none)."""
    if "dpo" not in params:
        return ""
    dpo = DPOSettings.from_json(params["dpo"])  # defaults for keys an older row lacks
    projector = " +projector" if dpo.train_projector else ""
    sft = f" sft={dpo.sft_weight:g}" if dpo.sft_weight else ""
    return (f"{dpo.loss} beta={dpo.beta:g} lr={dpo.lr:g} epochs={dpo.epochs} batch={dpo.batch_size} "
            f"LoRA r={dpo.lora_r}/alpha={dpo.lora_alpha}{projector}{sft}")


def _number(value: float | None) -> float | str:
    return "" if value is None else round(value, 4)


def run_row(run: dict) -> list:
    """One line of the run history; the adapter is shown only for finished runs (a half-written one never)."""
    last = run["metrics"][-1] if run["metrics"] else {}
    return [run["id"], run["name"], run["status"], run["params"].get("pairs", ""),
            settings_summary(run["params"]), len(run["metrics"]), _number(last.get("loss")),
            _number(last.get("margin")), _number(last.get("accuracy")),
            Path(run["adapter_path"]).name if run["status"] == "finished" and run["adapter_path"] else "", run["error"],
            run["created_at"][:19].replace("T", " "), (run["finished_at"] or "")[:19].replace("T", " ")]


def run_total_steps(run: dict) -> int | None:
    """How many steps the run will take, when its row recorded the number of pairs."""
    if "pairs" not in run["params"] or "dpo" not in run["params"]:
        return None
    return planned_steps(run["params"]["pairs"], DPOSettings.from_json(run["params"]["dpo"]))


def progress_html(run: dict) -> str:
    """A progress bar and one status line for a run."""
    done, total = len(run["metrics"]), run_total_steps(run)
    name = html.escape(run["name"])
    steps = f"step {done}/{total}" if total else f"step {done}"
    lines = {"queued": f"queued: the worker is starting and loading the model ({steps})",
             "running": f"training, {steps}",
             "finished": f"finished after {done} steps; adapter saved as <code>"
                         f"{html.escape(Path(run['adapter_path']).name)}</code> (Open adapter in Explore compares it "
                         "with the base model)",
             "failed": f"<b>failed</b> at {steps}: {html.escape(run['error'])}",
             "cancelled": f"cancelled at {steps}; no adapter was kept"}
    value = total if run["status"] == "finished" and total else done
    bar = f'<progress value="{value}" max="{total or max(done, 1)}" style="width:100%"></progress>'
    return f"{bar}<div>Run #{run['id']} <b>{name}</b>: {lines[run['status']]}</div>"


def curves_figure(run: dict | None) -> go.Figure:
    """Loss, chosen/rejected rewards, margin and accuracy per step of a run (hover for exact values)."""
    figure = make_subplots(rows=2, cols=2, subplot_titles=[title for title, _ in CURVES],
                           horizontal_spacing=0.08, vertical_spacing=0.2)
    metrics = run["metrics"] if run else []
    steps = [row["step"] for row in metrics]
    for index, (_, lines) in enumerate(CURVES):
        for key, label in lines:
            figure.add_trace(go.Scatter(x=steps, y=[row[key] for row in metrics], mode="lines+markers", name=label,
                                        showlegend=len(lines) > 1), row=index // 2 + 1, col=index % 2 + 1)
    title = "Pick or start a run" if run is None else f"Run #{run['id']} {run['name']} ({run['status']})"
    figure.update_layout(title=title, height=520, margin={"l": 10, "r": 10, "t": 70, "b": 30})
    # Steps are whole numbers: ticks every step, or every few steps on a long run.
    figure.update_xaxes(title_text="step", tick0=0, dtick=max(1, math.ceil(len(steps) / 10)), tickformat="d")
    return figure


# Handlers ------------------------------------------------------------------------------------------

class Finetune:
    """The tab's handlers, bound to the studio settings and a store factory."""

    def __init__(self, settings: StudioSettings, store_factory: Callable[[], Store],
                 limits: FinetuneLimits | None = None):
        self.settings = settings
        self.store_factory = store_factory
        self.limits = limits or FinetuneLimits()
        # Training processes this server started, by run id; reaped (and a silent death recorded) on poll.
        self._processes: dict[int, multiprocessing.Process] = {}
        self._lock = threading.Lock()
        # On ZeroGPU the judging of a self-curation request is the part that gets the GPU.
        self.judge_images_on_gpu = on_gpu(self._judge_all_images, _curate_seconds)

    def _db_path(self) -> Path:
        path = self.store_factory().path
        if path == ":memory:":
            raise gr.Error("Fine-tuning needs the store in a file (the training process opens it); "
                           "start the studio with --data DIR.")
        return Path(path)

    def _reap(self) -> None:
        """Forget finished training processes; a run one left queued or running is marked failed."""
        with self._lock:
            for run_id, process in list(self._processes.items()):
                if not process.is_alive():
                    process.join()
                    record_exit(self._db_path(), run_id, process.exitcode)
                    del self._processes[run_id]

    def _run(self, run_id: float | None) -> dict:
        number = inputs.check_integer("run id", run_id, 1, inputs.MAX_SEED)
        try:
            return self.store_factory().get_run(number)
        except NotFoundError as error:
            raise gr.Error(f"{error}.") from error

    # Choosing pairs ------------------------------------------------------------------------------

    def _filters(self, source: str | None, model_id: str | None, since: str | None) -> dict:
        source = "" if source in (None, "", ALL) else source
        if source not in ("", *SOURCES):
            raise gr.Error(f"Source must be {ALL}, {' or '.join(SOURCES)}, not {source!r}.")
        return {"source": source, "model_id": "" if model_id in (None, "", ALL) else str(model_id),
                "since": since_filter(since)}

    def count_pairs(self, source: str | None, model_id: str | None, since: str | None) -> tuple[str, dict]:
        """How many live pairs the filters select, and the model choices of the store."""
        filters = self._filters(source, model_id, since)
        store = self.store_factory()
        count = store.count_pairs(**filters)
        models = [ALL, *((display_model_id(model), model) for model in store.stats()["by_model"] if model)]
        return (f"**{count} pairs** selected for training.",
                gr.update(choices=models, value=filters["model_id"] or ALL))

    # Training ------------------------------------------------------------------------------------

    def dpo_settings(self, beta, loss, lr, epochs, batch_size, lora_r, lora_alpha, train_projector,
                     sft_weight=0.0) -> DPOSettings:
        """DPOSettings from the hyperparameter controls, each checked against its range."""
        limits = self.limits
        values = {"beta": inputs.check_number("beta", beta, 0.001, 10.0),
                  "loss": inputs.check_choice("loss", loss, list(LOSSES)),
                  "lr": inputs.check_number("learning rate", lr, 1e-7, 0.1),
                  "epochs": inputs.check_integer("epochs", epochs, 1, limits.max_epochs),
                  "batch_size": inputs.check_integer("batch size", batch_size, 1, limits.max_batch_size),
                  "lora_r": inputs.check_integer("LoRA r", lora_r, 1, limits.max_lora_r),
                  "lora_alpha": inputs.check_integer("LoRA alpha", lora_alpha, 1, limits.max_lora_alpha),
                  "sft_weight": inputs.check_number("chosen NLL weight", sft_weight, 0.0, 10.0)}
        if not isinstance(train_projector, bool):
            raise gr.Error(f"train projector must be true or false, not {train_projector!r}.")
        try:
            return DPOSettings(**values, train_projector=train_projector)
        except ValueError as error:
            raise gr.Error(str(error)) from error

    def start_finetune(self, name, source, model_id, since, beta, loss, lr, epochs, batch_size, lora_r, lora_alpha,
                       train_projector, sft_weight=0.0, token: str = "", profile: gr.OAuthProfile | None = None
                       ) -> tuple:
        """Check everything, then train in a background process; returns the run id, a status line, the timer."""
        who = require_admin(profile, token, self.settings.access)
        if zero_gpu():
            raise gr.Error(ZERO_GPU_TRAINING)
        dpo = self.dpo_settings(beta, loss, lr, epochs, batch_size, lora_r, lora_alpha, train_projector, sft_weight)
        filters = self._filters(source, model_id, since)
        count = self.store_factory().count_pairs(**filters)
        if count == 0:
            raise gr.Error("No pairs selected: no stored pair matches these filters. Accept pairs in Explore, "
                           "self-curate some below, or widen the filters (source, model, since).")
        self._reap()
        with self._lock:
            if self._processes:
                busy = ", ".join(f"#{run_id}" for run_id in self._processes)
                raise gr.Error(f"Run {busy} is still training; wait for it or cancel it (one run at a time).")
            folder = adapter_name(name, datetime.now(timezone.utc))
            out_dir = self.settings.data.adapters_dir / folder
            if out_dir.exists():
                raise gr.Error(f"An adapter named {folder!r} already exists; type another name "
                               "(or leave it empty for a dated one).")
            model = dataclasses.replace(self.settings.model, adapter="")  # DPO trains a fresh adapter on the base
            try:
                run_id, process = start_run(self._db_path(), folder, out_dir, dpo, model, **filters)
            except (ValueError, FileExistsError) as error:
                raise gr.Error(f"Not started: {error}.") from error
            self._processes[run_id] = process
        steps = planned_steps(count, dpo)
        return (run_id, f"Started run #{run_id} **{folder}** as {who}: {count} pairs, {steps} steps. "
                        "It trains in the background; you can keep using the studio.", gr.Timer(active=True))

    def watch(self, run_id: float | None) -> tuple:
        """A run's progress bar, live curves, the run history, and whether to keep polling."""
        if run_id is None:
            return "", curves_figure(None), self.list_runs(), gr.Timer(active=False)
        self._reap()
        run = self._run(run_id)
        return (progress_html(run), curves_figure(run), self.list_runs(),
                gr.Timer(active=run["status"] in ACTIVE))

    def first_view(self) -> tuple:
        """On page load: the newest run (polled while it trains) and the pair count."""
        self._reap()
        runs = self.store_factory().list_runs()
        run_id = runs[0]["id"] if runs else None
        return (run_id, *self.watch(run_id), *self.count_pairs(ALL, ALL, ""))

    def pick_run(self, rows: list[list] | None, evt: gr.SelectData) -> tuple:
        """The run of a clicked history row."""
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        ids = [row[0] for row in (rows.values.tolist() if hasattr(rows, "values") else rows or [])]
        if not isinstance(index, int) or not 0 <= index < len(ids):
            raise gr.Error("That run is no longer listed; press Refresh.")
        return (ids[index], *self.watch(ids[index]))

    def cancel_finetune(self, run_id: float | None, token: str = "", profile: gr.OAuthProfile | None = None) -> str:
        """Ask a queued or running run to stop before its next step (it keeps no adapter)."""
        require_admin(profile, token, self.settings.access)
        run = self._run(run_id)
        if run["status"] not in ACTIVE:
            raise gr.Error(f"Run #{run['id']} is {run['status']}; only a queued or running run can be cancelled.")
        cancel_run(self._db_path(), run["id"])
        return f"Cancelling run #{run['id']}: it stops before its next step and keeps no adapter."

    def can_cancel(self, run_id: float | None) -> dict:
        """The Cancel button, enabled only while the shown run is queued or running."""
        if run_id is None:
            return gr.update(interactive=False)
        try:
            return gr.update(interactive=self._run(run_id)["status"] in ACTIVE)
        except gr.Error:
            return gr.update(interactive=False)

    def refresh(self, source: str | None, model_id: str | None, since: str | None) -> tuple:
        """The pair count under the current filters and the run history, as they are in the store now."""
        return (*self.count_pairs(source, model_id, since), self.list_runs())

    def list_runs(self) -> list[list]:
        """The run history, newest first: settings, last metrics, status, error and (finished only) adapter."""
        return [run_row(run) for run in list_runs(self._db_path())]

    def adapter_for_explore(self, run_id: float | None) -> tuple:
        """The finished run's adapter selected in Explore's base-vs-adapter dropdown, and Explore shown."""
        run = self._run(run_id)
        if run["status"] != "finished":
            raise gr.Error(f"Run #{run['id']} is {run['status']}; only a finished run has an adapter to compare.")
        folders = adapter_folders(self.settings.data.adapters_dir)
        name = Path(run["adapter_path"]).name
        # Offered only when the folder is one of ours and complete (adapter_config.json is written last).
        if name not in folders or folders[name].resolve() != Path(run["adapter_path"]).resolve():
            raise gr.Error(f"The adapter of run #{run['id']} is no longer under "
                           f"{self.settings.data.adapters_dir.name}/.")
        return (gr.update(choices=list(folders), value=name), gr.Tabs(selected="explore"),
                f"Adapter **{name}** is selected in Explore, under 'Base model vs fine-tuned adapter': "
                "pick an image there and press Compare.", gr.Accordion(open=True))

    # Self-curation -------------------------------------------------------------------------------

    def curation_settings(self, images, n, seed_offset, rank) -> CurationSettings:
        """CurationSettings from the controls; the folder is the admin's, never a typed path."""
        choices = [SCENES, FOLDER] if self.limits.curate_folder else [SCENES]
        images = inputs.check_choice("images", images, choices)
        n = inputs.check_integer("number of images", n, 1, self.limits.max_curate_images)
        offset = inputs.check_integer("first scene seed", seed_offset, FRESH_SEED_OFFSET, inputs.MAX_SEED - n)
        rank = inputs.check_choice("ranking", rank, list(RANKERS))
        try:
            return CurationSettings(n=n, rank=rank, seed_offset=offset,
                                    folder=self.limits.curate_folder if images == FOLDER else "")
        except ValueError as error:
            raise gr.Error(str(error)) from error

    def judge_images(self, curation: CurationSettings, gen: GenerationSettings, judge_settings: JudgeSettings,
                     progress=None) -> Iterator[Curated]:
        """Each image's judged pair (core.training.selfcurate.curated), computed lazily; touches no store."""
        if progress is not None:
            progress(0.0, desc="Loading the model")
        try:
            loaded = get_model(self.settings.model)
        except (RuntimeError, FileNotFoundError) as error:
            raise gr.Error(f"Could not load the model: {error}") from error
        try:
            yield from curated(loaded, curation, gen, judge_settings)
        except (ValueError, FileNotFoundError) as error:
            raise gr.Error(f"Self-curation stopped: {error}.") from error

    def _judge_all_images(self, curation: CurationSettings, gen: GenerationSettings, judge_settings: JudgeSettings,
                          progress=None) -> list[Curated]:
        found = []
        for item in self.judge_images(curation, gen, judge_settings, progress):
            found.append(item)
            if progress is not None:
                progress((len(found), curation.n), desc="judging candidates")
        return found

    def self_curate(self, images, n, seed_offset, rank, candidates, max_new_tokens, alpha, seed,
                    token: str = "", profile: gr.OAuthProfile | None = None, progress=gr.Progress()) -> tuple:
        """Generate candidates for N images, rank them by the chosen score, store best-vs-worst as 'self' pairs.

        Returns a status line and the next unused scene seed (so the next click curates fresh scenes).
        """
        require_admin(profile, token, self.settings.access)
        curation = self.curation_settings(images, n, seed_offset, rank)
        limits = self.settings.limits
        gen = GenerationSettings(n=inputs.check_integer("candidates per image", candidates, 2, limits.max_candidates),
                                 strategy="sample",
                                 max_new_tokens=inputs.check_integer("max new tokens", max_new_tokens, 1,
                                                                     limits.max_new_tokens),
                                 seed=inputs.check_integer("seed", seed, 0, inputs.MAX_SEED))
        judge_settings = JudgeSettings(alpha=inputs.check_number("alpha", alpha, 0.0, limits.max_alpha))
        started = time.time()
        if zero_gpu():
            # The spaces.GPU call runs in a forked worker: it only computes the pairs, and this
            # process writes them, so the store's SQLite connection never crosses the fork.
            found = self.judge_images_on_gpu(curation, gen, judge_settings, progress)
        else:
            found = self.judge_images(curation, gen, judge_settings, progress)  # stored one image at a time

        def report(tally: CurationProgress) -> None:
            progress((tally.done, tally.total), desc=f"{tally.pairs} pairs kept, {tally.skipped} without preference")

        final = store_curated(self.store_factory(), found, curation.n, on_progress=report)
        where = "images of the server folder" if curation.folder else (
            f"scenes (seeds {curation.seed_offset}-{curation.seed_offset + curation.n - 1})")
        status = (f"Self-curated {final.total} {where}, ranked by **{curation.rank}**: stored {final.pairs} pairs "
                  f"(source self), {final.skipped} images gave no preference; {time.time() - started:.0f} s.")
        next_offset = curation.seed_offset + (0 if curation.folder else curation.n)
        return status, next_offset


def _curate_seconds(curation: CurationSettings, gen: GenerationSettings, *args, **kwargs) -> int:
    return int(30 + 3 * curation.n * gen.n)


# Layout -------------------------------------------------------------------------------------------

@dataclass
class FinetuneTab:
    """The tab's handlers, and its pair count and run history as a view other events can refresh."""

    handlers: Finetune
    live: LiveView


def build_finetune_tab(settings: StudioSettings, store_factory: Callable[[], Store],
                       admin_token: gr.Textbox | None = None, explore_adapter: gr.Dropdown | None = None,
                       tabs: gr.Tabs | None = None, limits: FinetuneLimits | None = None,
                       explore_compare: gr.Accordion | None = None) -> FinetuneTab:
    """Lay out the Fine-tune tab inside the current gr.Tab and wire its events (api names below).

    `explore_adapter` (Explore's adapter dropdown), `tabs` (the studio's gr.Tabs) and `explore_compare`
    (Explore's comparison section) let "Open in Explore" select the adapter there, switch to it and open
    the comparison; without them it only says where to look.
    """
    handlers = Finetune(settings, store_factory, limits)
    caps = handlers.limits
    defaults = DPOSettings()
    if admin_token is None:
        admin_token = gr.Textbox(label="Admin token", type="password", max_lines=1, visible=settings.access.public,
                                 placeholder="needed to fine-tune and self-curate")
    gr.Markdown("Train a LoRA adapter with DPO on the stored preference pairs. Training runs in a background "
                "process: the studio stays usable, the curves update every few seconds.")
    training_here = not zero_gpu()
    if not training_here:
        gr.Markdown(f"**{ZERO_GPU_TRAINING}**", elem_id="finetune-zero-gpu")
    with gr.Row():
        source = gr.Dropdown([ALL, *SOURCES], value=ALL, label="Pairs: source", scale=1, min_width=120)
        model = gr.Dropdown([ALL], value=ALL, label="Pairs: model", allow_custom_value=True, scale=2, min_width=160)
        since = gr.Textbox(label="Pairs: created since (UTC, e.g. 2026-05-01; Enter)", max_lines=1, max_length=40,
                           scale=2, min_width=160)
        pair_count = gr.Markdown(elem_id="finetune-pair-count")
    # Bounds are checked by the handler, whose message names the field (gradio's own would not).
    with gr.Row():
        beta = inputs.number_box(defaults.beta, label="beta", minimum=0.001, maximum=10,
                                 info="0.001 to 10: how far from the base model")
        loss = gr.Radio(list(LOSSES), value=defaults.loss, label="Loss")
        lr = inputs.number_box(defaults.lr, label="Learning rate", minimum=1e-7, maximum=0.1, info="1e-7 to 0.1")
        epochs = inputs.number_box(defaults.epochs, label="Epochs", precision=0, minimum=1, maximum=caps.max_epochs,
                                   info=f"1 to {caps.max_epochs}")
        batch_size = inputs.number_box(defaults.batch_size, label="Batch size (pairs)", precision=0, minimum=1,
                                       maximum=caps.max_batch_size, info=f"1 to {caps.max_batch_size}")
    with gr.Row():
        lora_r = inputs.number_box(defaults.lora_r, label="LoRA r", precision=0, minimum=1, maximum=caps.max_lora_r,
                                   info=f"1 to {caps.max_lora_r}")
        lora_alpha = inputs.number_box(defaults.lora_alpha, label="LoRA alpha", precision=0, minimum=1,
                                       maximum=caps.max_lora_alpha, info=f"1 to {caps.max_lora_alpha}")
        train_projector = gr.Checkbox(defaults.train_projector, label="Also train the projector")
        sft_weight = inputs.number_box(defaults.sft_weight, label="Chosen NLL weight (RPO)", minimum=0, maximum=10,
                                       info="0 to 10; 0: plain DPO, the proof used 2")
        name = gr.Textbox(label="Adapter name (letters, digits, - and _; empty: dated)", max_lines=1, max_length=80)
    with gr.Row():
        start_button = gr.Button("Start fine-tuning", variant="primary", elem_id="finetune-start",
                                 interactive=training_here)
        cancel_button = gr.Button("Cancel run", variant="stop", interactive=False, elem_id="finetune-cancel")
        explore_button = gr.Button("Open adapter in Explore", elem_id="finetune-explore")
    status = gr.Markdown(elem_id="finetune-status")
    with gr.Row():
        run_id = inputs.number_box(label="Run", precision=0, minimum=1, scale=1, min_width=80,
                                   elem_id="finetune-run-id")
        progress = gr.HTML(elem_id="finetune-progress")
    curves = gr.Plot(label="Training curves")
    with gr.Row():
        gr.Markdown("**Run history** (click a row to watch it)")
        refresh_button = gr.Button("Refresh", scale=0)
    runs = gr.Dataframe(headers=RUN_COLUMNS, label="Runs", interactive=False, wrap=False, max_chars=60,
                        elem_id="finetune-runs", elem_classes=["sj-table"])
    timer = gr.Timer(POLL_SECONDS, active=False)
    with gr.Accordion("Self-curation: the model makes its own pairs", open=False):
        gr.Markdown("For each image: sample candidates, judge every sentence with and without the image, and "
                    "store the best versus the worst candidate as a `self` pair. Rank by the debiased score "
                    "(the paper's method), the raw score (for comparison) or the scene's ground truth (oracle).")
        with gr.Row():
            image_choices = [SCENES, FOLDER] if caps.curate_folder else [SCENES]
            images = gr.Radio(image_choices, value=SCENES, label="Images")
            n = inputs.number_box(20, label="Images (N)", precision=0, minimum=1, maximum=caps.max_curate_images,
                                  info=f"1 to {caps.max_curate_images}")
            seed_offset = inputs.number_box(FRESH_SEED_OFFSET, label="First scene seed", precision=0,
                                            minimum=FRESH_SEED_OFFSET, maximum=inputs.MAX_SEED,
                                            info=f"{FRESH_SEED_OFFSET:,} or more (never the test split)")
            rank = gr.Radio(list(RANKERS), value="debiased", label="Rank candidates by")
        with gr.Row():
            candidates = inputs.slider_box(2, settings.limits.max_candidates, value=4, step=1,
                                           label="Candidates per image",
                                           info=f"2 to {settings.limits.max_candidates}")
            max_new_tokens = inputs.slider_box(8, settings.limits.max_new_tokens, value=64, step=8,
                                               label="Max new tokens", info=f"8 to {settings.limits.max_new_tokens}")
            alpha = inputs.slider_box(0, settings.limits.max_alpha, value=1.0, step=0.1, label="alpha (debiasing)",
                                      info=f"0 to {settings.limits.max_alpha:g}")
            seed = inputs.number_box(0, label="Sampling seed", precision=0, minimum=0, maximum=inputs.MAX_SEED,
                                     info="0 or more")
        curate_button = gr.Button("Self-curate", variant="primary", elem_id="finetune-self-curate")
        curate_status = gr.Markdown(elem_id="finetune-curate-status")

    private = {"api_visibility": "private"}
    filters = [source, model, since]
    watch_outputs = [progress, curves, runs, timer]
    hyper = [beta, loss, lr, epochs, batch_size, lora_r, lora_alpha, train_projector, sft_weight]
    gr.on(None, handlers.first_view, None, [run_id, *watch_outputs, pair_count, model], **private)
    for trigger in (source.input, model.input, since.submit):
        trigger(handlers.count_pairs, filters, [pair_count, model], **private)
    start_button.click(handlers.start_finetune, [name, *filters, *hyper, admin_token], [run_id, status, timer],
                       api_name="start_finetune").success(handlers.watch, [run_id], watch_outputs,
                                                          show_progress="hidden", **private)
    timer.tick(handlers.watch, [run_id], watch_outputs, api_name="finetune_run", show_progress="hidden")
    run_id.submit(handlers.watch, [run_id], watch_outputs, **private)
    runs.select(handlers.pick_run, [runs], [run_id, *watch_outputs], **private)
    # Whatever showed a run (start, poll, click, page load), Cancel follows that run's status.
    progress.change(handlers.can_cancel, [run_id], [cancel_button], show_progress="hidden", **private)
    cancel_button.click(handlers.cancel_finetune, [run_id, admin_token], [status], api_name="cancel_finetune").success(
        handlers.watch, [run_id], watch_outputs, **private)
    refresh_button.click(handlers.list_runs, None, [runs], api_name="list_runs")
    if explore_adapter is not None and tabs is not None and explore_compare is not None:
        explore_button.click(handlers.adapter_for_explore, [run_id], [explore_adapter, tabs, status, explore_compare],
                             api_name="open_adapter_in_explore").success(None, js=SCROLL_TO_COMPARE)
    elif explore_adapter is not None and tabs is not None:
        explore_button.click(lambda run: handlers.adapter_for_explore(run)[:3], [run_id],
                             [explore_adapter, tabs, status], api_name="open_adapter_in_explore")
    else:
        explore_button.click(lambda run: handlers.adapter_for_explore(run)[2], [run_id], [status],
                             api_name="open_adapter_in_explore")
    # self_curate runs its judging through judge_images_on_gpu; the writes stay outside the GPU call
    curate_button.click(handlers.self_curate, [images, n, seed_offset, rank, candidates, max_new_tokens, alpha, seed,
                                               admin_token], [curate_status, seed_offset], api_name="self_curate",
                        show_progress_on=[curate_status]).success(
        handlers.count_pairs, filters, [pair_count, model], **private)
    return FinetuneTab(handlers=handlers, live=LiveView(handlers.refresh, filters, [pair_count, model, runs]))
