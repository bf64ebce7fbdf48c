"""Run a stage plan: (optional) CLIP pretraining, then one task per stage, evaluating every task seen so
far after each stage into the forgetting matrix, with checkpoints, resume and reports.

Output folder layout:
    data/                      generated phantoms (cached)
    checkpoints/<stage>/       Accelerate state of the running stage (removed when it completes)
    stages/<stage>/            the model after each completed stage (save_pretrained + processor)
    model/                     the final model (loads with AutoModel), with report files
    report/                    report.json, report.md, PNG plots
    progress.json              completed stages and the matrix so far (what --resume reads)
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed

from ..errors import UserInputError
from ..hub import save_model_repo
from ..modeling_unicon import UniconModel
from ..processing_unicon import UniconProcessor
from ..image_processing_unicon import UniconImageProcessor
from ..tasks import TaskSpec
from .continual_matrix import ContinualMatrix
from .data import StageData, build_stage_data
from .evaluation import evaluate_task
from .loop import StageResult, train_stage
from .metrics import main_metric
from .plan import Plan, StagePlan
from .report import write_report

logger = logging.getLogger("unicon_hf.continual")
PROGRESS_FILE = "progress.json"


@dataclass
class LearnedTask:
    spec: TaskSpec
    stage: StagePlan
    data: StageData
    train_outcomes: tuple[np.ndarray, np.ndarray] | None


def _write_json_atomic(path: Path, data: Any) -> None:
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(json.dumps(data, indent=2))
    staging.replace(path)


def _stage_key(index: int, name: str) -> str:
    return f"{index:02d}_{name}"


class ContinualRun:
    """State of one continual run; `run()` executes the plan."""

    def __init__(self, plan: Plan, output_dir: str | Path, accelerator=None,
                 resume: bool = False, log=None, hub_api=None):
        self.plan = plan
        self.hub_api = hub_api  # an HfApi-like object for the plan's `hub:` pushes (default: huggingface_hub's)
        self.output_dir = Path(output_dir)
        if accelerator is None:
            from .entrypoint import make_accelerator

            accelerator = make_accelerator()
        self.accelerator = accelerator
        self.resume = resume
        self._log = log
        self.progress: dict[str, Any] = {"completed": [], "matrix": None, "curves": {}, "survival": {}}
        progress_path = self.output_dir / PROGRESS_FILE
        if resume and progress_path.is_file():
            self.progress = json.loads(progress_path.read_text())
        elif not resume and progress_path.is_file():
            raise UserInputError(
                f"{self.output_dir} already holds a run ({PROGRESS_FILE}); pass --resume to continue it or choose "
                f"another --output_dir"
            )
        self.matrix = ContinualMatrix.from_dict(self.progress["matrix"]) if self.progress["matrix"] else ContinualMatrix()
        self.learned: dict[str, LearnedTask] = {}
        self.overlays: list[dict[str, Any]] = []

    # ---------------------------------------------------------------------------------- helpers
    def log(self, message: str) -> None:
        if self.accelerator.is_main_process:
            (self._log or logger.info)(message)

    @property
    def data_cache(self) -> Path:
        return self.output_dir / "data"

    def _save_progress(self) -> None:
        if self.accelerator.is_main_process:
            self.progress["matrix"] = self.matrix.to_dict() if self.matrix.stages else None
            _write_json_atomic(self.output_dir / PROGRESS_FILE, self.progress)
        self.accelerator.wait_for_everyone()

    def _processor(self, tokenizer) -> UniconProcessor:
        vision = self.model.config.vision_config
        image_processor = UniconImageProcessor(**{**self.plan.processor,
                                                  "output_size": [vision.num_frames, *vision.image_size]})
        return UniconProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               max_length=self.model.config.text_config.max_position_embeddings)

    def _save_model(self, folder: Path) -> None:
        if self.accelerator.is_main_process:
            save_model_repo(self.model, folder)
            processor = self._processor(self.tokenizer)
            processor.save_pretrained(folder)
            processor.image_processor.save_pretrained(folder)  # preprocessor_config.json for AutoImageProcessor
        self.accelerator.wait_for_everyone()

    # ---------------------------------------------------------------------------------- model
    def _load_or_build_model(self) -> None:
        from transformers import AutoTokenizer

        completed = self.progress["completed"]
        spec = self.plan.model
        if completed:
            folder = self.output_dir / "stages" / completed[-1]
            self.log(f"resuming after stage {completed[-1]}: loading {folder}")
            self.model = UniconModel.from_pretrained(folder)
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            return
        set_seed(self.plan.seed)
        if spec.from_pretrained:
            self.model = UniconModel.from_pretrained(spec.from_pretrained, revision=spec.revision)
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(spec.from_pretrained, revision=spec.revision)
            except (OSError, ValueError) as error:
                raise UserInputError(
                    f"{spec.from_pretrained} has no tokenizer files; save the text encoder's tokenizer (for CT-CLIP: "
                    f"CXR-BERT's) into that folder with tokenizer.save_pretrained"
                ) from error
        else:
            from ..configuration_unicon import UniconConfig
            from ..data.tokenizer import default_tokenizer

            self.tokenizer = default_tokenizer()
            config = UniconConfig(**spec.config)
            if len(self.tokenizer) > config.text_config.vocab_size:
                raise UserInputError(
                    f"model.config.text_config.vocab_size {config.text_config.vocab_size} is smaller than the "
                    f"tokenizer's {len(self.tokenizer)} tokens; raise it to at least {len(self.tokenizer)}"
                )
            self.model = UniconModel(config)

    # ---------------------------------------------------------------------------------- stages
    def _pretrain(self) -> None:
        pretrain = self.plan.model.pretrain
        key = "00_pretrain"
        if pretrain is None or key in self.progress["completed"]:
            return
        self.log("stage 0: CLIP pretraining of the foundation")
        with self.accelerator.main_process_first():  # the main process writes the phantoms, the others read them
            data = build_stage_data(None, pretrain.data, self.plan.processor, self.model.config, self.tokenizer,
                                    self.data_cache, self.plan.seed)
        self.model.train()
        for name, parameter in self.model.named_parameters():
            # BERT's pooler is never used (CT-CLIP reads the first token): leave it out of training
            parameter.requires_grad = not name.startswith("text_model.pooler.")
        started = time.time()
        result = train_stage(
            self.accelerator, self.model, None, data, pretrain.train, self.output_dir / "checkpoints" / key,
            evaluate=lambda: evaluate_task(self.accelerator, self.model, None, data), metric_mode="min",
            seed=self.plan.seed, resume=self.resume, log=self.log,
        )
        self.model.freeze_all_but(None)
        self.model.eval()
        self.progress["curves"]["pretrain"] = {"steps": result.curve_steps, "loss": result.curve_loss}
        self.progress["pretrain"] = {"seconds": time.time() - started, **result.to_dict()}
        self._finish_stage(key)

    def _finish_stage(self, key: str) -> None:
        self._save_model(self.output_dir / "stages" / key)
        self._push_stage(key)
        self.progress["completed"].append(key)
        self._save_progress()
        if self.accelerator.is_main_process:
            shutil.rmtree(self.output_dir / "checkpoints" / key, ignore_errors=True)

    def _push_stage(self, key: str) -> None:
        """With `hub:` in the plan, publish the completed stage's model as branch `stage-<key>` of the repo
        (card from the matrix so far). Done before the stage is marked complete, so a failed push is retried
        by --resume."""
        hub = self.plan.hub
        # The bare pretrained foundation (no task yet) is published with the first task, not on its own.
        if hub is None or not self.model.tasks or not self.accelerator.is_main_process:
            self.accelerator.wait_for_everyone()
            return
        from ..publish import push

        report = {**self.matrix.to_dict(), "plan": self.plan.to_dict()} if self.matrix.stages else None
        url = push(self.output_dir / "stages" / key, hub.repo_id, revision=f"stage-{key}", private=hub.private,
                   report=report, require_report=False, api=self.hub_api)
        self.log(f"pushed stage {key} to {hub.repo_id} (branch stage-{key}): {url}")
        self.accelerator.wait_for_everyone()

    def _prepare_task(self, index: int, stage: StagePlan) -> LearnedTask:
        spec = TaskSpec.from_dict(stage.task)
        with self.accelerator.main_process_first():
            data = build_stage_data(spec, stage.data, self.plan.processor, self.model.config, self.tokenizer,
                                    self.data_cache, self.plan.seed + index)
        outcomes = None
        if spec.kind == "prognosis":
            times = np.array([np.nan if t is None else t for t in data.train["event_time"]], dtype=float)
            events = np.array([-1 if e is None else e for e in data.train["event"]], dtype=float)
            known = np.isfinite(times) & (events >= 0)
            outcomes = (times[known], events[known])
        return LearnedTask(spec, stage, data, outcomes)

    def _run_stage(self, index: int, stage: StagePlan) -> None:
        key = _stage_key(index + 1, stage.name)
        task = self._prepare_task(index, stage)
        spec = task.spec
        kind = spec.kind
        metric, higher = main_metric(kind)
        if key in self.progress["completed"]:
            self.learned[spec.name] = task
            return
        self.log(f"stage {index + 1}: {spec.name} ({kind}, modalities {'+'.join(spec.modalities)})")
        started = time.time()
        set_seed(self.plan.seed + 1000 * (index + 1))  # the task's initial weights do not depend on earlier stages
        addition = self.model.add_task(spec.to_dict(), tokenizer=self.tokenizer)
        self.log(str(addition))
        if kind == "prognosis":
            self.model.task_heads[spec.name].set_time_bins(torch.as_tensor(task.train_outcomes[0]),
                                                           torch.as_tensor(task.train_outcomes[1]))
        result = StageResult()
        if kind != "zero_shot_classification" and (stage.train.max_steps or stage.train.epochs):
            result = train_stage(
                self.accelerator, self.model, spec, task.data, stage.train, self.output_dir / "checkpoints" / key,
                evaluate=lambda: evaluate_task(self.accelerator, self.model, spec, task.data, stage.eval,
                                               task.train_outcomes),
                metric_mode="max" if higher else "min", seed=self.plan.seed + index + 1, resume=self.resume,
                log=self.log,
            )
        self.model.freeze_all_but(None)
        self.model.eval()
        self.learned[spec.name] = task
        stage_index = self.matrix.add_stage(key, spec.name, kind, metric=metric, higher_is_better=higher,
                                            baseline=stage.eval.baseline)
        self._evaluate_all(stage_index)
        added = {"stem": addition.stem_parameters, "lora": addition.lora_parameters,
                 "head": addition.head_parameters, "total": addition.total_parameters, "bytes": addition.bytes}
        self.matrix.set_stage_cost(stage_index, params_added=added, seconds=time.time() - started)
        self.progress["curves"][spec.name] = {"steps": result.curve_steps, "loss": result.curve_loss}
        self.progress.setdefault("training", {})[spec.name] = result.to_dict()
        self._finish_stage(key)

    def _evaluate_all(self, stage_index: int) -> None:
        """Fill row `stage_index` of the matrix: every task learned so far on its validation split."""
        for name, task in self.learned.items():
            keep = task.stage.eval.overlays if name == list(self.learned)[-1] else 0
            metrics = evaluate_task(self.accelerator, self.model, task.spec, task.data, task.stage.eval,
                                    task.train_outcomes, keep_examples=keep)
            examples = metrics.pop("examples", [])
            if task.spec.kind == "prognosis":
                self.progress["survival"][name] = {k: metrics.pop(k) for k in ("risk", "time", "event")}
            self.overlays += examples
            self.matrix.record(stage_index, name, metrics["main"], details=_brief(metrics))
            self.log(f"  after {self.matrix.stages[stage_index].name}: {name} {self.matrix.task(name).metric} = "
                     f"{metrics['main']:.4f}")

    # ---------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._load_or_build_model()
        self._pretrain()
        self.model.eval()
        for index, stage in enumerate(self.plan.stages):
            self._run_stage(index, stage)
        report = self.matrix.to_dict()
        report["plan"] = self.plan.to_dict()
        report["pretrain"] = self.progress.get("pretrain")
        report["training"] = self.progress.get("training", {})
        if self.accelerator.is_main_process:
            write_report(self.output_dir / "report", report, curves=self.progress["curves"],
                         survival=self.progress["survival"], overlays=self.overlays)
            final = self.output_dir / "stages" / self.progress["completed"][-1]
            target = self.output_dir / "model"
            staging = self.output_dir / ".model.partial"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(final, staging)
            for name in ("report.json", "report.md"):
                shutil.copy2(self.output_dir / "report" / name, staging / name)
            from ..model_card import write_card

            write_card(staging)  # README.md: the model card, numbers from report.json
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        self.accelerator.wait_for_everyone()
        return report


def _brief(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers worth keeping in the report (no per-case lists)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, (list, np.ndarray)) or k in ("notes",)}
