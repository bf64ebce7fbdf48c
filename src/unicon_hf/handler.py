"""Hugging Face Inference Endpoints handler for UNICON model repos (`unicon push` copies this file to the repo
root as `handler.py`).

Request (JSON; files as base64 strings, or the raw file bytes as the whole body):

    {"inputs": {"ct": "<base64 .nii/.nii.gz or .png>", "pet": "<base64 .nii.gz>", "ehr": {...}, "text": "..."},
     "parameters": {"task": "seg_ctpet", "overlap": 0.25, "sw_batch_size": 1, "labels": [...],
                    "return_label_image": true}}

`inputs` may also be the CT alone (base64 string or bytes). Answer: the prediction summary as JSON (what
`unicon predict` writes: per-class volumes in ml, or risk + survival curve, or per-finding probabilities); for a
3D segmentation also `label_image` = the labels on the input CT's grid as a base64 `.nii.gz`, for a 2D input
`label_png` = the label mask as a base64 PNG. Bad input (wrong file type, a volume over the size limit, a
missing PET for a CT+PET task, an unknown task...) is answered with `{"error": "<what is wrong and what to do>"}`.

This file runs at the repo root, where no package is installed: it imports only third-party libraries and
loads the inference code shipped in the repo (`inference.py`, the code `unicon predict` runs) through
transformers' remote-code loader, so the endpoint runs exactly the code saved with the weights.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

# Defaults for what one request may send; override with the environment or EndpointHandler(...) arguments.
DEFAULT_MAX_VOXELS = 400_000_000  # ~ 1.6 GB of float32: a 512 x 512 x 1500 CT fits, a mistaken 4D series not
DEFAULT_MAX_BYTES = 1024 ** 3
GZIP_MAGIC = b"\x1f\x8b"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
PARAMETERS = {"task", "overlap", "sw_batch_size", "labels", "dtype", "return_label_image"}


class PayloadError(ValueError):
    """A request that cannot be served as sent; the message says what to change."""


def sniff_suffix(payload: bytes, role: str) -> str:
    """The file suffix a payload's bytes show it to be (`.nii.gz`, `.nii`, `.png`, `.jpg`), from its magic bytes;
    anything else is refused with a message naming what was recognised."""
    head = payload[:352]
    if payload[:2] == GZIP_MAGIC:
        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(payload)).read(548)
        except (OSError, EOFError):
            raise PayloadError(f"{role} payload is gzip data that cannot be decompressed; send a valid .nii.gz") from None
        if _is_nifti(head):
            return ".nii.gz"
        raise PayloadError(f"{role} payload is gzip-compressed but not a NIfTI volume; send a .nii.gz file")
    if _is_nifti(head):
        return ".nii"
    if payload.startswith(PNG_MAGIC):
        return ".png"
    if payload.startswith(JPEG_MAGIC):
        return ".jpg"
    if payload[128:132] == b"DICM":
        raise PayloadError(f"{role} payload is a single DICOM file; the endpoint takes NIfTI volumes: convert the "
                           f"series to NIfTI (e.g. with dcm2niix) and send the .nii.gz")
    raise PayloadError(f"{role} payload is not a NIfTI (.nii / .nii.gz) or PNG/JPEG file (first bytes "
                       f"{payload[:8].hex(' ') or 'none: empty payload'}); send the file's bytes, base64-encoded in JSON")


def _is_nifti(head: bytes) -> bool:
    # NIfTI-1 keeps its magic at byte 344 ("n+1\0" single file), NIfTI-2 at byte 4 ("n+2\0").
    return head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] in (b"n+2\x00", b"ni2\x00")


def decode_file(value: Any, role: str) -> bytes:
    """Bytes from raw bytes or a base64 string (a `data:...;base64,` prefix is allowed)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadError(f"{role} is a string but not valid base64; send the file's bytes base64-encoded") from None
    raise PayloadError(f"{role} must be a file as base64 text or bytes, got {type(value).__name__}")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise PayloadError(f"environment variable {name}={value!r} is not an integer") from None


def _load_inference(path: str):
    """The `inference` module shipped with the model repo (the installed unicon_hf only when the repo has none)."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    try:
        predict = get_class_from_dynamic_module("inference.predict", path)
        return sys.modules[predict.__module__]
    except (OSError, ImportError, AttributeError):
        import unicon_hf.inference as module  # a repo saved without code files

        return module


class EndpointHandler:
    """Inference Endpoints custom handler: `EndpointHandler(path)(data) -> dict`.

    Args:
        path: the model repo folder (or a Hub repo id).
        max_voxels: largest volume accepted, in voxels (env `UNICON_MAX_VOXELS`).
        max_bytes: largest decoded file accepted (env `UNICON_MAX_BYTES`).
        device: torch device (env `UNICON_DEVICE`; default: CUDA when available, else CPU).
    """

    def __init__(self, path: str = "", max_voxels: int | None = None, max_bytes: int | None = None,
                 device: str | None = None):
        import torch
        from transformers import AutoModel

        self.path = str(path or ".")
        self.max_voxels = int(max_voxels or _env_int("UNICON_MAX_VOXELS", DEFAULT_MAX_VOXELS))
        self.max_bytes = int(max_bytes or _env_int("UNICON_MAX_BYTES", DEFAULT_MAX_BYTES))
        self.device = device or os.environ.get("UNICON_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
        # The repo's own code is what the weights were saved with; the endpoint owner chose to run it.
        self.model = AutoModel.from_pretrained(self.path, trust_remote_code=True).to(self.device).eval()
        self.inference = _load_inference(self.path)
        self.processors: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------ API
    @property
    def tasks(self) -> list[str]:
        return list(self.model.tasks)

    def task_info(self, task: str) -> dict[str, Any]:
        """Kind, modalities and labels of a task (for UIs)."""
        spec = self.model.task_spec(task)
        return {"name": spec.name, "kind": spec.kind, "modalities": list(spec.modalities), "labels": list(spec.labels)}

    def resolve_task(self, task: str | None) -> str:
        if task:
            self.model.task_spec(task)  # unknown name -> the model's own message listing the tasks
            return task
        if len(self.tasks) == 1:
            return self.tasks[0]
        raise PayloadError(f"this model has several tasks {self.tasks}; choose one with parameters.task")

    def check_file(self, path: str | os.PathLike, role: str) -> None:
        """Refuse a file of the wrong type or over the size limits, before anything heavy is done."""
        path = Path(path)
        size = path.stat().st_size
        if size > self.max_bytes:
            raise PayloadError(f"{role} file is {size:,} bytes, over this endpoint's limit of {self.max_bytes:,} "
                               f"(UNICON_MAX_BYTES)")
        with path.open("rb") as handle:
            head = handle.read(65536)  # enough compressed bytes to decompress a NIfTI header
        suffix = sniff_suffix(head, role)
        if suffix in (".png", ".jpg"):
            from PIL import Image

            with Image.open(path) as image:
                shape = (image.height, image.width)
        else:
            import nibabel as nib

            try:
                shape = nib.load(str(path)).shape  # header only: the data are not read here
            except Exception as error:  # nibabel raises several types for broken headers
                raise PayloadError(f"{role} file is not a readable NIfTI ({type(error).__name__}: {error})") from None
        voxels = 1
        for size in shape:
            voxels *= int(size)
        if voxels > self.max_voxels:
            raise PayloadError(
                f"{role} volume has {voxels:,} voxels (shape {tuple(shape)}), over this endpoint's limit of "
                f"{self.max_voxels:,} (UNICON_MAX_VOXELS); crop or downsample it, or raise the limit")

    def predict_files(self, ct: str | os.PathLike, pet: str | os.PathLike | None = None, *, task: str | None = None,
                      ehr: Any = None, text: str | None = None, **options):
        """Run one task on files on disk (checked against the limits first); returns the `Prediction`."""
        task = self.resolve_task(task)
        spec = self.model.task_spec(task)
        if ct is None:
            raise PayloadError(f"task {task!r} needs a CT file")
        if pet is None and "pet" in spec.modalities:
            raise PayloadError(f"task {task!r} ({spec.kind}) needs CT and PET (modalities {list(spec.modalities)}); "
                               f"send the PET in SUV as well")
        self.check_file(ct, "CT")
        if pet is not None:
            self.check_file(pet, "PET")
        if task not in self.processors:
            self.processors[task] = self.inference.load_processor(self.model, task, self.path)[0]
        return self.inference.predict(self.model, task, str(ct), pet=str(pet) if pet is not None else None, ehr=ehr,
                                      text=text, processor=self.processors[task], device=self.device,
                                      progress=False, **options)

    def __call__(self, data: Any) -> dict[str, Any]:
        try:
            return self._serve(data)
        except ValueError as error:  # PayloadError and the model code's UserInputError: the caller's to fix
            return {"error": str(error)}

    # ------------------------------------------------------------------------------------ internals
    def _serve(self, data: Any) -> dict[str, Any]:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = {"inputs": bytes(data)}
        if not isinstance(data, dict):
            raise PayloadError(f"the request must be a JSON object with 'inputs', got {type(data).__name__}")
        inputs = data.get("inputs")
        parameters = dict(data.get("parameters") or {})
        if inputs is None:
            raise PayloadError("the request has no 'inputs': send {'inputs': {'ct': <base64 file>}, 'parameters': "
                               "{'task': ...}}")
        if not isinstance(inputs, dict):
            inputs = {"ct": inputs}
        unknown = sorted(set(inputs) - {"ct", "pet", "ehr", "text"})
        if unknown:
            raise PayloadError(f"unknown input(s) {unknown}; use 'ct', 'pet', 'ehr', 'text'")
        unknown = sorted(set(parameters) - PARAMETERS)
        if unknown:
            raise PayloadError(f"unknown parameter(s) {unknown}; valid: {sorted(PARAMETERS)}")
        if "ct" not in inputs:
            raise PayloadError("inputs has no 'ct'; send the CT file base64-encoded as inputs.ct")
        task = self.resolve_task(parameters.pop("task", None))
        return_label_image = bool(parameters.pop("return_label_image", True))
        with tempfile.TemporaryDirectory(prefix="unicon-endpoint-") as tmp:
            files = {}
            for role in ("ct", "pet"):
                if inputs.get(role) is None:
                    continue
                payload = decode_file(inputs[role], role.upper())
                if len(payload) > self.max_bytes:
                    raise PayloadError(f"{role.upper()} payload is {len(payload):,} bytes, over this endpoint's "
                                       f"limit of {self.max_bytes:,} (UNICON_MAX_BYTES)")
                files[role] = Path(tmp) / f"{role}{sniff_suffix(payload, role.upper())}"
                files[role].write_bytes(payload)
            prediction = self.predict_files(files["ct"], files.get("pet"), task=task, ehr=inputs.get("ehr"),
                                            text=inputs.get("text"), **parameters)
        answer = dict(prediction.summary)
        answer["input"] = {role: f"<{role} payload>" if value else None for role, value in answer.get("input", {}).items()}
        if return_label_image and prediction.label_image is not None:
            answer["label_image"] = base64.b64encode(gzip.compress(prediction.label_image.to_bytes(), 6)).decode()
            answer["label_image_format"] = "nifti-gzip-base64"
        if return_label_image and prediction.label_array is not None:
            from PIL import Image
            import numpy as np

            buffer = io.BytesIO()
            Image.fromarray(prediction.label_array.astype(np.uint8)).save(buffer, format="PNG")
            answer["label_png"] = base64.b64encode(buffer.getvalue()).decode()
        return answer
