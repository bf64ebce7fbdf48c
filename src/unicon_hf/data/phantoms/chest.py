"""Synthetic chest CTs in the CT-RATE layout, with findings drawn in the image and in the report.

Each case has a body, chest wall with ribs, two lungs (~-850 HU), mediastinum with heart, aorta,
trachea and spine. Twelve of CT-RATE's 18 findings are drawn so that they are visible at the
phantom's resolution (a nodule, fluid in the dependent lung, a bigger heart, darker lungs with
bullae, dense lung, a fluid rim around the heart, bright spots in the aortic or coronary walls,
enlarged nodes in mediastinal fat, a metal pacemaker, a ground-glass patch, a band of collapse) and
described with matching sentences in `Findings_EN` and `Impressions_EN`; the six others are never
drawn and always labelled 0. Anatomy is laid out in millimetres for the default field of view
(352 x 352 x 160 mm) and stretched per axis to the requested one.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from ...errors import UserInputError
from ._geometry import WorldGrid, check_orientation, check_shape_spacing, save_nifti
from .chest_reports import CLINICAL_INFORMATION, FINDINGS, LOBES, RENDERED, SIDES, write_report

REPORT_COLUMNS = ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"]
TRUTH_JSON = "phantom_truth.json"
CT_NOISE_SD = 15.0
_NOMINAL_HALF_FOV = np.array([176.0, 176.0, 80.0])  # x, y, z in mm
_PREVALENCE = {name: 0.3 for name in RENDERED} | {"Medical material": 0.15}
# Lungs (nominal mm, RAS): centres and radii of the two ellipsoids.
_LUNG = {"right": (np.array([68.0, -5.0, 0.0]), np.array([58.0, 78.0, 95.0])),
         "left": (np.array([-68.0, -5.0, 0.0]), np.array([55.0, 78.0, 95.0]))}


def _lobe_point(rng: np.random.Generator, lobe: str, margin: float = 0.65) -> np.ndarray:
    """A random point (nominal mm) well inside the named lobe."""
    side = "right" if lobe.startswith("right") else "left"
    centre, radii = _LUNG[side]
    for _ in range(1000):
        u = rng.uniform(-margin, margin, size=3)
        if np.linalg.norm(u) > margin:
            continue
        upper, lower = u[2] > 0.15, u[2] < -0.2
        ok = {
            "right upper lobe": upper, "left upper lobe": u[2] > -0.05,
            "right middle lobe": (not upper) and (not lower) and u[1] > 0.0,
            "right lower lobe": lower or (not upper and u[1] <= 0.0), "left lower lobe": u[2] <= -0.05,
        }[lobe]
        if ok:
            return centre + u * radii
    raise RuntimeError(f"could not place a point in the {lobe}")  # unreachable for the lobes above


def sample_findings(rng: np.random.Generator) -> dict[str, dict]:
    """Which findings a case has, with their geometry (nominal mm) and report slot values."""
    present: dict[str, dict] = {}
    for name in RENDERED:
        if rng.random() >= _PREVALENCE[name]:
            continue
        lobe = LOBES[int(rng.integers(len(LOBES)))]
        slots: dict = {"lobe": lobe}
        if name == "Lung nodule":
            # Sizes that read as "a <size> mm" (no "an 11 mm"/"an 18 mm" in the templates).
            slots |= {"size": int(rng.choice([10, 12, 14, 15, 16, 20, 22, 24])), "centre": _lobe_point(rng, lobe, 0.55).tolist()}
        elif name == "Pleural effusion":
            slots |= {"side": SIDES[int(rng.integers(3))], "size": int(rng.integers(20, 45))}
        elif name == "Pericardial effusion":
            slots |= {"size": int(rng.integers(8, 15))}
        elif name in ("Consolidation", "Lung opacity"):
            slots |= {"centre": _lobe_point(rng, lobe, 0.45).tolist(), "radius": float(rng.uniform(20.0, 32.0))}
        elif name == "Atelectasis":
            lobe = ["right lower lobe", "left lower lobe"][int(rng.integers(2))]
            slots |= {"lobe": lobe, "centre": _lobe_point(rng, lobe, 0.5).tolist()}
        elif name == "Lymphadenopathy":
            nodes = [[rng.uniform(-22, 22), rng.uniform(10, 45), rng.uniform(15, 55)] for _ in range(int(rng.integers(2, 4)))]
            radius = float(rng.uniform(7.0, 11.0))
            slots |= {"size": int(round(2 * radius)), "centres": nodes, "radius": radius}
        elif name in ("Arterial wall calcification", "Coronary artery wall calcification"):
            slots |= {"angles": rng.uniform(0, 2 * np.pi, size=int(rng.integers(4, 8))).tolist(),
                      "heights": rng.uniform(-1, 1, size=8).tolist()}
        elif name == "Emphysema":
            slots |= {"bullae": [(_lobe_point(rng, LOBES[int(rng.choice([0, 3]))], 0.6).tolist(),
                                  float(rng.uniform(6, 12))) for _ in range(int(rng.integers(3, 7)))]}
        present[name] = slots
    return present


def render_chest(present: dict[str, dict], grid: WorldGrid, rng: np.random.Generator) -> np.ndarray:
    """CT (HU, float32) of one chest on the canonical RAS grid, with the given findings drawn."""
    scale = grid.half_extent / _NOMINAL_HALF_FOV
    x, y, z = grid.x / scale[0], grid.y / scale[1], grid.z / scale[2]  # nominal mm
    shape = grid.ras_shape
    ct = np.full(shape, -1000.0, dtype=np.float32)
    # Smallest object that still covers a voxel centre at this resolution (calcifications, nodes).
    min_radius = 0.6 * float(max(grid.ras_spacing / scale))

    def ball(centre, radii):
        radii = np.broadcast_to(np.asarray(radii, dtype=float), (3,))
        return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2 <= 1.0

    def put(mask, hu):
        ct[np.broadcast_to(mask, shape)] = hu

    body = (x / 160.0) ** 2 + (y / 110.0) ** 2 <= 1.0
    put(body, -100.0)
    put((x / 148.0) ** 2 + (y / 98.0) ** 2 <= 1.0, 40.0)
    # Ribs: a bony ring in the chest wall, interrupted along z.
    ring = ((x / 140.0) ** 2 + (y / 92.0) ** 2 <= 1.0) & ((x / 132.0) ** 2 + (y / 84.0) ** 2 > 1.0)
    put(ring & (np.mod(z + 200.0, 26.0) < 11.0), 700.0)
    lungs = np.zeros(shape, dtype=bool)
    for centre, radii in _LUNG.values():
        lungs |= np.broadcast_to(ball(centre, radii), shape)
    lung_hu = -950.0 if "Emphysema" in present else -850.0
    put(lungs, lung_hu)
    # Mediastinum: fat with great vessels, heart in a fat pad, trachea; spine behind.
    put(ball([0.0, 25.0, 35.0], [30.0, 30.0, 60.0]), -100.0)
    heart_radii = np.array([50.0, 42.0, 42.0]) * (1.3 if "Cardiomegaly" in present else 1.0)
    heart_centre = np.array([-12.0, 30.0, -35.0])
    put(ball(heart_centre, heart_radii + 6.0), -100.0)
    if "Pericardial effusion" in present:
        put(ball(heart_centre, heart_radii + present["Pericardial effusion"]["size"]), 10.0)
    put(ball(heart_centre, heart_radii), 40.0)
    put(((x - 8.0) ** 2 + (y - 25.0) ** 2 <= 14.0**2) & (z > -15.0) & (z < 60.0), 40.0)  # ascending aorta
    put((x + 22.0) ** 2 + (y + 45.0) ** 2 <= 12.0**2, 40.0)  # descending aorta
    put((x**2 + (y - 5.0) ** 2 <= 9.0**2) & (z > 20.0), -1000.0)  # trachea
    vertebra = x**2 + (y + 75.0) ** 2
    put(vertebra <= 18.0**2, 700.0)
    put(vertebra <= 13.0**2, 250.0)
    put(x**2 + (y + 100.0) ** 2 <= 8.0**2, 15.0)

    # Findings.
    if "Emphysema" in present:
        for centre, radius in present["Emphysema"]["bullae"]:
            put(ball(centre, radius) & lungs, -1000.0)
    if "Pleural effusion" in present:
        slots = present["Pleural effusion"]
        sides = ["right", "left"] if slots["side"] == "bilateral" else [slots["side"]]
        for side in sides:
            centre, radii = _LUNG[side]
            # Supine patient: fluid collects posteriorly (low y) in the lung.
            put(ball(centre, radii) & (y < centre[1] - radii[1] + slots["size"] * 1.5), 10.0)
    if "Consolidation" in present:
        slots = present["Consolidation"]
        put(ball(slots["centre"], slots["radius"]) & lungs, 30.0)
    if "Lung opacity" in present:
        slots = present["Lung opacity"]
        put(ball(slots["centre"], slots["radius"]) & lungs, -500.0)
    if "Atelectasis" in present:
        put(ball(present["Atelectasis"]["centre"], [35.0, 6.0, 8.0]) & lungs, 20.0)
    if "Lung nodule" in present:
        slots = present["Lung nodule"]
        put(ball(slots["centre"], max(slots["size"] / 2.0, min_radius)), 40.0)
    if "Lymphadenopathy" in present:
        slots = present["Lymphadenopathy"]
        for centre in slots["centres"]:
            put(ball(centre, max(slots["radius"], min_radius)), 45.0)
    if "Arterial wall calcification" in present:
        slots = present["Arterial wall calcification"]
        for angle, height in zip(slots["angles"], slots["heights"]):
            spot = [-22.0 + 12.0 * np.cos(angle), -45.0 + 12.0 * np.sin(angle), 70.0 * height]
            put(ball(spot, max(4.0, min_radius)), 900.0)
    if "Coronary artery wall calcification" in present:
        slots = present["Coronary artery wall calcification"]
        for angle, height in zip(slots["angles"], slots["heights"]):
            # Spots on the front of the heart surface, where the coronary arteries run.
            direction = np.array([np.cos(angle) * 0.7, 0.7, 0.3 * height])
            spot = heart_centre + heart_radii * direction / np.linalg.norm(direction)
            put(ball(spot, max(4.0, min_radius)), 900.0)
    if "Medical material" in present:
        put(ball([-70.0, 88.0, 50.0], [20.0, 6.0, 15.0]), 3000.0)  # pacemaker generator
        lead = np.abs(x + 70.0 + (z - 50.0) * 0.9) < max(2.0, min_radius)
        put(lead & (np.abs(y - 40.0 - (z - 50.0) * 0.4) < max(2.0, min_radius)) & (z < 50.0) & (z > -35.0), 3000.0)

    ct = ndimage.gaussian_filter(ct, 0.5) + rng.normal(0.0, CT_NOISE_SD, size=shape)
    return np.clip(ct, -1024.0, 3071.0).astype(np.float32)


def write_ct_rate_phantoms(
    root,
    n: int = 20,
    seed: int = 0,
    shape=(32, 64, 64),
    spacing=(5.0, 5.5, 5.5),
    split_fraction: float = 0.8,
    orientation: str = "LPS",
    progress: bool = True,
) -> Path:
    """Write `n` synthetic chest CTs with reports and the 18 labels in the CT-RATE layout under `root`.

    Args:
        root: output folder (created).
        n: number of volumes; the first `round(n * split_fraction)` go to `train/`, the rest to `valid/`.
        seed: seed of the numpy Generator; same seed -> byte-identical files.
        shape: voxel grid in model order (D, H, W) (D along inferior->superior).
        spacing: voxel size in mm, same (D, H, W) order.
        split_fraction: fraction of cases in the training split, in (0, 1].
        orientation: axis codes of the arrays on disk (the physical content does not depend on it).
        progress: show a tqdm progress bar.

    Returns:
        `root`, holding `train/train_<k>/train_<k>_a/train_<k>_a_1.nii.gz` (and `valid/...`),
        `radiology_text_reports/{train,validation}_reports.csv`,
        `multi_abnormality_labels/{train,valid}_predicted_labels.csv` and `phantom_truth.json`
        (per volume: findings drawn with their sizes/lobes).
    """
    if int(n) < 1:
        raise UserInputError(f"n must be at least 1 (got {n})")
    if not 0.0 < float(split_fraction) <= 1.0:
        raise UserInputError(f"split_fraction must be in (0, 1] (got {split_fraction})")
    shape_t, spacing_t = check_shape_spacing(shape, spacing)
    check_orientation(orientation)
    root = Path(root)
    grid = WorldGrid(shape_t, spacing_t)
    n_train = max(1, int(round(int(n) * float(split_fraction))))
    reports = {"train": [], "valid": []}
    labels = {"train": [], "valid": []}
    truth = []
    children = np.random.SeedSequence(int(seed)).spawn(int(n))
    for index, child in enumerate(tqdm(children, desc="CT-RATE phantoms", unit="volume", disable=not progress)):
        split = "train" if index < n_train else "valid"
        number = index + 1 if split == "train" else index - n_train + 1
        name = f"{split}_{number}_a_1.nii.gz"
        finding_seed, text_seed, render_seed = child.spawn(3)
        present = sample_findings(np.random.default_rng(finding_seed))
        text_rng = np.random.default_rng(text_seed)
        findings_text, impression = write_report(present, text_rng)
        ct = render_chest(present, grid, np.random.default_rng(render_seed))
        save_nifti(np.round(ct), grid, root / split / f"{split}_{number}" / f"{split}_{number}_a" / name, orientation, np.int16)
        reports[split].append({
            "VolumeName": name,
            "ClinicalInformation_EN": CLINICAL_INFORMATION[int(text_rng.integers(len(CLINICAL_INFORMATION)))],
            "Technique_EN": f"Non-contrast chest CT. Axial images with {spacing_t[0]:g} mm slice thickness.",
            "Findings_EN": findings_text,
            "Impressions_EN": impression,
        })
        labels[split].append({"VolumeName": name, **{f: int(f in present) for f in FINDINGS}})
        truth.append({"VolumeName": name, "split": split,
                      "findings": {k: {s: v for s, v in slots.items() if s in ("size", "lobe", "side")}
                                   for k, slots in present.items()}})
    for split, report_name in (("train", "train"), ("valid", "validation")):
        _write_csv(root / "radiology_text_reports" / f"{report_name}_reports.csv", REPORT_COLUMNS, reports[split])
        _write_csv(root / "multi_abnormality_labels" / f"{split}_predicted_labels.csv", ["VolumeName", *FINDINGS], labels[split])
    meta = {"kind": "ct-rate", "seed": int(seed), "n": int(n), "shape_dhw": list(shape_t), "spacing_dhw": list(spacing_t),
            "orientation": "".join(check_orientation(orientation)), "rendered_findings": RENDERED, "cases": truth}
    (root / TRUTH_JSON).write_text(json.dumps(meta, indent=1))
    return root


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


__all__ = ["write_ct_rate_phantoms", "render_chest", "sample_findings", "REPORT_COLUMNS"]
