"""`datasets.Dataset.set_transform` callables: rows of a loader's dataset -> model-ready tensors.

`TrainTransform`: the image processor's deterministic part on the whole volume (orientation, spacing,
windowing; no crop), then MONAI random augmentation: a `crop_size` crop centred on foreground or
background with `RandCropByPosNegLabeld` (plain random crop when there is no label), flips on every
axis and intensity scale/shift jitter. `EvalTransform`: the deterministic processor only, plus the
geometry record (JSON) so predictions can be inverted.

Each row becomes: `pixel_values` (C, D, H, W) float32, `labels` (D, H, W) int64 for a label volume or
(18,) float32 abnormality flags for CT-RATE, `event_time` float32 (NaN when unknown), `event` int64
(-1 when unknown), `text` (report, or the EHR record rewritten by `ehr_to_report`) and, with a
tokenizer, `input_ids` / `attention_mask` padded to `max_length` so batches stack.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
)

from ..errors import UserInputError
from ..image_processing_unicon import UniconImageProcessor
from .ehr_report import ehr_to_report

_VOLUME_COLUMNS = ("ct", "volume", "nifti")
# Columns that never go into the EHR text (volumes, outcomes, identifiers).
_NOT_EHR = {"ct", "pet", "label", "volume", "nifti", "id", "centre", "centre_id", "event", "event_time", "fold"}


class _RowTransform:
    """Shared row handling: find the volumes, build text and outcome fields, batch <-> rows."""

    def __init__(self, processor: UniconImageProcessor, *, text: str | None = "auto", tokenizer=None,
                 max_length: int = 256):
        if not isinstance(processor, UniconImageProcessor):
            raise UserInputError(f"the transform needs a UniconImageProcessor, got {type(processor).__name__}.")
        self.processor = processor
        self.text = text
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    def __call__(self, batch: Mapping[str, list]) -> dict[str, list]:
        """`set_transform` hands over a batch as column -> list; return the same shape."""
        columns = list(batch)
        rows = [{c: batch[c][i] for c in columns} for i in range(len(batch[columns[0]]))]
        outputs = [self.transform_row(row) for row in rows]
        return {key: [o[key] for o in outputs] for key in outputs[0]}

    def transform_row(self, row: Mapping[str, Any]) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def volumes(row: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        ct = next((row[c] for c in _VOLUME_COLUMNS if row.get(c) is not None), None)
        if ct is None:
            raise UserInputError(f"row {row.get('id', '?')} has no CT volume (a column named one of {_VOLUME_COLUMNS}).")
        return ct, row.get("pet"), row.get("label")

    def extras(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "event_time" in row or "event" in row:
            time, event = row.get("event_time"), row.get("event")
            out["event_time"] = torch.tensor(math.nan if time is None else float(time), dtype=torch.float32)
            out["event"] = torch.tensor(-1 if event is None else int(event), dtype=torch.int64)
        if row.get("label") is None and isinstance(row.get("labels"), Sequence):
            out["labels"] = torch.tensor(row["labels"], dtype=torch.float32)  # CT-RATE abnormality flags
        for key in ("id", "volume_name"):
            if key in row:
                out[key] = row[key]
        text = self.row_text(row)
        if text is not None:
            out["text"] = text
            if self.tokenizer is not None:
                tokens = self.tokenizer(text, padding="max_length", truncation=True, max_length=self.max_length,
                                        return_tensors="pt")
                out.update({k: v[0] for k, v in tokens.items()})
        return out

    def row_text(self, row: Mapping[str, Any]) -> str | None:
        if self.text is None:
            return None
        if self.text != "auto":
            if self.text not in row:
                raise UserInputError(f"text column {self.text!r} not in the dataset (columns: {sorted(row)}).")
            return str(row[self.text] or "")
        if "report" in row:
            return str(row["report"] or "")
        ehr = {k: v for k, v in row.items() if k not in _NOT_EHR and not hasattr(v, "dataobj")}
        return ehr_to_report(ehr) if ehr else None


class TrainTransform(_RowTransform):
    """Training rows: full-volume preprocessing, then MONAI random crop (pos/neg), flips, intensity jitter.

    Args:
        processor: the model's `UniconImageProcessor` (its `output_size` is ignored: crops come from the
            whole resampled volume).
        crop_size: (D, H, W) of the random crops (volumes smaller than this are padded first).
        pos, neg: relative frequency of crops centred on foreground / background voxels.
        flip_prob: probability of flipping along each of the three axes.
        intensity_scale, intensity_shift: ranges of the random intensity scale factor (x * (1 + f)) and
            offset (in normalised units), each applied with probability `intensity_prob`.
        seed: seed of the augmentation stream; each DataLoader worker reseeds from torch's per-worker seed,
            so workers do not repeat each other's crops.
        text, tokenizer, max_length: see the module docstring.
    """

    def __init__(self, processor: UniconImageProcessor, *, crop_size: Sequence[int] = (96, 96, 96), pos: float = 1.0,
                 neg: float = 1.0, flip_prob: float = 0.5, intensity_scale: float = 0.1, intensity_shift: float = 0.1,
                 intensity_prob: float = 0.5, seed: int = 0, text: str | None = "auto", tokenizer=None,
                 max_length: int = 256):
        super().__init__(processor, text=text, tokenizer=tokenizer, max_length=max_length)
        if len(crop_size) != 3 or any(int(s) < 1 for s in crop_size):
            raise UserInputError(f"crop_size must be 3 positive integers (D, H, W), got {crop_size!r}.")
        self.crop_size = [int(s) for s in crop_size]
        keys = ["pixel_values", "labels"]
        augment = [RandFlipd(keys=keys, prob=flip_prob, spatial_axis=axis) for axis in range(3)] + [
            RandScaleIntensityd(keys="pixel_values", factors=intensity_scale, prob=intensity_prob),
            RandShiftIntensityd(keys="pixel_values", offsets=intensity_shift, prob=intensity_prob),
        ]
        self.with_label = Compose([
            RandCropByPosNegLabeld(keys=keys, label_key="labels", spatial_size=self.crop_size, pos=pos, neg=neg,
                                   num_samples=1, allow_smaller=False),
            *augment,
        ])
        self.without_label = Compose([
            RandSpatialCropd(keys=["pixel_values"], roi_size=self.crop_size, random_size=False),
            *[RandFlipd(keys="pixel_values", prob=flip_prob, spatial_axis=axis) for axis in range(3)],
            *augment[3:],
        ])
        self.seed = int(seed)
        self._seeded_for: tuple | None = None

    def _sync_random_state(self) -> None:
        # The transform object is copied into every DataLoader worker with the same random state;
        # reseed from torch's per-worker seed (different per worker and per epoch) on first use there.
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), None if info is None else info.seed)
        if key != self._seeded_for:
            seed = self.seed if info is None else info.seed % (2**32)
            self.with_label.set_random_state(seed=seed)
            self.without_label.set_random_state(seed=seed + 1)
            self._seeded_for = key

    def reseed(self, seed: int) -> None:
        """Fix the augmentation stream, e.g. per sample from (run seed, sample position), so a resumed run
        draws the same crops as an uninterrupted one."""
        self.with_label.set_random_state(seed=seed % (2**32))
        self.without_label.set_random_state(seed=(seed + 1) % (2**32))
        info = torch.utils.data.get_worker_info()
        self._seeded_for = (os.getpid(), None if info is None else info.seed)

    def _pad_to_crop(self, array: np.ndarray, values: Sequence[float]) -> np.ndarray:
        spatial = array.shape[-3:]
        missing = [max(c - s, 0) for c, s in zip(self.crop_size, spatial)]
        if not any(missing):
            return array
        widths = [(m // 2, m - m // 2) for m in missing]
        if array.ndim == 3:
            return np.pad(array, widths, constant_values=values[0])
        return np.stack([np.pad(channel, widths, constant_values=v) for channel, v in zip(array, values)])

    def transform_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        self._sync_random_state()
        ct, pet, label = self.volumes(row)
        case = self.processor.preprocess_case(ct, pet, label, output_size=None)
        p = self.processor
        pads = [max(min(p.ct_pad_value, p.ct_window[1]), p.ct_window[0]) / p.ct_scale,
                max(min(p.pet_pad_value, p.pet_window[1]), p.pet_window[0]) / p.pet_scale]
        data = {"pixel_values": torch.from_numpy(self._pad_to_crop(case["pixel_values"], pads))}
        if case["labels"] is not None:
            data["labels"] = torch.from_numpy(self._pad_to_crop(case["labels"], [0]))[None]
            data = self.with_label(data)[0]
        else:
            data = self.without_label(data)
        out = {"pixel_values": _plain(data["pixel_values"]).float()}
        if "labels" in data:
            out["labels"] = _plain(data["labels"])[0].long()
        out.update(self.extras(row))
        return out


class EvalTransform(_RowTransform):
    """Evaluation rows: the processor's deterministic preprocessing only, plus `geometry` (a JSON string).

    Args:
        processor: the model's `UniconImageProcessor`.
        output_size: overrides the processor's output size (e.g. None/"full" for sliding-window inference).
        text, tokenizer, max_length: see the module docstring.
    """

    _DEFAULT = object()

    def __init__(self, processor: UniconImageProcessor, *, output_size: Any = _DEFAULT, text: str | None = "auto",
                 tokenizer=None, max_length: int = 256):
        super().__init__(processor, text=text, tokenizer=tokenizer, max_length=max_length)
        self.output_size = output_size

    def transform_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        ct, pet, label = self.volumes(row)
        kwargs = {} if self.output_size is self._DEFAULT else {"output_size": self.output_size}
        case = self.processor.preprocess_case(ct, pet, label, **kwargs)
        out = {"pixel_values": torch.from_numpy(case["pixel_values"])}
        if case["labels"] is not None:
            out["labels"] = torch.from_numpy(case["labels"])
        out["geometry"] = json.dumps(case["geometry"])
        out.update(self.extras(row))
        return out


def _plain(value) -> torch.Tensor:
    """MONAI returns MetaTensors; models and default_collate want plain tensors."""
    return value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)


__all__ = ["TrainTransform", "EvalTransform"]
