"""Continual-run reports: `report.json`, `report.md` (tables that read well on the Hub) and PNG plots.

`write_report(out_dir, report)` takes the dict of `ContinualMatrix.to_dict()` (plus any extra keys)
and optional raw material for plots: loss curves, survival predictions, segmentation cases. It can
be called after every stage (the matrix is then partial) and at the end; files are replaced whole
(written to a temporary name, then renamed), so a killed run never leaves a half-written report.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from .continual_matrix import json_safe

REQUIRED_KEYS = ("stages", "tasks", "matrix", "bwt", "params_added", "seconds")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def format_value(value: Any, digits: int = 3) -> str:
    """A number for a Markdown table: '—' for missing/NaN, thousands separators for ints."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def markdown_matrix(report: Mapping[str, Any]) -> str:
    """The forgetting matrix as a Markdown table (rows: after each stage; columns: tasks with their metric)."""
    tasks, stages = report["tasks"], report["stages"]
    header = "| after stage | " + " | ".join(f"{t['name']} ({t['metric']})" for t in tasks) + " |"
    rule = "|---|" + "---:|" * len(tasks)
    rows = [f"| {i}: {s['name']} | " + " | ".join(format_value(v, 4) for v in row) + " |"
            for i, (s, row) in enumerate(zip(stages, report["matrix"]))]
    return "\n".join([header, rule, *rows])


def markdown_summary(report: Mapping[str, Any]) -> str:
    """A short bullet list: average final performance, BWT, FWT."""
    lines = [f"- Average performance after the last stage: **{format_value(report.get('average'), 4)}**",
             f"- Backward transfer (BWT, 0 = no forgetting): **{format_value(report.get('bwt'), 4)}**"]
    if report.get("fwt") is not None:
        lines.append(f"- Forward transfer vs. the given baselines (FWT): **{format_value(report.get('fwt'), 4)}**")
    return "\n".join(lines)


def markdown_stages(report: Mapping[str, Any]) -> str:
    """Per-stage table: task, kind, parameters added (trainable / total / size) and wall time."""
    kinds = {t["name"]: t["kind"] for t in report["tasks"]}
    lines = ["| stage | task | kind | trainable params | params added | size added | seconds |",
             "|---|---|---|---:|---:|---:|---:|"]
    for i, stage in enumerate(report["stages"]):
        params = report["params_added"][i] if i < len(report["params_added"]) else {}
        params = params or {}
        seconds = report["seconds"][i] if i < len(report["seconds"]) else None
        lines.append(f"| {i}: {stage['name']} | {stage['task']} | {kinds.get(stage['task'], '—')} | "
                     f"{format_value(params.get('trainable'))} | {format_value(params.get('total'))} | {_bytes(params.get('bytes'))} | "
                     f"{format_value(seconds, 1)} |")
    return "\n".join(lines)


def _scalars(details: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a metrics dict to its scalar entries (`dice.GTVp`, `c_index`, ...); lists and notes are skipped."""
    out: dict[str, Any] = {}
    for key, value in details.items():
        if key == "notes":
            continue
        if isinstance(value, Mapping):
            out.update(_scalars(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def markdown_details(report: Mapping[str, Any]) -> str:
    """Every task's secondary numbers after the last stage that evaluated it, plus the notes on NaNs."""
    details = report.get("details") or {}
    if not details:
        return ""
    blocks = []
    for task in report["tasks"]:
        stages_with = sorted((int(s) for s, per in details.items() if task["name"] in per), reverse=True)
        if not stages_with:
            continue
        numbers = details[str(stages_with[0])][task["name"]]
        scalars = _scalars(numbers)
        block = [f"**{task['name']}** (after stage {stages_with[0]})", "", "| metric | value |", "|---|---:|"]
        block += [f"| {k} | {format_value(v, 4)} |" for k, v in scalars.items()]
        for note in numbers.get("notes", []) or []:
            block.append(f"\n> {note}")
        blocks.append("\n".join(block))
    return "\n\n".join(blocks)


def render_markdown(report: Mapping[str, Any], images: Mapping[str, str] | None = None,
                    title: str = "Continual evaluation report") -> str:
    """The whole `report.md` text. `images`: `{caption: relative path}` embedded at the end."""
    parts = [f"# {title}", "", markdown_summary(report), "", "## Forgetting matrix R[stage][task]", "",
             markdown_matrix(report), "",
             "Each row is the evaluation after that stage; `—` marks a task not learned yet. "
             "BWT is the mean over earlier tasks of (final value − value right after learning it).", "",
             "## Stages", "", markdown_stages(report)]
    details = markdown_details(report)
    if details:
        parts += ["", "## Task metrics", "", details]
    if images:
        parts += ["", "## Plots", ""]
        parts += [f"![{caption}]({rel})" for caption, rel in images.items()]
    return "\n".join(parts) + "\n"


def write_report(
    out_dir: str | os.PathLike,
    report: Mapping[str, Any],
    curves: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    survival: Mapping[str, Mapping[str, Any]] | None = None,
    overlays: Sequence[Mapping[str, Any]] | None = None,
    title: str = "Continual evaluation report",
) -> dict[str, Path]:
    """Write `report.json`, `report.md` and the PNG plots into `out_dir`; return `{name: path}`.

    Args:
        out_dir: output folder (created).
        report: `ContinualMatrix.to_dict()` output, possibly with extra keys (kept in the JSON).
        curves: `{stage name: {"steps": [...], "loss": [...]}}` -> `learning_curves.png`.
        survival: `{task name: {"risk": [...], "time": [...], "event": [...]}}` -> `km_<task>.png`.
        overlays: `[{"name", "image", "label", "prediction", "spacing"?, "class_names"?}]` ->
            `overlay_<name>.png` (volumes (D, H, W) in model order).
        title: Markdown title.
    """
    from . import plots

    missing = [k for k in REQUIRED_KEYS if k not in report]
    if missing:
        raise UserInputError(f"report is missing key(s) {missing}; build it with ContinualMatrix.to_dict()")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    images: dict[str, str] = {}
    clean = json_safe(dict(report))
    if clean["stages"] and clean["tasks"]:
        written["forgetting_matrix"] = plots.plot_forgetting_matrix(clean, out / "forgetting_matrix.png")
        images["Forgetting matrix"] = "forgetting_matrix.png"
    if curves:
        written["learning_curves"] = plots.plot_learning_curves(curves, out / "learning_curves.png")
        images["Learning curves"] = "learning_curves.png"
    for task, data in (survival or {}).items():
        name = f"km_{task}"
        written[name] = plots.plot_kaplan_meier(data["risk"], data["time"], data["event"], out / f"{name}.png",
                                                title=f"{task}: predicted risk groups")
        images[f"Kaplan-Meier, {task}"] = f"{name}.png"
    for case in overlays or []:
        name = f"overlay_{case['name']}"
        written[name] = plots.plot_segmentation_overlay(
            case["image"], case["label"], case["prediction"], out / f"{name}.png", spacing=case.get("spacing"),
            class_names=case.get("class_names"), title=case.get("title", case["name"]))
        images[f"Segmentation, {case['name']}"] = f"{name}.png"
    clean["plots"] = {k: v.name for k, v in written.items()}
    _atomic_write(out / "report.json", json.dumps(clean, indent=2, allow_nan=False) + "\n")
    written["json"] = out / "report.json"
    _atomic_write(out / "report.md", render_markdown(clean, images, title))
    written["markdown"] = out / "report.md"
    return written
