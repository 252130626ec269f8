"""Tests for core/shapes/sample.py: the sample CLI writes scenes, their ground truth and descriptions."""

from __future__ import annotations

import json

from core.shapes.sample import main
from core.shapes.world import make_scene


def test_sample_cli_writes_pngs_and_jsonl(tmp_path):
    main(["--seed", "5", "--n", "3", "--out", str(tmp_path)])
    rows = [json.loads(line) for line in (tmp_path / "scenes.jsonl").read_text().splitlines()]
    assert [r["file"] for r in rows] == ["scene_0000005.png", "scene_0000006.png", "scene_0000007.png"]
    for row in rows:
        assert (tmp_path / row["file"]).exists()
        scene = make_scene(row["seed"])
        assert row["objects"] == [{"shape": o.shape, "color": o.color, "size": o.size, "position": o.position}
                                  for o in scene.objects]
        assert row["description"].endswith(".")
