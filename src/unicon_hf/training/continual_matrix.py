"""The continual-learning matrix R[stage][task] and the numbers derived from it.

After stage s has trained its task, every task learned so far is evaluated and its main metric is
stored in R[s][t]; R[s][t] is NaN while task t is not yet learned (s < stage of t). From R:

- average performance: mean over tasks of the last row (each task's metric after the final stage;
  higher-is-better metrics only);
- backward transfer, BWT (Lopez-Paz & Ranzato 2017, GEM): mean over tasks learned *before* the last
  stage of R[last][t] - R[stage of t][t]. Negative = forgetting. A task whose outputs are unchanged
  contributes exactly 0.0 (identical floats subtract to 0), which is what UNICON guarantees; the
  last stage's own task is left out because its difference is 0 by definition;
- forward transfer, FWT: GEM measures R[stage-1][t] - b_t, but a UNICON task has no head before its
  own stage, so that entry does not exist. We report instead, where a reference baseline b_t is
  given (e.g. the same task trained alone from scratch, or a published number), the mean of
  R[stage of t][t] - b_t; NaN when no task has a baseline;
- per-stage parameters added (trainable / total / bytes) and wall time in seconds.

For a metric where lower is better, differences are sign-flipped so that positive always means
better. Everything serialises to JSON with NaN written as null (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import UserInputError
from .metrics import main_metric


@dataclass
class TaskEntry:
    """One column of the matrix.

    Attributes:
        name: task name (unique across the plan).
        kind: task kind (zero_shot_classification, prognosis, segmentation).
        stage: index of the stage that learned it.
        metric: name of the main metric stored in the matrix (e.g. "c_index").
        higher_is_better: direction of the metric.
        baseline: optional reference value of the metric for forward transfer.
    """

    name: str
    kind: str
    stage: int
    metric: str
    higher_is_better: bool = True
    baseline: float | None = None


@dataclass
class StageEntry:
    """One row of the matrix: the stage's name, its task, parameters added and wall time."""

    index: int
    name: str
    task: str
    params_added: dict[str, int] = field(default_factory=dict)
    seconds: float | None = None


def parameter_summary(model: Any) -> dict[str, int]:
    """Count a torch module's parameters: `{"trainable", "total", "bytes"}` (bytes of all parameters)."""
    params = list(model.parameters())
    return {
        "trainable": int(sum(p.numel() for p in params if p.requires_grad)),
        "total": int(sum(p.numel() for p in params)),
        "bytes": int(sum(p.numel() * p.element_size() for p in params)),
    }


def params_added(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Parameters a stage added: total and bytes grow by the difference; `trainable` is what the
    stage trained (the count taken while its parameters were the only trainable ones)."""
    return {"trainable": int(after["trainable"]), "total": int(after["total"] - before["total"]),
            "bytes": int(after["bytes"] - before["bytes"])}


def json_safe(value: Any) -> Any:
    """Recursively replace NaN by None and numpy scalars by Python numbers (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


class ContinualMatrix:
    """Builds R[stage][task] stage by stage.

    Usage: `add_stage(name, task_name, kind)` when a stage starts (this registers its task as a
    new column), `record(stage, task, value)` for each evaluation after it, and
    `set_stage_cost(stage, params_added=..., seconds=...)`; then `to_dict()`.
    """

    def __init__(self) -> None:
        self.stages: list[StageEntry] = []
        self.tasks: list[TaskEntry] = []
        self._values: dict[tuple[int, str], float] = {}
        self.details: dict[tuple[int, str], dict[str, Any]] = {}

    # ---------------------------------------------------------------- building
    def add_stage(self, name: str, task: str, kind: str, metric: str | None = None,
                  higher_is_better: bool | None = None, baseline: float | None = None) -> int:
        """Register a new stage that learns `task` (a new column); returns the stage index.

        `metric`/`higher_is_better` default to the kind's main metric (`metrics.MAIN_METRICS`).
        """
        if any(t.name == task for t in self.tasks):
            raise UserInputError(f"stage {len(self.stages)} ({name!r}): task {task!r} was already learned at stage "
                                 f"{self.task(task).stage}; every stage must add a new task")
        default_metric, default_direction = main_metric(kind)
        index = len(self.stages)
        self.stages.append(StageEntry(index=index, name=name, task=task))
        self.tasks.append(TaskEntry(name=task, kind=kind, stage=index, metric=metric or default_metric,
                                    higher_is_better=default_direction if higher_is_better is None else higher_is_better,
                                    baseline=baseline))
        return index

    def task(self, name: str) -> TaskEntry:
        """The column for task `name`."""
        for t in self.tasks:
            if t.name == name:
                return t
        raise UserInputError(f"unknown task {name!r}; known: {', '.join(t.name for t in self.tasks) or 'none'}")

    def record(self, stage: int, task: str, value: float, details: dict[str, Any] | None = None) -> None:
        """Store the main metric of `task` evaluated after `stage` (and optionally all its numbers)."""
        if not 0 <= stage < len(self.stages):
            raise UserInputError(f"stage {stage} does not exist (have {len(self.stages)} stages)")
        entry = self.task(task)
        if stage < entry.stage:
            raise UserInputError(f"task {task!r} is learned at stage {entry.stage}; it cannot be evaluated after stage {stage}")
        self._values[(stage, task)] = float(value)
        if details is not None:
            self.details[(stage, task)] = details

    def set_stage_cost(self, stage: int, params_added: dict[str, int] | None = None, seconds: float | None = None) -> None:
        """Record the parameters a stage added and its wall time."""
        if params_added is not None:
            self.stages[stage].params_added = {k: int(v) for k, v in params_added.items()}
        if seconds is not None:
            self.stages[stage].seconds = float(seconds)

    # ---------------------------------------------------------------- derived numbers
    @property
    def matrix(self) -> np.ndarray:
        """R as a (stages, tasks) float array, NaN where not evaluated / not yet learned."""
        r = np.full((len(self.stages), len(self.tasks)), np.nan)
        for j, t in enumerate(self.tasks):
            for i in range(len(self.stages)):
                r[i, j] = self._values.get((i, t.name), np.nan)
        return r

    def _sign(self, t: TaskEntry) -> float:
        return 1.0 if t.higher_is_better else -1.0

    def final_performance(self) -> dict[str, float]:
        """Each task's metric after the last stage."""
        last = len(self.stages) - 1
        return {t.name: self._values.get((last, t.name), float("nan")) for t in self.tasks}

    def average_performance(self) -> float:
        """Mean of the last row over tasks evaluated there (NaN if none).

        Only higher-is-better metrics enter the mean: averaging a distance (HD95) with scores in
        [0, 1] would mean nothing.
        """
        better = {t.name for t in self.tasks if t.higher_is_better}
        values = [v for k, v in self.final_performance().items() if k in better and not math.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    def bwt_per_task(self) -> dict[str, float]:
        """R[last][t] - R[stage of t][t] (direction-corrected) for each task learned before the last stage."""
        last = len(self.stages) - 1
        out = {}
        for t in self.tasks:
            if t.stage == last:
                continue
            final = self._values.get((last, t.name), float("nan"))
            learned = self._values.get((t.stage, t.name), float("nan"))
            out[t.name] = self._sign(t) * (final - learned)
        return out

    def bwt(self) -> float:
        """Backward transfer: mean of `bwt_per_task()` (NaN with fewer than two stages or missing entries)."""
        values = list(self.bwt_per_task().values())
        if not values or any(math.isnan(v) for v in values):
            return float("nan")
        return float(np.mean(values))

    def forgetting(self) -> dict[str, float]:
        """Per task: best value seen before the last stage minus the final value (direction-corrected; 0 = none)."""
        r = self.matrix
        last = len(self.stages) - 1
        out = {}
        for j, t in enumerate(self.tasks):
            if t.stage == last:
                continue
            earlier = self._sign(t) * r[t.stage:last, j]
            earlier = earlier[~np.isnan(earlier)]
            final = self._sign(t) * r[last, j]
            out[t.name] = float(earlier.max() - final) if len(earlier) and not math.isnan(final) else float("nan")
        return out

    def fwt(self) -> float:
        """Forward transfer against given baselines: mean of R[stage of t][t] - b_t (NaN if no baseline)."""
        values = []
        for t in self.tasks:
            if t.baseline is None:
                continue
            values.append(self._sign(t) * (self._values.get((t.stage, t.name), float("nan")) - t.baseline))
        return float(np.mean(values)) if values else float("nan")

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (NaN -> null); keys include stages, tasks, matrix, bwt, params_added, seconds."""
        details = {}
        for (stage, task), value in self.details.items():
            details.setdefault(str(stage), {})[task] = value
        out = {
            "stages": [asdict(s) for s in self.stages],
            "tasks": [asdict(t) for t in self.tasks],
            "matrix": self.matrix.tolist(),
            "average": self.average_performance(),
            "final": self.final_performance(),
            "bwt": self.bwt(),
            "bwt_per_task": self.bwt_per_task(),
            "forgetting": self.forgetting(),
            "fwt": self.fwt(),
            "params_added": [s.params_added for s in self.stages],
            "seconds": [s.seconds for s in self.stages],
            "details": details,
        }
        return json_safe(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContinualMatrix:
        """Rebuild from `to_dict()` output (e.g. to resume a run)."""
        try:
            m = cls()
            m.stages = [StageEntry(**s) for s in data["stages"]]
            m.tasks = [TaskEntry(**t) for t in data["tasks"]]
            for i, row in enumerate(data["matrix"]):
                for j, value in enumerate(row):
                    if value is not None:
                        m._values[(i, m.tasks[j].name)] = float(value)
            for stage, per_task in data.get("details", {}).items():
                for task, value in per_task.items():
                    m.details[(int(stage), task)] = value
        except (KeyError, TypeError, IndexError) as exc:
            raise UserInputError(f"not a continual matrix dict (from ContinualMatrix.to_dict): {exc!r}") from exc
        return m
