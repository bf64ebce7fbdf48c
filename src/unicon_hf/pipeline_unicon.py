"""transformers pipelines for UNICON models: `unicon-volume-segmentation`, `unicon-prognosis`,
`unicon-zero-shot-ct-classification`.

Each pipeline is a thin wrapper over `inference.py` (the code `unicon predict` runs) that returns the output
format of the closest Hugging Face task:

- volume segmentation -> image-segmentation's list of `{"label", "score", "mask"}` (one entry per class
  present; `score` is None, as for semantic segmentation). For a 3D input `mask` is a boolean array on the
  input CT's exact grid and each entry adds `volume_ml` and `label_image` (the label NIfTI, input shape and
  affine); for a 2D image (the Hub widget) `mask` is a PIL image of the same size, as in transformers.
- zero-shot CT classification -> zero-shot-image-classification's list of `{"label", "score"}`, best first.
- prognosis -> a dict: `risk`, `survival` (times, probability), `risk_group`.

Inputs: a CT (NIfTI path, nibabel image, DICOM folder, or a PIL/PNG 2D image for segmentation and zero-shot),
or a dict `{"ct": ..., "pet": ..., "ehr": {...} or "text": "..."}`.

`save_pipelines(model_dir)` writes the repo side: `custom_pipelines` in config.json and this file with its
flat sibling modules, so that `pipeline("unicon-volume-segmentation", model="org/repo", trust_remote_code=True)`
works from the Hub or an offline cache without unicon_hf installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoModel, Pipeline
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines import PIPELINE_REGISTRY

from .errors import UserInputError
from .inference import Prediction, load_processor, predict

SEGMENTATION_TASK = "unicon-volume-segmentation"
PROGNOSIS_TASK = "unicon-prognosis"
ZERO_SHOT_TASK = "unicon-zero-shot-ct-classification"


class _UniconPipeline(Pipeline):
    """Shared parts: the UNICON task to run (`task_name`, defaulting to the model's only task of this kind),
    the image processor saved with the model, and the call into `inference.predict`."""

    kind: str = ""
    # The processor and tokenizer are UNICON's own (or none); transformers' Auto resolution is not needed.
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, model, task_name: str | None = None, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(model=model, image_processor=image_processor, tokenizer=tokenizer, **kwargs)
        self.task_name = task_name or self._default_task()
        self.model.task_spec(self.task_name)  # unknown task -> clear error now, not at the first call
        if self.image_processor is None:
            self.image_processor, self.notes = load_processor(self.model, self.task_name)
        else:
            self.notes = []

    def _default_task(self) -> str:
        tasks = [name for name in self.model.tasks if self.model.task_spec(name).kind == self.kind]
        if len(tasks) != 1:
            raise UserInputError(
                f"the model has {len(tasks)} {self.kind} task(s) {tasks}; choose one with task_name=... "
                f"(all tasks: {self.model.tasks})"
            )
        return tasks[0]

    def _sanitize_parameters(self, **kwargs):
        known = {"overlap", "sw_batch_size", "probabilities", "labels", "dtype", "task_name"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise UserInputError(f"unexpected pipeline argument(s) {unknown}; valid: {sorted(known)}")
        return {}, kwargs, {}

    def preprocess(self, inputs: Any) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            unknown = sorted(set(inputs) - {"ct", "pet", "ehr", "text"})
            if unknown:
                raise UserInputError(f"input dict has unknown key(s) {unknown}; use 'ct', 'pet', 'ehr', 'text'")
            return dict(inputs)
        return {"ct": inputs}

    def _forward(self, model_inputs: dict[str, Any], task_name: str | None = None, **options) -> dict[str, Any]:
        prediction = predict(
            self.model, task_name or self.task_name, model_inputs.get("ct"), pet=model_inputs.get("pet"),
            ehr=model_inputs.get("ehr"), text=model_inputs.get("text"), processor=self.image_processor,
            tokenizer=self.tokenizer, device=self.device, progress=False, **options,
        )
        return {"prediction": prediction}

    def postprocess(self, model_outputs: dict[str, Any]):
        return self.format(model_outputs["prediction"])

    def format(self, prediction: Prediction):
        raise NotImplementedError


class UniconVolumeSegmentationPipeline(_UniconPipeline):
    """3D segmentation (sliding window, labels on the input's exact grid); a 2D image is one slice."""

    kind = "segmentation"

    def format(self, prediction: Prediction) -> list[dict[str, Any]]:
        classes = prediction.summary["labels"]
        if prediction.label_array is not None:  # 2D input: PIL masks, like transformers' image-segmentation
            from PIL import Image

            labels = prediction.label_array
            return [{"label": name, "score": None, "mask": Image.fromarray(((labels == i) * 255).astype(np.uint8))}
                    for i, name in enumerate(classes) if (labels == i).any()]
        labels = np.asarray(prediction.label_image.dataobj)
        voxel_ml = abs(float(np.linalg.det(prediction.label_image.affine[:3, :3]))) / 1000.0
        results = []
        for i, name in enumerate(classes):
            mask = labels == i
            if mask.any():
                results.append({"label": name, "score": None, "mask": mask, "volume_ml": float(mask.sum() * voxel_ml),
                                "label_image": prediction.label_image})
        return results


class UniconZeroShotCTClassificationPipeline(_UniconPipeline):
    """Per-finding P(present) for a chest CT (or one 2D slice); `labels=[...]` scores other findings."""

    kind = "zero_shot_classification"

    def format(self, prediction: Prediction) -> list[dict[str, Any]]:
        return [dict(item) for item in prediction.summary["ranked"]]


class UniconPrognosisPipeline(_UniconPipeline):
    """Risk score, survival curve and risk group from a CT (+PET) and the clinical record."""

    kind = "prognosis"

    def format(self, prediction: Prediction) -> dict[str, Any]:
        keys = ("risk", "survival", "risk_group", "risk_group_rule", "median_event_free_time", "report_text")
        return {key: prediction.summary[key] for key in keys if key in prediction.summary}


PIPELINES = {
    SEGMENTATION_TASK: UniconVolumeSegmentationPipeline,
    PROGNOSIS_TASK: UniconPrognosisPipeline,
    ZERO_SHOT_TASK: UniconZeroShotCTClassificationPipeline,
}


def register_pipelines() -> None:
    """Register the three pipelines with transformers' `pipeline(...)` in this process."""
    for task, cls in PIPELINES.items():
        if task not in PIPELINE_REGISTRY.get_supported_tasks():
            PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=cls, pt_model=AutoModel, type="multimodal")


def save_pipelines(model_dir: str | os.PathLike, kinds: list[str] | None = None) -> dict[str, Any]:
    """Make a saved model folder carry the pipelines for the task kinds it has (or `kinds`).

    Writes `custom_pipelines` into its config.json and copies this module and the flat modules it imports next
    to the weights. With one pipeline the task can be left out: `pipeline(model=repo, trust_remote_code=True)`.
    Returns the `custom_pipelines` entry written.
    """
    model_dir = Path(model_dir)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise UserInputError(f"{model_dir} has no config.json; save the model there first (save_model_repo)")
    config = json.loads(config_file.read_text())
    if kinds is None:
        kinds = sorted({spec["kind"] for spec in config.get("tasks", {}).values()})
    entries = {}
    for task, cls in PIPELINES.items():
        if cls.kind in kinds:
            entries[task] = {"impl": f"{Path(__file__).stem}.{cls.__name__}", "pt": ["AutoModel"], "tf": [],
                             "type": "multimodal"}
    if not entries:
        raise UserInputError(f"{model_dir}: no task of kind {kinds}; nothing to add a pipeline for")
    custom_object_save(UniconVolumeSegmentationPipeline, model_dir)
    config["custom_pipelines"] = entries
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return entries


register_pipelines()
