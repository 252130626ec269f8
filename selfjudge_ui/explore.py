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
from core.data.store import DuplicatePairError, Pair, Store, comparable_text, strip_control_characters
from core.engine.decoding import DecodeOptions, decode
from core.engine.images import image_sha256
from core.engine.judge import judge
from core.engine.loading import LoadedModel, adapter_in_use, get_model
from core.engine.prompts import DESCRIBE_QUESTION
from core.engine.safety import SafetySettings, format_verdict
from core.shapes.world import Scene, make_scene, render
from selfjudge_ui import inputs, plots, views
from selfjudge_ui.gpu import on_gpu
from selfjudge_ui.settings import StudioSettings
from selfjudge_ui.signing import ResultSigner

EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"
NO_RESULT = "Score an image first (Generate and score)."


def example_scenes(folder: Path = EXAMPLES_DIR) -> list[tuple[Path, int]]:
    """The shipped example images and their scene seeds, from the folder's scenes.jsonl (core.shapes.sample)."""
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

    def show_upload(self, file: str | None) -> tuple:
        """A freshly uploaded file: check it now, show it, and forget any scene ground truth."""
        if not file:
            return None, None, ""
        return inputs.read_image(file, self.limits), None, "No ground truth for uploaded images."

    def draw_scene(self, seed: float | None) -> tuple:
        """The shapes scene of a seed: its PNG (as the input file), seed, preview and ground truth."""
        number, image = inputs.scene_image(seed)
        folder = Path(tempfile.gettempdir()) / "selfjudge-scenes"
        folder.mkdir(exist_ok=True)
        path = folder / f"scene_{number}.png"  # the name comes from a checked int, never from the user
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".png", delete=False) as handle:
            image.save(handle, format="PNG")
        os.replace(handle.name, path)
        return str(path), number, image, views.describe_truth(make_scene(number))

    def random_scene(self) -> tuple:
        """A new scene from the test split (seeds below 1,000,000, never used in training)."""
        return self.draw_scene(random.SystemRandom().randrange(inputs.TEST_SEEDS))

    def pick_example(self, evt: gr.SelectData) -> tuple:
        """One of the shipped examples, with its ground truth."""
        examples = example_scenes()
        if not isinstance(evt.index, int) or not 0 <= evt.index < len(examples):
            raise gr.Error("Pick one of the examples shown.")
        path, seed = examples[evt.index]
        return str(path), seed, inputs.read_image(str(path), self.limits), views.describe_truth(make_scene(seed))

    def _truth(self, seed: float | None, image) -> tuple[list[list[str]] | None, str]:
        """Ground truth only when the image really is that seed's scene."""
        if seed is None:
            return None, ""
        number, scene_image = inputs.scene_image(seed)
        if image_sha256(scene_image) != image_sha256(image):
            return None, f" Scene seed {number} does not match this image, so no ground truth is used."
        return views.scene_truth(make_scene(number)), ""

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
        status = (f"Scored {len(result['candidates'])} candidates with {result['model_id']}"
                  f"{' + ' + result['adapter'] if result['adapter'] else ''}.{truth_note}")
        return (payload, views.candidate_rows(result, truth), views.sentence_rows(result, truth),
                plots.token_heatmap(result, "debiased"),
                plots.sentence_scatter(result, views.verdicts(result, truth)), status)

    def show_choices(self, payload: dict | None) -> tuple:
        """After scoring: candidate pickers filled, chosen = highest debiased, rejected = lowest."""
        if not payload or "result" not in payload:
            return (gr.update(),) * 7
        result = payload["result"]
        choices = views.candidate_choices(result)
        best, worst = views.best_and_worst(result)
        highlights, scale = views.token_highlights(result["candidates"][best - 1], "debiased")
        return (gr.update(choices=choices, value=best), "debiased", highlights, scale,
                gr.update(choices=choices, value=best), gr.update(choices=choices, value=worst),
                result["candidates"][best - 1]["text"])

    def _candidate_number(self, name: str, number, result: dict) -> int:
        return inputs.check_integer(name, number, 1, len(result["candidates"]))

    def show_tokens(self, payload: dict | None, number, view: str) -> tuple:
        """Per-token highlights of one candidate and the heatmap, in the chosen view."""
        if not payload or "result" not in payload:
            return [], NO_RESULT, None
        result = payload["result"]
        view = inputs.check_choice("token view", view, list(plots.TOKEN_VIEWS))
        candidate = result["candidates"][self._candidate_number("candidate", number, result) - 1]
        highlights, scale = views.token_highlights(candidate, view)
        return highlights, scale, plots.token_heatmap(result, view)

    def chosen_text(self, payload: dict | None, number) -> str:
        """The text of the candidate picked as chosen, ready to edit."""
        if not payload or "result" not in payload:
            return ""
        result = payload["result"]
        return result["candidates"][self._candidate_number("chosen candidate", number, result) - 1]["text"]

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
        decoded = views.finite(dataclasses.asdict(result))
        report = format_verdict(result.safety) if result.safety else ""
        return (f"**{strategy}:** {decoded['text']}", plots.decode_tree(decoded), views.decode_rows(decoded),
                report)

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
            raise gr.Error(f"No adapter named {adapter_name!r} under {self.settings.data.adapters_dir}; "
                           "fine-tune one, then press Refresh.")
        image = inputs.read_image(file, self.limits)
        question = inputs.check_text("question", question, self.limits.max_question_chars)
        gen = inputs.generation_settings(n, strategy, seed, self.limits)
        judge_settings = inputs.judge_settings(alpha, kind, prompt, custom_template, self.limits)
        truth, truth_note = self._truth(scene_seed, image)
        loaded = self._model()
        rows, lines = [], []
        # One copy of the weights: the adapter is loaded into the cached model once and switched
        # on and off around each run (core.engine.loading.adapter_in_use), never loaded as a second model.
        for step, (label, adapter) in enumerate((("base", ""), (adapter_name, str(folders[adapter_name])))):
            progress(0.05 + 0.45 * step, desc=f"Running {label}")
            try:
                with _core_errors(), adapter_in_use(loaded, adapter) as model:
                    result = judge(model, image, question, gen, judge_settings).to_json()
            except FileNotFoundError as exc:
                raise gr.Error(f"Could not load the adapter: {exc}") from exc
            rows += views.compare_rows(label, result, truth)
            lines.append(views.compare_summary(label, result, truth))
        return "\n\n".join(lines) + truth_note, rows


def _score_seconds(*args, **kwargs) -> int:
    n = args[3] if len(args) > 3 and isinstance(args[3], (int, float)) else 4
    return int(20 + 6 * n)


def _decode_seconds(*args, **kwargs) -> int:
    k = args[3] if len(args) > 3 and isinstance(args[3], (int, float)) else 4
    return int(30 + 10 * k)


@dataclass
class ExploreTab:
    """What other tabs may wire to: the handlers and the base-vs-adapter dropdown."""

    handlers: Explore
    adapter_picker: gr.Dropdown


def build_explore_tab(settings: StudioSettings, store_factory: Callable[[], Store]) -> ExploreTab:
    """Lay out the Explore tab inside the current gr.Tab and wire its events."""
    handlers = Explore(settings, store_factory)
    limits = settings.limits
    examples = example_scenes()
    with gr.Row():
        with gr.Column(scale=1):
            image_file = gr.File(label=f"Image (PNG, JPEG, GIF, WebP; up to {settings.max_file_size})",
                                 file_types=["image"], type="filepath", elem_id="explore-image-file")
            preview = gr.Image(label="Input image", type="pil", interactive=False, height=220,
                               elem_id="explore-preview")
            if examples:
                gallery = gr.Gallery(value=[str(p) for p, _ in examples], label="Examples (shapes scenes)",
                                     columns=len(examples), height=110, allow_preview=False,
                                     elem_id="explore-examples")
            with gr.Row():
                random_button = gr.Button("Random shapes scene", elem_id="explore-random")
                scene_seed = inputs.number_box(label="Scene seed (Enter to draw it)", precision=0, value=None,
                                               minimum=0, maximum=inputs.MAX_SEED, elem_id="explore-scene-seed")
            truth = gr.Markdown()
        with gr.Column(scale=1):
            question = gr.Textbox(label="Question", value=DESCRIBE_QUESTION, max_lines=3,
                                  max_length=limits.max_question_chars)
            with gr.Row():
                n = inputs.slider_box(1, limits.max_candidates, value=4, step=1, label="Candidates (N)")
                strategy = gr.Dropdown(inputs.GENERATION_STRATEGIES, value="sample", label="Generation")
                seed = inputs.number_box(value=0, precision=0, label="Seed", minimum=0, maximum=inputs.MAX_SEED)
            alpha = inputs.slider_box(0, limits.max_alpha, value=1.0, step=0.1,
                                      label="alpha: S = (1+alpha) Score(image) - alpha Score(no image)")
            with gr.Row():
                kind = gr.Radio(inputs.SCORE_KINDS, value="logit", label="Score kind")
                prompt = gr.Dropdown(inputs.PROMPT_CHOICES, value="faithfulness", label="Judge prompt")
            custom_template = gr.Textbox(label="Custom judge template (used when the judge prompt is 'custom')",
                                         placeholder="Claim: {sentence} Is it true? Answer yes or no.",
                                         max_length=limits.max_question_chars, visible=False)
            score_button = gr.Button("Generate and score", variant="primary", elem_id="explore-score")
    status = gr.Markdown(elem_id="explore-status")
    candidates = gr.Dataframe(headers=views.CANDIDATE_COLUMNS, label="Candidates", interactive=False, wrap=True,
                              elem_id="explore-candidates",
                              column_widths=["4%", "5%", "43%", "8%", "8%", "8%", "8%", "8%", "8%"])
    with gr.Row():
        token_candidate = gr.Dropdown(label="Candidate", choices=[], allow_custom_value=True, scale=3)
        token_view = gr.Radio(list(plots.TOKEN_VIEWS), value="debiased", label="Token view", scale=2)
    token_scale = gr.Markdown()
    tokens = gr.HighlightedText(label="Per-token score of the selected candidate", combine_adjacent=False,
                                show_legend=False)
    heatmap = gr.Plot(label="Candidates x tokens (hover for exact values)")
    scatter = gr.Plot(label="Sentences: raw vs blind")
    sentences = gr.Dataframe(headers=views.SENTENCE_COLUMNS, label="Sentences and ground truth", interactive=False,
                             wrap=True, column_widths=["5%", "53%", "10%", "10%", "10%", "12%"])
    with gr.Accordion("Accept a preference pair", open=True):
        with gr.Row():
            chosen = gr.Dropdown(label="Chosen (default: rank 1, highest debiased)", choices=[], allow_custom_value=True)
            rejected = gr.Dropdown(label="Rejected (default: last rank)", choices=[], allow_custom_value=True)
        chosen_text = gr.Textbox(label="Chosen text (edit to correct it)", lines=2,
                                 max_length=limits.max_answer_chars)
        note = gr.Textbox(label="Note (optional)", max_length=limits.max_note_chars)
        accept_button = gr.Button("Accept pair", variant="primary", elem_id="explore-accept")
        accepted = gr.Markdown(elem_id="explore-accepted")
    with gr.Accordion("Self-judged decoding", open=False, elem_id="explore-decode-section"):
        with gr.Row():
            decode_strategy = gr.Radio(inputs.DECODE_STRATEGIES, value="debiased-judged", label="Strategy")
            k = inputs.slider_box(1, limits.max_candidates, value=4, step=1, label="Proposals per step (k)")
            max_new_tokens = inputs.slider_box(8, limits.max_new_tokens, value=64, step=8, label="Max new tokens")
        with gr.Row():
            safety_on = gr.Checkbox(False, label="Safety defence (refuse if a sentence judges itself harmful)")
            safety_probability = inputs.slider_box(0.01, 0.99, value=0.5, step=0.01, label="Refuse at P(harmful) >=")
        decode_button = gr.Button("Decode", elem_id="explore-decode")
        decoded_text = gr.Markdown(elem_id="explore-decoded")
        safety_report = gr.Markdown(elem_id="explore-safety")
        tree = gr.Plot(label="Search tree")
        tree_rows = gr.Dataframe(headers=views.DECODE_COLUMNS, label="Search tree (indented)", interactive=False,
                                 wrap=True, column_widths=["6%", "52%", "9%", "9%", "9%", "8%", "7%"])
    with gr.Accordion("Base model vs fine-tuned adapter", open=False):
        with gr.Row():
            adapter_names = list(adapter_folders(settings.data.adapters_dir))
            adapter = gr.Dropdown(label=f"Adapter (under {settings.data.adapters_dir.name}/)", choices=adapter_names,
                                  value=adapter_names[-1] if adapter_names else None, allow_custom_value=True,
                                  scale=3)
            refresh = gr.Button("Refresh", scale=1)
            compare_button = gr.Button("Compare", scale=1, elem_id="explore-compare")
        comparison = gr.Markdown(elem_id="explore-comparison")
        comparison_rows = gr.Dataframe(headers=views.COMPARE_COLUMNS, interactive=False, wrap=True)
    with gr.Accordion("Scored result (JSON)", open=False):
        scored = gr.JSON(label="Result")

    scene_outputs = [image_file, scene_seed, preview, truth]
    image_file.upload(handlers.show_upload, [image_file], [preview, scene_seed, truth], api_visibility="private")
    image_file.clear(lambda: (None, None, ""), None, [preview, scene_seed, truth], api_visibility="private")
    random_button.click(handlers.random_scene, None, scene_outputs, api_name="random_scene")
    scene_seed.submit(handlers.draw_scene, [scene_seed], scene_outputs, api_name="draw_scene")
    if examples:
        gallery.select(handlers.pick_example, None, scene_outputs, api_visibility="private")
    prompt.change(lambda p: gr.update(visible=p == inputs.CUSTOM_PROMPT), [prompt], [custom_template],
                  api_visibility="private")
    judge_inputs = [alpha, kind, prompt, custom_template]
    score_fn = on_gpu(handlers.score, _score_seconds)
    score_button.click(score_fn, [image_file, scene_seed, question, n, strategy, seed, *judge_inputs],
                       [scored, candidates, sentences, heatmap, scatter, status], api_name="score").then(
        handlers.show_choices, [scored], [token_candidate, token_view, tokens, token_scale, chosen, rejected,
                                          chosen_text], api_visibility="private")
    for trigger in (token_candidate.change, token_view.change):
        trigger(handlers.show_tokens, [scored, token_candidate, token_view], [tokens, token_scale, heatmap],
                api_visibility="private")
    chosen.change(handlers.chosen_text, [scored, chosen], [chosen_text], api_visibility="private")
    accept_button.click(handlers.accept_pair, [scored, image_file, chosen, rejected, chosen_text, note], [accepted],
                        api_name="accept_pair")
    decode_fn = on_gpu(handlers.decode, _decode_seconds)
    decode_button.click(decode_fn, [image_file, question, decode_strategy, k, max_new_tokens, seed, *judge_inputs,
                                    safety_on, safety_probability],
                        [decoded_text, tree, tree_rows, safety_report], api_name="decode")
    refresh.click(handlers.adapter_choices, None, [adapter], api_visibility="private")
    compare_fn = on_gpu(handlers.compare, lambda *a, **kw: 2 * _score_seconds(*a, **kw))
    compare_button.click(compare_fn, [image_file, scene_seed, question, n, strategy, seed, *judge_inputs, adapter],
                         [comparison, comparison_rows], api_name="compare")
    return ExploreTab(handlers=handlers, adapter_picker=adapter)
