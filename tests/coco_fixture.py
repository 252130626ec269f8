"""A tiny COCO-format split written by the tests: five images, their instances and reference captions.

Image 4 has only two annotated objects (too few for POPE). Image 3's "sink" is only in its
captions, so it is ground truth for CHAIR but not an instance.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

CATEGORIES = {1: "person", 2: "bicycle", 3: "car", 17: "cat", 18: "dog", 47: "cup", 58: "hot dog",
              67: "dining table", 70: "toilet"}
INSTANCES = {  # image id -> category ids, in annotation order (repeats are more instances)
    1: [18, 1, 1, 2],
    2: [17, 67, 47],
    3: [70, 1, 3],
    4: [3, 18],
    5: [58, 47, 67, 1],
}
CAPTIONS = {
    1: ["A man walks his puppy next to a bike.", "Two people on a street."],
    2: ["A kitten sits on the table near a mug."],
    3: ["A toilet seat next to a sink."],
    4: ["A van parked by a dog."],
    5: ["A man eats hot dogs at a desk."],
}
COLOURS = {1: "red", 2: "green", 3: "blue", 4: "yellow", 5: "white"}


def file_name(image_id: int) -> str:
    """COCO's val2014 file name of an image id."""
    return f"COCO_val2014_{image_id:012d}.jpg"


def write_coco(folder: Path) -> tuple[Path, Path, Path]:
    """Write images/, instances.json and captions.json under folder; return their paths."""
    images = folder / "val2014"
    images.mkdir(parents=True)
    entries = [{"id": i, "file_name": file_name(i), "width": 32, "height": 32} for i in INSTANCES]
    for i in INSTANCES:
        Image.new("RGB", (32, 32), COLOURS[i]).save(images / file_name(i))
    annotations = [{"id": 100 * i + n, "image_id": i, "category_id": c, "bbox": [0, 0, 8, 8], "area": 64,
                    "iscrowd": 0} for i, cats in INSTANCES.items() for n, c in enumerate(cats)]
    instances = {"images": entries, "annotations": annotations,
                 "categories": [{"id": k, "name": v, "supercategory": ""} for k, v in CATEGORIES.items()]}
    captions = {"images": entries, "annotations": [{"id": 1000 * i + n, "image_id": i, "caption": c}
                                                   for i, caps in CAPTIONS.items() for n, c in enumerate(caps)]}
    (folder / "instances.json").write_text(json.dumps(instances))
    (folder / "captions.json").write_text(json.dumps(captions))
    return images, folder / "instances.json", folder / "captions.json"
