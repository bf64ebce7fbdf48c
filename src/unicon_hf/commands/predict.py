"""`unicon predict`: run one task of a UNICON model on one case (see `unicon_hf.inference.predict`)."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment, score prognosis or classify findings on one CT (+PET) case",
        description="Run one task of a UNICON model on one case. Segmentation writes segmentation.nii.gz on the "
        "input CT's exact grid and segmentation.json (per-class volumes in ml); prognosis writes prognosis.json "
        "(risk, survival curve, risk group); zero-shot classification writes zero_shot.json. Outputs are written "
        "to OUTPUT only when the whole prediction succeeded.",
    )
    parser.add_argument("--model", required=True, help="model folder or Hub repo id (offline caches work)")
    parser.add_argument("--task", required=True, help="task name stored in the model (see its config.json 'tasks')")
    parser.add_argument("--ct", required=True,
                        help="CT: NIfTI file, DICOM series folder, or a 2D PNG (segmentation / zero-shot only)")
    parser.add_argument("--pet", default=None, help="PET in SUV (NIfTI) or a PET DICOM folder, for CT+PET tasks")
    parser.add_argument("--ehr", default=None, help="clinical record as a JSON object, for prognosis tasks that read text")
    parser.add_argument("--output", required=True, help="output folder (created; same-named files are replaced)")
    parser.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap in [0, 1) (default 0.25)")
    parser.add_argument("--sw-batch-size", type=int, default=1, help="windows per forward pass (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="compute precision")
    parser.add_argument("--probabilities", action="store_true", help="also write class probability maps")
    parser.add_argument("--labels", nargs="+", default=None, metavar="FINDING",
                        help="zero-shot: findings to score instead of the task's own")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so `unicon --help` stays fast (torch, transformers, MONAI).
    from ..errors import UserInputError
    from ..inference import format_summary, predict

    if args.sw_batch_size < 1:
        raise UserInputError(f"--sw-batch-size must be at least 1 (got {args.sw_batch_size})")
    prediction = predict(
        args.model, args.task, args.ct, pet=args.pet, ehr=args.ehr, output=args.output, overlap=args.overlap,
        sw_batch_size=args.sw_batch_size, device=args.device, dtype=args.dtype, probabilities=args.probabilities,
        labels=args.labels, progress=not args.no_progress,
    )
    print(format_summary(prediction))
    print(f"wrote {prediction.json_name} to {args.output}")
    if prediction.kind == "segmentation" and "volumes_ml" in prediction.summary:
        print(json.dumps({"volumes_ml": prediction.summary["volumes_ml"]}))
    return 0
