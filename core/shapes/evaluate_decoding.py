"""Evaluate judged decoding and the judge's hallucination detection on the held-out shapes world.

On scenes 0..n-1 (the test split) it prints CHAIR_S, CHAIR_I, recall and mean length of
greedy, beam, raw-judged and debiased-judged decoding (both judge contexts, and an alpha
sweep), and the AUROC of the raw, blind and debiased sentence scores at telling faithful
sentences from hallucinated ones (core.shapes.metrics.sentence_is_hallucinated), per context
and score kind. Scenes are decoded and judged in batches.

Run:  python -m core.shapes.evaluate_decoding --n 500
      python -m core.shapes.evaluate_decoding --n 200 --eval-first-seed 4000000 --json   (validation scenes)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

from core.config import ModelSettings, settings_from_args
from core.engine.auroc import auroc
from core.engine.chat import prepare_image
from core.engine.decoding import DecodeOptions, DecodeResult, decode_many
from core.engine.judge import SCORE_KINDS, JudgeItem, JudgeSettings, json_safe, judge_sentences
from core.engine.loading import LoadedModel, load_model
from core.engine.prompts import DESCRIBE_QUESTION
from core.engine.sentences import split_sentences
from core.shapes.evaluate import repeated_object_rate
from core.shapes.metrics import chair, sentence_is_hallucinated
from core.shapes.world import WorldOptions, render


@dataclass
class DecodingRow:
    """CHAIR and length of one decoding configuration."""

    strategy: str
    context: str
    alpha: float
    chair_s: float
    chair_i: float
    recall: float
    mean_sentences: float
    mean_words: float
    seconds: float
    repeats: float = 0.0  # share of answers naming one object in two sentences (not a hallucination; a reader minds)


@dataclass
class AurocRow:
    """AUROC of raw, blind and debiased scores at ranking faithful sentences above hallucinated ones."""

    context: str
    kind: str
    raw: float
    blind: float
    debiased: dict[str, float]  # alpha -> AUROC
    n_faithful: int
    n_hallucinated: int


def decode_all(loaded: LoadedModel, scenes: list, strategy: str, settings: JudgeSettings, args) -> list[DecodeResult]:
    """Decode every scene, args.batch scenes at a time."""
    results = []
    options = DecodeOptions(likelihood_weight=args.likelihood_weight, reject_below=args.reject_below)
    for start in range(0, len(scenes), args.batch):
        images = [render(s) for s in scenes[start:start + args.batch]]
        results += decode_many(loaded, images, DESCRIBE_QUESTION, strategy, settings, k=args.k,
                               max_new_tokens=args.max_new_tokens, seed=args.seed + start, options=options)
    return results


def decoding_row(results: list[DecodeResult], scenes: list, strategy: str, settings: JudgeSettings,
                 seconds: float) -> DecodingRow:
    """CHAIR metrics of one configuration's answers."""
    texts = [r.text for r in results]
    metrics = chair(texts, [s.names() for s in scenes])
    return DecodingRow(strategy=strategy, context=settings.context, alpha=settings.alpha, chair_s=metrics.chair_s,
                       chair_i=metrics.chair_i, recall=metrics.recall, mean_sentences=metrics.mean_sentences,
                       mean_words=sum(len(t.split()) for t in texts) / len(texts), seconds=seconds,
                       repeats=repeated_object_rate(texts))


def sentence_pool(outputs: dict[str, list[DecodeResult]]) -> list[tuple[int, str, str]]:
    """Distinct (scene index, preceding sentences, sentence) from every answer and every proposal."""
    pool = {}
    for results in outputs.values():
        for scene, result in enumerate(results):
            sentences = split_sentences(result.text)
            for j, sentence in enumerate(sentences):
                pool[(scene, " ".join(sentences[:j]), sentence)] = None
            chosen_before: dict[int, list[str]] = {}
            for index, node in enumerate(result.nodes):
                if node.text and not node.chosen:
                    context = chosen_before.get(node.parent, [])
                    pool[(scene, " ".join(context), node.text)] = None
                if node.chosen:
                    chosen_before[index] = chosen_before.get(node.parent, []) + [node.text]
    return list(pool)


def _auroc(scores: list[float], labels: list[bool]) -> float:
    """AUROC, or NaN when one class is missing (a tiny run may have no hallucinated sentence)."""
    return auroc(scores, labels) if 0 < sum(labels) < len(labels) else float("nan")


def auroc_rows(loaded: LoadedModel, scenes: list, pool: list[tuple[int, str, str]], alphas: list[float],
               batch: int, template: str = JudgeSettings().template) -> list[AurocRow]:
    """Judge every pooled sentence in both contexts; AUROC per context and kind."""
    labelled = [(i, c, s, sentence_is_hallucinated(s, scenes[i].names())) for i, c, s in pool]
    # Sorted by scene: verdicts come back chunk by chunk of scenes, and must line up with the labels.
    labelled = sorted((item for item in labelled if item[3] is not None), key=lambda item: item[0])
    faithful = [not item[3] for item in labelled]
    rows = []
    for context in ("sentence", "response"):
        verdicts = []
        for start in range(0, len(scenes), batch):
            chunk = [item for item in labelled if start <= item[0] < start + batch]
            images = [prepare_image(loaded.processor, render(s)) for s in scenes[start:start + batch]]
            items = [JudgeItem(image=i - start, sentence=s, context=c) for i, c, s, _ in chunk]
            verdicts += (judge_sentences(loaded, images, items, JudgeSettings(context=context, template=template))
                         if items else [])
        for kind in SCORE_KINDS:
            raw = [v.raw[kind] for v in verdicts]
            blind = [v.blind[kind] for v in verdicts]
            rows.append(AurocRow(
                context=context, kind=kind, raw=_auroc(raw, faithful), blind=_auroc(blind, faithful),
                debiased={str(a): _auroc([v.debiased(kind, a) for v in verdicts], faithful) for a in alphas},
                n_faithful=sum(faithful), n_hallucinated=len(faithful) - sum(faithful)))
    return rows


def print_tables(decoding: list[DecodingRow], aurocs: list[AurocRow], alphas: list[float]) -> None:
    """Markdown tables of both results."""
    print("| strategy | context | alpha | CHAIR_S | CHAIR_I | recall | repeats | sentences | words | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in decoding:
        judged = r.strategy.endswith("judged")
        print(f"| {r.strategy} | {r.context if judged else '-'} | {r.alpha if judged else '-'} | {r.chair_s:.3f} | "
              f"{r.chair_i:.3f} | {r.recall:.3f} | {r.repeats:.3f} | {r.mean_sentences:.2f} | {r.mean_words:.1f} | "
              f"{r.seconds:.0f} |")
    print()
    print("| context | kind | raw | blind | " + " | ".join(f"debiased a={a}" for a in alphas) + " | faithful | hallucinated |")
    print("|---|---|---|---|" + "---|" * len(alphas) + "---|---|")
    for r in aurocs:
        print(f"| {r.context} | {r.kind} | {r.raw:.3f} | {r.blind:.3f} | "
              + " | ".join(f"{r.debiased[str(a)]:.3f}" for a in alphas) + f" | {r.n_faithful} | {r.n_hallucinated} |")


def json_report(decoding: list[DecodingRow], aurocs: list[AurocRow]) -> dict:
    """The --json object: {"rows": [{strategy, context, alpha, chair_s, chair_i, recall}], "auroc": [...]}."""
    keys = ("strategy", "context", "alpha", "chair_s", "chair_i", "recall")
    return json_safe({"rows": [{k: asdict(r)[k] for k in keys} for r in decoding],
                      "auroc": [asdict(r) for r in aurocs]})


def reject_threshold(text: str) -> float | None:
    """A --reject-below value: a number, or 'none' (never reject)."""
    return None if text.lower() == "none" else float(text)


def main(argv: list[str] | None = None) -> None:
    """CLI: run every decoding configuration and the AUROC on the test split; print tables."""
    parser = argparse.ArgumentParser(prog="python -m core.shapes.evaluate_decoding", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="scenes (seeds eval-first-seed .. eval-first-seed+n-1)")
    parser.add_argument("--eval-first-seed", type=int, default=0,
                        help="first scene (0: the test split; 4000000: validation scenes for choosing settings)")
    parser.add_argument("--k", type=int, default=4, help="proposals per step (judged) and beams (beam)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="token budget per answer")
    parser.add_argument("--batch", type=int, default=100, help="scenes decoded and judged together")
    parser.add_argument("--alphas", default="0,0.5,1,2,4", help="alpha sweep (comma separated)")
    parser.add_argument("--alpha", type=float, default=JudgeSettings.alpha, help="alpha of debiased-judged decoding")
    parser.add_argument("--strategies", default="greedy,beam,raw-judged,debiased-judged",
                        help="decoding strategies to run (comma separated)")
    parser.add_argument("--contexts", default="sentence,response", help="judge contexts of judged decoding")
    parser.add_argument("--sweep-decoding", action="store_true", help="also decode with every alpha of the sweep")
    parser.add_argument("--kind", default="logit", help="score kind used for decoding: logit | logprob | log-odds")
    parser.add_argument("--likelihood-weight", type=float, default=DecodeOptions.likelihood_weight,
                        help="weight of the mean token log-prob in the decoding score")
    parser.add_argument("--reject-below", type=reject_threshold, default=DecodeOptions.reject_below,
                        help="debiased log-odds under which a proposal is rejected ('none': never)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--model", default=None, help="model id or folder (default SELFJUDGE_MODEL or the embedded model)")
    parser.add_argument("--4bit", dest="load_in_4bit", action="store_true", default=None, help="load in 4-bit NF4")
    parser.add_argument("--template", default=JudgeSettings().template,
                        help="judge template (a core.engine.prompts.JUDGE_PROMPTS key or a text containing {sentence})")
    parser.add_argument("--out", default="", help="also write the results as JSON to this file")
    WorldOptions.add_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object {"rows": [...], "auroc": [...]} instead of tables')
    args = parser.parse_args(argv)
    alphas = [float(a) for a in args.alphas.split(",")]
    loaded = load_model(settings_from_args(ModelSettings, args))
    world = WorldOptions.from_args(args)
    scenes = [world.scene(seed) for seed in range(args.eval_first_seed, args.eval_first_seed + args.n)]
    judged = {"kind": args.kind, "template": args.template}
    configs = [("greedy", JudgeSettings(**judged)), ("beam", JudgeSettings(**judged))]
    for context in ("sentence", "response"):
        configs += [("raw-judged", JudgeSettings(alpha=0.0, context=context, **judged)),
                    ("debiased-judged", JudgeSettings(alpha=args.alpha, context=context, **judged))]
    if args.sweep_decoding:
        configs += [("debiased-judged", JudgeSettings(alpha=a, **judged)) for a in alphas
                    if a not in (0.0, args.alpha)]
    wanted, contexts = set(args.strategies.split(",")), set(args.contexts.split(","))
    configs = [(strategy, settings) for strategy, settings in configs if strategy in wanted
               and (not strategy.endswith("judged") or settings.context in contexts)]
    outputs, decoding = {}, []
    for strategy, settings in configs:
        start = time.time()
        results = decode_all(loaded, scenes, strategy, settings, args)
        decoding.append(decoding_row(results, scenes, strategy, settings, time.time() - start))
        outputs[f"{strategy}/{settings.context}/{settings.alpha}"] = results
        if not args.json:
            print(f"decoded {strategy} context={settings.context} alpha={settings.alpha}: "
                  f"{time.time() - start:.0f}s", flush=True)
    aurocs = auroc_rows(loaded, scenes, sentence_pool(outputs), alphas, args.batch, args.template)
    if args.json:
        print(json.dumps(json_report(decoding, aurocs)))
    else:
        print()
        print_tables(decoding, aurocs, alphas)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "decoding": [asdict(r) for r in decoding],
                       "auroc": [asdict(r) for r in aurocs]}, handle, indent=2)


if __name__ == "__main__":
    main()
