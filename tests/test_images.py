"""Tests for core/engine/images.py: every refused input and every converted kind of image."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.engine.images import ImageError, ImageLimits, image_sha256, normalise_image, open_image


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims width x height but holds almost no data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 8))
                     + chunk(b"IEND", b""))


def _pixels(image: Image.Image) -> list:
    return [image.getpixel((x, y)) for y in range(image.height) for x in range(image.width)]


def test_plain_rgb_png_comes_back_unchanged(tmp_path):
    original = Image.new("RGB", (3, 2), (10, 20, 30))
    original.putpixel((2, 1), (200, 100, 0))
    original.save(tmp_path / "a.png")
    image = open_image(tmp_path / "a.png")
    assert (image.mode, image.size) == ("RGB", (3, 2))
    assert _pixels(image) == [(10, 20, 30)] * 5 + [(200, 100, 0)]


@pytest.mark.parametrize("content", [b"hello, not an image\n", b"<svg xmlns='http://www.w3.org/2000/svg'/>"])
def test_non_image_is_refused(tmp_path, content):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(ImageError, match="not a readable image"):
        open_image(tmp_path / "x.png")


def test_truncated_png_is_refused(tmp_path):
    Image.effect_noise((64, 64), 50).convert("RGB").save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="not a readable image"):
        open_image(tmp_path / "cut.png")


def test_empty_and_missing_files_are_refused(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        open_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="no image file"):
        open_image(tmp_path / "missing.png")


def test_refusals_never_name_the_server_path(tmp_path, monkeypatch):
    folder = tmp_path / "gradio" / "0123abcd"
    folder.mkdir(parents=True)
    Image.effect_noise((64, 64), 50).convert("RGB").save(folder / "full.png")
    data = (folder / "full.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_bytes(b"hello, not an image\n")
    (folder / "empty.png").write_bytes(b"")
    messages = []
    for name in ("cut.png", "text.png", "empty.png", "missing.png"):
        with pytest.raises(ImageError) as caught:
            open_image(folder / name)
        messages.append(str(caught.value))

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "read_bytes", unreadable)
    with pytest.raises(ImageError, match=r"could not be read \(Permission denied\); upload it again") as caught:
        open_image(folder / "full.png")
    messages.append(str(caught.value))
    assert [message for message in messages if str(tmp_path) in message or "0123abcd" in message] == []


def test_file_over_the_byte_limit_is_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(ImageError, match="limit is 0 MiB"):
        open_image(tmp_path / "a.png", ImageLimits(max_bytes=10))


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    # 30000 x 30000 = 900M pixels: over twice Pillow's MAX_IMAGE_PIXELS, so Image.open itself refuses.
    _png_header_only(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(ImageError, match="too many pixels"):
        open_image(tmp_path / "bomb.png")


def test_image_over_our_pixel_limit_is_refused(tmp_path):
    _png_header_only(tmp_path / "big.png", 5000, 5000)  # 25M: under Pillow's limit, over ours
    with pytest.raises(ImageError, match="5000x5000 = 25,000,000 pixels; the limit is 16,777,216"):
        open_image(tmp_path / "big.png")


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(tmp_path / "anim.gif") as check:
        assert check.n_frames == 2
    image = open_image(tmp_path / "anim.gif")
    assert (image.mode, image.size) == ("RGB", (4, 4))
    assert set(_pixels(image)) == {(255, 0, 0)}


def test_rgba_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 255), (255, 0, 0, 0), (0, 0, 255, 128)])
    image.save(tmp_path / "a.png")
    # alpha 128 over white: 0*128/255 + 255*127/255 = 127 for the missing channels.
    assert _pixels(open_image(tmp_path / "a.png")) == [(255, 0, 0), (255, 255, 255), (127, 127, 255)]


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 128, 0, 9, 9, 9] + [0] * 762)
    image.putdata([0, 1])
    image.save(tmp_path / "p.png", transparency=1)
    assert _pixels(open_image(tmp_path / "p.png")) == [(0, 128, 0), (255, 255, 255)]


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "c.jpg", quality=100)
    image = open_image(tmp_path / "c.jpg")
    assert image.mode == "RGB"
    assert set(_pixels(image)) == {(255, 255, 255)}


def test_sixteen_bit_grey_is_scaled_to_eight_bit(tmp_path):
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as check:
        assert check.mode in ("I;16", "I")
    assert _pixels(open_image(tmp_path / "g16.png")) == [(0, 0, 0), (100, 100, 100), (255, 255, 255)]


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (2, 1))
    image.putdata([(255, 0, 0), (0, 0, 255)])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "r.png", exif=exif)
    upright = open_image(tmp_path / "r.png")
    assert upright.size == (1, 2)
    assert _pixels(upright) == [(255, 0, 0), (0, 0, 255)]


def test_normalise_image_checks_pixels_of_in_memory_images():
    with pytest.raises(ImageError, match="the limit is 10"):
        normalise_image(Image.new("RGB", (4, 4)), ImageLimits(max_pixels=10))
    assert normalise_image(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)


def test_image_sha256_tells_pixels_apart():
    a, b = Image.new("RGB", (2, 2), (1, 2, 3)), Image.new("RGB", (2, 2), (1, 2, 3))
    assert image_sha256(a) == image_sha256(b)
    b.putpixel((1, 1), (1, 2, 4))
    assert image_sha256(a) != image_sha256(b)
    assert image_sha256(Image.new("RGB", (1, 4))) != image_sha256(Image.new("RGB", (4, 1)))


def test_limits_are_validated():
    with pytest.raises(ValueError, match="must be positive"):
        ImageLimits(max_pixels=0)
