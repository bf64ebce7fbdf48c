"""`unicon phantoms OUTPUT_DIR --kind hecktor|ct-rate`: write synthetic phantom datasets."""

from __future__ import annotations

import argparse

from ..errors import UserInputError

_DEFAULT_SHAPE = {"hecktor": (64, 64, 64), "ct-rate": (32, 64, 64)}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "phantoms",
        help="write deterministic synthetic phantoms in the HECKTOR 2022 or CT-RATE layout",
        description="Write deterministic synthetic phantoms (CT/PET/labels + clinical CSV for HECKTOR; "
        "chest CT + reports + 18 labels for CT-RATE) for tests, demos and benchmarks.",
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder to write the dataset into")
    parser.add_argument("--kind", choices=["hecktor", "ct-rate"], required=True, help="dataset layout")
    parser.add_argument("--n", type=int, default=20, help="number of cases (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical files)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), default=None,
                        help="voxel grid, slices first (default 64 64 64 for hecktor, 32 64 64 for ct-rate)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("SD", "SH", "SW"), default=None,
                        help="voxel size in mm in the same order (default: 2 2 2 for hecktor, 5 5.5 5.5 for ct-rate)")
    parser.add_argument("--orientation", default=None, help="axis codes on disk, e.g. RAS, LPS (default RAS / LPS)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so `unicon --help` stays fast (scipy, nibabel).
    from ..data.phantoms import write_ct_rate_phantoms, write_hecktor_phantoms

    if args.n < 1:
        raise UserInputError(f"--n must be at least 1 (got {args.n})")
    kwargs = {"n": args.n, "seed": args.seed, "shape": tuple(args.shape or _DEFAULT_SHAPE[args.kind])}
    if args.spacing is not None:
        kwargs["spacing"] = tuple(args.spacing)
    if args.orientation is not None:
        kwargs["orientation"] = args.orientation
    writer = write_hecktor_phantoms if args.kind == "hecktor" else write_ct_rate_phantoms
    root = writer(args.output_dir, **kwargs)
    print(f"wrote {args.n} {args.kind} phantom case(s) to {root}")
    return 0
