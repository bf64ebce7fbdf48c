"""What `scripts/continual.py` does, importable and tested: plan -> Accelerator -> continual run."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .plan import Plan, load_plan


def dry_run(plan: Plan) -> str:
    """Describe what the plan would do and count what each task adds, without data or training.

    The model is built on the meta device (no memory, no weights): from its config for a fresh model,
    or from the saved config for `from_pretrained` (CT-CLIP v2 defaults when the folder is absent).
    """
    import torch

    from ..configuration_unicon import UniconConfig
    from ..modeling_unicon import UniconModel

    lines = [plan.summary()]
    spec = plan.model
    if spec.config is not None:
        config = UniconConfig(**spec.config)
    elif spec.from_pretrained and Path(spec.from_pretrained, "config.json").is_file():
        config = UniconConfig.from_pretrained(spec.from_pretrained)
    else:
        lines.append(f"(model {spec.from_pretrained!r} not found here: counting with CT-CLIP v2 defaults)")
        config = UniconConfig()
    with torch.device("meta"):
        model = UniconModel(config)
        for stage in plan.stages:
            task = dict(stage.task)
            if task["kind"] == "zero_shot_classification":
                task["head"] = {**task.get("head", {}), "prompt_input_ids": [[0]] * (2 * len(task["labels"])),
                                "prompt_attention_mask": [[1]] * (2 * len(task["labels"]))}
            lines.append("  " + str(model.add_task(task)))
    return "\n".join(lines)


def make_accelerator(**kwargs):
    """The Accelerator of a continual run: batches split across processes, so a step means the same
    samples on 1 or N processes (the loss of a step is then the same up to float reduction order)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    return Accelerator(dataloader_config=DataLoaderConfiguration(split_batches=True), **kwargs)


def run_from_arguments(args: Any) -> dict[str, Any] | None:
    """Run (or dry-run) a plan from the parsed command-line arguments of scripts/continual.py."""
    plan = load_plan(args.config, check_paths=not args.dry_run)
    if args.dry_run:
        print(dry_run(plan))
        return None
    from .continual import ContinualRun

    cpu = args.cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    accelerator = make_accelerator(cpu=cpu, mixed_precision=args.mixed_precision, log_with=args.log_with)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.log_with:
        accelerator.init_trackers("unicon_continual", config=plan.to_dict())
    report = ContinualRun(plan, args.output_dir, accelerator=accelerator, resume=args.resume).run()
    if args.log_with:
        accelerator.end_training()
    if accelerator.is_main_process:
        print(summary(report, args.output_dir))
    return report


def summary(report: dict[str, Any], output_dir: str) -> str:
    """The forgetting matrix and headline numbers, as printed at the end of a run."""
    tasks = [t["name"] for t in report["tasks"]]
    width = max(12, *(len(t) + 2 for t in tasks))
    lines = ["", "forgetting matrix R[stage][task] (main metric of each task):",
             " " * 24 + "".join(f"{t:>{width}}" for t in tasks)]
    for stage, row in zip(report["stages"], report["matrix"]):
        cells = "".join(f"{'' if v is None else f'{v:.4f}':>{width}}" for v in row)
        lines.append(f"{stage['name']:<24}{cells}")
    lines.append(f"BWT = {report['bwt']}   average = {report['average']}")
    lines.append(f"model: {Path(output_dir) / 'model'}   report: {Path(output_dir) / 'report' / 'report.md'}")
    return "\n".join(lines)

