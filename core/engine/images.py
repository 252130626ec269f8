"""Checking and normalising input images before any model or store sees them.

Every image that enters the studio (upload, API call, example file) goes through
`open_image`: it refuses what is not an image, is corrupt, or is too large (file
bytes, or pixels: a decompression bomb is caught from the header, before any pixel
is decoded), and turns everything else into one plain 8-bit RGB image: the first
frame of an animation, EXIF rotation applied, alpha composited on white, CMYK and
palette converted, 16-bit scaled to 8-bit.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.config import without_paths

WHITE = (255, 255, 255)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ALPHA_MODES = ("RGBA", "LA", "RGBa", "La", "PA")


class ImageError(ValueError):
    """An input that cannot be used as an image; the message says why and what to do."""


@dataclass(frozen=True)
class ImageLimits:
    """How large an input may be, in file bytes and in pixels."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 4096 * 4096

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError("ImageLimits.max_bytes and max_pixels must be positive")


def open_image(path: str | Path, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Read an image file and return it as normalised 8-bit RGB, or raise ImageError."""
    path = Path(path)
    if not path.is_file():
        raise ImageError("no image file was received; upload a PNG, JPEG, GIF or WebP image")
    size = os.path.getsize(path)
    if size == 0:
        raise ImageError("the uploaded file is empty; upload a PNG, JPEG, GIF or WebP image")
    if size > limits.max_bytes:
        raise ImageError(f"the file is {size / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.0f} MiB")
    try:
        data = path.read_bytes()
    except OSError as exc:  # its message would name the server path
        raise ImageError(f"the uploaded file could not be read ({exc.strerror or type(exc).__name__}); "
                         "upload it again") from exc
    return decode_image(data, limits)


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Image bytes (an upload, or a picture inside an import) as normalised 8-bit RGB, or raise ImageError.

    Too many pixels is caught from the header, before any pixel is decoded. Messages never
    name a file (Pillow's own would show a server path).
    """
    if len(data) > limits.max_bytes:
        raise ImageError(f"the image is {len(data) / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.0f} MiB")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make it an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                _check_pixels(image, limits)
                return normalise_image(image, limits)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"the image has too many pixels (limit {limits.max_pixels:,}); "
                         "use a smaller image") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("the file is not a readable image (not a format Pillow knows); "
                         "upload a PNG, JPEG, GIF or WebP image") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"the file is not a readable image ({without_paths(str(exc))}); "
                         "upload a PNG, JPEG, GIF or WebP image") from exc


def _check_pixels(image: Image.Image, limits: ImageLimits) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError("the image has no pixels")
    if width * height > limits.max_pixels:
        raise ImageError(f"the image is {width}x{height} = {width * height:,} pixels; the limit is "
                         f"{limits.max_pixels:,}; use a smaller image")


def normalise_image(image: Image.Image, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """One plain 8-bit RGB image: first frame, EXIF-upright, alpha on white, 16-bit scaled down."""
    _check_pixels(image, limits)
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image)  # returns a loaded copy, so the file may close after
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        image = _to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ALPHA_MODES:
        background = Image.new("RGBA", image.size, WHITE + (255,))
        background.alpha_composite(image.convert("RGBA"))
        image = background
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except ValueError as exc:
            raise ImageError(f"images in colour mode {image.mode} are not supported; save it as RGB") from exc
    return image


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale a 16-bit (or 32-bit int / float) grey image to 8-bit by its nominal range."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if values.size and values.max() <= 1.0 else 255.0
    else:
        # 16-bit data decoded into 32-bit "I" keeps its 0..65535 range.
        top = 255.0 if values.size and values.max() <= 255 else 65535.0
    scaled = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)  # 2-D uint8 is mode L


def image_sha256(image: Image.Image) -> str:
    """A fingerprint of an image's pixels (size, mode and raw bytes) to tell two inputs apart."""
    digest = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()
