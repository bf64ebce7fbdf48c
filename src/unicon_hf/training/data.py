"""Data for a continual stage: datasets from a plan's `data` section, the transforms each task kind needs,
and a step-indexed training stream that a resumed run replays exactly."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.loaders import load_ct_rate, load_hecktor, load_nifti_folder
from ..data.transforms import EvalTransform, TrainTransform
from ..errors import UserInputError
from ..image_processing_unicon import UniconImageProcessor
from ..tasks import TaskSpec
from .plan import DataSpec


@dataclass
class StageData:
    """Raw (untransformed) splits of a stage and how to turn rows into model inputs."""

    train: Any
    validation: Any
    train_transform: Any
    eval_transform: Any
    label_names: list[str] | None = None


def phantom_folder(spec: DataSpec, cache_root: Path) -> Path:
    """Write (once) the synthetic phantoms a plan asks for and return their folder.

    Folders are keyed by the generator settings and written beside their destination then renamed, so
    an interrupted run never leaves half a dataset that a later run would trust.
    """
    from ..data.phantoms import write_ct_rate_phantoms, write_hecktor_phantoms

    phantoms = spec.phantoms
    settings = {"kind": spec.kind, "n": phantoms.n, "seed": phantoms.seed, "shape": phantoms.shape,
                "spacing": phantoms.spacing}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    folder = cache_root / f"{spec.kind}-phantoms-{key}"
    if folder.is_dir():
        return folder
    staging = cache_root / f".{folder.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    kwargs = {"n": phantoms.n, "seed": phantoms.seed, "progress": False}
    if phantoms.shape:
        kwargs["shape"] = tuple(phantoms.shape)
    if phantoms.spacing:
        kwargs["spacing"] = tuple(phantoms.spacing)
    writer = write_hecktor_phantoms if spec.kind == "hecktor" else write_ct_rate_phantoms
    writer(staging, **kwargs)
    staging.rename(folder)
    return folder


def load_splits(spec: DataSpec, cache_root: Path, seed: int):
    """`DatasetDict` with train/validation splits for a plan's data section."""
    root = phantom_folder(spec, cache_root) if spec.phantoms is not None else Path(spec.root)
    if spec.kind == "hecktor":
        kwargs = {"validation_fraction": spec.val_fraction or 0.2, "seed": seed, "check": "header", "progress": False}
        if spec.fold is not None:
            kwargs["validation_fold"] = spec.fold
        if spec.clinical_csv:
            kwargs["clinical_csv"] = spec.clinical_csv
        splits = load_hecktor(root, **kwargs)
    elif spec.kind == "ct-rate":
        splits = load_ct_rate(root, check="header", progress=False)
    else:
        splits = load_nifti_folder(root, check="header", progress=False)
    if "validation" not in splits or "train" not in splits:
        raise UserInputError(f"data at {root} has splits {list(splits)}; a stage needs 'train' and 'validation'")
    if spec.max_cases:
        splits = {name: split.select(range(min(spec.max_cases, len(split)))) for name, split in splits.items()}
    return splits, getattr(splits, "label_names", None)


def foundation_size(model_config) -> list[int]:
    """(D, H, W) the foundation patch embedding and CLIP projection were built for."""
    vision = model_config.vision_config
    return [vision.num_frames, *vision.image_size]


def build_stage_data(spec: TaskSpec | None, data: DataSpec, processor_settings: dict, model_config, tokenizer,
                     cache_root: Path, seed: int) -> StageData:
    """Datasets and transforms for one task (`spec=None`: the CLIP pretraining stage).

    - CLIP pretraining, zero-shot and prognosis read whole volumes at the foundation's input size
      (deterministic: flips would contradict left/right statements in reports);
    - segmentation trains on random crops of the task's `input_size` (MONAI pos/neg sampling, flips,
      intensity jitter) and is evaluated on whole volumes by sliding window.
    """
    splits, label_names = load_splits(data, cache_root, seed)
    train, validation = splits["train"], splits["validation"]
    if spec is not None and "pet" not in spec.modalities and "pet" in train.column_names:
        train, validation = train.remove_columns("pet"), validation.remove_columns("pet")
    if spec is not None and spec.kind == "segmentation":
        full = UniconImageProcessor(**{**processor_settings, "output_size": None})
        crop = spec.input_size or [96, 96, 96]
        return StageData(train, validation,
                         TrainTransform(full, crop_size=crop, text=None, seed=seed),
                         EvalTransform(full, output_size=None, text=None), label_names)
    processor = UniconImageProcessor(**{**processor_settings, "output_size": foundation_size(model_config)})
    needs_text = spec is None or (spec.kind == "prognosis" and "text" in spec.head.get("inputs", ["image", "text"]))
    text = "auto" if needs_text else None
    max_length = model_config.text_config.max_position_embeddings
    transform = EvalTransform(processor, text=text, tokenizer=tokenizer if needs_text else None, max_length=max_length)
    return StageData(train, validation, transform, transform, label_names)


class StepIndexedDataset(Dataset):
    """The training stream of a run: item `p` is the p-th sample drawn, `rows[permutation_e[p % n]]` for
    epoch `e = p // n`, with its augmentation seeded by `(seed, p)`.

    Because every item is a pure function of its position, a run resumed at step s (which skips the
    first s batches) sees exactly the samples and crops an uninterrupted run would have seen.
    """

    def __init__(self, rows, transform, total: int, seed: int):
        if len(rows) == 0:
            raise UserInputError("the training split is empty")
        self.rows, self.transform, self.total, self.seed = rows, transform, int(total), int(seed)
        self._permutations: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, position: int) -> dict[str, Any]:
        epoch, offset = divmod(int(position), len(self.rows))
        if epoch not in self._permutations:
            self._permutations = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))}
        if hasattr(self.transform, "reseed"):
            self.transform.reseed(self.seed * 1_000_003 + int(position))
        return self.transform.transform_row(self.rows[int(self._permutations[epoch][offset])])


class RowDataset(Dataset):
    """Rows of a split through a deterministic transform (evaluation)."""

    def __init__(self, rows, transform):
        self.rows, self.transform = rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.transform.transform_row(self.rows[int(index)])
        item["index"] = int(index)
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings (ids, texts, geometry records) as lists."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch
