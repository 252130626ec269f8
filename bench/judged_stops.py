"""Why judged decoding ends an answer before it has named every object of the scene.

Judged decoding (core.engine.decoding) loses recall against greedy on some models and not on
others, for different reasons. This script decodes validation scenes as `python -m
core.shapes.evaluate_decoding` does and sorts every answer by how it ended:

- complete: it names every object of the scene;
- otherwise, by what ended it: the chosen sentence ended the answer (or the token budget did); the
  model's own probability of ending reached `stop_probability` while a proposal was still accepted;
  every proposal was to end; or every proposal was rejected (debiased log-odds below
  `reject_below`), split by whether a faithful sentence naming an unnamed object was among them.

For the last kind it prints the log-odds of those rejected faithful proposals, raw and debiased, and
how many the raw judge alone would also have rejected: a judge that says "no" to true sentences, not
debiasing, ends those answers. Greedy answers of the same scenes give the baseline. Each row also says how often the answer kept a proposal other than
the first (the greedy sentence) before it ended: a model that lists objects in a fixed order can
take a sentence out of that order for the end of its list.

Run:  python bench/judged_stops.py --model M --n 100 --eval-first-seed 4000000   (validation scenes)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import ModelSettings  # noqa: E402
from core.engine.decoding import DecodeOptions, DecodeResult  # noqa: E402
from core.engine.judge import JudgeSettings  # noqa: E402
from core.engine.loading import load_model  # noqa: E402
from core.shapes.evaluate_decoding import decode_all, reject_threshold  # noqa: E402
from core.shapes.metrics import parse_objects  # noqa: E402
from core.shapes.world import WorldOptions  # noqa: E402

REASONS = ("complete", "the chosen sentence ended it", "the model's own end (stop_probability)",
           "every proposal was to end", "every proposal rejected, a faithful new one among them",
           "every proposal rejected, none faithful and new")


def unnamed_objects(text: str, present: set) -> set:
    """The scene's objects an answer does not name."""
    return present - set(parse_objects(text))


def _faithful_new(text: str, present: set, unnamed: set) -> bool:
    claims = set(parse_objects(text))
    return bool(claims) and claims <= present and bool(claims & unnamed)


def end_reason(result: DecodeResult, present: set) -> tuple[str, list]:
    """How one judged answer ended (a REASONS entry) and, where its last proposals were all rejected,
    the faithful new ones among them."""
    unnamed = unnamed_objects(result.text, present)
    if not unnamed:
        return "complete", []
    last_step = max(node.step for node in result.nodes)
    last = [node for node in result.nodes if node.step == last_step]
    if any(node.chosen for node in last):
        return "the chosen sentence ended it", []
    proposed = [node for node in last if node.text]
    if any(node.accepted for node in proposed):
        return "the model's own end (stop_probability)", []
    if not proposed:
        return "every proposal was to end", []
    rejected_faithful = [node for node in proposed if _faithful_new(node.text, present, unnamed)]
    if rejected_faithful:
        return "every proposal rejected, a faithful new one among them", rejected_faithful
    return "every proposal rejected, none faithful and new", []


def kept_a_later_proposal(result: DecodeResult) -> bool:
    """True if the answer kept, at some step, a proposal other than the step's first (the greedy one)."""
    first_of_step: dict[int, int] = {}
    for index, node in enumerate(result.nodes):
        first_of_step.setdefault(node.step, index)
    return any(node.chosen and index != first_of_step[node.step] for index, node in enumerate(result.nodes))


def summarise(results: list[DecodeResult], scenes: list, reject_below: float | None,
              greedy: list[DecodeResult] | None = None) -> dict:
    """Counts per end reason, the log-odds of the faithful proposals that every-rejected steps dropped,
    and (given greedy answers of the same scenes) how many of those are complete, as the baseline."""
    rows = {reason: {"answers": 0, "unnamed objects": 0, "kept a later proposal": 0} for reason in REASONS}
    dropped = []
    for result, scene in zip(results, scenes):
        present = scene.names()
        reason, faithful = end_reason(result, present)
        row = rows[reason]
        row["answers"] += 1
        row["unnamed objects"] += len(unnamed_objects(result.text, present))
        row["kept a later proposal"] += kept_a_later_proposal(result)
        if faithful:
            dropped.append(max(faithful, key=lambda node: node.log_odds))
    raw = [node.raw_log_odds for node in dropped]
    debiased = [node.log_odds for node in dropped]
    unnamed_by_greedy = [len(unnamed_objects(r.text, s.names())) for r, s in zip(greedy or [], scenes)]
    return {"rows": rows, "greedy": {"answers": len(unnamed_by_greedy),
                                     "complete": sum(n == 0 for n in unnamed_by_greedy),
                                     "unnamed objects": sum(unnamed_by_greedy)}, "rejected_faithful": {
        "answers": len(dropped),
        "median_raw_log_odds": statistics.median(raw) if raw else None,
        "median_debiased_log_odds": statistics.median(debiased) if debiased else None,
        "raw_judge_also_rejects": sum(reject_below is not None and r < reject_below for r in raw)}}


def format_table(summary: dict) -> str:
    """The counts as a markdown table, and one line on the dropped faithful proposals."""
    rows = summary["rows"]
    total = sum(r["answers"] for r in rows.values())
    lines = ["| how the answer ended | answers | share | objects left unnamed | kept a proposal other than the first |",
             "|---|---|---|---|---|"]
    lines += [f"| {reason} | {r['answers']} | {r['answers'] / total:.1%} | {r['unnamed objects']} | "
              f"{r['kept a later proposal']} |" for reason, r in rows.items()]
    greedy = summary["greedy"]
    if greedy["answers"]:
        lines.append(f"\ngreedy on the same scenes: {greedy['complete']} of {greedy['answers']} answers complete, "
                     f"{greedy['unnamed objects']} objects left unnamed")
    dropped = summary["rejected_faithful"]
    if dropped["answers"]:
        lines.append(f"\nrejected faithful new proposals (the best-judged of each such answer): "
                     f"median log-odds raw {dropped['median_raw_log_odds']:+.2f}, debiased "
                     f"{dropped['median_debiased_log_odds']:+.2f}; the raw judge alone would also reject "
                     f"{dropped['raw_judge_also_rejects']} of {dropped['answers']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """CLI: decode the scenes with one judged strategy and sort the answers by how they ended."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or id (default: the embedded model)")
    parser.add_argument("--n", type=int, default=100, help="scenes")
    parser.add_argument("--eval-first-seed", type=int, default=4_000_000, help="first scene (4000000: validation)")
    parser.add_argument("--strategy", default="debiased-judged", choices=("raw-judged", "debiased-judged"))
    parser.add_argument("--alpha", type=float, default=1.0, help="alpha of debiased-judged decoding")
    parser.add_argument("--k", type=int, default=4, help="proposals per step")
    parser.add_argument("--likelihood-weight", type=float, default=DecodeOptions.likelihood_weight)
    parser.add_argument("--reject-below", type=reject_threshold, default=DecodeOptions.reject_below,
                        help="debiased log-odds under which a proposal is rejected ('none': never)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    WorldOptions.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    loaded = load_model(ModelSettings(adapter="", **({"model": args.model} if args.model else {})))
    world = WorldOptions.from_args(args)
    scenes = [world.scene(seed) for seed in range(args.eval_first_seed, args.eval_first_seed + args.n)]
    options = SimpleNamespace(likelihood_weight=args.likelihood_weight, reject_below=args.reject_below,
                              batch=100, k=args.k, max_new_tokens=64, seed=0)
    results = decode_all(loaded, scenes, args.strategy, JudgeSettings(alpha=args.alpha), options)
    greedy = decode_all(loaded, scenes, "greedy", JudgeSettings(alpha=args.alpha), options)
    summary = summarise(results, scenes, args.reject_below, greedy)
    print(json.dumps(summary) if args.json else format_table(summary))


if __name__ == "__main__":
    main()
