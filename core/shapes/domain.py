"""Which images and models belong to the shapes world, so the studio can warn when they do not meet.

The embedded model (core.shapes.embedded) was trained only on shapes scenes (core.shapes.world): given a
photo it still answers "a large red square ...", with confident scores. `looks_like_shapes_scene`
recognises a rendered scene from its pixels alone (square, one flat light background, a few
shapes in the world's six colours), whatever size it was resized to and through JPEG
compression; `knows_only_shapes` says whether a model folder is such a shapes-only model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from core.config import EMBEDDED_MODEL
from core.shapes.world import CANVAS, COLORS

# A scene's background is a light grey (core.shapes.world.make_scene: each channel 200..255, channels within ~10).
MIN_BACKGROUND_LEVEL = 185
MAX_BACKGROUND_TINT = 30
MIN_BACKGROUND_SHARE = 0.5  # four large shapes cover about a third of the canvas at most
MIN_EXPLAINED_SHARE = 0.93  # pixels that are background, a world colour, or a low-contrast blend of one
COLOUR_TOLERANCE = 48.0  # RGB distance, after the noise is filtered out (scene noise sigma is at most 20)
MAX_ASPECT = 1.15
LOW_CONTRAST_BLENDS = (1.0, 0.45)  # core.shapes.world.render: full colour, or 45% colour on the background


def _as_canvas(image: Image.Image) -> np.ndarray:
    """The image at the world's canvas size with its pixel noise filtered out, as float RGB."""
    small = image.convert("RGB").resize((CANVAS, CANVAS), Image.Resampling.BOX)
    return np.asarray(small.filter(ImageFilter.MedianFilter(5)), dtype=np.float32)


def _background(pixels: np.ndarray) -> np.ndarray:
    """The most common colour, at 16 levels per channel, refined to the mean of the pixels in that bin."""
    bins = (pixels // 16).astype(np.int32).reshape(-1, 3)
    keys = bins[:, 0] * 256 + bins[:, 1] * 16 + bins[:, 2]
    common = np.bincount(keys).argmax()
    return pixels.reshape(-1, 3)[keys == common].mean(axis=0)


def looks_like_shapes_scene(image: Image.Image) -> bool:
    """Whether the image looks like a core.shapes.world scene (any size, e.g. after resizing or JPEG), not a photo."""
    width, height = image.size
    if min(width, height) < 16 or max(width, height) / min(width, height) > MAX_ASPECT:
        return False
    pixels = _as_canvas(image)
    background = _background(pixels)
    if background.min() < MIN_BACKGROUND_LEVEL or background.max() - background.min() > MAX_BACKGROUND_TINT:
        return False
    flat = pixels.reshape(-1, 3)
    references = [background] + [share * np.array(rgb, dtype=np.float32) + (1 - share) * background
                                 for rgb in COLORS.values() for share in LOW_CONTRAST_BLENDS]
    distances = np.stack([np.linalg.norm(flat - ref, axis=1) for ref in references])
    near_background = (distances[0] <= COLOUR_TOLERANCE).mean()
    explained = (distances.min(axis=0) <= COLOUR_TOLERANCE).mean()
    # No minimum of shape pixels: a scene whose only object is faint looks blank, and is still a scene.
    return bool(near_background >= MIN_BACKGROUND_SHARE and explained >= MIN_EXPLAINED_SHARE)


def knows_only_shapes(model: str) -> bool:
    """Whether a model id or folder is a shapes-world model: the embedded one, or one core.shapes.embedded trained."""
    path = Path(model)
    if path.resolve() == EMBEDDED_MODEL.resolve():
        return True
    config = path / "training_config.json"
    if not config.is_file():
        return False
    try:
        return "train_seed_offset" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False
