"""`evaluate` metric modules shipped inside the package, loadable offline.

`evaluate.load("c_index")` would fetch a script from the Hub (and fails with `HF_HUB_OFFLINE=1`);
`load_metric("c_index")` loads the copy in this folder by its local path instead. Each module is a
thin `evaluate.Metric` wrapper over the tested functions in `unicon_hf.training.metrics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserInputError

METRICS_DIR = Path(__file__).resolve().parent


def available_metrics() -> list[str]:
    """Names of the metric modules shipped here (folders holding `<name>/<name>.py`)."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


def load_metric(name: str, **kwargs: Any):
    """Load a shipped metric module with `evaluate.load(<local folder>)`; no network is used.

    Args:
        name: one of `available_metrics()` (e.g. "c_index", "dice").
        **kwargs: passed to `evaluate.load` (e.g. `experiment_id`, `num_process`, `process_id`).
    """
    names = available_metrics()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserInputError(f"unknown metric {name!r}; shipped metrics: {', '.join(names)}.{hint}")
    import evaluate

    return evaluate.load(str(METRICS_DIR / name), **kwargs)
