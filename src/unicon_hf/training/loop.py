"""The training loop of one stage on Accelerate: one `prepare`, gradient accumulation, mixed precision,
periodic evaluation with early stopping, and atomic checkpoints that `--resume` continues from."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..errors import UserInputError
from ..modeling_unicon import clip_loss
from ..tasks import TaskSpec
from .data import StageData, StepIndexedDataset, collate
from .plan import TrainSpec

TRAIN_STATE_FILE = "train_state.json"
BEST_WEIGHTS_FILE = "best_task_weights.safetensors"


@dataclass
class StageResult:
    """What a stage's training produced (curves for the report, the stopping decision)."""

    steps: int = 0
    curve_steps: list[int] = field(default_factory=list)
    curve_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_values: list[float] = field(default_factory=list)
    best_value: float | None = None
    best_step: int | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def total_steps(train: TrainSpec, num_rows: int, world_size: int) -> int:
    if train.max_steps is not None:
        return int(train.max_steps)
    per_step = train.batch_size * train.gradient_accumulation_steps * world_size
    return int(train.epochs) * math.ceil(num_rows / per_step)


def task_loss(model, spec: TaskSpec | None, batch: dict[str, Any]) -> torch.Tensor:
    """The training loss of a batch for a task (None: CLIP contrastive pretraining)."""
    text = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    if spec is None:
        return clip_loss_across_processes(model, batch["pixel_values"], text)
    if spec.kind == "segmentation":
        return model(task=spec.name, pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
    if spec.kind == "prognosis":
        return model(task=spec.name, pixel_values=batch["pixel_values"], event_time=batch["event_time"],
                     event=batch["event"].float(), **text).loss
    raise UserInputError(f"task {spec.name!r} ({spec.kind}) has nothing to train; set train.max_steps: 0")


def clip_loss_across_processes(model, pixel_values, text) -> torch.Tensor:
    """CLIP loss over the whole step batch even when it is split across processes: embeddings are
    gathered with autograd (torch.distributed.nn), so 1 and N processes see the same negatives and the
    same loss, and DDP's gradient average equals the single-process gradient."""
    out = model(pixel_values=pixel_values, **text)
    images, texts = out.image_embeds, out.text_embeds
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        from torch.distributed.nn.functional import all_gather

        images, texts = torch.cat(all_gather(images)), torch.cat(all_gather(texts))
    scale = getattr(model, "module", model).logit_scale.exp()
    return clip_loss(images @ texts.T * scale)


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _improved(value: float, best: float | None, mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def train_stage(
    accelerator,
    model,
    spec: TaskSpec | None,
    data: StageData,
    train: TrainSpec,
    checkpoint_dir: Path,
    evaluate: Callable[[], dict[str, Any]] | None = None,
    metric_mode: str = "max",
    seed: int = 0,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> StageResult:
    """Train the parameters that require grad (the new task's parts, or everything for pretraining).

    Args:
        evaluate: returns the validation metrics (its "main" entry drives early stopping unless
            `train.early_stopping.metric` names another key).
        checkpoint_dir: where Accelerate state is saved every `train.checkpoint_every` steps (atomically:
            written to a temporary folder, then renamed); with `resume`, training continues from it.
    """
    trainable = _trainable(model)
    if not trainable:
        raise UserInputError("nothing to train: no parameter requires grad")
    # Batches are split across processes (Accelerator(split_batches=True)): every step sees the same
    # `batch_size` samples whatever the number of processes, so 1 and N processes train alike.
    if train.batch_size % accelerator.num_processes:
        raise UserInputError(f"train.batch_size {train.batch_size} must be a multiple of the {accelerator.num_processes} "
                             f"processes (each step's batch is split across them)")
    steps = total_steps(train, len(data.train), 1)
    samples = steps * train.batch_size * train.gradient_accumulation_steps
    dataset = StepIndexedDataset(data.train, data.train_transform, samples, seed)
    loader = DataLoader(dataset, batch_size=train.batch_size, shuffle=False, collate_fn=collate)
    optimizer = torch.optim.AdamW(trainable.values(), lr=train.learning_rate, weight_decay=train.weight_decay)
    scheduler = get_scheduler(train.scheduler, optimizer, num_warmup_steps=train.warmup_steps,
                              num_training_steps=steps)
    wrapped, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    result = StageResult()
    stopping = train.early_stopping
    bad_evals = 0
    start = 0
    latest = latest_checkpoint(checkpoint_dir)
    if resume and latest is not None:
        accelerator.load_state(str(latest))
        state = json.loads((latest / TRAIN_STATE_FILE).read_text())
        result = StageResult(**state["result"])
        bad_evals = state["bad_evals"]
        start = result.steps
        log(f"resumed from {latest} at step {start}/{steps}")
    if result.stopped_early or start >= steps:
        _restore_best(model, latest)
        accelerator.free_memory()
        return result

    batches = accelerator.skip_first_batches(loader, start * train.gradient_accumulation_steps) if start else loader
    progress = tqdm(total=steps, initial=start, desc=f"train {spec.name if spec else 'clip'}",
                    disable=not accelerator.is_main_process, dynamic_ncols=True)
    wrapped.train()
    step, micro, running = start, 0, []
    autocast = _autocast(accelerator, train.mixed_precision)
    for batch in batches:
        with accelerator.accumulate(wrapped), autocast:
            loss = task_loss(wrapped, spec, batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and train.max_grad_norm:
                accelerator.clip_grad_norm_(list(trainable.values()), train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        running.append(float(loss.detach()))
        micro += 1
        if micro % train.gradient_accumulation_steps:
            continue
        step += 1
        mean_loss = float(accelerator.reduce(torch.tensor(sum(running) / len(running), device=accelerator.device),
                                             reduction="mean"))
        running = []
        result.steps = step
        result.curve_steps.append(step)
        result.curve_loss.append(mean_loss)
        progress.update(1)
        progress.set_postfix(loss=f"{mean_loss:.4f}")
        stage_name = spec.name if spec else "clip"
        accelerator.log({f"{stage_name}/train_loss": mean_loss}, step=step)  # no-op unless trackers (log_with)
        if evaluate is not None and train.eval_every and (step % train.eval_every == 0 or step == steps):
            metrics = evaluate()
            named = stopping is not None and stopping.metric in metrics
            key = stopping.metric if named else "main"
            value = float(metrics[key])
            mode = stopping.mode if named else metric_mode
            result.eval_steps.append(step)
            result.eval_values.append(value)
            log(f"step {step}: validation {key} = {value:.4f}")
            accelerator.log({f"{stage_name}/validation_{key}": value}, step=step)
            if _improved(value, result.best_value, mode):
                result.best_value, result.best_step, bad_evals = value, step, 0
                _save_best(accelerator, model, checkpoint_dir)
            else:
                bad_evals += 1
            wrapped.train()
            if stopping and bad_evals >= stopping.patience:
                result.stopped_early = True
                log(f"early stop at step {step}: no improvement in {stopping.patience} evaluations")
        if (train.checkpoint_every and step % train.checkpoint_every == 0) or result.stopped_early or step == steps:
            save_checkpoint(accelerator, checkpoint_dir, step, {"result": result.to_dict(), "bad_evals": bad_evals})
        if result.stopped_early or step >= steps:
            break
    progress.close()
    _restore_best(model, latest_checkpoint(checkpoint_dir))
    accelerator.free_memory()
    return result


def _autocast(accelerator, mixed_precision: str):
    """Per-stage precision: bf16 autocast needs no loss scaling; fp16 needs the Accelerator's scaler."""
    if mixed_precision == "bf16":
        return torch.autocast(device_type=accelerator.device.type, dtype=torch.bfloat16)
    if mixed_precision == "fp16" and accelerator.mixed_precision != "fp16":
        raise UserInputError("train.mixed_precision fp16 needs `accelerate launch --mixed_precision fp16`; use bf16 "
                             "for per-stage mixed precision")
    return contextlib.nullcontext()


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    finished = sorted((p for p in Path(checkpoint_dir).glob("step_*") if p.is_dir() and (p / TRAIN_STATE_FILE).is_file()),
                      key=lambda p: int(p.name.split("_")[1]))
    return finished[-1] if finished else None


def save_checkpoint(accelerator, checkpoint_dir: Path, step: int, train_state: dict[str, Any]) -> Path:
    """Accelerate state + our loop state, written to a temporary folder and renamed into place; older
    checkpoints are removed only after the new one is complete, so a kill at any moment leaves one."""
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"step_{step:07d}"
    staging = checkpoint_dir / f".step_{step:07d}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        best = checkpoint_dir / BEST_WEIGHTS_FILE
        if best.is_file():
            shutil.copy2(best, staging / BEST_WEIGHTS_FILE)
        (staging / TRAIN_STATE_FILE).write_text(json.dumps(train_state))
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        for older in checkpoint_dir.glob("step_*"):
            if older != final:
                shutil.rmtree(older, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _save_best(accelerator, model, checkpoint_dir: Path) -> None:
    if accelerator.is_main_process:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        weights = {name: p.detach().cpu().contiguous() for name, p in _trainable(model).items()}
        staging = Path(checkpoint_dir) / f".{BEST_WEIGHTS_FILE}.partial"
        save_file(weights, staging)
        staging.replace(Path(checkpoint_dir) / BEST_WEIGHTS_FILE)
    accelerator.wait_for_everyone()


def _restore_best(model, checkpoint: Path | None) -> None:
    """Put back the trainable weights of the best evaluation (early stopping's model selection on the
    validation split)."""
    if checkpoint is None or not (checkpoint / BEST_WEIGHTS_FILE).is_file():
        return
    best = load_file(checkpoint / BEST_WEIGHTS_FILE)
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in best.items():
            parameters[name].copy_(value.to(parameters[name].device, parameters[name].dtype))
