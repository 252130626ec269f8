"""Measure what the import and upload bounds of issue 11 cost and save (docs/reliability.md).

Two measurements, printed as JSON:
- a 4096x4096 noisy photo: its JPEG upload, its full-resolution PNG (what the store kept before)
  and the picture as the store keeps it now (longest side 1536, PNG), in MiB;
- a zip bomb (a 400 MiB data.jsonl of spaces, about 400 KB zipped): how long import takes to
  refuse it and how much the process's peak memory grows.

Run:  python -m bench.bench_reliability
"""

from __future__ import annotations

import io
import json
import resource
import tempfile
import time
import zipfile
from pathlib import Path

from PIL import Image

from core.data.exchange import import_pairs
from core.data.store import Store, normalised_png

MIB = 2**20


def photo_sizes(side: int = 4096) -> dict:
    """MiB of a noisy side x side photo as JPEG (quality 95), as full-resolution PNG, and as stored."""
    photo = Image.effect_noise((side, side), 60).convert("RGB")
    jpeg, full = io.BytesIO(), io.BytesIO()
    photo.save(jpeg, format="JPEG", quality=95)
    photo.save(full, format="PNG")
    return {"photo_pixels": f"{side}x{side}", "jpeg_upload_mib": round(len(jpeg.getvalue()) / MIB, 1),
            "full_resolution_png_mib": round(len(full.getvalue()) / MIB, 1),
            "stored_png_mib": round(len(normalised_png(photo)) / MIB, 1)}


def zip_bomb(unpacked_mib: int = 400) -> dict:
    """Seconds and peak-memory growth (MiB) for import to refuse a zip unpacking to `unpacked_mib`."""
    with tempfile.TemporaryDirectory() as temp:
        archive = Path(temp) / "bomb.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
            info = zipfile.ZipInfo("data.jsonl")
            info.compress_type = zipfile.ZIP_DEFLATED
            with handle.open(info, "w", force_zip64=True) as member:
                for _ in range(unpacked_mib):
                    member.write(b" " * MIB)
        store = Store(Path(temp) / "selfjudge.db")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        try:
            import_pairs(store, archive)
            refusal = "accepted (a bug)"
        except ValueError as error:
            refusal = str(error)
        seconds = time.perf_counter() - start
        growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # ru_maxrss is KiB
        store.close()
        return {"zip_kb": round(archive.stat().st_size / 1024), "unpacked_mib": unpacked_mib,
                "refused_in_s": round(seconds, 3), "peak_memory_growth_mib": round(growth), "message": refusal}


def main() -> None:
    """Print both measurements as JSON."""
    print(json.dumps({"photo": photo_sizes(), "zip_bomb": zip_bomb()}, indent=2))


if __name__ == "__main__":
    main()
