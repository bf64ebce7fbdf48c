"""Inference on a clinician's own scans: `unicon_hf.predict(...)`, which `unicon predict` calls.

One call runs one task of a `UniconModel` on one case:

- segmentation: memory-bounded sliding-window inference over the whole volume (`sliding_window.py`), argmax
  labels mapped back through the processor's inverse onto EXACTLY the input CT's grid (shape and affine),
  per-class volumes in ml, optional probability maps;
- prognosis: risk score, survival curve at the model's time bins, a risk group;
- zero-shot classification: P(present) per finding (the task's findings or any given list).

Inputs: NIfTI files, nibabel images, DICOM series folders (CT with MONAI's pydicom reader; PET converted to
SUV by `unicon_hf.data.suv`), or, for segmentation and zero-shot classification, one 2D image (PNG/JPEG)
treated as a one-slice volume. This module is also shipped inside model repos for the custom pipelines,
so it imports only flat sibling modules; the two helpers that live in `unicon_hf` sub-packages (PET SUV
conversion, EHR-to-report text) are looked up by name when needed.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from .errors import UserInputError
from .image_processing_unicon import UniconImageProcessor
from .sliding_window import sliding_window_segmentation

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PREPROCESSOR_FILE = "preprocessor_config.json"
SEGMENTATION_FILE = "segmentation.nii.gz"
PROBABILITIES_FILE = "probabilities.nii.gz"


# ----------------------------------------------------------------------------------------------- results
@dataclass
class Prediction:
    """What `predict` returns.

    Args:
        task (`str`): the task that ran; kind (`str`): its kind.
        summary (`dict`): JSON-serialisable results (volumes in ml, risk and survival, probabilities, notes).
        label_image (`nibabel.Nifti1Image`, *optional*): segmentation labels on the input CT's exact grid.
        probability_image (`nibabel.Nifti1Image`, *optional*): class probabilities (X, Y, Z, K) on that grid.
        label_array (`np.ndarray`, *optional*): labels of a 2D input, (rows, columns).
        probability_array (`np.ndarray`, *optional*): probabilities of a 2D input, (K, rows, columns).
    """

    task: str
    kind: str
    summary: dict[str, Any]
    label_image: nib.Nifti1Image | None = None
    probability_image: nib.Nifti1Image | None = None
    label_array: np.ndarray | None = None
    probability_array: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def json_name(self) -> str:
        return {"segmentation": "segmentation.json", "prognosis": "prognosis.json",
                "zero_shot_classification": "zero_shot.json"}[self.kind]

    def save(self, output_dir: str | os.PathLike) -> list[Path]:
        """Write the results into `output_dir`: everything goes to a temporary folder beside it first and is
        moved in only when all files are written, so a failure never leaves partial outputs."""
        output_dir = Path(output_dir)
        if output_dir.exists() and not output_dir.is_dir():
            raise UserInputError(f"output {output_dir} exists and is not a folder; give a folder path for --output")
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
        try:
            (staging / self.json_name).write_text(json.dumps(self.summary, indent=2))
            if self.label_image is not None:
                nib.save(self.label_image, staging / SEGMENTATION_FILE)
            if self.probability_image is not None:
                nib.save(self.probability_image, staging / PROBABILITIES_FILE)
            if self.label_array is not None:  # 2D input: a PNG mask of the same size (no affine to keep)
                from PIL import Image

                Image.fromarray(self.label_array.astype(np.uint8)).save(staging / "segmentation.png")
            output_dir.mkdir(exist_ok=True)
            written = []
            for file in sorted(staging.iterdir()):
                os.replace(file, output_dir / file.name)
                written.append(output_dir / file.name)
            return written
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- loading
def load_model(model: Any, device: str | torch.device = "cpu"):
    """A `UniconModel` from an instance, a local folder or a Hub repo id (offline caches work), in eval mode."""
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoModel

        source = str(model)
        try:
            model = AutoModel.from_pretrained(source, trust_remote_code=not _package_available())
        except UserInputError:
            raise
        except (OSError, ValueError) as error:
            raise UserInputError(
                f"cannot load model {source!r}: {str(error).splitlines()[0]} (give a folder written by "
                f"save_pretrained / unicon_hf.hub.save_model_repo, or a Hub repo id)"
            ) from None
    if not hasattr(model, "task_spec"):
        raise UserInputError(f"expected a UniconModel, got {type(model).__name__}")
    return model.to(device).eval()


def _package_available() -> bool:
    """Whether the `unicon_hf` package is importable (else the repo's own code is used, trust_remote_code)."""
    try:
        return importlib.util.find_spec("unicon_hf") is not None
    except (ImportError, ValueError):
        return False


def _model_source(model) -> str | None:
    source = getattr(model.config, "_name_or_path", None) or getattr(model, "name_or_path", None)
    return str(source) if source else None


def default_processor(model, task: str) -> UniconImageProcessor:
    """A processor for a model saved without `preprocessor_config.json`: CT-CLIP spacing and windows; the whole
    field of view for segmentation, the foundation's input size for the other kinds."""
    spec = model.task_spec(task)
    vision = model.config.vision_config
    if spec.kind == "segmentation":
        size = None
    elif spec.kind == "prognosis" and spec.input_size:
        size = list(spec.input_size)
    else:
        size = [vision.num_frames, *vision.image_size]
    return UniconImageProcessor(output_size=size)


def load_processor(model, task: str, source: str | None = None) -> tuple[UniconImageProcessor, list[str]]:
    """The image processor saved with the model (`preprocessor_config.json`), else `default_processor` with a
    note saying so. Returns (processor, notes)."""
    source = source or _model_source(model)
    if source:
        try:
            return UniconImageProcessor.from_pretrained(source), []
        except UserInputError:
            raise
        except (OSError, ValueError):
            pass
    processor = default_processor(model, task)
    note = (f"the model has no {PREPROCESSOR_FILE}: using the default preprocessing (spacing "
            f"{processor.target_spacing} mm, {processor.axcodes}, CT window {processor.ct_window} HU); save the "
            f"training processor with the model to be sure inference matches training")
    return processor, [note]


def load_tokenizer(model, source: str | None = None):
    """The text tokenizer saved with the model (needed for report text / EHR and custom zero-shot labels)."""
    from transformers import AutoTokenizer

    source = source or _model_source(model)
    try:
        # Without the package this code runs as the repo's remote code, which the user has already trusted;
        # AutoTokenizer reads the repo's config.json, whose model type only that code defines.
        return AutoTokenizer.from_pretrained(source, trust_remote_code=not _package_available())
    except (OSError, ValueError, TypeError):
        raise UserInputError(
            f"model {source!r} has no tokenizer files; it is needed to encode report text/EHR or custom zero-shot "
            f"labels. Save the tokenizer with the model (tokenizer.save_pretrained(model_dir))"
        ) from None


# ----------------------------------------------------------------------------------------------- reading
@dataclass
class Image2D:
    """A 2D image (e.g. a PNG from the Hub widget) holding one CT slice, in HU, (rows, columns)."""

    array: np.ndarray
    name: str


def read_image_2d(source: Any, window: Sequence[float], name: str = "<2D image>") -> Image2D:
    """Read a PNG/JPEG path or a PIL image as one CT slice: gray values 0..max are mapped linearly onto the
    CT window in HU (a screenshot of a windowed slice carries no HU, so this is the only defensible reading)."""
    from PIL import Image

    try:
        image = Image.open(source) if isinstance(source, (str, os.PathLike)) else source
        image.load()
    except (OSError, ValueError) as error:
        raise UserInputError(f"2D image {name} cannot be read ({error})") from None
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        gray, top = np.asarray(image, dtype=np.float64), 65535.0
    else:
        gray, top = np.asarray(image.convert("L"), dtype=np.float64), 255.0
    low, high = window
    return Image2D(array=(low + gray / top * (high - low)).astype(np.float32), name=name)


def read_dicom_series(folder: str | os.PathLike, role: str) -> nib.Nifti1Image:
    """A DICOM series folder as a NIfTI image with a RAS affine: CT (HU, rescale applied) with MONAI's
    `PydicomReader`; PET converted to body-weight SUV from the vendor headers (`unicon_hf.data.suv`)."""
    folder = Path(folder)
    if role == "PET":
        suv = _package_module("unicon_hf.data.suv", "PET DICOM to SUV conversion")
        array, affine = suv.dicom_pet_to_suv(folder)
        return nib.Nifti1Image(array, affine)
    from monai.data import PydicomReader
    from monai.transforms import LoadImage

    try:
        image = LoadImage(reader=PydicomReader(), image_only=True, ensure_channel_first=False)(str(folder))
    except Exception as error:  # MONAI/pydicom raise many types for unreadable series
        raise UserInputError(
            f"{role} DICOM folder {folder} could not be read as one series ({type(error).__name__}: {error}); "
            f"give a folder with the slices of a single series"
        ) from None
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3:
        raise UserInputError(f"{role} DICOM folder {folder} gives an array of shape {array.shape}; a 3D series is needed")
    return nib.Nifti1Image(array, np.asarray(image.affine, dtype=np.float64))


def _package_module(name: str, what: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserInputError(f"{what} needs the unicon_hf package (pip install unicon_hf); it is not shipped "
                             f"with model repos") from None


def read_input(source: Any, role: str, window: Sequence[float] = (-1000.0, 1000.0)) -> Any:
    """Normalise one input: DICOM folder -> NIfTI image; PNG/JPEG -> `Image2D`; anything else is passed on to
    the image processor (NIfTI path, nibabel image, (array, affine))."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise UserInputError(f"{role} input {path} does not exist")
        if path.is_dir():
            return read_dicom_series(path, role)
        if path.suffix.lower() in IMAGE_2D_SUFFIXES:
            return read_image_2d(path, window, name=str(path))
    elif type(source).__module__.startswith("PIL."):
        return read_image_2d(source, window)
    return source


def _describe(source: Any) -> str:
    if isinstance(source, Image2D):
        return source.name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"


# ----------------------------------------------------------------------------------------------- checks
def check_inputs(spec, ct: Any, pet: Any, ehr: Any, text: Any) -> None:
    """Raise a clear error when the given inputs do not fit the task (before anything is computed)."""
    if ct is None:
        raise UserInputError(f"task {spec.name!r} needs a CT (--ct / ct=...)")
    if pet is not None and "pet" not in spec.modalities:
        raise UserInputError(
            f"task {spec.name!r} ({spec.kind}) takes CT only (modalities {spec.modalities}) but a PET was given; "
            f"remove --pet or choose a CT+PET task"
        )
    if pet is None and "pet" in spec.modalities:
        raise UserInputError(
            f"task {spec.name!r} ({spec.kind}) needs CT and PET (modalities {spec.modalities}); give the PET in SUV "
            f"with --pet (NIfTI or a DICOM folder)"
        )
    uses_text = spec.kind == "prognosis" and "text" in spec.head.get("inputs", ["image", "text"])
    if (ehr is not None or text is not None) and not uses_text:
        raise UserInputError(f"task {spec.name!r} ({spec.kind}) does not read clinical text; remove --ehr")
    if uses_text and ehr is None and text is None:
        raise UserInputError(
            f"task {spec.name!r} (prognosis) reads the clinical record: give --ehr record.json (HECKTOR clinical "
            f"fields, e.g. Age, Gender, T-stage, HPV status)"
        )


def check_not_empty(pixel_values: torch.Tensor, spec, names: Sequence[str]) -> None:
    """Reject a volume whose model input is constant (empty, all air, all zero): nothing could be predicted."""
    for channel, (modality, name) in enumerate(zip(spec.modalities, names)):
        values = pixel_values[:, channel]
        if values.numel() == 0 or bool(values.min() == values.max()):
            raise UserInputError(
                f"{modality.upper()} {name} is empty: after preprocessing every voxel has the same value "
                f"({float(values.flatten()[0]) if values.numel() else 'no voxels'}); check that the file holds the "
                f"image (not a blank export or a mask)"
            )


# ----------------------------------------------------------------------------------------------- running
def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _pad_values(processor: UniconImageProcessor, n_channels: int) -> list[float]:
    """Model-space values of padded voxels (air for CT, 0 SUV for PET), as the processor writes them."""
    values = []
    for pad, (low, high), scale in ((processor.ct_pad_value, processor.ct_window, processor.ct_scale),
                                    (processor.pet_pad_value, processor.pet_window, processor.pet_scale)):
        values.append(min(max(pad, low), high) / scale)
    return values[:n_channels]


def _segmentation_predictor(model, task: str, device: torch.device, dtype: torch.dtype):
    def predictor(windows: torch.Tensor) -> torch.Tensor:
        with _autocast(device, dtype):
            logits = model(task=task, pixel_values=windows).logits
        return logits.float().softmax(dim=1)

    return predictor


def class_volumes_ml(labels: np.ndarray, affine: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Volume in ml of every non-background class of a label map with its voxel-to-world affine."""
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64), minlength=len(names))
    return {name: float(counts[i] * voxel_ml) for i, name in enumerate(names) if i > 0}


def _window_2d(image: Image2D, processor: UniconImageProcessor, depth: int) -> torch.Tensor:
    """(1, 1, depth, rows, columns): the slice windowed like a CT and repeated along depth, so that a 3D model
    sees a structure extruded through the window (closer to anatomy than one slice surrounded by air)."""
    low, high = processor.ct_window
    values = torch.from_numpy(np.clip(image.array, low, high) / processor.ct_scale).float()
    return values[None, None, None].expand(1, 1, depth, *values.shape).contiguous()


def _fit(pixel_values: torch.Tensor, size: Sequence[int], values: Sequence[float]) -> torch.Tensor:
    """Centred crop/pad of (B, C, D, H, W) to `size`, padding each channel with its value."""
    out = pixel_values
    for axis, target in zip((2, 3, 4), size):
        n = out.shape[axis]
        if n > target:
            start = (n - target) // 2
            out = out.narrow(axis, start, target)
        elif n < target:
            shape = list(out.shape)
            before, after = (target - n) // 2, target - n - (target - n) // 2
            parts = []
            for amount in (before, after):
                shape[axis] = amount
                fill = torch.stack([torch.full(shape[:1] + shape[2:], float(v)) for v in values[: out.shape[1]]], dim=1)
                parts.append(fill.to(out))
            out = torch.cat([parts[0], out, parts[1]], dim=axis)
    return out


def predict_segmentation(model, spec, processor, ct, pet, *, names, overlap, sw_batch_size, device, dtype,
                         probabilities, progress) -> Prediction:
    """Sliding-window segmentation of one case; labels back on the CT's exact grid."""
    roi = list(spec.input_size or model.config.vision_config.patch_shape)
    predictor = _segmentation_predictor(model, spec.name, device, dtype)
    classes = list(spec.labels)
    if isinstance(ct, Image2D):
        pixel_values = _window_2d(ct, processor, roi[0])
        check_not_empty(pixel_values, spec, [ct.name])
        result = sliding_window_segmentation(
            pixel_values, predictor, roi, len(classes), overlap=overlap, sw_batch_size=sw_batch_size,
            pad_value=_pad_values(processor, 1), return_probabilities=probabilities, device=device, progress=progress)
        middle = roi[0] // 2
        labels = result.labels[0, middle].numpy()
        counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(classes))
        summary = {"task": spec.name, "kind": spec.kind, "input": {"ct": ct.name, "2d": True},
                   "labels": classes, "pixels": {n: int(counts[i]) for i, n in enumerate(classes) if i > 0},
                   "shape": list(labels.shape), "windows": result.num_windows}
        probs = result.probabilities[0, :, middle].float().numpy() if probabilities else None
        return Prediction(spec.name, spec.kind, summary, label_array=labels, probability_array=probs)
    features = processor(ct, pet=pet, output_size=None)
    pixel_values, record = features["pixel_values"], features["geometry"][0]
    check_not_empty(pixel_values, spec, [names["ct"], names["pet"]])
    result = sliding_window_segmentation(
        pixel_values, predictor, roi, len(classes), overlap=overlap, sw_batch_size=sw_batch_size,
        pad_value=_pad_values(processor, pixel_values.shape[1]), return_probabilities=probabilities,
        device=device, progress=progress)
    label_image = processor.invert_label(result.labels[0], record, dtype=np.uint8)
    probability_image = processor.invert_map(result.probabilities[0].float(), record) if probabilities else None
    volumes = class_volumes_ml(np.asarray(label_image.dataobj), label_image.affine, classes)
    summary = {
        "task": spec.name, "kind": spec.kind,
        "input": {"ct": names["ct"], "pet": names["pet"]},
        "labels": classes, "volumes_ml": volumes,
        "shape": list(label_image.shape), "affine": np.asarray(label_image.affine).tolist(),
        "model_grid": {"shape": record["model_shape"], "spacing_mm": record["target_spacing"]},
        "window": roi, "overlap": overlap, "windows": result.num_windows,
    }
    return Prediction(spec.name, spec.kind, summary, label_image=label_image, probability_image=probability_image)


def ehr_text(ehr: Any) -> str:
    """The report-like text of a clinical record (a dict or a JSON file path), as used in training."""
    if isinstance(ehr, (str, os.PathLike)):
        path = Path(ehr)
        if not path.is_file():
            raise UserInputError(f"EHR record {path} does not exist")
        try:
            ehr = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserInputError(f"EHR record {path} is not valid JSON ({error}); give one object of clinical fields") from None
    if not isinstance(ehr, Mapping):
        raise UserInputError(f"an EHR record must be a JSON object of clinical fields, got {type(ehr).__name__}")
    module = _package_module("unicon_hf.data.ehr_report", "turning an EHR record into report text")
    return module.ehr_to_report(dict(ehr))


def risk_group(survival: Sequence[float], time_bins: Sequence[float]) -> dict[str, Any]:
    """'high' when the predicted probability of staying event-free past the middle time bin is below one half.

    A single case has no cohort to split at its median risk, so the group comes from the model's own curve;
    the rule is returned with the group so that it is never mistaken for a calibrated cut-off.
    """
    middle = len(time_bins) // 2
    probability = float(survival[middle + 1])  # survival[0] is S(0) = 1
    median = next((float(t) for t, s in zip(time_bins, survival[1:]) if s < 0.5), None)
    return {"risk_group": "high" if probability < 0.5 else "low",
            "risk_group_rule": f"high if S({float(time_bins[middle]):g}) < 0.5 (middle time bin)",
            "survival_at_rule_time": probability, "median_event_free_time": median}


def predict_prognosis(model, spec, processor, tokenizer, ct, pet, ehr, text, *, names, device, dtype) -> Prediction:
    if isinstance(ct, Image2D):
        raise UserInputError(
            f"task {spec.name!r} (prognosis) is 3D-only: {ct.name} is a 2D image; give the CT volume (NIfTI or a "
            f"DICOM series folder)"
        )
    features = processor(ct, pet=pet)
    pixel_values = features["pixel_values"]
    check_not_empty(pixel_values, spec, [names["ct"], names["pet"]])
    inputs: dict[str, torch.Tensor] = {"pixel_values": pixel_values.to(device)}
    report = None
    if ehr is not None or text is not None:
        report = text if text is not None else ehr_text(ehr)
        limit = model.config.text_config.max_position_embeddings
        tokens = tokenizer([report], padding=True, truncation=True, max_length=limit, return_tensors="pt")
        inputs["input_ids"] = tokens["input_ids"].to(device)
        inputs["attention_mask"] = tokens["attention_mask"].to(device)
    with torch.inference_mode(), _autocast(device, dtype):
        output = model(task=spec.name, **inputs)
    time_bins = [float(t) for t in output.time_bins.float().cpu()]
    summary = {"task": spec.name, "kind": spec.kind,
               "input": {"ct": names["ct"], "pet": names["pet"],
                         "ehr": _describe(ehr) if isinstance(ehr, (str, os.PathLike)) else None},
               "risk": float(output.risk.float()[0])}
    if output.survival is not None:
        survival = [float(s) for s in output.survival.float()[0].cpu()]
        summary["survival"] = {"times": [0.0, *time_bins], "probability": survival}
        summary.update(risk_group(survival, time_bins))
    if report is not None:
        summary["report_text"] = report
    return Prediction(spec.name, spec.kind, summary)


def predict_zero_shot(model, spec, processor, tokenizer, ct, labels, *, names, device, dtype) -> Prediction:
    vision = model.config.vision_config
    size = [vision.num_frames, *vision.image_size]
    if isinstance(ct, Image2D):
        pixel_values = _fit(_window_2d(ct, processor, size[0]), size, _pad_values(processor, 1))
    else:
        pixel_values = processor(ct, output_size=processor.output_size or size)["pixel_values"]
    check_not_empty(pixel_values, spec, [names["ct"]])
    pixel_values = pixel_values.to(device)
    with torch.inference_mode(), _autocast(device, dtype):
        if labels:
            if spec.lora is not None:
                raise UserInputError(
                    f"task {spec.name!r} has its own LoRA adapter, so it scores only its trained findings "
                    f"{spec.labels}; run it without --labels"
                )
            prompts = [template.format(label=label) for label in labels
                       for template in ("{label} is present.", "{label} is not present.")]
            limit = model.config.text_config.max_position_embeddings
            tokens = tokenizer(prompts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
            logits = model(pixel_values=pixel_values, input_ids=tokens["input_ids"].to(device),
                           attention_mask=tokens["attention_mask"].to(device)).logits_per_image
            probabilities = logits.float().reshape(len(pixel_values), len(labels), 2).softmax(-1)[..., 0]
            findings = list(labels)
        else:
            output = model(task=spec.name, pixel_values=pixel_values)
            probabilities, findings = output.probabilities.float(), list(output.label_names)
    scores = {name: float(p) for name, p in zip(findings, probabilities[0].cpu())}
    summary = {"task": spec.name, "kind": spec.kind, "input": {"ct": names["ct"]},
               "probabilities": scores,
               "ranked": [{"label": n, "score": s} for n, s in sorted(scores.items(), key=lambda kv: -kv[1])]}
    return Prediction(spec.name, spec.kind, summary)


def predict(
    model: Any,
    task: str,
    ct: Any,
    pet: Any = None,
    ehr: Any = None,
    *,
    text: str | None = None,
    output: str | os.PathLike | None = None,
    processor: UniconImageProcessor | None = None,
    tokenizer: Any = None,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    probabilities: bool = False,
    labels: Sequence[str] | None = None,
    progress: bool = True,
) -> Prediction:
    """Run task `task` of a UNICON model on one case (what `unicon predict` does).

    Args:
        model: a `UniconModel`, a saved model folder or a Hub repo id.
        task: the task name (see `model.tasks`).
        ct: CT as a NIfTI path, nibabel image, `(array, affine)`, DICOM series folder, or (segmentation and
            zero-shot only) a 2D PNG/JPEG treated as one slice.
        pet: PET in SUV (NIfTI or a DICOM folder, converted to SUV) for CT+PET tasks.
        ehr: clinical record (dict or JSON path) for prognosis tasks that read text; `text` gives the report
            text directly instead.
        output: folder to write the results into (atomically); None writes nothing.
        processor: the image processor; default: the model's `preprocessor_config.json`, else a default one.
        tokenizer: text tokenizer; default: the model's saved tokenizer (only loaded when text is needed).
        overlap, sw_batch_size: sliding-window overlap fraction and windows per forward pass (segmentation).
        device: "cpu", "cuda", "cuda:1", ...; dtype: "float32" or "bfloat16" (autocast).
        probabilities: also return/write class probability maps (segmentation).
        labels: findings to score instead of the task's own (zero-shot, foundation tasks without LoRA).
        progress: progress bar over the sliding windows.

    Returns:
        A `Prediction`; `Prediction.save(folder)` writes it.

    Raises:
        UserInputError: unknown task, inputs that do not fit the task, unreadable/empty/NaN volumes, 2D input
            for a 3D-only task. Nothing is written in that case.
    """
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise UserInputError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserInputError(f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:0')") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device 'cuda' was requested but no CUDA GPU is available here; use --device cpu")
    if not 0.0 <= float(overlap) < 1.0:
        raise UserInputError(f"overlap must be in [0, 1), got {overlap}")
    model = load_model(model, device)
    spec = model.task_spec(task)  # raises for an unknown task, listing the known ones
    check_inputs(spec, ct, pet, ehr, text)
    if labels and spec.kind != "zero_shot_classification":
        raise UserInputError(f"--labels is for zero-shot classification; task {task!r} is {spec.kind}")
    notes: list[str] = []
    if processor is None:
        processor, notes = load_processor(model, task)
    names = {"ct": _describe(ct), "pet": _describe(pet) if pet is not None else None}
    ct = read_input(ct, "CT", processor.ct_window)
    pet = read_input(pet, "PET") if pet is not None else None
    if isinstance(pet, Image2D):
        raise UserInputError(f"PET {pet.name} is a 2D image; PET must be a 3D volume in SUV")
    if isinstance(ct, Image2D) and pet is not None:
        raise UserInputError(f"CT {ct.name} is a 2D image; CT+PET tasks need 3D volumes")
    needs_tokenizer = (spec.kind == "prognosis" and (ehr is not None or text is not None)) or bool(labels)
    if needs_tokenizer and tokenizer is None:
        tokenizer = load_tokenizer(model)
    with torch.inference_mode():
        if spec.kind == "segmentation":
            prediction = predict_segmentation(model, spec, processor, ct, pet, overlap=float(overlap),
                                              sw_batch_size=int(sw_batch_size), names=names, device=device, dtype=dtype,
                                              probabilities=probabilities, progress=progress)
        elif spec.kind == "prognosis":
            prediction = predict_prognosis(model, spec, processor, tokenizer, ct, pet, ehr, text, names=names, device=device,
                                           dtype=dtype)
        else:
            prediction = predict_zero_shot(model, spec, processor, tokenizer, ct, labels, names=names, device=device,
                                           dtype=dtype)
    prediction.notes = notes
    if notes:
        prediction.summary["notes"] = notes
    if output is not None:
        prediction.save(output)
    return prediction


def format_summary(prediction: Prediction) -> str:
    """A few human-readable lines for the terminal."""
    s = prediction.summary
    lines = [f"task {prediction.task!r} ({prediction.kind})"]
    if prediction.kind == "segmentation" and "volumes_ml" in s:
        lines += [f"  {name}: {ml:.2f} ml" for name, ml in s["volumes_ml"].items()]
    elif prediction.kind == "segmentation":
        lines += [f"  {name}: {n} pixels" for name, n in s["pixels"].items()]
    elif prediction.kind == "prognosis":
        lines.append(f"  risk score: {s['risk']:.4f}")
        if "risk_group" in s:
            lines.append(f"  risk group: {s['risk_group']} ({s['risk_group_rule']})")
    else:
        lines += [f"  {item['label']}: {item['score']:.3f}" for item in s["ranked"]]
    lines += [f"note: {note}" for note in prediction.notes]
    return "\n".join(lines)


__all__ = ["Prediction", "predict", "load_model", "load_processor", "default_processor", "class_volumes_ml",
           "read_dicom_series", "read_image_2d", "format_summary"]
