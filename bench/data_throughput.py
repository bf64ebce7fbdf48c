"""Cases per second through the training transforms with a 2-worker DataLoader (HECKTOR phantoms).

    python bench/data_throughput.py [--cases 20] [--workers 2] [--epochs 3] [--out bench/results/data_throughput.json]

Writes phantoms to a temporary folder, loads them with `load_hecktor`, applies `TrainTransform`
(processor: resample 2 mm -> `--spacing`, CT + PET; random `--crop` crops) and times full epochs
after one warm-up epoch. Prints the figure and writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from unicon_hf.data.loaders import load_hecktor
from unicon_hf.data.phantoms import write_hecktor_phantoms
from unicon_hf.data.transforms import TrainTransform
from unicon_hf.image_processing_unicon import UniconImageProcessor


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20, help="number of phantom cases")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 64], help="phantom grid (D, H, W) at 2 mm")
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0], help="processor target spacing (mm)")
    parser.add_argument("--crop", type=int, nargs=3, default=[96, 96, 96], help="random crop size (D, H, W)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data_throughput.json")
    return parser.parse_args()


def main() -> dict:
    args = parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = write_hecktor_phantoms(Path(folder) / "hecktor", n=args.cases, seed=0, shape=tuple(args.shape),
                                      spacing=(2.0, 2.0, 2.0), orientation="LPS", progress=False)
        dataset = load_hecktor(root, validation_fraction=0.0, check="header", progress=False)["train"]
        processor = UniconImageProcessor(target_spacing=args.spacing, output_size=None)
        dataset = dataset.with_transform(TrainTransform(processor, crop_size=args.crop, seed=0))
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                             shuffle=True, persistent_workers=args.workers > 0)
        for _ in loader:  # warm-up: worker start-up, imports, page cache
            pass
        start = time.perf_counter()
        seen = 0
        for _ in range(args.epochs):
            for batch in loader:
                seen += batch["pixel_values"].shape[0]
        elapsed = time.perf_counter() - start
    result = {
        "cases_per_second": seen / elapsed,
        "cases": seen,
        "seconds": elapsed,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "phantom_shape_dhw": args.shape,
        "target_spacing_mm": args.spacing,
        "crop_size_dhw": args.crop,
        "channels": "CT+PET",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['cases_per_second']:.2f} cases/s through TrainTransform with {args.workers} workers "
          f"({seen} cases in {elapsed:.1f} s) -> {args.out}")
    return result


if __name__ == "__main__":
    main()
