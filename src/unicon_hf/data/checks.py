"""Per-case file checks for the dataset loaders, and the problem list that `on_error="skip"` produces."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterable

from tqdm.auto import tqdm

from ..errors import UserInputError
from .. import volume_geometry as geometry

CHECK_LEVELS = ("full", "header", "none")
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class CaseProblem:
    """One case that could not be loaded: its id, its split and what is wrong (naming the file)."""

    case: str
    split: str
    problem: str

    def __str__(self) -> str:
        where = f" ({self.split})" if self.split else ""
        return f"case {self.case}{where}: {self.problem}"


class DatasetProblemWarning(UserWarning):
    """A case was skipped by a loader called with `on_error="skip"`."""


def validate_options(check: str, on_error: str) -> None:
    if check not in CHECK_LEVELS:
        raise UserInputError(f"check must be one of {CHECK_LEVELS}, got {check!r}.")
    if on_error not in ON_ERROR:
        raise UserInputError(f"on_error must be one of {ON_ERROR}, got {on_error!r}.")


def check_case(ct: Any, pet: Any = None, label: Any = None, *, level: str = "full",
               tolerance_mm: float = 5.0) -> None:
    """Raise `UserInputError` for the first problem of one case.

    `level="header"` reads headers only (not NIfTI, not 3D, zero/negative spacing, CT/PET on different
    physical grids, label grid != CT grid); `"full"` also decompresses every voxel (truncated files, NaN
    voxels) — slower, but it is the only way to find those before training hits them.
    """
    if level == "none":
        return
    read = (lambda s, r: geometry.read_volume(s, r)) if level == "full" else geometry.read_grid
    ct_volume = read(ct, "CT")
    if pet is not None:
        geometry.check_same_space(ct_volume, read(pet, "PET"), tolerance_mm)
    if label is not None:
        label_volume = (geometry.read_volume(label, "label", is_label=True) if level == "full"
                        else geometry.read_grid(label, "label"))
        geometry.check_label_grid(ct_volume, label_volume)


def screen_cases(cases: Iterable[tuple[str, str, dict]], *, check: str, on_error: str, tolerance_mm: float,
                 progress: bool, problems: list[CaseProblem]) -> list[int]:
    """Check each `(case id, split, {"ct":..., "pet":..., "label":...})`; return the indices that passed.

    With `on_error="raise"` the first problem raises, naming the case; with `"skip"` each problem is
    warned about, appended to `problems`, and the case left out.
    """
    cases = list(cases)
    keep = []
    for index, (case, split, files) in enumerate(
        tqdm(cases, desc=f"checking files ({check})", unit="case", disable=not progress or check == "none")
    ):
        try:
            check_case(files.get("ct"), files.get("pet"), files.get("label"), level=check, tolerance_mm=tolerance_mm)
        except UserInputError as err:
            report(CaseProblem(case, split, str(err)), on_error, problems)
            continue
        keep.append(index)
    return keep


def report(problem: CaseProblem, on_error: str, problems: list[CaseProblem]) -> None:
    """Raise the problem or (on_error="skip") warn and record it."""
    if on_error == "raise":
        raise UserInputError(f"{problem} (pass on_error='skip' to load the other cases)")
    warnings.warn(f"skipping {problem}", DatasetProblemWarning, stacklevel=3)
    problems.append(problem)
