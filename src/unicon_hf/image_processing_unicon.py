"""`UniconImageProcessor`: CT (+ PET, + label) NIfTI volumes -> model arrays, and model predictions back.

Saved as `preprocessor_config.json` next to the weights, so a model always travels with the exact
preprocessing it was trained with (silent spacing/orientation/normalisation mismatch is the most common
way 3D models fail in practice).
"""

from __future__ import annotations

import json
from typing import Any, Sequence, TypedDict

import nibabel as nib
import numpy as np
import torch
from monai.transforms import BorderPad, SpatialCrop
from transformers.image_processing_base import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

# Flat, single-level import: Hub remote code copies only such modules next to the weights.
from .volume_geometry import (
    MODEL_AXES,
    check_label_grid,
    check_same_space,
    crop_pad_plan,
    model_affine,
    read_volume,
    reorient,
    resample_axes,
    resample_onto,
    spacing_of,
    target_grid,
    undo_crop_pad,
    undo_reorient,
)
from .errors import UserInputError

_KEEP = object()  # sentinel: "use the processor's own output_size"
GEOMETRY_FORMAT = "unicon-geometry/1"
_AXIS_PAIRS = ("LR", "AP", "SI")


class UniconImageProcessorKwargs(TypedDict, total=False):
    """Fields accepted by `UniconImageProcessor` (also as `from_pretrained` overrides)."""

    target_spacing: list[float] | None
    axcodes: str
    ct_window: list[float]
    ct_scale: float
    pet_window: list[float]
    pet_scale: float
    output_size: list[int] | str | None
    ct_pad_value: float
    pet_pad_value: float
    pet_ct_tolerance_mm: float


class UniconImageProcessor(BaseImageProcessor):
    r"""Turns CT (and optional PET and label) volumes into `pixel_values` (B, C, D, H, W) and back.

    Steps, each recorded in a JSON-serialisable geometry record per case: reorientation to `axcodes`,
    resampling to `target_spacing` (images linear, labels nearest; PET directly onto the CT's resampled
    grid), centred crop/pad to `output_size`, intensity windowing, and the (i, j, k) -> (D, H, W) =
    (k, i, j) transpose. `invert_label` / `invert_map` undo all of it and return a NIfTI image with the
    original file's exact shape and affine.

    Exactness of the label round trip (`invert_label(forward(label)) == label`, every voxel): guaranteed
    when, on every axis, the target spacing is no coarser than the native spacing (equal spacing is not
    resampled at all) and the crop keeps the whole field of view (e.g. `output_size=None`). With a coarser
    target grid information is lost by construction; then the converse holds instead: a prediction made
    on the model grid survives `invert_label` followed by a forward pass unchanged (on axes where the
    target is coarser).

    Args:
        target_spacing (`list[float]` or `None`, defaults to `[0.75, 0.75, 1.5]`): voxel spacing in mm along
            the canonical voxel axes (i, j, k), i.e. along the directions of `axcodes` (x, y, z for "RAS" /
            "LPS"); CT-CLIP's spacing by default. `None` keeps the native spacing.
        axcodes (`str`, defaults to `"RAS"`): canonical orientation, one letter from each of L/R, A/P, S/I.
        ct_window (`list[float]`, defaults to `[-1000, 1000]`): HU range CT is clipped to.
        ct_scale (`float`, defaults to 1000.0): CT values are divided by this after clipping (CT-CLIP: [-1, 1]).
        pet_window (`list[float]`, defaults to `[0, 20]`): SUV range PET is clipped to (PET must be in SUV).
        pet_scale (`float`, defaults to 10.0): PET values are divided by this after clipping.
        output_size (`list[int]`, `"full"` or `None`, defaults to `[240, 480, 480]`): model array size
            (D, H, W) reached by centred crop/pad; `None`/`"full"` keeps the whole resampled volume
            (sliding-window inference, random-crop training).
        ct_pad_value (`float`, defaults to -1000.0): HU value of padded CT voxels (air).
        pet_pad_value (`float`, defaults to 0.0): SUV value of padded PET voxels.
        pet_ct_tolerance_mm (`float`, defaults to 5.0): largest allowed offset (mm) between the CT and PET
            world bounding boxes; beyond it the pair is rejected as not co-registered.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = UniconImageProcessorKwargs

    target_spacing = [0.75, 0.75, 1.5]
    axcodes = "RAS"
    ct_window = [-1000.0, 1000.0]
    ct_scale = 1000.0
    pet_window = [0.0, 20.0]
    pet_scale = 10.0
    output_size = [240, 480, 480]
    ct_pad_value = -1000.0
    pet_pad_value = 0.0
    pet_ct_tolerance_mm = 5.0

    def __init__(
        self,
        target_spacing: Sequence[float] | None = (0.75, 0.75, 1.5),
        axcodes: str = "RAS",
        ct_window: Sequence[float] = (-1000.0, 1000.0),
        ct_scale: float = 1000.0,
        pet_window: Sequence[float] = (0.0, 20.0),
        pet_scale: float = 10.0,
        output_size: Sequence[int] | str | None = (240, 480, 480),
        ct_pad_value: float = -1000.0,
        pet_pad_value: float = 0.0,
        pet_ct_tolerance_mm: float = 5.0,
        **kwargs,
    ):
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        self.target_spacing = None if target_spacing is None else [float(v) for v in target_spacing]
        self.axcodes = str(axcodes).upper()
        self.ct_window = [float(v) for v in ct_window]
        self.ct_scale = float(ct_scale)
        self.pet_window = [float(v) for v in pet_window]
        self.pet_scale = float(pet_scale)
        self.output_size = self._normalise_size(output_size)
        self.ct_pad_value = float(ct_pad_value)
        self.pet_pad_value = float(pet_pad_value)
        self.pet_ct_tolerance_mm = float(pet_ct_tolerance_mm)
        self._validate()

    # ------------------------------------------------------------------------------------------ config
    @staticmethod
    def _normalise_size(size):
        if size is None or (isinstance(size, str) and size.lower() == "full"):
            return None
        if isinstance(size, str) or len(size) != 3 or any(int(s) < 1 for s in size):
            raise UserInputError(f"output_size must be (D, H, W) positive integers, 'full' or None; got {size!r}.")
        return [int(s) for s in size]

    def _validate(self):
        if self.target_spacing is not None and (
            len(self.target_spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in self.target_spacing)
        ):
            raise UserInputError(f"target_spacing must be 3 positive numbers (mm) or None; got {self.target_spacing}.")
        codes = self.axcodes
        pair_of = [next((i for i, pair in enumerate(_AXIS_PAIRS) if c in pair), -1) for c in codes]
        if len(codes) != 3 or sorted(pair_of) != [0, 1, 2]:
            raise UserInputError(f"axcodes must be one letter from each of L/R, A/P, S/I (e.g. 'RAS'); got {codes!r}.")
        for name in ("ct_window", "pet_window"):
            low, high = getattr(self, name)
            if not low < high:
                raise UserInputError(f"{name} must be [low, high] with low < high; got {getattr(self, name)}.")
        for name in ("ct_scale", "pet_scale", "pet_ct_tolerance_mm"):
            if not getattr(self, name) > 0:
                raise UserInputError(f"{name} must be positive; got {getattr(self, name)}.")

    # ------------------------------------------------------------------------------------------ forward
    def __call__(self, ct, pet=None, label=None, **kwargs) -> BatchFeature:
        """Same as `preprocess`."""
        return self.preprocess(ct, pet=pet, label=label, **kwargs)

    def preprocess(self, ct, pet=None, label=None, *, output_size: Any = _KEEP,
                   return_tensors: str | None = "pt") -> BatchFeature:
        """Process one case or a list of cases.

        Args:
            ct: a NIfTI path, nibabel image, `(array, affine)` tuple, or a list of those (a batch).
            pet: PET volume(s) in SUV, same structure as `ct`, or None.
            label: label volume(s) on the CT's grid, same structure as `ct`, or None.
            output_size: overrides the processor's `output_size` for this call (`None`/"full" keeps all).
            return_tensors: "pt" for torch tensors, None for numpy arrays.

        Returns:
            BatchFeature with `pixel_values` (B, C, D, H, W) float32, `labels` (B, D, H, W) int64 when labels
            are given, and `geometry`: one JSON-serialisable record per case for `invert_label`/`invert_map`.
        """
        cts, pets, labels = self._as_batch(ct), self._as_batch(pet), self._as_batch(label)
        n = len(cts)
        for name, items in (("pet", pets), ("label", labels)):
            if items is not None and len(items) != n:
                raise UserInputError(f"got {n} CT volume(s) but {len(items)} {name} volume(s); give one per CT.")
        cases = [
            self.preprocess_case(cts[i], None if pets is None else pets[i], None if labels is None else labels[i],
                                 output_size=output_size)
            for i in range(n)
        ]
        shapes = {c["pixel_values"].shape for c in cases}
        if len(shapes) > 1:
            raise UserInputError(
                f"cases have different model shapes {sorted(shapes)} (output_size is None/'full'); "
                "set output_size or process one case per call."
            )
        data = {"pixel_values": np.stack([c["pixel_values"] for c in cases])}
        if labels is not None:
            data["labels"] = np.stack([c["labels"] for c in cases])
        data["geometry"] = [c["geometry"] for c in cases]
        return BatchFeature(data=data, tensor_type=return_tensors, skip_tensor_conversion=["geometry"])

    @staticmethod
    def _as_batch(value):
        if value is None:
            return None
        if isinstance(value, list):
            return value
        return [value]

    def preprocess_case(self, ct, pet=None, label=None, *, output_size: Any = _KEEP) -> dict:
        """Process one case; returns numpy `pixel_values` (C, D, H, W), `labels` (D, H, W) or None, `geometry`."""
        size = self.output_size if output_size is _KEEP else self._normalise_size(output_size)
        ct_volume = read_volume(ct, "CT")
        pet_volume = read_volume(pet, "PET") if pet is not None else None
        label_volume = read_volume(label, "label", is_label=True) if label is not None else None
        if pet_volume is not None:
            check_same_space(ct_volume, pet_volume, self.pet_ct_tolerance_mm)
        if label_volume is not None:
            check_label_grid(ct_volume, label_volume)

        array, affine, orientation = reorient(ct_volume.array, ct_volume.affine, self.axcodes)
        shape, resampled_affine, scale, shift = target_grid(array.shape, affine, self.target_spacing)
        channels = [resample_axes(array, shape, scale, shift, nearest=False)]
        pad_values = [self.ct_pad_value]
        if pet_volume is not None:
            # PET goes straight from its own grid to the final one: one interpolation, not two.
            channels.append(resample_onto(pet_volume, shape, resampled_affine, self.axcodes))
            pad_values.append(self.pet_pad_value)
        canonical_size = None if size is None else [size[1], size[2], size[0]]
        plan = crop_pad_plan(shape, canonical_size)
        windows = [(self.ct_window, self.ct_scale), (self.pet_window, self.pet_scale)]
        channels = [self._window(self._crop_pad(c, plan, v), *w) for c, v, w in zip(channels, pad_values, windows)]
        labels = None
        if label_volume is not None:
            label_array, _, _ = reorient(label_volume.array, label_volume.affine, self.axcodes)
            label_array = resample_axes(label_array, shape, scale, shift, nearest=True)
            labels = self._crop_pad(label_array, plan, 0).transpose(MODEL_AXES)
            labels = np.ascontiguousarray(labels, dtype=np.int64)
        pixel_values = np.stack([c.transpose(MODEL_AXES) for c in channels])
        record = {
            "format": GEOMETRY_FORMAT,
            "files": {"ct": ct_volume.name, "pet": pet_volume.name if pet_volume else None,
                      "label": label_volume.name if label_volume else None},
            "original_shape": list(ct_volume.array.shape),
            "original_affine": ct_volume.affine.tolist(),
            "original_axcodes": "".join(nib.aff2axcodes(ct_volume.affine)),
            "label_dtype": label_volume.dtype if label_volume else None,
            "axcodes": self.axcodes,
            "orientation": orientation,
            "reoriented_shape": list(array.shape),
            "reoriented_affine": affine.tolist(),
            "native_spacing": spacing_of(affine).tolist(),
            "target_spacing": spacing_of(resampled_affine).tolist(),
            "resampled_shape": [int(s) for s in shape],
            "resampled_affine": resampled_affine.tolist(),
            "scale": [float(s) for s in scale],
            "shift": [float(s) for s in shift],
            "crop_pad": plan,
            "model_axes": list(MODEL_AXES),
            "model_shape": list(pixel_values.shape[1:]),
            "model_affine": model_affine(resampled_affine, plan).tolist(),
        }
        return {"pixel_values": pixel_values, "labels": labels, "geometry": record}

    @staticmethod
    def _crop_pad(array: np.ndarray, plan: dict, value: float) -> np.ndarray:
        borders = [v for pair in zip(plan["pad_before"], plan["pad_after"]) for v in pair]
        end = [start + min(size, n) for start, size, n in zip(plan["crop_start"], plan["size"], array.shape)]
        if not any(borders) and list(end) == list(array.shape) and not any(plan["crop_start"]):
            return array
        tensor = torch.as_tensor(np.ascontiguousarray(array))[None]
        tensor = SpatialCrop(roi_start=plan["crop_start"], roi_end=end)(tensor)
        if any(borders):
            tensor = BorderPad(spatial_border=borders, mode="constant", value=value)(tensor)
        return np.asarray(tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor)[0]

    @staticmethod
    def _window(array: np.ndarray, window: Sequence[float], scale: float) -> np.ndarray:
        """Clip to `window` and divide by `scale` (one new float32 array; the input is left untouched).

        Same arithmetic as MONAI's `ScaleIntensityRange(a_min=low, a_max=high, b_min=low/scale,
        b_max=high/scale, clip=True)`, written out because that transform makes several full-volume
        copies (~5 s on a chest CT here).
        """
        low, high = window
        tensor = torch.clamp(torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32)), low, high)
        return tensor.div_(scale).numpy()

    # ------------------------------------------------------------------------------------------ inverse
    @staticmethod
    def _check_record(record: dict | str) -> dict:
        if isinstance(record, str):
            record = json.loads(record)
        if not isinstance(record, dict) or record.get("format") != GEOMETRY_FORMAT:
            raise UserInputError(
                "geometry record not recognised: pass the `geometry` entry that UniconImageProcessor returned "
                f"for this case (format {GEOMETRY_FORMAT!r})."
            )
        return record

    @staticmethod
    def _to_numpy(values) -> np.ndarray:
        if isinstance(values, torch.Tensor):
            return values.detach().cpu().numpy()
        return np.asarray(values)

    def _to_native(self, values: np.ndarray, record: dict, *, nearest: bool, fill: float) -> np.ndarray:
        model_shape = tuple(record["model_shape"])
        if tuple(values.shape[-3:]) != model_shape:
            raise UserInputError(
                f"prediction has spatial shape {tuple(values.shape[-3:])} but this case's model grid is {model_shape} "
                f"(D, H, W) for {record['files']['ct']}; predict on the processor's output without cropping."
            )
        canonical = np.moveaxis(values, (-3, -2, -1), tuple(values.ndim - 3 + a for a in MODEL_AXES))
        full = undo_crop_pad(canonical, record["crop_pad"], record["resampled_shape"], fill)
        scale = [1.0 / s for s in record["scale"]]
        shift = [-t / s for t, s in zip(record["shift"], record["scale"])]
        native = resample_axes(full, record["reoriented_shape"], scale, shift, nearest=nearest, fill=fill)
        lead = native.shape[:-3]
        native = native.reshape((-1, *native.shape[-3:]))
        native = np.stack([undo_reorient(c, record["orientation"]) for c in native])
        native = native.reshape((*lead, *native.shape[-3:]))
        if tuple(native.shape[-3:]) != tuple(record["original_shape"]):  # would be a bug, never user input
            raise RuntimeError(f"inverse produced {native.shape[-3:]}, expected {record['original_shape']}")
        return native

    def invert_label(self, prediction, record: dict | str, dtype: Any = None) -> nib.Nifti1Image:
        """Map a label map on the model grid (D, H, W) back onto the original CT file's grid.

        Args:
            prediction: integer array/tensor (D, H, W) on this case's model grid.
            record: the case's `geometry` record (dict or its JSON string).
            dtype: output dtype; defaults to the original label file's dtype when one was processed, else int16.

        Returns:
            A `nibabel.Nifti1Image` with exactly the original shape and affine. Voxels outside the part of
            the field of view that the model saw (cropped away) are 0.
        """
        record = self._check_record(record)
        values = self._to_numpy(prediction)
        if values.ndim != 3:
            raise UserInputError(f"invert_label expects a (D, H, W) label map, got shape {values.shape}.")
        native = self._to_native(values, record, nearest=True, fill=0)
        dtype = np.dtype(dtype or record.get("label_dtype") or np.int16)
        return nib.Nifti1Image(native.astype(dtype), np.asarray(record["original_affine"], dtype=np.float64))

    def invert_map(self, values, record: dict | str, fill: float = 0.0) -> nib.Nifti1Image:
        """Map a float map (D, H, W) or (C, D, H, W) (e.g. class probabilities) back onto the original grid.

        Linear interpolation; returns float32 (X, Y, Z) or (X, Y, Z, C) with the original affine. Voxels
        the model did not see get `fill`.
        """
        record = self._check_record(record)
        array = self._to_numpy(values).astype(np.float32)
        if array.ndim not in (3, 4):
            raise UserInputError(f"invert_map expects (D, H, W) or (C, D, H, W), got shape {array.shape}.")
        native = self._to_native(array, record, nearest=False, fill=fill)
        if native.ndim == 4:
            native = np.moveaxis(native, 0, -1)
        return nib.Nifti1Image(native.astype(np.float32), np.asarray(record["original_affine"], dtype=np.float64))
