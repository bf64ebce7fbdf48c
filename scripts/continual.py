"""Run a UNICON stage plan: `accelerate launch scripts/continual.py --config configs/demo.yaml --output_dir runs/demo`.

Thin entry point: everything it does lives in `unicon_hf.training` and is tested there.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import HfArgumentParser  # noqa: E402


@dataclass
class ContinualArguments:
    config: str = field(metadata={"help": "stage plan YAML (see configs/demo.yaml)"})
    output_dir: str = field(default="runs/continual", metadata={"help": "where models, checkpoints and reports go"})
    resume: bool = field(default=False, metadata={"help": "continue an interrupted run in output_dir"})
    dry_run: bool = field(default=False, metadata={"help": "validate the plan and print what would run; train nothing"})
    cpu: bool = field(default=False, metadata={"help": "force CPU even when a GPU is present"})
    mixed_precision: str = field(default="no", metadata={"help": "Accelerator mixed precision: no | bf16 | fp16"})
    log_with: str = field(default=None, metadata={"help": "Accelerate tracker (tensorboard, wandb, ...); off by default"})


def main(argv: list[str] | None = None) -> int:
    from unicon_hf.errors import UserInputError
    from unicon_hf.training.entrypoint import run_from_arguments

    (args,) = HfArgumentParser(ContinualArguments).parse_args_into_dataclasses(args=argv)
    try:
        run_from_arguments(args)
    except UserInputError as error:
        print(f"continual.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
