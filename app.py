"""UNICON demo (Gradio; ready for a Hugging Face Space): upload a CT (and a PET for CT+PET tasks), pick a task,
and see the segmentation over axial / coronal / sagittal slices with a slice slider and per-class volumes, the
prognosis survival curve, or the zero-shot finding probabilities; download the label NIfTI.

It runs through the same code as the Inference Endpoints handler (`unicon_hf.handler.EndpointHandler`: the
repo's own inference code, the same size limits and input checks), on CPU with the demo model.

    pip install "unicon_hf[app]"
    UNICON_MODEL=runs/demo/model python app.py        # a model folder or a Hub repo id

Environment: UNICON_MODEL (model folder or repo id; default ./model if present, else org/unicon-demo),
UNICON_MAX_VOXELS / UNICON_MAX_BYTES (request limits), GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Gradio's own).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import nibabel as nib
import numpy as np
from PIL import Image

from unicon_hf.handler import EndpointHandler, sniff_suffix

DEFAULT_MODEL = "org/unicon-demo"
# Overlay colours by label value (1 = GTVp, 2 = GTVn, then more for other label sets), RGB.
COLOURS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 90], [70, 130, 240], [240, 200, 40], [200, 80, 220]],
                   dtype=np.float32)
ALPHA = 0.45
PANEL = 256  # pixels: each view is scaled (by its physical size) to fit this height
NOT_CLINICAL = ("**Research demo — not for clinical use.** Outputs must not be used for diagnosis, treatment or any "
                "decision about a patient.")


def default_model() -> str:
    if os.environ.get("UNICON_MODEL"):
        return os.environ["UNICON_MODEL"]
    return "model" if Path("model", "config.json").is_file() else DEFAULT_MODEL


# ------------------------------------------------------------------------------------------------ rendering
def canonical(ct: nib.Nifti1Image, labels: nib.Nifti1Image | None) -> dict[str, Any]:
    """CT (HU) and labels as RAS arrays with their voxel sizes, for display."""
    ct = nib.as_closest_canonical(ct)
    view = {"ct": np.asarray(ct.dataobj, dtype=np.float32), "zooms": [float(z) for z in ct.header.get_zooms()[:3]]}
    if labels is not None:
        view["labels"] = np.asarray(nib.as_closest_canonical(labels).dataobj).astype(np.int64)
    return view


def _panel(ct2d: np.ndarray, labels2d: np.ndarray | None, spacing: tuple[float, float]) -> np.ndarray:
    gray = (np.clip(ct2d, -1000.0, 1000.0) + 1000.0) / 2000.0 * 255.0
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if labels2d is not None:
        colours = COLOURS[np.clip(labels2d, 0, len(COLOURS) - 1)]
        mask = (labels2d > 0)[..., None]
        rgb = np.where(mask, (1 - ALPHA) * rgb + ALPHA * colours, rgb)
    image = Image.fromarray(rgb.astype(np.uint8))
    # Display with the true physical aspect: rows x columns scaled by their spacings.
    height_mm, width_mm = ct2d.shape[0] * spacing[0], ct2d.shape[1] * spacing[1]
    width = max(int(round(PANEL * width_mm / max(height_mm, 1e-6))), 1)
    return np.asarray(image.resize((width, PANEL), Image.NEAREST))


def render_views(view: dict[str, Any], axial: int) -> np.ndarray:
    """Axial (at `axial`), coronal and sagittal slices side by side, radiological display orientation (patient's
    right on the image left, anterior / superior at the top); coronal and sagittal pass through the centre of the
    segmented voxels, or the volume centre when nothing is segmented."""
    ct, labels, (zx, zy, zz) = view["ct"], view.get("labels"), view["zooms"]
    axial = int(np.clip(axial, 0, ct.shape[2] - 1))
    found = np.argwhere(labels > 0) if labels is not None else np.empty((0, 3))
    ci, cj, _ = (found.mean(axis=0).round().astype(int) if len(found) else np.array(ct.shape) // 2)

    def cut(array, axis, index, mirror):
        # RAS arrays: +i = patient's right, +j = anterior, +k = superior. Screen rows run top-down, so the
        # vertical axis is flipped (anterior / superior up); `mirror` puts the patient's right on the screen's
        # left (radiological convention) for the axial and coronal views.
        if array is None:
            return None
        plane = np.take(array, index, axis=axis).T[::-1]
        return plane[:, ::-1] if mirror else plane

    panels = [
        _panel(cut(ct, 2, axial, True), cut(labels, 2, axial, True), (zy, zx)),
        _panel(cut(ct, 1, cj, True), cut(labels, 1, cj, True), (zz, zx)),
        _panel(cut(ct, 0, ci, False), cut(labels, 0, ci, False), (zz, zy)),
    ]
    gap = np.full((PANEL, 6, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def survival_figure(summary: dict[str, Any]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2))
    curve = summary["survival"]
    axis.step(curve["times"], curve["probability"], where="post", color="#c0392b")
    axis.set_xlabel("days")
    axis.set_ylabel("P(event-free)")
    axis.set_ylim(0, 1.02)
    axis.set_title(f"risk {summary['risk']:.3f} — {summary.get('risk_group', '?')} risk group")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


# ------------------------------------------------------------------------------------------------ callbacks
def _staged(path: str | None, role: str, folder: Path) -> Path | None:
    """Copy an upload under the suffix its bytes show (Gradio keeps the user's file name, which may lie)."""
    if not path:
        return None
    with open(path, "rb") as handle:
        head = handle.read(65536)
    target = folder / f"{role.lower()}{sniff_suffix(head, role)}"
    shutil.copyfile(path, target)
    return target


def _parse_ehr(text: str | None) -> Any:
    if not text or not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"the clinical record is not valid JSON ({error}); e.g. {{\"Age\": 64, \"T-stage\": \"T2\"}}") from None
    if not isinstance(record, dict):
        raise ValueError("the clinical record must be a JSON object of fields, e.g. {\"Age\": 64}")
    return record


def make_runner(handler: EndpointHandler, output_root: Path):
    """The Run button's function: returns (status, views, slider, volumes, curve, findings, download, state)."""

    def run(ct_file, pet_file, task, ehr_text):
        empty = (None, gr.update(), None, None, None, None, None)
        if not ct_file:
            return ("**Error:** upload a CT first (NIfTI .nii/.nii.gz, or a PNG slice).", *empty)
        try:
            info = handler.task_info(task)
            workdir = Path(tempfile.mkdtemp(prefix="case-", dir=output_root))
            ct = _staged(ct_file, "CT", workdir)
            pet = _staged(pet_file, "PET", workdir)
            ehr = _parse_ehr(ehr_text) if info["kind"] == "prognosis" else None
            prediction = handler.predict_files(ct, pet, task=task, ehr=ehr)
        except ValueError as error:  # bad input: say what to fix, keep serving
            return (f"**Error:** {error}", *empty)
        summary = prediction.summary
        status = f"**{task}** ({info['kind']}) done."
        notes = summary.get("notes") or []
        if notes:
            status += "\n\n" + "\n".join(f"- note: {n}" for n in notes)
        if info["kind"] == "segmentation":
            if prediction.label_image is None:  # a 2D PNG slice: one panel
                labels = prediction.label_array
                ct_gray = np.asarray(Image.open(ct).convert("L"), dtype=np.float32) / 255 * 2000 - 1000
                views = _panel(ct_gray, labels, (1.0, 1.0))
                rows = [[name, int(count), "pixels"] for name, count in summary["pixels"].items()]
                return (status, views, gr.update(visible=False), rows, None, None, None, None)
            view = canonical(nib.load(ct), prediction.label_image)
            middle = int(np.argwhere(view["labels"] > 0)[:, 2].mean()) if (view["labels"] > 0).any() else view["ct"].shape[2] // 2
            download = workdir / "segmentation.nii.gz"
            nib.save(prediction.label_image, download)
            rows = [[name, round(float(ml), 3), "ml"] for name, ml in summary["volumes_ml"].items()]
            slider = gr.update(minimum=0, maximum=view["ct"].shape[2] - 1, value=middle, step=1, visible=True)
            return (status, render_views(view, middle), slider, rows, None, None, str(download), view)
        if info["kind"] == "prognosis":
            status += f" Risk score {summary['risk']:.4f}; {summary.get('risk_group', '?')} risk group " \
                      f"({summary.get('risk_group_rule', '')})."
            return (status, None, gr.update(visible=False), None, survival_figure(summary), None, None, None)
        return (status, None, gr.update(visible=False), None, None, dict(summary["probabilities"]), None, None)

    return run


def build_app(model: str | None = None, handler: EndpointHandler | None = None) -> gr.Blocks:
    """The Gradio app for a model folder or repo id (or a ready handler)."""
    handler = handler or EndpointHandler(model or default_model(), device="cpu")
    output_root = Path(tempfile.mkdtemp(prefix="unicon-app-"))
    tasks = handler.tasks
    first = next((t for t in tasks if handler.task_info(t)["kind"] == "segmentation"), tasks[0])
    described = "\n".join(f"- `{t}`: {handler.task_info(t)['kind']} on "
                          f"{' + '.join(m.upper() for m in handler.task_info(t)['modalities'])}" for t in tasks)
    with gr.Blocks(title="UNICON demo") as app:
        gr.Markdown(f"# UNICON: one CT foundation model, many tasks\n\n{NOT_CLINICAL}\n\nTasks of this model:\n{described}")
        with gr.Row():
            with gr.Column():
                ct = gr.File(label="CT (NIfTI .nii / .nii.gz in HU, or a PNG slice)", elem_id="ct")
                pet = gr.File(label="PET in SUV (NIfTI), for CT+PET tasks", elem_id="pet")
                task = gr.Dropdown(choices=tasks, value=first, label="Task", elem_id="task")
                ehr = gr.Textbox(label="Clinical record (JSON), for prognosis", lines=3, elem_id="ehr",
                                 placeholder='{"Age": 64, "Gender": "M", "T-stage": "T2", "HPV status (0=-, 1=+)": 1}')
                button = gr.Button("Run", variant="primary", elem_id="run")
                status = gr.Markdown(elem_id="status")
            with gr.Column():
                views = gr.Image(label="Axial | coronal | sagittal (segmentation overlay)", type="numpy",
                                 interactive=False, elem_id="views")
                axial = gr.Slider(label="Axial slice", minimum=0, maximum=1, step=1, value=0, visible=False,
                                  elem_id="slice")
                volumes = gr.Dataframe(headers=["class", "volume", "unit"], label="Per-class volumes",
                                       interactive=False, elem_id="volumes")
                curve = gr.Plot(label="Predicted event-free survival", elem_id="curve")
                findings = gr.Label(label="Zero-shot findings: P(present)", elem_id="findings")
                download = gr.File(label="Label NIfTI (input CT grid)", interactive=False, elem_id="download")
        state = gr.State(None)
        button.click(make_runner(handler, output_root), inputs=[ct, pet, task, ehr],
                     outputs=[status, views, axial, volumes, curve, findings, download, state])
        axial.release(lambda view, index: render_views(view, index) if view else None, inputs=[state, axial],
                      outputs=views)
    return app


if __name__ == "__main__":
    build_app().launch()
