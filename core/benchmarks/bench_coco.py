"""The paper's COCO benchmarks on any model the studio loads: CHAIR (its Table 1) and POPE.

CHAIR: n val2014 images drawn by the seed, each described ("Please describe this image in
detail.", at most --max-new-tokens new tokens) by each strategy of core.engine.decoding, scored by
core.benchmarks.coco.chair against the instance annotations plus the reference captions. Prints
CHAIR_S, CHAIR_I and recall (percent) per strategy, the columns of the paper's Table 1.

POPE (--benchmark pope): n images with at least 3 annotated objects, 6 questions each per
split (random, popular, adversarial), answered by the model's reply, or by the judge's raw
or debiased log-odds (core.benchmarks.pope). Prints accuracy, precision, recall, F1 and yes-ratio.

Both write everything (settings, numbers, every caption or answer, seconds per image) to --out.

Run:  python -m core.benchmarks.bench_coco --images val2014/ --instances annotations/instances_val2014.json \\
          --captions annotations/captions_val2014.json --model llava-hf/llava-1.5-7b-hf --out chair.json
      python -m core.benchmarks.bench_coco --benchmark pope --pope-answer debiased ... --out pope.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from core.benchmarks.coco import ChairResult, CocoAnnotations, chair
from core.benchmarks.pope import (ANSWER_MODES, POSITIVES_PER_IMAGE, SPLITS, answer_questions, build_questions,
                                  pope_metrics)
from core.config import ModelSettings, settings_from_args
from core.engine.decoding import STRATEGIES, DecodeOptions, decode_many
from core.engine.images import open_image
from core.engine.judge import CONTEXTS, SCORE_KINDS, JudgeSettings, json_safe
from core.engine.loading import LoadedModel
from core.engine.prompts import JUDGE_PROMPTS

CHAIR_QUESTION = "Please describe this image in detail."  # the prompt of OPERA's and the paper's CHAIR runs


@dataclass
class BenchSettings:
    """What to run: images drawn, decoding and judging knobs."""

    n: int = 500
    seed: int = 0
    max_new_tokens: int = 64
    strategies: tuple[str, ...] = STRATEGIES
    k: int = 4  # proposals per step (judged) and beams (beam)
    alpha: float = 1.0
    kind: str = "logit"
    template: str = "faithfulness"  # judge template of the judged strategies (core.engine.prompts.JUDGE_PROMPTS)
    context: str = "sentence"  # sentence | response
    question: str = CHAIR_QUESTION
    batch: int = 8  # images decoded together

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n (images) must be >= 1, not {self.n}")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise ValueError(f"strategies must be some of {', '.join(STRATEGIES)}, not {', '.join(unknown) or 'none'}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, not {self.batch}")
        self.judge_settings()  # same checks and messages

    def judge_settings(self) -> JudgeSettings:
        """The judge settings of the judged strategies."""
        return JudgeSettings(alpha=self.alpha, kind=self.kind, template=self.template, context=self.context)


def load_images(folder: Path, annotations: CocoAnnotations, image_ids: list[int]) -> dict[int, Image.Image]:
    """The images by id, from the folder that holds COCO's file names."""
    images = {}
    for image_id in image_ids:
        path = Path(folder) / annotations.images[image_id].file_name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: --images must be the folder of "
                                    f"{annotations.images[image_id].file_name} (e.g. COCO's val2014/)")
        images[image_id] = open_image(path)
    return images


def describe(loaded: LoadedModel, images: dict[int, Image.Image], strategy: str,
             settings: BenchSettings) -> tuple[list[tuple[int, str]], float]:
    """Each image's caption by this strategy, and the seconds per image it took."""
    judge = settings.judge_settings()
    ids, captions = list(images), []
    start = time.perf_counter()
    for first in range(0, len(ids), settings.batch):
        chunk = ids[first:first + settings.batch]
        results = decode_many(loaded, [images[i] for i in chunk], settings.question, strategy, judge, k=settings.k,
                              max_new_tokens=settings.max_new_tokens, seed=settings.seed + first,
                              options=DecodeOptions())
        captions += [(i, r.text) for i, r in zip(chunk, results)]
    return captions, (time.perf_counter() - start) / len(ids)


def run_chair(loaded: LoadedModel, annotations: CocoAnnotations, images: dict[int, Image.Image],
              settings: BenchSettings) -> dict[str, tuple[ChairResult, float]]:
    """CHAIR of every strategy on the same images: strategy -> (result, seconds per image)."""
    out = {}
    for strategy in settings.strategies:
        captions, seconds = describe(loaded, images, strategy, settings)
        out[strategy] = (chair(captions, annotations), seconds)
    return out


def chair_table(results: dict[str, tuple[ChairResult, float]]) -> str:
    """The paper's Table 1 layout: CHAIR_S, CHAIR_I and recall in percent, per strategy (and seconds per image)."""
    lines = [f"{'strategy':<18}{'CHAIR_S':>9}{'CHAIR_I':>9}{'Recall':>9}{'s/image':>9}"]
    for strategy, (result, seconds) in results.items():
        lines.append(f"{strategy:<18}{100 * result.chair_s:>9.1f}{100 * result.chair_i:>9.1f}"
                     f"{100 * result.recall:>9.1f}{seconds:>9.2f}")
    return "\n".join(lines)


def run_pope(loaded: LoadedModel, annotations: CocoAnnotations, images: dict[int, Image.Image], splits: list[str],
             mode: str, settings: BenchSettings) -> dict[str, dict]:
    """POPE metrics and answers per split."""
    out = {}
    for split in splits:
        questions = build_questions(annotations, list(images), split, settings.seed)
        start = time.perf_counter()
        answers = answer_questions(loaded, images, questions, mode, settings.alpha, settings.batch)
        seconds = (time.perf_counter() - start) / len(images)
        metrics = pope_metrics([q.label for q in questions], [a.yes for a in answers])
        out[split] = {"metrics": asdict(metrics), "seconds_per_image": seconds,
                      "answers": [{**asdict(a.question), "yes": a.yes, "score": a.score, "reply": a.reply}
                                  for a in answers]}
    return out


def pope_table(results: dict[str, dict]) -> str:
    """Accuracy, precision, recall, F1 (percent) and yes-ratio per split."""
    lines = [f"{'split':<13}{'Accuracy':>9}{'Precision':>10}{'Recall':>8}{'F1':>7}{'Yes':>7}"]
    for split, result in results.items():
        m = result["metrics"]
        lines.append(f"{split:<13}{100 * m['accuracy']:>9.1f}{100 * m['precision']:>10.1f}{100 * m['recall']:>8.1f}"
                     f"{100 * m['f1']:>7.1f}{100 * m['yes_ratio']:>7.1f}")
    return "\n".join(lines)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.replace("|", ",").split(",") if s.strip())


def main(argv: list[str] | None = None) -> None:
    """CLI: run CHAIR or POPE on COCO with the given model and write the JSON."""
    from core.engine.loading import load_model

    parser = argparse.ArgumentParser(prog="python -m core.benchmarks.bench_coco", description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", choices=["chair", "pope"], default="chair",
                        help="which benchmark (default chair)")
    parser.add_argument("--images", type=Path, required=True, help="COCO image folder (val2014/)")
    parser.add_argument("--instances", type=Path, required=True, help="instances_val2014.json")
    parser.add_argument("--captions", type=Path, required=True, help="captions_val2014.json")
    parser.add_argument("--n", type=int, default=500, help="images drawn (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="draws the images, seeds sampling and POPE's negatives")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="caption budget in new tokens (default 64)")
    parser.add_argument("--strategies", type=_comma_list, default=STRATEGIES,
                        help=f"CHAIR: comma-separated, some of {', '.join(STRATEGIES)} (default all)")
    parser.add_argument("--k", type=int, default=4, help="proposals per sentence (judged) and beams (beam)")
    parser.add_argument("--alpha", type=float, default=1.0, help="debiasing strength (debiased-judged, POPE debiased)")
    parser.add_argument("--kind", default="logit", choices=list(SCORE_KINDS), help="judge score kind for decoding")
    parser.add_argument("--template", default="faithfulness", choices=[k for k in JUDGE_PROMPTS if k != "safety"],
                        help="judge template of the judged strategies")
    parser.add_argument("--context", default="sentence", choices=list(CONTEXTS),
                        help="judge each sentence alone or after the previous ones")
    parser.add_argument("--question", default=CHAIR_QUESTION, help="CHAIR prompt")
    parser.add_argument("--batch", type=int, default=8, help="images decoded (or questioned) together")
    parser.add_argument("--pope-splits", type=_comma_list, default=SPLITS,
                        help="POPE: some of random,popular,adversarial (default all)")
    parser.add_argument("--pope-answer", choices=ANSWER_MODES, default="answer",
                        help="POPE: the model's reply, or the judge's raw or debiased log-odds > 0")
    parser.add_argument("--model", default=None,
                        help="model id or folder (default SELFJUDGE_MODEL or the embedded model)")
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder to attach")
    parser.add_argument("--4bit", dest="load_in_4bit", action="store_true", default=None, help="load in 4-bit NF4")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    try:
        settings = BenchSettings(n=args.n, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                 strategies=args.strategies, k=args.k, alpha=args.alpha, kind=args.kind,
                                 template=args.template, context=args.context, question=args.question,
                                 batch=args.batch)
        unknown = [s for s in args.pope_splits if s not in SPLITS]
        if unknown:
            raise ValueError(f"--pope-splits must be some of {', '.join(SPLITS)}, not {', '.join(unknown)}")
        annotations = CocoAnnotations.load(args.instances, args.captions)
        image_ids = annotations.sample(settings.n, settings.seed,
                                       POSITIVES_PER_IMAGE if args.benchmark == "pope" else 0)
        images = load_images(args.images, annotations, image_ids)
        loaded = load_model(settings_from_args(ModelSettings, args))
        record = {"benchmark": args.benchmark, "model": loaded.model_id, "adapter": loaded.adapter,
                  "settings": asdict(settings), "image_ids": image_ids}
        if args.benchmark == "chair":
            results = run_chair(loaded, annotations, images, settings)
            table = chair_table(results)
            record["strategies"] = {s: {**r.summary(), "seconds_per_image": sec,
                                        "captions": [asdict(c) for c in r.captions]}
                                    for s, (r, sec) in results.items()}
        else:
            results = run_pope(loaded, annotations, images, list(args.pope_splits), args.pope_answer, settings)
            table = pope_table(results)
            record.update(pope_answer=args.pope_answer, splits=results)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        sys.exit(f"error: {exc}")
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(json_safe(record), indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
