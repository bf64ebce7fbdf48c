"""Task metrics for continual evaluation: classification, prognosis (survival) and segmentation.

Each task kind has one *main* metric that fills the forgetting matrix (`MAIN_METRICS`), plus
secondary numbers for the report. Where a field library does the job we call it:

- AUROC: MONAI `compute_roc_auc` (scikit-learn is not a dependency of this project).
- Kaplan-Meier survival curves and the log-rank test: SciPy `stats.ecdf` / `stats.logrank`.
- Dice / HD95: MONAI `DiceMetric(include_background=False)` and
  `HausdorffDistanceMetric(percentile=95)` with the voxel spacing.

Hand-written here, because no dependency of this project provides them (scikit-survival and
lifelines are not installed; lifelines would also downgrade pandas): Harrell's C-index, the
Kaplan-Meier estimator of censoring, the IPCW cumulative/dynamic AUC, the IPCW integrated Brier
score, and the HECKTOR aggregated Dice (a ratio of sums over cases that MONAI's per-case Dice
cannot express). Each is checked against a hand-computed case in
`tests/test_metrics.py`.

Undefined values are NaN, never an exception, and every NaN comes with a sentence in the result's
`notes` list saying why (e.g. a label with only one class present, an empty ground truth).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError

# Main metric per task kind, and whether higher is better. The forgetting matrix uses these.
MAIN_METRICS: dict[str, tuple[str, bool]] = {
    "zero_shot_classification": ("auroc_macro", True),
    "prognosis": ("c_index", True),
    "segmentation": ("dice_mean", True),
}


def main_metric(kind: str) -> tuple[str, bool]:
    """Return `(metric name, higher_is_better)` for a task kind."""
    if kind not in MAIN_METRICS:
        raise UserInputError(f"task kind {kind!r} has no main metric; expected one of {', '.join(MAIN_METRICS)}")
    return MAIN_METRICS[kind]


def _as_numpy(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"{name}: could not read as a numeric array ({exc})") from exc


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def auroc(scores: Any, labels: Any, label_names: Sequence[str] | None = None) -> dict[str, Any]:
    """AUROC per binary label and their macro mean.

    Args:
        scores: (N, L) or (N,) predicted probability (or any score, higher = present).
        labels: same shape, 0/1 ground truth.
        label_names: L names; defaults to `label_0`, `label_1`, ...

    Returns:
        `{"auroc": {name: value}, "auroc_macro": mean over defined labels, "notes": [...]}`. A label
        whose ground truth has a single class (all 0 or all 1) has no AUROC: its value is NaN, it is
        left out of the macro mean and a note says so.
    """
    s = _as_numpy(scores, "scores")
    y = _as_numpy(labels, "labels")
    if s.ndim == 1:
        s = s[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if s.shape != y.shape or s.ndim != 2:
        raise UserInputError(f"auroc: scores {s.shape} and labels {y.shape} must both be (N, L)")
    names = list(label_names) if label_names is not None else [f"label_{i}" for i in range(s.shape[1])]
    if len(names) != s.shape[1]:
        raise UserInputError(f"auroc: {len(names)} label names for {s.shape[1]} columns")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise UserInputError(f"auroc: labels must be 0/1, found {sorted(set(np.unique(y[bad]).tolist()))[:5]}")
    from monai.metrics import compute_roc_auc

    per_label: dict[str, float] = {}
    notes: list[str] = []
    for k, name in enumerate(names):
        present = np.unique(y[:, k])
        if len(present) < 2:
            per_label[name] = float("nan")
            notes.append(f"AUROC for {name!r} is NaN: only class {int(present[0]) if len(present) else '-'} "
                         f"present among {len(y)} cases")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_label[name] = float(compute_roc_auc(torch.from_numpy(s[:, k]), torch.from_numpy(y[:, k])))
    defined = [v for v in per_label.values() if not math.isnan(v)]
    macro = float(np.mean(defined)) if defined else float("nan")
    return {"auroc": per_label, "auroc_macro": macro, "notes": notes}


# --------------------------------------------------------------------------------------------
# Survival
# --------------------------------------------------------------------------------------------


def _check_survival(time: Any, event: Any, *others: tuple[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    t = _as_numpy(time, "time").ravel()
    e = _as_numpy(event, "event").ravel()
    if len(t) != len(e):
        raise UserInputError(f"time ({len(t)}) and event ({len(e)}) differ in length")
    for name, value in others:
        if len(value) != len(t):
            raise UserInputError(f"{name} has {len(value)} values for {len(t)} cases")
    if not np.isin(e, (0, 1)).all():
        raise UserInputError("event must be 0 (censored) or 1 (event)")
    if not np.isfinite(t).all() or (t < 0).any():
        raise UserInputError("time must be finite and >= 0 (days); a missing RFS cannot be evaluated")
    return t, e.astype(bool)


def concordance_index(risk: Any, time: Any, event: Any, tied_tol: float = 1e-8) -> dict[str, Any]:
    """Harrell's C-index for right-censored data (higher risk = earlier event).

    A pair (i, j) is comparable when i had an event and `time[i] < time[j]`, or when both share the
    time and j is censored (the event is taken to come first: scikit-survival's convention). Two
    events at the same time are not comparable. A concordant pair counts 1, a risk tie (within
    `tied_tol`) 0.5.

    Returns `{"c_index", "concordant", "discordant", "tied_risk", "comparable", "notes"}`; the C-index
    is NaN (with a note) when no pair is comparable (e.g. every case censored).
    """
    r = _as_numpy(risk, "risk").ravel()
    t, e = _check_survival(time, event, ("risk", r))
    # Pairwise matrices are fine for evaluation sizes (HECKTOR: ~500 cases -> 250k pairs).
    earlier = (t[:, None] < t[None, :]) | ((t[:, None] == t[None, :]) & ~e[None, :])
    comparable = e[:, None] & earlier
    np.fill_diagonal(comparable, False)
    diff = r[:, None] - r[None, :]
    ties = comparable & (np.abs(diff) <= tied_tol)
    concordant = comparable & (diff > tied_tol)
    n = int(comparable.sum())
    notes = []
    if n == 0:
        notes.append("C-index is NaN: no comparable pair (needs at least one event before another time)")
        c = float("nan")
    else:
        c = (concordant.sum() + 0.5 * ties.sum()) / n
    return {
        "c_index": float(c),
        "concordant": int(concordant.sum()),
        "discordant": int(n - concordant.sum() - ties.sum()),
        "tied_risk": int(ties.sum()),
        "comparable": n,
        "notes": notes,
    }


def kaplan_meier(time: Any, event: Any) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier survival estimate (SciPy `stats.ecdf` on right-censored data).

    Returns `(times, survival)` at each distinct observed time; `survival[k]` is S(times[k])
    (right-continuous: it includes the drop at `times[k]`).
    """
    from scipy import stats

    t, e = _check_survival(time, event)
    result = stats.ecdf(stats.CensoredData.right_censored(t, ~e))
    return np.asarray(result.sf.quantiles, float), np.asarray(result.sf.probabilities, float)


def censoring_survival(time: Any, event: Any) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier estimate G(t) of the censoring distribution (censoring is the 'event').

    At a time shared by an event and a censoring, the event is taken to come first, so subjects
    whose event is at that time have left the censoring risk set. Returns `(times, G)` at each
    distinct censoring time. Written by hand because flipping the indicator into SciPy's `ecdf`
    would keep those subjects at risk (the opposite tie convention to the C-index above).
    """
    t, e = _check_survival(time, event)
    times = np.unique(t[~e])
    at_risk = (t[None, :] > times[:, None]).sum(axis=1) + ((t[None, :] == times[:, None]) & ~e[None, :]).sum(axis=1)
    censored = ((t[None, :] == times[:, None]) & ~e[None, :]).sum(axis=1)
    return times, np.cumprod(1.0 - censored / at_risk)


def _step(times: np.ndarray, values: np.ndarray, at: np.ndarray, left: bool = False) -> np.ndarray:
    """Evaluate a right-continuous step function starting at 1 (S or G) at `at`; `left` = limit from the left."""
    side = "left" if left else "right"
    idx = np.searchsorted(times, at, side=side) - 1
    return np.where(idx >= 0, values[np.clip(idx, 0, None)] if len(values) else 1.0, 1.0)


def default_time_grid(time: Any, event: Any, n: int = 10) -> np.ndarray:
    """A time grid for time-dependent metrics: event-time quantiles 10%..90%, inside follow-up.

    IPCW needs G(t) > 0, so every point is kept strictly below the last observed time.
    """
    t, e = _check_survival(time, event)
    if not e.any():
        return np.array([])
    grid = np.unique(np.quantile(t[e], np.linspace(0.1, 0.9, n)))
    return grid[(grid >= t.min()) & (grid < t.max())]


def _ipcw_setup(time, event, train_time, train_event):
    t, e = _check_survival(time, event)
    if train_time is None:
        ct, cg = censoring_survival(t, e)
    else:
        ct, cg = censoring_survival(train_time, train_event)
    return t, e, ct, cg


def time_dependent_auc(
    risk: Any,
    time: Any,
    event: Any,
    times: Any,
    train_time: Any = None,
    train_event: Any = None,
) -> dict[str, Any]:
    """Cumulative/dynamic time-dependent AUC with IPCW (Uno et al. 2007), at each time in `times`.

    Cases at t: events with `time <= t`, each weighted 1/G(time_i-) (G = Kaplan-Meier of censoring,
    from the training split if given, else from these cases); controls: `time > t`, weight 1.
    AUC(t) = sum_cases w_i * [#controls with lower risk + 0.5 * ties] / (sum_cases w_i * #controls).
    `td_auc_mean` is the plain mean over the grid (sksurv weights by the KM drop instead).

    Returns `{"times": [...], "td_auc": [...], "td_auc_mean", "notes"}`; NaN at a time with no case or
    no control (noted).
    """
    r = _as_numpy(risk, "risk").ravel()
    grid = _as_numpy(times, "times").ravel()
    t, e, ct, cg = _ipcw_setup(time, event, train_time, train_event)
    if len(r) != len(t):
        raise UserInputError(f"risk has {len(r)} values for {len(t)} cases")
    g_event = _step(ct, cg, t, left=True)
    notes = []
    aucs = []
    for tau in grid:
        cases = e & (t <= tau)
        controls = t > tau
        if not cases.any() or not controls.any():
            aucs.append(float("nan"))
            notes.append(f"time-dependent AUC at t={tau:g} is NaN: {'no case' if not cases.any() else 'no control'}")
            continue
        if (g_event[cases] <= 0).any():
            aucs.append(float("nan"))
            notes.append(f"time-dependent AUC at t={tau:g} is NaN: censoring survival reaches 0")
            continue
        w = 1.0 / g_event[cases]
        diff = r[cases][:, None] - r[controls][None, :]
        score = (diff > 0).sum(axis=1) + 0.5 * (diff == 0).sum(axis=1)
        aucs.append(float((w * score).sum() / (w.sum() * controls.sum())))
    defined = [a for a in aucs if not math.isnan(a)]
    return {
        "times": grid.tolist(),
        "td_auc": aucs,
        "td_auc_mean": float(np.mean(defined)) if defined else float("nan"),
        "notes": notes,
    }


def brier_scores(
    survival: Any,
    time: Any,
    event: Any,
    times: Any,
    train_time: Any = None,
    train_event: Any = None,
) -> dict[str, Any]:
    """IPCW Brier score at each time and the integrated Brier score (Graf et al. 1999).

    Args:
        survival: (N, T) predicted survival probability S(times[k] | x_i).
        time, event: observed follow-up and event indicator of the N cases.
        times: the T grid times, increasing.
        train_time, train_event: optional training split for the censoring distribution G.

    BS(t) = mean_i [ S_i(t)^2 * 1(time_i <= t, event_i) / G(time_i-) + (1 - S_i(t))^2 * 1(time_i > t) / G(t) ];
    cases censored before t contribute 0. IBS = trapezoidal integral of BS over the grid divided by
    its span (NaN with fewer than two grid points).
    """
    s = _as_numpy(survival, "survival")
    grid = _as_numpy(times, "times").ravel()
    t, e, ct, cg = _ipcw_setup(time, event, train_time, train_event)
    if s.shape != (len(t), len(grid)):
        raise UserInputError(f"survival must be (cases, times) = ({len(t)}, {len(grid)}), got {s.shape}")
    if np.any(np.diff(grid) <= 0):
        raise UserInputError("times must be strictly increasing")
    g_event = _step(ct, cg, t, left=True)
    g_grid = _step(ct, cg, grid)
    notes = []
    scores = []
    for k, tau in enumerate(grid):
        died = e & (t <= tau)
        alive = t > tau
        if g_grid[k] <= 0 or (g_event[died] <= 0).any():
            scores.append(float("nan"))
            notes.append(f"Brier score at t={tau:g} is NaN: censoring survival reaches 0")
            continue
        contrib = np.zeros(len(t))
        contrib[died] = s[died, k] ** 2 / g_event[died]
        contrib[alive] = (1.0 - s[alive, k]) ** 2 / g_grid[k]
        scores.append(float(contrib.mean()))
    bs = np.asarray(scores)
    if len(grid) < 2 or np.isnan(bs).any():
        ibs = float("nan")
        notes.append("integrated Brier score is NaN: needs >= 2 grid times with defined Brier scores")
    else:
        ibs = float(np.trapezoid(bs, grid) / (grid[-1] - grid[0]))
    return {"times": grid.tolist(), "brier": scores, "ibs": ibs, "notes": notes}


def logrank_test(time_a: Any, event_a: Any, time_b: Any, event_b: Any) -> dict[str, float]:
    """Two-group log-rank test (SciPy `stats.logrank`); returns `{"statistic" (signed z), "p_value" (two-sided)}`."""
    from scipy import stats

    ta, ea = _check_survival(time_a, event_a)
    tb, eb = _check_survival(time_b, event_b)
    if not (ea.any() or eb.any()) or len(ta) == 0 or len(tb) == 0:
        return {"statistic": float("nan"), "p_value": float("nan")}
    result = stats.logrank(stats.CensoredData.right_censored(ta, ~ea), stats.CensoredData.right_censored(tb, ~eb))
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue)}


def prognosis_metrics(
    risk: Any,
    time: Any,
    event: Any,
    survival: Any = None,
    times: Any = None,
    train_time: Any = None,
    train_event: Any = None,
) -> dict[str, Any]:
    """All prognosis numbers: C-index (main), time-dependent AUC, and IBS when `survival` is given.

    `times` defaults to `default_time_grid(time, event)`; `survival` must then be evaluated on it.
    """
    c = concordance_index(risk, time, event)
    grid = default_time_grid(time, event) if times is None else _as_numpy(times, "times").ravel()
    td = time_dependent_auc(risk, time, event, grid, train_time, train_event)
    out = {"c_index": c["c_index"], "comparable_pairs": c["comparable"], "times": td["times"],
           "td_auc": td["td_auc"], "td_auc_mean": td["td_auc_mean"], "notes": c["notes"] + td["notes"]}
    if survival is not None:
        b = brier_scores(survival, time, event, grid, train_time, train_event)
        out.update(brier=b["brier"], ibs=b["ibs"])
        out["notes"] += b["notes"]
    return out


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------


def _one_hot(label_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, D, H, W) int -> (B, C, D, H, W) float one-hot, as MONAI metrics expect."""
    return torch.nn.functional.one_hot(label_map.long(), num_classes).permute(0, 4, 1, 2, 3).float()


class SegmentationMetrics:
    """Accumulates per-class Dice, HECKTOR aggregated Dice and HD95 over cases (background excluded).

    Args:
        class_names: names of the foreground classes 1..K (label 0 is background and never scored),
            e.g. `["GTVp", "GTVn"]`.
        hd95: also compute HD95 (costlier: surface distances).

    Call `update(pred, target, spacing)` with label maps (B, D, H, W) or (D, H, W), then `compute()`:
    - `dice[name]`: mean over cases of MONAI Dice; a case with empty ground truth for that class is
      skipped (MONAI `ignore_empty`), NaN when every case is empty;
    - `aggregated_dice[name]`: HECKTOR 2022's sum over cases of 2|A∩B| / sum of (|A|+|B|), which
      counts empty cases (a false positive in an empty case lowers it); NaN only when the class is
      absent in every prediction and every ground truth;
    - `hd95[name]`: mean over cases of MONAI's 95th-percentile Hausdorff distance in mm (using the
      spacing); NaN for a case whose prediction or ground truth is empty (MONAI returns NaN/inf
      there, we report NaN) and skipped in the mean;
    - `*_mean`: mean over classes of the defined values.
    """

    def __init__(self, class_names: Sequence[str], hd95: bool = True):
        if not class_names:
            raise UserInputError("segmentation metrics need at least one foreground class name")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names) + 1
        self.with_hd95 = hd95
        self.reset()

    def reset(self) -> None:
        self._dice: list[np.ndarray] = []
        self._hd95: list[np.ndarray] = []
        self._intersection = np.zeros(len(self.class_names))
        self._volume_sum = np.zeros(len(self.class_names))

    def update(self, pred: Any, target: Any, spacing: Sequence[float] | None = None) -> None:
        """Add cases. `pred`, `target`: integer label maps (B, D, H, W) or (D, H, W); `spacing` in mm (D, H, W order)."""
        p = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred)
        y = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target)
        if p.ndim == 3:
            p, y = p[None], y[None]
        if p.shape != y.shape or p.ndim != 4:
            raise UserInputError(f"segmentation metrics: prediction {tuple(p.shape)} and label {tuple(y.shape)} "
                                 "must both be (B, D, H, W) label maps")
        for name, x in (("prediction", p), ("label", y)):
            if x.min() < 0 or x.max() >= self.num_classes:
                raise UserInputError(f"segmentation metrics: {name} values must be in 0..{self.num_classes - 1} "
                                     f"({', '.join(['background'] + self.class_names)}), found {int(x.min())}..{int(x.max())}")
        from monai.metrics import DiceMetric, HausdorffDistanceMetric

        p1, y1 = _one_hot(p, self.num_classes), _one_hot(y, self.num_classes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns for every empty class; we note NaNs ourselves
            dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(p1, y1)
            self._dice.append(dice.cpu().numpy().reshape(-1, len(self.class_names)))
            if self.with_hd95:
                hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
                    p1, y1, spacing=list(spacing) if spacing is not None else None)
                hd = hd.cpu().numpy().reshape(-1, len(self.class_names)).astype(float)
                hd[~np.isfinite(hd)] = np.nan
                # MONAI's convention for empty masks changed across versions; state ours explicitly.
                empty = (p1[:, 1:].flatten(2).sum(-1) == 0) | (y1[:, 1:].flatten(2).sum(-1) == 0)
                hd[empty.cpu().numpy()] = np.nan
                self._hd95.append(hd)
        dims = (2, 3, 4)
        self._intersection += (p1[:, 1:] * y1[:, 1:]).sum(dims).sum(0).cpu().numpy()
        self._volume_sum += (p1[:, 1:].sum(dims) + y1[:, 1:].sum(dims)).sum(0).cpu().numpy()

    def state(self) -> dict[str, Any]:
        """Accumulated per-case values, to combine shards evaluated by several processes (`merge`)."""
        return {"dice": list(self._dice), "hd95": list(self._hd95),
                "intersection": self._intersection.copy(), "volume_sum": self._volume_sum.copy()}

    def merge(self, state: dict[str, Any]) -> None:
        """Add the cases accumulated elsewhere (another process's `state()`)."""
        self._dice += list(state["dice"])
        self._hd95 += list(state["hd95"])
        self._intersection += state["intersection"]
        self._volume_sum += state["volume_sum"]

    def compute(self) -> dict[str, Any]:
        """Return the metrics dict (see the class docstring)."""
        if not self._dice:
            raise UserInputError("segmentation metrics: no case was added before compute()")
        notes: list[str] = []
        out: dict[str, Any] = {"num_cases": int(sum(len(d) for d in self._dice))}

        def per_class(rows: list[np.ndarray], label: str) -> dict[str, float]:
            values = np.concatenate(rows)
            result = {}
            for k, name in enumerate(self.class_names):
                col = values[:, k]
                n_nan = int(np.isnan(col).sum())
                if n_nan == len(col):
                    result[name] = float("nan")
                    notes.append(f"{label} for {name!r} is NaN: {'ground truth' if label == 'Dice' else 'prediction or ground truth'}"
                                 f" empty in all {len(col)} cases")
                else:
                    result[name] = float(np.nanmean(col))
                    if n_nan:
                        notes.append(f"{label} for {name!r} skips {n_nan} of {len(col)} cases with empty "
                                     f"{'ground truth' if label == 'Dice' else 'prediction or ground truth'}")
            return result

        def mean(values: dict[str, float]) -> float:
            defined = [v for v in values.values() if not math.isnan(v)]
            return float(np.mean(defined)) if defined else float("nan")

        out["dice"] = per_class(self._dice, "Dice")
        out["dice_mean"] = mean(out["dice"])
        agg = {}
        for k, name in enumerate(self.class_names):
            if self._volume_sum[k] == 0:
                agg[name] = float("nan")
                notes.append(f"aggregated Dice for {name!r} is NaN: class absent in all predictions and labels")
            else:
                agg[name] = float(2 * self._intersection[k] / self._volume_sum[k])
        out["aggregated_dice"] = agg
        out["aggregated_dice_mean"] = mean(agg)
        if self.with_hd95:
            out["hd95"] = per_class(self._hd95, "HD95")
            out["hd95_mean"] = mean(out["hd95"])
        out["notes"] = notes
        return out


def segmentation_metrics(pred: Any, target: Any, class_names: Sequence[str], spacing: Sequence[float] | None = None,
                         hd95: bool = True) -> dict[str, Any]:
    """One-call form of `SegmentationMetrics` for label maps already in memory."""
    metric = SegmentationMetrics(class_names, hd95=hd95)
    metric.update(pred, target, spacing)
    return metric.compute()


def classification_metrics(scores: Any, labels: Any, label_names: Sequence[str] | None = None) -> dict[str, Any]:
    """All classification numbers (AUROC per label + macro, the main metric)."""
    return auroc(scores, labels, label_names)


@torch.no_grad()
def per_class_dice(logits: torch.Tensor, labels: torch.Tensor, label_names: Sequence[str] | None = None) -> dict[str, float]:
    """Per-class Dice of the argmax prediction, background excluded, averaged over the batch.

    Delegates to the project's evaluation metric (`unicon_hf.training.metrics.segmentation_metrics`,
    MONAI `DiceMetric(include_background=False, ignore_empty=True)`) so training-time and report Dice
    are one definition: a case whose reference lacks a class is skipped for that class, and a class
    absent from every reference is NaN (not 0, which would read as a failure).

    Args:
        logits: (B, num_classes, D, H, W).
        labels: (B, D, H, W) or (B, 1, D, H, W) integer class indices.
        label_names: names of the foreground classes (num_classes - 1 of them), or of all classes with the
            background first; defaults to "class_1", "class_2", ... .

    Returns:
        {foreground name: Dice in [0, 1] or NaN}. Put it in `SegmentationOutput.dice` for evaluation.
    """
    num_classes = logits.shape[1]
    names = list(label_names) if label_names is not None else [f"class_{i}" for i in range(1, num_classes)]
    if len(names) == num_classes:
        names = names[1:]
    if len(names) != num_classes - 1:
        raise UserInputError(
            f"label_names must name the {num_classes - 1} foreground classes (or all {num_classes} with background first); "
            f"got {len(names)}: {names}."
        )
    target = labels[:, 0] if labels.ndim == 5 else labels
    if tuple(target.shape) != (logits.shape[0], *logits.shape[2:]):
        raise UserInputError(f"labels shape {tuple(labels.shape)} does not match logits {tuple(logits.shape)} (B, D, H, W).")
    return segmentation_metrics(logits.argmax(dim=1), target.long(), names, hd95=False)["dice"]
