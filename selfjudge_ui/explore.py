"""The Explore tab: pick an image, generate and score candidates, look at why, accept a pair.

Handlers are thin: UI values -> checked settings (selfjudge_ui.inputs) -> one core call ->
UI values (selfjudge_ui.views / plots). The scored result travels as JSON in a gr.JSON
component, signed with a per-process key, so "Accept" saves exactly what this server
scored for exactly that image, whether it came from the browser or through gradio_client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from core.config import REPO_ROOT
from core.engine.decoding import DecodeOptions, decode
from core.shapes.domain import knows_only_shapes, looks_like_shapes_scene
from core.engine.images import image_sha256
from core.engine.judge import json_safe, judge
from core.engine.loading import LoadedModel, adapter_in_use, display_model_id, get_model
from core.engine.prompts import DESCRIBE_QUESTION
from core.engine.safety import SafetySettings, format_verdict
from core.data.store import DuplicatePairError, Pair, Store, comparable_text, strip_control_characters
from core.shapes.world import Scene, make_scene, render
from selfjudge_ui import inputs, plots, views
from selfjudge_ui.gpu import on_gpu
from selfjudge_ui.settings import StudioSettings
from selfjudge_ui.signing import ResultSigner

EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"
NO_RESULT = "Score an image first (Generate and score)."
MAX_KEPT_RUNS = 20  # decoding runs listed for comparison
SCORE_LABEL = "Generate and score"
BUSY_LABEL = "Scoring… (generating and judging every sentence)"
START_COMMAND = "python app.py --model Qwen/Qwen2-VL-2B-Instruct"
# js for the button: bring the results into view at once (on a phone they sit below the inputs).
SCROLL_TO_RESULTS = ("(...args) => { document.getElementById('explore-results')?.scrollIntoView("
                     "{behavior: 'smooth', block: 'start'}); return args; }")


def example_scenes(folder: Path = EXAMPLES_DIR) -> list[tuple[Path, int]]:
    """The shipped example images and their scene seeds, from the folder's scenes.jsonl (core.shapes.world sample)."""
    index = folder / "scenes.jsonl"
    if not index.exists():
        return []
    rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    return [(folder / row["file"], int(row["seed"])) for row in rows if (folder / row["file"]).exists()]


def adapter_folders(adapters_dir: Path) -> dict[str, Path]:
    """Saved LoRA adapters by folder name: sub-folders of adapters_dir holding adapter_config.json."""
    if not adapters_dir.is_dir():
        return {}
    return {p.name: p for p in sorted(adapters_dir.iterdir()) if (p / "adapter_config.json").is_file()}


def banner(text: str) -> gr.Markdown:
    """A warning box that is shown only while it has something to say."""
    return gr.Markdown(text, visible=bool(text))


@contextlib.contextmanager
def _core_errors():
    """A core ValueError (a setting or model the judge cannot use) reaches the person as its message."""
    try:
        yield
    except ValueError as exc:
        raise gr.Error(str(exc)) from exc


class Explore:
    """The tab's handlers, bound to the studio settings, a store and a signing key."""

    def __init__(self, settings: StudioSettings, store_factory: Callable[[], Store]):
        self.settings = settings
        self.limits = settings.limits
        self.store_factory = store_factory
        self.signer = ResultSigner()

    def _verified(self, payload: dict | None) -> dict:
        if not payload or not isinstance(payload, dict) or "result" not in payload:
            raise gr.Error(NO_RESULT)
        if not self.signer.is_signed(payload):
            raise gr.Error("This result was not scored by this server (or the server restarted since); "
                           "press Generate and score again.")
        return payload

    # Input image ---------------------------------------------------------------------------------

    def show_upload(self, upload: dict | None) -> tuple:
        """A freshly uploaded picture (gradio's raw file data): check it now, keep it as the input, forget any truth."""
        path = upload.get("path") if isinstance(upload, dict) else None
        if not path:
            return None, None, ""
        inputs.read_image(path, self.limits)  # refuses what is not an image, with a message that says why
        return path, None, "No ground truth for uploaded images."

    def draw_scene(self, seed: float | None) -> tuple:
        """The shapes scene of a seed: its PNG (as the input file), seed, the picture and ground truth."""
        number, image = inputs.scene_image(seed)
        folder = Path(tempfile.gettempdir()) / "selfjudge-scenes"
        folder.mkdir(exist_ok=True)
        path = folder / f"scene_{number}.png"  # the name comes from a checked int, never from the user
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".png", delete=False) as handle:
            image.save(handle, format="PNG")
        os.replace(handle.name, path)
        return str(path), number, str(path), views.describe_truth(make_scene(number))

    def random_scene(self) -> tuple:
        """A new scene from the test split (seeds below 1,000,000, never used in training)."""
        return self.draw_scene(random.SystemRandom().randrange(inputs.TEST_SEEDS))

    def pick_example(self, evt: gr.SelectData) -> tuple:
        """One of the shipped examples, with its ground truth."""
        examples = example_scenes()
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(examples):
            raise gr.Error("Pick one of the examples shown.")
        path, seed = examples[evt.index]
        return str(path), seed, str(path), views.describe_truth(make_scene(seed))

    def _truth(self, seed: float | None, image) -> tuple[list[list[str]] | None, str]:
        """Ground truth only when the image really is that seed's scene."""
        if seed is None:
            return None, ""
        number, scene_image = inputs.scene_image(seed)
        if image_sha256(scene_image) != image_sha256(image):
            return None, f" Scene seed {number} does not match this image, so no ground truth is used."
        return views.scene_truth(make_scene(number)), ""

    def domain_note(self, image) -> str:
        """A warning when a shapes-only model is given a picture that is not a shapes scene ('' otherwise)."""
        if image is None or not knows_only_shapes(self.settings.model.model) or looks_like_shapes_scene(image):
            return ""
        return ("**This does not look like a shapes scene.** The embedded model has only ever seen the shapes "
                "world: it will describe any picture as coloured shapes, with confident scores. To study real "
                f"photos, start the studio with a real model, e.g. `{START_COMMAND}` (see README, Studio).")

    def image_changed(self, payload: dict | None, file: str | None) -> tuple[gr.Markdown, gr.Markdown]:
        """After the input changes: mark results of another image as stale, and warn about off-world pictures."""
        image = None
        if file:
            with contextlib.suppress(gr.Error):  # a bad file already got its own message from the upload
                image = inputs.read_image(file, self.limits)
        stale = ""
        if payload and isinstance(payload, dict) and "result" in payload and (
                image is None or image_sha256(image) != payload.get("image_sha256")):
            stale = ("**Stale: the results below belong to the previous image.** Press *Generate and score* to score "
                     "this one.")
        return banner(stale), banner(self.domain_note(image))

    # Scoring -------------------------------------------------------------------------------------

    def _model(self) -> LoadedModel:
        try:
            return get_model(self.settings.model)
        except (RuntimeError, FileNotFoundError) as exc:
            raise gr.Error(f"Could not load the model: {exc}") from exc

    def score(self, file, scene_seed, question, n, strategy, seed, alpha, kind, prompt, custom_template,
              progress=gr.Progress()) -> tuple:
        """Generate N candidates, score every sentence and token, and show it all."""
        image = inputs.read_image(file, self.limits)
        question = inputs.check_text("question", question, self.limits.max_question_chars)
        gen = inputs.generation_settings(n, strategy, seed, self.limits)
        judge_settings = inputs.judge_settings(alpha, kind, prompt, custom_template, self.limits)
        truth, truth_note = self._truth(scene_seed, image)
        progress(0.05, desc="Loading the model")
        loaded = self._model()
        progress(0.2, desc=f"Generating {gen.n} candidates and judging every sentence with and without the image")
        with _core_errors():
            result = judge(loaded, image, question, gen, judge_settings).to_json()
        payload = self.signer.sign({"result": result, "truth": truth, "image_sha256": image_sha256(image)})
        progress(0.95, desc="Drawing")
        return self._show(payload, truth_note)

    def _show(self, payload: dict, truth_note: str) -> tuple:
        result, truth = payload["result"], payload["truth"]
        status = (f"Scored {len(result['candidates'])} candidates with {display_model_id(result['model_id'])}"
                  f"{' + ' + display_model_id(result['adapter']) if result['adapter'] else ''}.{truth_note}")
        return (payload, views.styled_candidates(views.candidate_rows(result, truth)),
                views.styled_sentences(views.sentence_rows(result, truth)),
                plots.token_heatmap(result, plots.DEFAULT_TOKEN_VIEW),
                plots.sentence_scatter(result, views.verdicts(result, truth)), status)

    def show_choices(self, payload: dict | None, file: str | None) -> tuple:
        """After scoring: candidate pickers filled (chosen = rank 1, rejected = last), the Accept panel shown,
        a warning if the chosen one hallucinates, nothing marked stale, and the off-world banner if it applies."""
        if not payload or "result" not in payload:
            return (gr.update(),) * 8 + (*self.image_changed(payload, file),)
        result = payload["result"]
        choices = views.candidate_choices(result)
        best, worst = views.best_and_worst(result)
        return (gr.update(choices=choices, value=best), plots.DEFAULT_TOKEN_VIEW,
                views.token_html(result["candidates"][best - 1], plots.DEFAULT_TOKEN_VIEW),
                gr.update(choices=choices, value=best), gr.update(choices=choices, value=worst),
                result["candidates"][best - 1]["text"], banner(views.chosen_warning(result, payload["truth"], best)),
                gr.Accordion(visible=True, open=True), *self.image_changed(payload, file))

    def _candidate_number(self, name: str, number, result: dict) -> int:
        return inputs.check_integer(name, number, 1, len(result["candidates"]))

    def show_tokens(self, payload: dict | None, number, view: str) -> tuple:
        """Per-token colours of one candidate and the heatmap, in the chosen view."""
        if not payload or "result" not in payload:
            return NO_RESULT, None
        result = payload["result"]
        view = inputs.check_choice("token view", view, list(plots.TOKEN_VIEWS))
        candidate = result["candidates"][self._candidate_number("candidate", number, result) - 1]
        return views.token_html(candidate, view), plots.token_heatmap(result, view)

    def pick_row(self, payload: dict | None, evt: gr.SelectData) -> int:
        """The candidate of a clicked table row (rows are in rank order), for the token view."""
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not payload or "result" not in payload:
            raise gr.Error(NO_RESULT)
        order = views.rank_order(payload["result"])
        if not isinstance(index, int) or not 0 <= index < len(order):
            raise gr.Error("That row is no longer shown; press Generate and score again.")
        return order[index] + 1

    def chosen_text(self, payload: dict | None, number) -> tuple[str, gr.Markdown]:
        """The text of the candidate picked as chosen, ready to edit, and a warning if it hallucinates."""
        if not payload or "result" not in payload:
            return "", banner("")
        result = payload["result"]
        number = self._candidate_number("chosen candidate", number, result)
        return (result["candidates"][number - 1]["text"],
                banner(views.chosen_warning(result, payload["truth"], number)))

    # Accepting a pair ----------------------------------------------------------------------------

    def accept_pair(self, payload, file, chosen_number, rejected_number, chosen_text, note) -> str:
        """Save chosen vs rejected for this image and question, with every score, as a human pair."""
        payload = self._verified(payload)
        result = payload["result"]
        image = inputs.read_image(file, self.limits)
        if image_sha256(image) != payload["image_sha256"]:
            raise gr.Error("The image changed since it was scored; press Generate and score again.")
        chosen_index = self._candidate_number("chosen candidate", chosen_number, result) - 1
        rejected_index = self._candidate_number("rejected candidate", rejected_number, result) - 1
        chosen, rejected = result["candidates"][chosen_index], result["candidates"][rejected_index]
        # Model output is cleaned of control characters; text a person typed is refused if it has any.
        rejected_text = strip_control_characters(rejected["text"])
        model_chosen = strip_control_characters(chosen["text"])
        if chosen_text == chosen["text"]:
            chosen_text = model_chosen
        text = inputs.check_text("chosen text", chosen_text, self.limits.max_answer_chars)
        note = inputs.check_text("note", note, self.limits.max_note_chars, required=False)
        if comparable_text(text) == comparable_text(rejected_text):
            raise gr.Error("Chosen and rejected are the same text; pick two different candidates "
                           "or edit the chosen text.")
        chosen_scores = {**views.pair_scores(chosen, result["settings"]), "edited": text != model_chosen}
        try:
            pair = Pair(image_sha256="", prompt=result["question"], chosen=text, rejected=rejected_text,
                        chosen_scores=chosen_scores, rejected_scores=views.pair_scores(rejected, result["settings"]),
                        model_id=result["model_id"], adapter=result["adapter"], source="human", note=note)
            pair_id = self.store_factory().add_pair(pair, image)
        except DuplicatePairError as exc:
            raise gr.Error(str(exc)) from exc
        except ValueError as exc:
            raise gr.Error(f"Not saved: {exc}") from exc
        return f"Saved pair #{pair_id}: chosen #{chosen_index + 1}, rejected #{rejected_index + 1}."

    # Self-judged decoding ------------------------------------------------------------------------

    def decode(self, file, question, strategy, k, max_new_tokens, seed, alpha, kind, prompt, custom_template,
               safety_on=False, safety_probability=0.5, progress=gr.Progress()) -> tuple:
        """Decode sentence by sentence, picking each next sentence by its judge score; show the search tree.

        With the safety defence on, the answer is refused if a sentence's P(harmful) reaches the threshold.
        """
        image = inputs.read_image(file, self.limits)
        question = inputs.check_text("question", question, self.limits.max_question_chars)
        strategy = inputs.check_choice("decoding strategy", strategy, inputs.DECODE_STRATEGIES)
        k = inputs.check_integer("proposals per step", k, 1, self.limits.max_candidates)
        max_new_tokens = inputs.check_integer("max new tokens", max_new_tokens, 1, self.limits.max_new_tokens)
        seed = inputs.check_integer("seed", seed, 0, inputs.MAX_SEED)
        judge_settings = inputs.judge_settings(alpha, kind, prompt, custom_template, self.limits)
        safety = None
        if safety_on:
            threshold = inputs.check_number("safety threshold P(harmful)", safety_probability, 0.01, 0.99)
            safety = SafetySettings.from_probability(threshold, alpha=judge_settings.alpha)
        progress(0.05, desc="Loading the model")
        loaded = self._model()
        progress(0.2, desc=f"Decoding with {strategy}")
        with _core_errors():
            result = decode(loaded, image, question, strategy, judge_settings, k=k, max_new_tokens=max_new_tokens,
                            seed=seed, options=DecodeOptions(safety=safety))
        decoded = json_safe(dataclasses.asdict(result))
        report = format_verdict(result.safety) if result.safety else ""
        run = {"decoded": decoded, "k": k, "max_new_tokens": max_new_tokens}
        return (f"**{strategy}:** {decoded['text']}", plots.decode_tree(decoded), views.decode_rows(decoded),
                report, run)

    def record_run(self, run: dict | None, runs: list[list] | None, scene_seed, file) -> tuple:
        """Why the last decoding stopped, and this session's runs so far (newest first), to compare strategies."""
        if not run:
            return "", runs or [], runs or []
        truth, _ = self._truth(scene_seed, inputs.read_image(file, self.limits)) if file else (None, "")
        decoded = run["decoded"]
        row = views.decode_run_row(len(runs or []) + 1, decoded, run["k"], run["max_new_tokens"], truth)
        runs = [row, *(runs or [])][:MAX_KEPT_RUNS]
        reason = views.stop_reason(decoded, run["max_new_tokens"])
        rule = f" {views.SELECTION_RULE}" if decoded["strategy"].endswith("judged") else ""
        return f"**Stopped because** {reason}.{rule}", runs, runs

    # Base vs adapter -----------------------------------------------------------------------------

    def adapter_choices(self) -> dict:
        """The dropdown of saved adapters, refreshed."""
        names = list(adapter_folders(self.settings.data.adapters_dir))
        return gr.update(choices=names, value=names[-1] if names else None)

    def compare(self, file, scene_seed, question, n, strategy, seed, alpha, kind, prompt, custom_template,
                adapter_name, progress=gr.Progress()) -> tuple:
        """The same input through the base model and through a fine-tuned adapter, side by side."""
        folders = adapter_folders(self.settings.data.adapters_dir)
        if adapter_name not in folders:  # the path comes from our listing, never from the request
            raise gr.Error(f"No adapter named {adapter_name!r} under {self.settings.data.adapters_dir.name}/; "
                           "fine-tune one, then press Refresh.")
        image = inputs.read_image(file, self.limits)
        question = inputs.check_text("question", question, self.limits.max_question_chars)
        gen = inputs.generation_settings(n, strategy, seed, self.limits)
        judge_settings = inputs.judge_settings(alpha, kind, prompt, custom_template, self.limits)
        truth, truth_note = self._truth(scene_seed, image)
        loaded = self._model()
        results = []
        # One copy of the weights: the adapter is loaded into the cached model once and switched
        # on and off around each run (core.engine.loading.adapter_in_use), never loaded as a second model.
        for step, (label, adapter) in enumerate((("base", ""), (adapter_name, str(folders[adapter_name])))):
            progress(0.05 + 0.45 * step, desc=f"Running {label}")
            try:
                with _core_errors(), adapter_in_use(loaded, adapter) as model:
                    results.append(judge(model, image, question, gen, judge_settings).to_json())
            except FileNotFoundError as exc:
                raise gr.Error(f"Could not load the adapter: {exc}") from exc
        base, tuned = results
        lines = [views.compare_summary("base", base, truth), views.compare_summary(adapter_name, tuned, truth)]
        if views.same_answers(base, tuned):
            lines.append(f"**The outputs are identical**: {adapter_name} wrote exactly the base model's answers "
                         "for this image and seed (only the scores can differ). Try another image or a longer run.")
        return ("\n\n".join(lines) + truth_note, views.compare_rows(base, truth), views.compare_rows(tuned, truth))


def _score_seconds(*args, **kwargs) -> int:
    n = args[3] if len(args) > 3 and isinstance(args[3], (int, float)) else 4
    return int(20 + 6 * n)


def _decode_seconds(*args, **kwargs) -> int:
    k = args[3] if len(args) > 3 and isinstance(args[3], (int, float)) else 4
    return int(30 + 10 * k)


@dataclass
class ExploreTab:
    """What other tabs may wire to: the handlers, the base-vs-adapter dropdown and its section, the Accept event."""

    handlers: Explore
    adapter_picker: gr.Dropdown
    compare_section: gr.Accordion
    accepted: object  # the Accept button's event: other tabs refresh on its .success


def _judge_controls(limits) -> tuple:
    """The generation and judge settings, each with a short explanation."""
    with gr.Row():
        # slider_box / number_box: an out-of-range value is refused with a message naming the field
        n = inputs.slider_box(1, limits.max_candidates, value=4, step=1, label="Candidates (N)",
                              info=f"How many answers to write and compare (1 to {limits.max_candidates}).")
        strategy = gr.Dropdown(inputs.GENERATION_STRATEGIES, value="sample", label="Generation",
                               info="sample: varied answers; greedy: the single likeliest.")
        seed = inputs.number_box(value=0, precision=0, label="Seed", minimum=0, maximum=inputs.MAX_SEED,
                                 info="Same seed, same answers (0 or more).")
    alpha = inputs.slider_box(0, limits.max_alpha, value=1.0, step=0.1, label="alpha",
                              info=f"0 to {limits.max_alpha:g}. S = (1+alpha) Score(image) - alpha Score(no image). "
                                   "0: the raw judge; 1: the paper's default; higher: distrust the language prior "
                                   "more.")
    with gr.Row():
        kind = gr.Radio(inputs.SCORE_KINDS, value="logit", label="Score kind",
                        info="How the judge's yes becomes a number: logit of yes, log p(yes), "
                             "or log-odds log p(yes) - log p(no).")
        prompt = gr.Dropdown(inputs.PROMPT_CHOICES, value="faithfulness", label="Judge prompt",
                             info="The question the model asks itself about each sentence.")
    custom_template = gr.Textbox(label="Custom judge template (used when the judge prompt is 'custom')",
                                 placeholder="Claim: {sentence} Is it true? Answer yes or no.",
                                 max_length=limits.max_question_chars, visible=False)
    return n, strategy, seed, alpha, kind, prompt, custom_template


def build_explore_tab(settings: StudioSettings, store_factory: Callable[[], Store]) -> ExploreTab:
    """Lay out the Explore tab inside the current gr.Tab and wire its events.

    Inputs sit on the left and results on the right (stacked on a phone, where the button scrolls to them).
    """
    handlers = Explore(settings, store_factory)
    limits = settings.limits
    examples = example_scenes()
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=320, elem_id="explore-inputs"):
            image = gr.Image(label=f"Image (PNG, JPEG, GIF, WebP; up to {settings.max_file_size})", type="filepath",
                             sources=["upload", "clipboard"], height=230, format="png", elem_id="explore-image")
            # What is scored: the checked file (the API's input; the picture above is only its view).
            image_file = gr.File(file_types=["image"], type="filepath", visible=False, elem_id="explore-image-file")
            domain = gr.Markdown(visible=False, elem_id="explore-domain", elem_classes=["sj-banner"])
            truth = gr.Markdown(elem_id="explore-truth")
            question = gr.Textbox(label="Question", value=DESCRIBE_QUESTION, max_lines=3,
                                  max_length=limits.max_question_chars)
            score_button = gr.Button(SCORE_LABEL, variant="primary", elem_id="explore-score")
            with gr.Accordion("Generation and judge settings", open=False, elem_id="explore-settings"):
                n, strategy, seed, alpha, kind, prompt, custom_template = _judge_controls(limits)
            if examples:
                gallery = gr.Gallery(value=[str(p) for p, _ in examples], label="Examples: raw prefers a hallucination",
                                     columns=len(examples), height=100, allow_preview=False,
                                     elem_id="explore-examples")
            with gr.Row():
                random_button = gr.Button("Random shapes scene", elem_id="explore-random", min_width=120)
                scene_seed = inputs.number_box(label="Scene seed (Enter to draw it)", precision=0, value=None,
                                               minimum=0, maximum=inputs.MAX_SEED, elem_id="explore-scene-seed",
                                               min_width=120)
        with gr.Column(scale=9, min_width=320, elem_id="explore-results"):
            gr.Markdown(views.HOW_TO_READ, elem_id="explore-how-to-read")
            stale = gr.Markdown(visible=False, elem_id="explore-stale", elem_classes=["sj-banner"])
            status = gr.Markdown(elem_id="explore-status")
            candidates = gr.Dataframe(headers=views.CANDIDATE_COLUMNS, label="Candidates (best rank first; "
                                      "click a row to see its tokens)", interactive=False, wrap=True,
                                      column_widths=views.CANDIDATE_WIDTHS, elem_id="explore-candidates",
                                      elem_classes=["sj-table"])
            gr.Markdown(views.SCORE_HELP, elem_classes=["sj-help"])
            with gr.Row():
                token_candidate = gr.Dropdown(label="Candidate", choices=[], allow_custom_value=True, scale=3,
                                              min_width=200)
                token_view = gr.Radio(list(plots.TOKEN_VIEWS), value=plots.DEFAULT_TOKEN_VIEW, label="Token view",
                                      scale=2, min_width=200,
                                      info="visual gain: green = the image supports the token, red = the prior "
                                           "drives it.")
            tokens = gr.HTML(elem_id="explore-tokens")
            heatmap = gr.Plot(label="Candidates x tokens (hover for exact values)")
            scatter = gr.Plot(label="Sentences: raw vs blind (green: correct, red: hallucinated)")
            sentences = gr.Dataframe(headers=views.SENTENCE_COLUMNS, label="Sentences and ground truth",
                                     interactive=False, wrap=True, column_widths=views.SENTENCE_WIDTHS,
                                     elem_id="explore-sentences", elem_classes=["sj-table"])
    with gr.Accordion("Accept a preference pair", open=True, visible=False, elem_id="explore-accept-section") \
            as accept_section:
        with gr.Row():
            chosen = gr.Dropdown(label="Chosen (default: rank 1, highest debiased)", choices=[],
                                 allow_custom_value=True)
            rejected = gr.Dropdown(label="Rejected (default: last rank)", choices=[], allow_custom_value=True)
        chosen_warning = gr.Markdown(visible=False, elem_id="explore-chosen-warning", elem_classes=["sj-banner"])
        chosen_text = gr.Textbox(label="Chosen text (edit to correct it)", lines=2,
                                 max_length=limits.max_answer_chars)
        note = gr.Textbox(label="Note (optional)", max_length=limits.max_note_chars)
        accept_button = gr.Button("Accept pair", variant="primary", elem_id="explore-accept")
        accepted = gr.Markdown(elem_id="explore-accepted")
    with gr.Accordion("Self-judged decoding", open=False, elem_id="explore-decode-section"):
        gr.Markdown("Write the answer sentence by sentence: k proposals per step, each judged with and without the "
                    "image. **Judged** strategies keep a proposal only if its debiased log-odds ≥ "
                    f"{DecodeOptions().reject_below:g}, then pick the highest selection score; greedy and beam are "
                    "plain decoding, judged afterwards for display. "
                    "An open cross marks a proposal the raw judge would keep and debiasing rejected. "
                    "Every run is listed below, so greedy and judged answers can be compared. With the **safety "
                    "defence** ticked, the answer is refused when a sentence's P(harmful) reaches the threshold; the "
                    "line under the answer names the sentence that scored highest.")
        with gr.Row():
            decode_strategy = gr.Radio(inputs.DECODE_STRATEGIES, value="debiased-judged", label="Strategy")
            k = inputs.slider_box(1, limits.max_candidates, value=4, step=1, label="Proposals per step (k)")
            max_new_tokens = inputs.slider_box(8, limits.max_new_tokens, value=64, step=8, label="Max new tokens")
        with gr.Row():
            safety_on = gr.Checkbox(False, label="Safety defence (refuse if a sentence judges itself harmful)",
                                    min_width=200, elem_id="explore-safety-on",
                                    info="Each sentence is judged with the safety prompt, debiased like the rest.")
            safety_probability = inputs.slider_box(0.01, 0.99, value=0.5, step=0.01, label="Refuse at P(harmful) >=",
                                                   min_width=200, info="0.01 to 0.99; lower refuses more.")
        decode_button = gr.Button("Decode", elem_id="explore-decode")
        decoded_text = gr.Markdown(elem_id="explore-decoded")
        safety_report = gr.Markdown(elem_id="explore-safety")
        stop_note = gr.Markdown(elem_id="explore-decode-stop")
        decode_runs = gr.Dataframe(headers=views.DECODE_RUN_COLUMNS, label="Runs this session (newest first)",
                                   interactive=False, wrap=True, elem_id="explore-decode-runs",
                                   elem_classes=["sj-table"])
        tree = gr.Plot(label="Search tree")
        tree_rows = gr.Dataframe(headers=views.DECODE_COLUMNS, label="Search tree (indented)", interactive=False,
                                 wrap=True, elem_classes=["sj-table"])
    with gr.Accordion("Base model vs fine-tuned adapter", open=False, elem_id="explore-compare-section") \
            as compare_section:
        with gr.Row():
            adapter_names = list(adapter_folders(settings.data.adapters_dir))
            adapter = gr.Dropdown(label=f"Adapter (under {settings.data.adapters_dir.name}/)", choices=adapter_names,
                                  value=adapter_names[-1] if adapter_names else None, allow_custom_value=True,
                                  scale=3)
            refresh = gr.Button("Refresh", scale=1)
            compare_button = gr.Button("Compare", variant="primary", scale=1, elem_id="explore-compare")
        comparison = gr.Markdown(elem_id="explore-comparison")
        with gr.Row(equal_height=False):
            base_rows = gr.Dataframe(headers=views.COMPARE_COLUMNS, label="Base model", interactive=False,
                                     wrap=True, min_width=300, elem_id="explore-compare-base",
                                     elem_classes=["sj-table"])
            tuned_rows = gr.Dataframe(headers=views.COMPARE_COLUMNS, label="Fine-tuned adapter", interactive=False,
                                      wrap=True, min_width=300, elem_id="explore-compare-adapter",
                                      elem_classes=["sj-table"])
    with gr.Accordion("Scored result (JSON)", open=False):
        scored = gr.JSON(label="Result")
    last_run = gr.State(None)
    runs = gr.State([])

    private = {"api_visibility": "private"}
    changed = {"fn": handlers.image_changed, "inputs": [scored, image_file], "outputs": [stale, domain], **private}
    scene_outputs = [image_file, scene_seed, image, truth]
    image.upload(handlers.show_upload, [image], [image_file, scene_seed, truth], preprocess=False,
                 **private).then(**changed)
    image.clear(lambda: (None, None, ""), None, [image_file, scene_seed, truth], **private).then(**changed)
    random_button.click(handlers.random_scene, None, scene_outputs, api_name="random_scene").then(**changed)
    scene_seed.submit(handlers.draw_scene, [scene_seed], scene_outputs, api_name="draw_scene").then(**changed)
    if examples:
        gallery.select(handlers.pick_example, None, scene_outputs, **private).then(**changed)
    prompt.change(lambda p: gr.update(visible=p == inputs.CUSTOM_PROMPT), [prompt], [custom_template], **private)
    judge_inputs = [alpha, kind, prompt, custom_template]
    score_fn = on_gpu(handlers.score, _score_seconds)
    idle = {"fn": lambda: gr.Button(SCORE_LABEL, interactive=True), "inputs": None, "outputs": [score_button],
            "queue": False, **private}
    scoring = score_button.click(lambda: gr.Button(BUSY_LABEL, interactive=False), None, [score_button], queue=False,
                                 js=SCROLL_TO_RESULTS, **private).then(
        score_fn, [image_file, scene_seed, question, n, strategy, seed, *judge_inputs],
        [scored, candidates, sentences, heatmap, scatter, status], api_name="score", show_progress_on=[status])
    scoring.success(handlers.show_choices, [scored, image_file],
                    [token_candidate, token_view, tokens, chosen, rejected, chosen_text, chosen_warning, accept_section,
                     stale, domain], **private).then(**idle)
    scoring.failure(**idle)  # a refused input gets its message and the button back
    for trigger in (token_candidate.input, token_view.input):
        trigger(handlers.show_tokens, [scored, token_candidate, token_view], [tokens, heatmap], **private)
    candidates.select(handlers.pick_row, [scored], [token_candidate], **private).then(
        handlers.show_tokens, [scored, token_candidate, token_view], [tokens, heatmap], **private)
    chosen.input(handlers.chosen_text, [scored, chosen], [chosen_text, chosen_warning], **private)
    accept_event = accept_button.click(handlers.accept_pair, [scored, image_file, chosen, rejected, chosen_text, note],
                                       [accepted], api_name="accept_pair")
    decode_fn = on_gpu(handlers.decode, _decode_seconds)
    decode_button.click(decode_fn, [image_file, question, decode_strategy, k, max_new_tokens, seed, *judge_inputs,
                                    safety_on, safety_probability],
                        [decoded_text, tree, tree_rows, safety_report, last_run], api_name="decode",
                        show_progress_on=[decoded_text]).success(
        handlers.record_run, [last_run, runs, scene_seed, image_file], [stop_note, runs, decode_runs], **private)
    refresh.click(handlers.adapter_choices, None, [adapter], **private)
    compare_fn = on_gpu(handlers.compare, lambda *a, **kw: 2 * _score_seconds(*a, **kw))
    compare_button.click(compare_fn, [image_file, scene_seed, question, n, strategy, seed, *judge_inputs, adapter],
                         [comparison, base_rows, tuned_rows], api_name="compare", show_progress_on=[comparison])
    return ExploreTab(handlers=handlers, adapter_picker=adapter, compare_section=compare_section,
                      accepted=accept_event)
