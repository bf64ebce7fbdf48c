"""Body-weight SUV from PET DICOM headers, and PET DICOM series -> SUV volume + affine.

SUVbw = activity concentration [Bq/ml] * patient weight [g] / injected dose decayed to the time
the image activity refers to [Bq], following the QIBA vendor-neutral pseudo-code:

- pixel activity = stored value * RescaleSlope + RescaleIntercept, with Units BQML (other units,
  e.g. CNTS or PROPCPS, need vendor-specific factors and are refused with a clear message);
- DecayCorrection START: the images are decay-corrected to the series start, so the dose is
  decayed from RadiopharmaceuticalStartTime (or the time in RadiopharmaceuticalStartDateTime) to
  SeriesTime (or the earliest AcquisitionTime when the series time is later than it, as happens
  when a series is re-processed); ADMIN: corrected to the injection time, no decay;
- decay uses RadionuclideHalfLife.

The volume follows nibabel's convention: array axes (i, j, k) = (column, row, slice), affine in
RAS millimetres, so `nibabel.Nifti1Image(volume, affine)` is the PET image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.misc import is_dicom

from ..errors import UserInputError

_SECONDS_PER_DAY = 86400.0
# Longest injection-to-scan delay accepted; beyond it the header times are taken to be wrong.
_MAX_UPTAKE_S = 12 * 3600.0


def _where(dataset) -> str:
    filename = getattr(dataset, "filename", None)
    return f"file {filename}" if filename else "the DICOM dataset"


def _require(dataset, keyword: str, owner=None, purpose: str = "body-weight SUV"):
    """Value of a DICOM attribute (in `owner` or the dataset), or a UserInputError naming field and file."""
    source = dataset if owner is None else owner
    value = getattr(source, keyword, None) if keyword in source else None
    if value is None or (isinstance(value, str) and not value.strip()):
        where = "RadiopharmaceuticalInformationSequence[0]." if owner is not None else ""
        fix = "fill it in the header (or give PET already in SUV)" if purpose == "body-weight SUV" else "fix the header"
        raise UserInputError(f"{_where(dataset)} has no {where}{keyword}, which {purpose} needs; {fix}")
    return value


def _positive(dataset, keyword: str, owner=None) -> float:
    value = _require(dataset, keyword, owner)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or number <= 0:
        raise UserInputError(f"{_where(dataset)}: {keyword} is {value!r}; it must be a positive number")
    return number


def _parse_time(text) -> float | None:
    """DICOM TM ('HHMMSS.FFFFFF', 'HHMM', old 'HH:MM:SS') -> seconds after midnight, or None."""
    text = str(text or "").strip().replace(":", "")
    if len(text) < 2 or not text[:2].isdigit():
        return None
    try:
        hours, minutes = int(text[0:2]), int(text[2:4] or 0)
        seconds = float(text[4:] or 0.0)
    except ValueError:
        return None
    return hours * 3600.0 + minutes * 60.0 + seconds


def _datetime_time_of_day(text) -> float | None:
    """Seconds after midnight of a DICOM DT 'YYYYMMDDHHMMSS.FFFFFF&ZZXX' (date and offset ignored)."""
    text = str(text or "").strip().split("+")[0].split("-")[0]
    return _parse_time(text[8:]) if len(text) >= 10 else None


def scan_reference(dataset) -> float:
    """Seconds after midnight the dose is decayed to for DecayCorrection START: the series start (SeriesTime)."""
    seconds = _parse_time(_require(dataset, "SeriesTime"))
    if seconds is None:
        raise UserInputError(f"{_where(dataset)}: SeriesTime {dataset.SeriesTime!r} is not a DICOM time (HHMMSS)")
    return seconds


def suv_body_weight_factor(dataset: pydicom.Dataset, scan_time: float | None = None) -> float:
    """Factor turning activity concentration (Bq/ml, after rescale) into body-weight SUV (g/ml).

    Args:
        dataset: one PET slice (pydicom Dataset; pixel data not needed).
        scan_time: the time the dose is decayed to, in seconds after midnight; defaults to the
            dataset's SeriesTime. `dicom_pet_to_suv` passes the series'
            time so every slice uses the same reference.

    Returns:
        weight_g / decay-corrected injected dose (Bq): multiply Bq/ml by it to get SUVbw.

    Raises:
        UserInputError: Units other than BQML, DecayCorrection other than START/ADMIN, a missing or
            non-positive field (named, with the file), or a scan time before the injection.
    """
    units = str(_require(dataset, "Units")).strip().upper()
    if units != "BQML":
        hint = {"GML": "the pixels are already SUV (g/ml): use them as they are",
                "CNTS": "Philips counts need the vendor's private SUV scale factor (7053,1000)",
                "PROPCPS": "the pixels are only proportional to counts/s; export the series in BQML"}.get(units, "")
        raise UserInputError(f"{_where(dataset)}: Units is {units!r}, but body-weight SUV needs BQML (Bq/ml)"
                             + (f"; {hint}" if hint else ""))
    weight_g = _positive(dataset, "PatientWeight") * 1000.0
    sequence = _require(dataset, "RadiopharmaceuticalInformationSequence")
    if len(sequence) == 0:
        raise UserInputError(f"{_where(dataset)}: RadiopharmaceuticalInformationSequence is empty")
    radiopharmaceutical = sequence[0]
    dose_bq = _positive(dataset, "RadionuclideTotalDose", radiopharmaceutical)
    half_life_s = _positive(dataset, "RadionuclideHalfLife", radiopharmaceutical)
    decay_correction = str(_require(dataset, "DecayCorrection")).strip().upper()
    if decay_correction == "ADMIN":
        return weight_g / dose_bq  # activity already decay-corrected to the injection time
    if decay_correction != "START":
        raise UserInputError(f"{_where(dataset)}: DecayCorrection is {decay_correction!r}; body-weight SUV is "
                             "computed for START or ADMIN (images decay-corrected to the scan or injection time)")

    scan_seconds = scan_time if scan_time is not None else scan_reference(dataset)
    # Clock times of day, not dates: de-identification shifts dates (real headers carry injection
    # dates days or years away from the series date) but keeps the times.
    start_seconds = _parse_time(radiopharmaceutical.get("RadiopharmaceuticalStartTime"))
    if start_seconds is None:
        start_seconds = _datetime_time_of_day(radiopharmaceutical.get("RadiopharmaceuticalStartDateTime"))
        if start_seconds is None:
            raise UserInputError(f"{_where(dataset)} has no valid RadiopharmaceuticalInformationSequence[0]."
                                 "RadiopharmaceuticalStartTime (nor StartDateTime), which the decay correction needs")
    elapsed = scan_seconds - start_seconds
    if elapsed < 0:
        elapsed += _SECONDS_PER_DAY  # injection before midnight, scan after it
    if elapsed > _MAX_UPTAKE_S:
        raise UserInputError(
            f"{_where(dataset)}: by the header the scan starts {elapsed / 3600:.1f} h after the injection "
            f"(scan {scan_seconds:.0f} s, RadiopharmaceuticalStartTime {start_seconds:.0f} s after midnight); "
            "that is implausible, so the header's times are inconsistent: fix them before computing SUV"
        )
    decayed_dose = dose_bq * math.exp(-math.log(2.0) * elapsed / half_life_s)
    return weight_g / decayed_dose


def _list_files(source) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and is_dicom(p))
            if not files:
                raise UserInputError(f"folder {path} holds no DICOM files")
            return files
        if not path.exists():
            raise UserInputError(f"PET DICOM path {path} does not exist")
        return [path]
    files = [Path(p) for p in source]
    if not files:
        raise UserInputError("dicom_pet_to_suv got an empty list of files")
    return files


def _read(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as error:  # pydicom raises several types for unreadable files
        raise UserInputError(f"file {path} is not a readable DICOM file: {error}") from None


def dicom_pet_to_suv(source: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """Read one PET DICOM series (a folder, a file, or a list of slice files) as a body-weight SUV volume.

    Slices are sorted by their position along the slice normal; each slice uses its own
    RescaleSlope/Intercept and the series' SUV factor (see `suv_body_weight_factor`).

    Returns:
        (volume, affine): float32 SUV array with axes (column, row, slice) and the 4x4 affine from
        voxel indices to RAS millimetres (nibabel convention).

    Raises:
        UserInputError: unreadable files, several series, non-PET modality, slices of different
            geometry, duplicate or unevenly spaced slices, or any SUV header problem.
    """
    files = _list_files(source)
    datasets = [_read(path) for path in files]
    for ds in datasets:
        modality = str(ds.get("Modality", "PT")).upper()
        if modality != "PT":
            raise UserInputError(f"{_where(ds)} has Modality {modality!r}; expected a PET slice (PT)")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise UserInputError(f"{_where(ds)} is a multi-frame image; give single-frame PET slices")
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            _require(ds, keyword, purpose="placing the slice in a volume")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise UserInputError(f"the {len(files)} files hold {len(series)} different series (SeriesInstanceUID); "
                             "give the slices of one series only")
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    reference = (tuple(orientation.round(4)), int(datasets[0].Rows), int(datasets[0].Columns),
                 tuple(np.array(datasets[0].PixelSpacing, dtype=float).round(4)))
    for ds in datasets[1:]:
        geometry = (tuple(np.array(ds.ImageOrientationPatient, dtype=float).round(4)), int(ds.Rows), int(ds.Columns),
                    tuple(np.array(ds.PixelSpacing, dtype=float).round(4)))
        if geometry != reference:
            raise UserInputError(f"{_where(ds)} has a different orientation, size or pixel spacing than "
                                 f"{_where(datasets[0])}; a volume needs slices of one geometry")
    positions = np.array([np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal) for ds in datasets])
    order = np.argsort(positions, kind="stable")
    datasets = [datasets[i] for i in order]
    positions = positions[order]
    if len(datasets) > 1:
        gaps = np.diff(positions)
        if gaps.min() <= 1e-3:
            raise UserInputError(f"{_where(datasets[int(gaps.argmin()) + 1])} repeats the position of another slice")
        if gaps.max() - gaps.min() > 0.01 * gaps.mean() + 1e-3:
            raise UserInputError(f"slice spacing is uneven ({gaps.min():.3f} to {gaps.max():.3f} mm); an affine "
                                 "volume needs evenly spaced slices (resample the series first)")
        slice_spacing = float(gaps.mean())
    else:
        ds = datasets[0]
        slice_spacing = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)

    # One dose reference for the whole series: its start time, unless an acquisition started earlier
    # (re-processed series carry a later SeriesTime) -- the QIBA rule.
    series_seconds = scan_reference(datasets[0])
    acquisition = [_parse_time(ds.get("AcquisitionTime")) for ds in datasets]
    acquisition = [t for t in acquisition if t is not None]
    if acquisition and min(acquisition) < series_seconds:
        series_seconds = min(acquisition)
    slices = []
    for ds in datasets:
        factor = suv_body_weight_factor(ds, scan_time=series_seconds)
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        stored = ds.pixel_array
        activity = stored.astype(np.float64) * slope + intercept
        # Voxels outside the reconstruction circle carry a padding value, not an activity: declared in
        # PixelPaddingValue, or (Siemens, undeclared) the most negative stored integer.
        padding = stored == ds.PixelPaddingValue if "PixelPaddingValue" in ds else np.zeros(stored.shape, dtype=bool)
        if np.issubdtype(stored.dtype, np.signedinteger):
            padding |= stored == np.iinfo(stored.dtype).min
        activity[padding] = 0.0
        slices.append((activity * factor).T)  # (rows, cols) -> (column i, row j)
    volume = np.stack(slices, axis=-1).astype(np.float32)

    row_spacing, column_spacing = (float(v) for v in datasets[0].PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * column_spacing  # i: along a row (increasing column index)
    affine[:3, 1] = col_dir * row_spacing  # j: down a column (increasing row index)
    affine[:3, 2] = normal * slice_spacing
    affine[:3, 3] = np.array(datasets[0].ImagePositionPatient, dtype=float)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # DICOM LPS -> RAS
    return volume, affine


__all__ = ["suv_body_weight_factor", "dicom_pet_to_suv", "scan_reference"]
