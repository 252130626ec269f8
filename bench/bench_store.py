"""Benchmark the pair store and the dataset exchange on shapes-world pictures.

Adds N pairs (one transaction each) from 4 threads into a fresh store in a temp folder,
lists and counts them, exports JSONL and Parquet, and imports each export into a fresh
store; prints seconds per step and the sizes on disk as JSON.

Run:  python -m bench.bench_store [--pairs 1000 --threads 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.data.exchange import export_pairs, import_pairs
from core.data.store import Pair, Store
from core.shapes.world import make_scene, render


def folder_bytes(folder: Path) -> int:
    """Total size of the files under a folder."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(argv: list[str] | None = None) -> None:
    """Time add, list, export and import for N pairs."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000, help="how many pairs to add (default 1000)")
    parser.add_argument("--threads", type=int, default=4, help="threads adding pairs at once (default 4)")
    args = parser.parse_args(argv)
    pictures = [render(make_scene(seed)) for seed in range(args.pairs)]
    report = {"pairs": args.pairs, "threads": args.threads, "picture_size": list(pictures[0].size)}
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        store = Store(root / "source" / "selfjudge.db")

        def add(seed: int) -> int:
            pair = Pair("", "Describe the image.", f"Scene {seed}: the shapes as they are.",
                        f"Scene {seed}: a shape that is not there.", {"raw": 2.0, "blind": 1.0, "debiased": 3.0},
                        {"raw": 0.5, "blind": 1.5, "debiased": -0.5}, model_id="shapes-llava", source="self")
            return store.add_pair(pair, pictures[seed])

        start = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(add, range(args.pairs)))
        report["add_pairs_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        store.list_pairs(search="not there", limit=48)
        store.count_pairs(search="not there")
        report["search_page_s"] = round(time.perf_counter() - start, 4)
        report["store_bytes"] = folder_bytes(root / "source")
        for fmt in ("jsonl", "parquet"):
            start = time.perf_counter()
            result = export_pairs(store, root / "exports", fmt)
            report[f"export_{fmt}_s"] = round(time.perf_counter() - start, 2)
            report[f"export_{fmt}_bytes"] = folder_bytes(result.path)
            start = time.perf_counter()
            imported = import_pairs(Store(root / f"import-{fmt}" / "selfjudge.db"), result.path)
            report[f"import_{fmt}_s"] = round(time.perf_counter() - start, 2)
            if imported.added != args.pairs:
                raise RuntimeError(f"{fmt} import added {imported.added} of {args.pairs} pairs")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
