"""The COCO benchmark CLI end to end on the generated fixture with the tiny model: CHAIR and POPE."""

from __future__ import annotations

import json

import pytest

from core.benchmarks.bench_coco import BenchSettings, main
from core.benchmarks.coco import CocoAnnotations, chair
from core.benchmarks.pope import pope_metrics
from tests.coco_fixture import write_coco


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"))


def _args(coco, tiny_llava_dir, *extra):
    images, instances, captions = coco
    return ["--images", str(images), "--instances", str(instances), "--captions", str(captions),
            "--model", str(tiny_llava_dir), "--batch", "2", *extra]


def test_chair_protocol(coco, tiny_llava_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SELFJUDGE_DEVICE", "cpu")
    out = tmp_path / "chair.json"
    main(_args(coco, tiny_llava_dir, "--n", "3", "--seed", "5", "--strategies", "greedy,debiased-judged",
               "--max-new-tokens", "6", "--k", "2", "--template", "faithfulness_last", "--out", str(out)))
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["strategy", "CHAIR_S", "CHAIR_I", "Recall", "s/image"]
    assert [line.split()[0] for line in printed[1:3]] == ["greedy", "debiased-judged"]
    record = json.loads(out.read_text())
    annotations = CocoAnnotations.load(coco[1], coco[2])
    assert record["image_ids"] == annotations.sample(3, seed=5)
    assert (record["settings"]["max_new_tokens"], record["settings"]["template"]) == (6, "faithfulness_last")
    for strategy in ("greedy", "debiased-judged"):
        entry = record["strategies"][strategy]
        captions = [(c["image_id"], c["caption"]) for c in entry["captions"]]
        assert [i for i, _ in captions] == record["image_ids"]
        expected = chair(captions, annotations)
        assert entry["chair_s"] == pytest.approx(expected.chair_s)
        assert entry["recall"] == pytest.approx(expected.recall)
        assert entry["captions"][0]["ground_truth"] == sorted(annotations.ground_truth(captions[0][0]))
        assert entry["seconds_per_image"] > 0


def test_pope_protocol(coco, tiny_llava_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SELFJUDGE_DEVICE", "cpu")
    out = tmp_path / "pope.json"
    main(_args(coco, tiny_llava_dir, "--benchmark", "pope", "--n", "3", "--pope-splits", "popular,adversarial",
               "--pope-answer", "debiased", "--out", str(out)))
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["split", "Accuracy", "Precision", "Recall", "F1", "Yes"]
    record = json.loads(out.read_text())
    assert 4 not in record["image_ids"]  # too few objects for POPE
    for split in ("popular", "adversarial"):
        answers = record["splits"][split]["answers"]
        assert len(answers) == 18
        assert all(a["yes"] == (a["score"] > 0) for a in answers)
        metrics = pope_metrics([a["label"] for a in answers], [a["yes"] for a in answers])
        assert record["splits"][split]["metrics"]["accuracy"] == pytest.approx(metrics.accuracy)


def test_bad_input_exits_with_a_message(coco, tiny_llava_dir, tmp_path):
    with pytest.raises(SystemExit, match="only 5 qualify"):
        main(_args(coco, tiny_llava_dir, "--n", "6"))
    with pytest.raises(SystemExit, match="is missing"):
        args = _args(coco, tiny_llava_dir, "--n", "1")
        main(args[:1] + [str(tmp_path)] + args[2:])  # --images names an empty folder
    with pytest.raises(ValueError, match="strategies must be"):
        BenchSettings(strategies=("greedy", "opera"))
