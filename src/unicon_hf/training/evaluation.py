"""Evaluate one task on its validation split, sharded over processes with `gather_for_metrics`.

Returns the task kind's metrics (see `training.metrics`) plus what the report plots need (risks for
Kaplan-Meier curves, a few volumes for segmentation overlays).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
from accelerate.data_loader import prepare_data_loader
from monai.inferers import sliding_window_inference
from torch.utils.data import DataLoader

from ..tasks import TaskSpec
from .data import RowDataset, StageData, collate
from .metrics import SegmentationMetrics, auroc, prognosis_metrics


def _model_inputs(batch: dict[str, Any], keys=("input_ids", "attention_mask", "token_type_ids")) -> dict[str, Any]:
    return {key: batch[key] for key in keys if key in batch}


def survival_on_grid(survival: np.ndarray, time_bins: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Step-interpolate survival given at (0, t1..tK) onto `times` (right-continuous)."""
    edges = np.concatenate([[0.0], time_bins])
    index = np.searchsorted(edges, times, side="right") - 1
    return survival[:, np.clip(index, 0, survival.shape[1] - 1)]


@torch.no_grad()
def evaluate_task(accelerator, model, spec: TaskSpec | None, data: StageData, eval_settings=None,
                  train_outcomes: tuple[np.ndarray, np.ndarray] | None = None, keep_examples: int = 0) -> dict[str, Any]:
    """Metrics of `spec` (None: the CLIP foundation, scored by validation contrastive loss) on the
    stage's validation split. `model` is the unwrapped model."""
    was_training = model.training
    model.eval()
    loader = DataLoader(RowDataset(data.validation, data.eval_transform), batch_size=1 if spec is None or
                        spec.kind == "segmentation" else max(getattr(eval_settings, "batch_size", 1), 1),
                        collate_fn=collate)
    # Evaluation shards whole cases over processes (one case per process per step, volumes of any size),
    # whatever the training's batch splitting; gather_for_metrics drops the padding duplicates.
    loader = prepare_data_loader(loader, accelerator.device, num_processes=accelerator.num_processes,
                                 process_index=accelerator.process_index, split_batches=False, put_on_device=True)
    try:
        if spec is None:
            return _evaluate_clip(accelerator, model, loader)
        if spec.kind == "zero_shot_classification":
            return _evaluate_zero_shot(accelerator, model, spec, loader, data.label_names)
        if spec.kind == "prognosis":
            return _evaluate_prognosis(accelerator, model, spec, loader, train_outcomes)
        return _evaluate_segmentation(accelerator, model, spec, loader, eval_settings, keep_examples)
    finally:
        model.train(was_training)


def _evaluate_clip(accelerator, model, loader) -> dict[str, Any]:
    image_embeds, text_embeds = [], []
    for batch in loader:
        out = model(pixel_values=batch["pixel_values"], **_model_inputs(batch))
        image_embeds.append(accelerator.gather_for_metrics(out.image_embeds))
        text_embeds.append(accelerator.gather_for_metrics(out.text_embeds))
    images, texts = torch.cat(image_embeds), torch.cat(text_embeds)
    logits = images @ texts.T * model.logit_scale.exp()
    from ..modeling_unicon import clip_loss

    loss = float(clip_loss(logits))
    retrieval = float((logits.argmax(dim=1) == torch.arange(len(logits))).float().mean())
    return {"loss": loss, "image_to_text_top1": retrieval, "main": loss, "num_cases": len(logits)}


def _evaluate_zero_shot(accelerator, model, spec: TaskSpec, loader, label_names) -> dict[str, Any]:
    probabilities, targets = [], []
    columns = [label_names.index(label) for label in spec.labels] if label_names else None
    for batch in loader:
        out = model(task=spec.name, pixel_values=batch["pixel_values"])
        probabilities.append(accelerator.gather_for_metrics(out.probabilities))
        labels = batch["labels"][:, columns] if columns is not None else batch["labels"]
        targets.append(accelerator.gather_for_metrics(labels))
    result = auroc(torch.cat(probabilities).float().cpu().numpy(), torch.cat(targets).cpu().numpy(), spec.labels)
    result["main"] = result["auroc_macro"]
    return result


def _evaluate_prognosis(accelerator, model, spec: TaskSpec, loader, train_outcomes) -> dict[str, Any]:
    risks, survivals, times, events = [], [], [], []
    for batch in loader:
        out = model(task=spec.name, pixel_values=batch["pixel_values"], **_model_inputs(batch))
        risks.append(accelerator.gather_for_metrics(out.risk.float()))
        survivals.append(accelerator.gather_for_metrics(out.survival.float()))
        times.append(accelerator.gather_for_metrics(batch["event_time"]))
        events.append(accelerator.gather_for_metrics(batch["event"]))
    risk = torch.cat(risks).cpu().numpy()
    time = torch.cat(times).cpu().numpy()
    event = torch.cat(events).cpu().numpy()
    known = np.isfinite(time) & (event >= 0)
    risk, time, event = risk[known], time[known], event[known]
    survival = torch.cat(survivals).cpu().numpy()[known]
    bins = model.task_heads[spec.name].time_bins.cpu().numpy()
    from .metrics import default_time_grid

    train_time, train_event = train_outcomes if train_outcomes is not None else (None, None)
    grid = default_time_grid(time, event)
    grid = grid[grid < time.max()]
    result = prognosis_metrics(risk, time, event, survival=survival_on_grid(survival, bins, grid), times=grid,
                               train_time=train_time, train_event=train_event)
    result["main"] = result["c_index"]
    result["risk"], result["time"], result["event"] = risk.tolist(), time.tolist(), event.tolist()
    return result


def _evaluate_segmentation(accelerator, model, spec: TaskSpec, loader, eval_settings, keep_examples) -> dict[str, Any]:
    metric = SegmentationMetrics(spec.labels[1:], hd95=getattr(eval_settings, "hd95", True))
    overlap = getattr(eval_settings, "sliding_window_overlap", 0.25)
    windows = getattr(eval_settings, "sw_batch_size", 1)
    roi = spec.input_size or [96, 96, 96]
    examples = []

    def predictor(window):
        return model(task=spec.name, pixel_values=window).logits

    for batch in loader:
        pixel_values = batch["pixel_values"]
        logits = sliding_window_inference(pixel_values, roi, windows, predictor, overlap=overlap, mode="gaussian")
        prediction = logits.argmax(dim=1)
        geometry = json.loads(batch["geometry"][0])
        spacing = geometry.get("target_spacing") or geometry.get("spacing")
        metric.update(prediction.cpu(), batch["labels"].cpu(), _model_spacing(geometry, spacing))
        if accelerator.is_main_process and len(examples) < keep_examples:
            examples.append({"name": f"{spec.name}_{batch.get('id', ['case'])[0]}",
                             "image": pixel_values[0, -1].float().cpu().numpy(),
                             "label": batch["labels"][0].cpu().numpy(), "prediction": prediction[0].cpu().numpy(),
                             "class_names": spec.labels[1:]})  # foreground names, by label value
    states = accelerator.gather_for_metrics([metric.state()], use_gather_object=True)
    merged = SegmentationMetrics(spec.labels[1:], hd95=metric.with_hd95)
    for state in states:
        merged.merge(state)
    result = merged.compute()
    result["main"] = result["dice_mean"]
    result["examples"] = examples
    return result


def _model_spacing(geometry: dict[str, Any], spacing) -> list[float] | None:
    """Voxel spacing in model axis order (D, H, W) from a geometry record, when it says."""
    if isinstance(geometry.get("model_spacing"), list):
        return [float(v) for v in geometry["model_spacing"]]
    if isinstance(spacing, list) and len(spacing) == 3 and all(isinstance(v, (int, float)) and not math.isnan(v) for v in spacing):
        i, j, k = spacing  # canonical (i, j, k) -> model (D, H, W) = (k, i, j)
        return [float(k), float(i), float(j)]
    return None
