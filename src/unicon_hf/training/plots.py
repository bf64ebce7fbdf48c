"""PNG plots for continual-run reports (matplotlib, Agg backend: no display needed).

- `plot_forgetting_matrix`: heatmap of R[stage][task] with the values written in each cell;
- `plot_learning_curves`: training loss per step, one panel per stage (validation metric on a
  second axis when given);
- `plot_kaplan_meier`: Kaplan-Meier curves of the low- and high-risk halves (split at the median
  predicted risk), with the log-rank p-value;
- `plot_segmentation_overlay`: axial / coronal / sagittal slices of the CT with ground-truth and
  predicted contours.

Each function writes one PNG and returns its path. Figures are closed after saving, so a long run
does not accumulate memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are written on headless machines; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..errors import UserInputError  # noqa: E402
from .metrics import kaplan_meier, logrank_test  # noqa: E402

DPI = 120
# Contour colours per foreground class (label 1, 2, ...): ground truth solid, prediction dashed.
CLASS_COLOURS = ["#2ca02c", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b"]


def _save(fig, path: str | Path) -> Path:
    """Save as PNG through a temporary file, so an interrupted run never leaves a truncated image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_forgetting_matrix(report: Mapping[str, Any], path: str | Path) -> Path:
    """Heatmap of the matrix in a report dict (`ContinualMatrix.to_dict()` form).

    Rows: "after stage i (name)"; columns: "task (metric)". Cells not yet learned are blank grey.
    Colours use the absolute 0..1 scale for metrics in that range and a per-column scale otherwise;
    the written values are always the raw numbers.
    """
    matrix = np.array([[np.nan if v is None else float(v) for v in row] for row in report["matrix"]], float)
    if matrix.ndim != 2 or matrix.size == 0:
        raise UserInputError("forgetting matrix plot: report['matrix'] is empty")
    tasks = report["tasks"]
    stages = report["stages"]
    scaled = np.full_like(matrix, np.nan)
    for j in range(matrix.shape[1]):
        col = matrix[:, j]
        if not np.isfinite(col).any():
            continue
        direction = 1.0 if tasks[j].get("higher_is_better", True) else -1.0
        lo, hi = np.nanmin(col), np.nanmax(col)
        if lo >= 0 and hi <= 1:
            # AUROC, C-index, Dice: an absolute 0..1 scale makes colours comparable across tasks.
            scaled[:, j] = col if direction > 0 else 1 - col
        else:
            # Unbounded metrics (e.g. HD95) are scaled within their column; a constant column sits mid-scale.
            scaled[:, j] = 0.5 if hi == lo else 0.5 + direction * ((col - lo) / (hi - lo) - 0.5)
    scaled[~np.isfinite(matrix)] = np.nan  # not-yet-learned cells stay grey
    fig, ax = plt.subplots(figsize=(1.8 + 1.7 * matrix.shape[1], 1.2 + 0.6 * matrix.shape[0]))
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#dddddd")
    ax.imshow(np.ma.masked_invalid(scaled), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            text = "—" if math.isnan(matrix[i, j]) else f"{matrix[i, j]:.3f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9)
    ax.set_xticks(range(matrix.shape[1]), [f"{t['name']}\n({t['metric']})" for t in tasks], fontsize=8)
    ax.set_yticks(range(matrix.shape[0]), [f"after {i}: {s['name']}" for i, s in enumerate(stages)], fontsize=8)
    ax.set_xlabel("task evaluated")
    bwt = report.get("bwt")
    ax.set_title("R[stage][task]" + (f"   BWT = {bwt:+.4f}" if isinstance(bwt, (int, float)) else ""), fontsize=10)
    return _save(fig, path)


def plot_learning_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path) -> Path:
    """Loss per optimizer step, one panel per stage.

    Args:
        curves: `{stage name: {"steps": [...], "loss": [...]}}`, optionally with `"eval_steps"`,
            `"eval_metric"` and `"eval_name"` for a validation curve on a second axis.
    """
    if not curves:
        raise UserInputError("learning curves plot: no stage has a loss curve")
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.0), squeeze=False)
    for ax, (stage, curve) in zip(axes[0], curves.items()):
        steps, loss = list(curve.get("steps", [])), list(curve.get("loss", []))
        if len(steps) != len(loss):
            raise UserInputError(f"learning curves plot: stage {stage!r} has {len(steps)} steps and {len(loss)} losses")
        ax.plot(steps, loss, color="#1f77b4", lw=1.2, label="train loss")
        ax.set_title(stage, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if curve.get("eval_steps"):
            twin = ax.twinx()
            twin.plot(curve["eval_steps"], curve["eval_metric"], "o-", color="#d62728", ms=3, lw=1,
                      label=curve.get("eval_name", "validation"))
            twin.set_ylabel(curve.get("eval_name", "validation"), color="#d62728")
        if not steps:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.5, 0.5, "evaluation only\n(nothing trained)", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    fig.tight_layout()
    return _save(fig, path)


def _km_step(ax, time, event, label, colour):
    times, surv = kaplan_meier(time, event)
    ax.step(np.concatenate([[0.0], times]), np.concatenate([[1.0], surv]), where="post", color=colour, label=label)
    censored = ~np.asarray(event, bool)
    if censored.any():
        t_c = np.asarray(time, float)[censored]
        idx = np.searchsorted(times, t_c, side="right") - 1
        ax.plot(t_c, np.where(idx >= 0, surv[np.clip(idx, 0, None)], 1.0), "|", color=colour, ms=8)


def plot_kaplan_meier(risk: Any, time: Any, event: Any, path: str | Path, title: str = "",
                      time_unit: str = "days") -> Path:
    """Kaplan-Meier curves of patients below / above the median predicted risk, with the log-rank p-value.

    Ties at the median go to the low-risk group; censored cases are marked with ticks.
    """
    risk = np.asarray(risk, float).ravel()
    time = np.asarray(time, float).ravel()
    event = np.asarray(event).ravel().astype(bool)
    if not len(risk) == len(time) == len(event) or len(risk) < 2:
        raise UserInputError(f"Kaplan-Meier plot: need >= 2 cases with risk, time and event of equal length "
                             f"(got {len(risk)}, {len(time)}, {len(event)})")
    high = risk > np.median(risk)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    p_text = ""
    if high.any() and (~high).any():
        _km_step(ax, time[~high], event[~high], f"low risk (n={int((~high).sum())})", "#2ca02c")
        _km_step(ax, time[high], event[high], f"high risk (n={int(high.sum())})", "#d62728")
        p = logrank_test(time[~high], event[~high], time[high], event[high])["p_value"]
        p_text = "" if math.isnan(p) else f"log-rank p = {p:.3g}"
    else:
        _km_step(ax, time, event, f"all (n={len(time)}; risks identical)", "#7f7f7f")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"time ({time_unit})")
    ax.set_ylabel("event-free probability")
    ax.set_title(" — ".join(x for x in (title, p_text) if x), fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _slice_index(label: np.ndarray, axis: int) -> int:
    """Slice through the ground truth's largest cross-section (the middle slice if it is empty)."""
    area = (label > 0).sum(axis=tuple(a for a in range(3) if a != axis))
    return int(np.argmax(area)) if area.any() else label.shape[axis] // 2


def plot_segmentation_overlay(image: Any, label: Any, prediction: Any, path: str | Path,
                              spacing: Sequence[float] | None = None, class_names: Sequence[str] | None = None,
                              title: str = "", window: tuple[float, float] | None = None) -> Path:
    """Axial, coronal and sagittal slices of `image` with ground truth (solid) and prediction (dashed) contours.

    Arrays are in model order (D, H, W) = (k, i, j) of the canonical (RAS) volume: axial = fixed D,
    coronal = fixed W, sagittal = fixed H; each view goes through the ground truth's largest
    cross-section. `spacing` (mm, D/H/W order) sets the aspect ratio; `window` the grey-level range
    (default: the 1st-99th percentile).
    """
    image, label, prediction = (np.asarray(x) for x in (image, label, prediction))
    if image.ndim != 3 or image.shape != label.shape or image.shape != prediction.shape:
        raise UserInputError(f"segmentation overlay: image {image.shape}, label {label.shape} and prediction "
                             f"{prediction.shape} must be the same (D, H, W) volume")
    sd, sh, sw = spacing if spacing is not None else (1.0, 1.0, 1.0)
    lo, hi = window if window is not None else np.percentile(image, [1, 99])
    n_classes = int(max(label.max(), prediction.max(), len(class_names or [])))
    names = list(class_names or [f"class {c}" for c in range(1, n_classes + 1)])
    # (name, 2D slicer, aspect = row spacing / column spacing, rows are flipped so superior/anterior is up)
    views = [
        ("axial", lambda v, k: v[k].T, _slice_index(label, 0), sw / sh),
        ("coronal", lambda v, k: v[:, :, k], _slice_index(label, 2), sd / sh),
        ("sagittal", lambda v, k: v[:, k, :], _slice_index(label, 1), sd / sw),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    for ax, (name, take, index, aspect) in zip(axes, views):
        ax.imshow(take(image, index), cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect,
                  interpolation="nearest")
        for c in range(1, n_classes + 1):
            colour = CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)]
            for volume, style in ((label, "solid"), (prediction, "dashed")):
                mask = take(volume == c, index).astype(float)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=[colour], linestyles=style, linewidths=1.2)
        ax.set_title(f"{name} (slice {index})", fontsize=9)
        ax.set_axis_off()
    handles = [matplotlib.lines.Line2D([], [], color=CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)], ls=ls,
                                       label=f"{names[c - 1] if c - 1 < len(names) else c} {kind}")
               for c in range(1, n_classes + 1) for ls, kind in (("solid", "truth"), ("dashed", "prediction"))]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
