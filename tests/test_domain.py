"""Tests for core/shapes/domain.py: shapes scenes are recognised at any size, photos and other pictures are not."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.config import EMBEDDED_MODEL
from core.shapes.domain import knows_only_shapes, looks_like_shapes_scene
from core.shapes.world import make_scene, render


def photo_of_a_house(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """A photo-like picture: sky and grass gradients with sensor noise, a house with a roof and a door."""
    rng = np.random.default_rng(seed)
    rows = np.arange(height, dtype=np.float32)[:, None]
    sky = np.stack([90 + 0.2 * rows, 150 + 0.1 * rows, 230 + 0 * rows], axis=-1)
    grass = np.stack([60 + 0 * rows, 140 + 0.05 * rows, 50 + 0 * rows], axis=-1)
    pixels = np.where(rows[..., None] < 0.6 * height, sky, grass) * np.ones((1, width, 1), np.float32)
    image = Image.fromarray(np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    w, h = width / 640, height / 480
    draw.rectangle([200 * w, 180 * h, 440 * w, 380 * h], fill=(180, 120, 80))
    draw.polygon([(180 * w, 180 * h), (320 * w, 80 * h), (460 * w, 180 * h)], fill=(150, 40, 40))
    draw.rectangle([290 * w, 290 * h, 350 * w, 380 * h], fill=(90, 60, 30))
    return image


def _jpeg(image: Image.Image, quality: int = 70) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer)


@pytest.mark.parametrize("seed", [0, 7, 20, 21, 22, 23, 67, 4_000_000])
@pytest.mark.parametrize("resize", [None, (384, 384), (224, 224), (64, 64), (336, 336, "jpeg")])
def test_rendered_scenes_are_recognised_at_any_size(seed, resize):
    image = render(make_scene(seed))
    if resize:
        image = image.resize(resize[:2], Image.Resampling.BICUBIC)
        image = _jpeg(image) if "jpeg" in resize else image
    assert looks_like_shapes_scene(image)


def test_nearly_every_scene_of_the_first_two_hundred_is_recognised():
    assert sum(looks_like_shapes_scene(render(make_scene(seed))) for seed in range(200)) >= 198


@pytest.mark.parametrize("name, image", [
    ("house photo", photo_of_a_house()),
    ("house photo, square crop", photo_of_a_house().crop((80, 0, 560, 480))),
    ("house photo at 96x96", photo_of_a_house().resize((96, 96))),
    ("noise", Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8))),
    ("black", Image.new("RGB", (96, 96))),
    ("grey ramp", Image.fromarray(np.tile(np.linspace(0, 255, 128, dtype=np.uint8)[None, :, None], (128, 1, 3)))),
    ("a wide scene", render(make_scene(3)).resize((300, 96))),
    ("a dark scene", Image.fromarray((np.asarray(render(make_scene(3))) // 3).astype(np.uint8))),
])
def test_other_pictures_are_not_scenes(name, image):
    assert not looks_like_shapes_scene(image), name


def test_knows_only_shapes_for_the_embedded_model_and_folders_core_embedded_trained(tmp_path):
    assert knows_only_shapes(str(EMBEDDED_MODEL))
    assert not knows_only_shapes("llava-hf/llava-1.5-7b-hf")
    (tmp_path / "training_config.json").write_text(json.dumps({"train_seed_offset": 1_000_000}))
    assert knows_only_shapes(str(tmp_path))
    (tmp_path / "training_config.json").write_text("{not json")
    assert not knows_only_shapes(str(tmp_path))
