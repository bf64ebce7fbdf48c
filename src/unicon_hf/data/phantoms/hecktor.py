"""Synthetic head-and-neck CT + PET phantoms in the HECKTOR 2022 layout.

What makes them useful for testing the paper's claims on a CPU:

- the primary tumour (label 1) and the lymph nodes (label 2) are only a few HU brighter than the
  surrounding soft tissue in CT (below the CT noise SD), but hot in PET (SUV 5-15 vs ~1), so a
  CT-only segmenter struggles and adding PET must raise Dice;
- PET also has physiological uptake (brain, tonsils, salivary glands, the odd hot muscle spot)
  that is not tumour, so PET alone is not a perfect detector and CT anatomy helps;
- recurrence-free survival is drawn from a hazard driven mostly by the total tumour volume (which
  the image shows), with T/N stage, age and HPV status, and random censoring, so prognosis has
  signal both in the image and in the EHR text (the T stage is a noisy function of tumour size).

Anatomy is defined in millimetres for a nominal 128 mm field of view and scaled isotropically to
the requested field, so tiny test volumes still hold the whole neck. Everything is drawn from a
numpy Generator per case (spawned from the seed), so case k is the same whatever `n` is.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from ...errors import UserInputError
from ._geometry import WorldGrid, check_orientation, check_shape_spacing, ellipsoid, random_rotation, save_nifti

CLINICAL_CSV = "hecktor2022_clinical_info_training.csv"
TRUTH_JSON = "phantom_truth.json"
CLINICAL_COLUMNS = [
    "PatientID", "CenterID", "Gender", "Age", "Weight", "Tobacco", "Alcohol", "Performance status",
    "HPV status (0=-, 1=+)", "Surgery", "Chemotherapy", "T-stage", "N-stage", "M-stage", "TNM group",
    "Relapse", "RFS",
]
# (centre name, CenterID) as in HECKTOR 2022's training centres.
CENTRES = [("CHUM", 1), ("CHUS", 2), ("HGJ", 3), ("HMR", 4), ("CHUP", 5), ("CHUV", 6), ("MDA", 7), ("USZ", 8)]

# Tissue values: CT in HU, PET in SUV (body weight).
HU = {"air": -1000.0, "fat": -100.0, "soft": 40.0, "bone": 700.0, "marrow": 250.0, "csf": 10.0, "brain": 35.0}
CT_NOISE_SD = 20.0
PET_FWHM_MM = 6.0
_NOMINAL_HALF_FOV = 64.0  # mm; anatomy below is laid out for a 128 mm cube
# Primary sites (nominal mm, RAS: +x right, +y anterior, +z superior).
_SITES = {
    "oropharynx": (10.0, 14.0, 10.0),
    "larynx": (0.0, 14.0, -18.0),
    "hypopharynx": (0.0, 6.0, -6.0),
    "oral cavity": (0.0, 26.0, 8.0),
}


@dataclass
class Lesion:
    """One tumour (primary or node): an irregular rotated ellipsoid, nominal mm."""

    centre: list[float]
    radii: list[float]
    rotation: list[list[float]]
    suv: float
    ct_contrast_hu: float
    wobble: list[list[float]]  # rows (direction x, y, z, frequency, phase, amplitude) of the surface bumps

    @property
    def nominal_volume_ml(self) -> float:
        return float(4.0 / 3.0 * np.pi * np.prod(self.radii) / 1000.0)


@dataclass
class HecktorCase:
    """Everything drawn for one patient before rendering (nominal mm, clinical fields, survival)."""

    patient_id: str
    centre_id: int
    site: str
    primary: Lesion
    nodes: list[Lesion]
    hot_spots: list[tuple[list[float], float, float]]  # (centre, radius mm, SUV) physiological uptake
    brain_suv: float
    tonsil_suv: float
    clinical: dict = field(default_factory=dict)
    true_event_days: float = 0.0
    censor_days: float = 0.0


def _lesion(rng: np.random.Generator, centre, volume_ml: float, suv: float, contrast: float) -> Lesion:
    radius = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    ratios = rng.uniform(0.75, 1.3, size=3)
    ratios /= np.prod(ratios) ** (1.0 / 3.0)  # keep the volume while changing the aspect
    wobble = []
    for _ in range(3):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        wobble.append([*direction, rng.uniform(2.0, 4.0), rng.uniform(0, 2 * np.pi), rng.uniform(0.03, 0.07)])
    return Lesion(
        centre=[float(v) for v in centre],
        radii=[float(v) for v in radius * ratios],
        rotation=random_rotation(rng).tolist(),
        suv=float(suv),
        ct_contrast_hu=float(contrast),
        wobble=wobble,
    )


def _tnm_group(t: int, n: int, m: int) -> str:
    """AJCC-8-like stage group (non-HPV table, simplified): enough for a plausible, consistent text."""
    if m:
        return "IVC"
    if n == 3:
        return "IVB"
    if t == 4 or n == 2:
        return "IVA"
    if t == 3 or n == 1:
        return "III"
    return "II" if t == 2 else "I"


def sample_case(index: int, seed_sequence: np.random.SeedSequence) -> HecktorCase:
    """Draw one patient's anatomy variations, tumours, clinical record and survival."""
    rng = np.random.default_rng(seed_sequence)
    centre_name, centre_id = CENTRES[int(rng.integers(len(CENTRES)))]
    site = list(_SITES)[int(rng.integers(len(_SITES)))]

    # Tumour burden: log-normal primary volume (median ~12 ml, as in HECKTOR GTVp), 0-3 nodes.
    primary_ml = float(np.clip(rng.lognormal(np.log(12.0), 0.8), 1.0, 60.0))
    side = 1.0 if rng.random() < 0.5 else -1.0
    site_centre = np.array(_SITES[site]) * np.array([side, 1.0, 1.0]) + rng.uniform(-3, 3, size=3)
    primary = _lesion(rng, site_centre, primary_ml, rng.uniform(5.0, 15.0), rng.uniform(6.0, 14.0))
    n_nodes = int(rng.choice(4, p=[0.3, 0.3, 0.25, 0.15]))
    nodes = []
    for _ in range(n_nodes):
        node_side = side if rng.random() < 0.75 else -side
        centre = [node_side * rng.uniform(22.0, 30.0), rng.uniform(-4.0, 8.0), rng.uniform(-34.0, 8.0)]
        nodes.append(_lesion(rng, centre, rng.uniform(0.6, 4.0), rng.uniform(4.0, 11.0), rng.uniform(5.0, 12.0)))
    hot_spots = []
    for _ in range(int(rng.integers(0, 3))):
        # Physiological muscle/brown-fat uptake in the lateral neck: hot in PET, normal in CT.
        centre = [float(rng.choice([-1, 1]) * rng.uniform(30.0, 38.0)), rng.uniform(-20.0, 0.0), rng.uniform(-50.0, 0.0)]
        hot_spots.append((centre, float(rng.uniform(3.0, 5.0)), float(rng.uniform(3.0, 6.0))))

    # Clinical record. T stage follows the primary size but noisily (the image knows better).
    t_stage = int(np.clip(np.round(1.6 + np.log(primary_ml / 4.0) / np.log(3.0) + rng.normal(0, 0.6)), 1, 4))
    n_stage = n_nodes if rng.random() < 0.85 else int(np.clip(n_nodes + rng.choice([-1, 1]), 0, 3))
    m_stage = int(rng.random() < 0.04)
    age = int(np.clip(np.round(rng.normal(61, 9)), 35, 88))
    hpv_positive = rng.random() < (0.6 if site == "oropharynx" else 0.15)
    hpv_known = rng.random() > 0.2

    # Survival: Weibull hazard; the total tumour volume dominates the risk.
    total_ml = primary.nominal_volume_ml + sum(node.nominal_volume_ml for node in nodes)
    risk = (
        1.0 * np.log(total_ml / 15.0)
        + 0.2 * (t_stage - 2.5)
        + 0.25 * n_stage
        + 0.25 * (age - 61) / 9.0
        - 0.6 * hpv_positive
        + 1.0 * m_stage
    )
    shape_k, scale_days = 1.3, 1400.0
    event_days = float(scale_days * (-np.log(rng.random()) / np.exp(risk)) ** (1.0 / shape_k))
    censor_days = float(rng.uniform(200.0, 3000.0))
    relapse = int(event_days <= censor_days)

    def maybe(value, missing: float):
        return "" if rng.random() < missing else value

    clinical = {
        "PatientID": f"{centre_name}-{index + 1:03d}",
        "CenterID": centre_id,
        "Gender": "M" if rng.random() < 0.8 else "F",
        "Age": age,
        "Weight": maybe(round(float(np.clip(rng.normal(78, 15), 40, 150)), 1), 0.05),
        "Tobacco": maybe(int(rng.random() < 0.6), 0.4),
        "Alcohol": maybe(int(rng.random() < 0.5), 0.4),
        "Performance status": maybe(int(rng.choice(4, p=[0.5, 0.35, 0.1, 0.05])), 0.3),
        "HPV status (0=-, 1=+)": int(hpv_positive) if hpv_known else "",
        "Surgery": int(rng.random() < 0.3),
        "Chemotherapy": int(rng.random() < 0.85),
        "T-stage": f"T{t_stage}",
        "N-stage": f"N{n_stage}",
        "M-stage": f"M{m_stage}",
        "TNM group": _tnm_group(t_stage, n_stage, m_stage),
        "Relapse": relapse,
        "RFS": max(1, int(round(min(event_days, censor_days)))),
    }
    return HecktorCase(
        patient_id=clinical["PatientID"],
        centre_id=centre_id,
        site=site,
        primary=primary,
        nodes=nodes,
        hot_spots=hot_spots,
        brain_suv=float(rng.uniform(6.0, 9.0)),
        tonsil_suv=float(rng.uniform(2.5, 4.5)),
        clinical=clinical,
        true_event_days=event_days,
        censor_days=censor_days,
    )


def _lesion_mask(grid: WorldGrid, lesion: Lesion, scale: float) -> np.ndarray:
    centre = np.array(lesion.centre) * scale
    rotation = np.array(lesion.rotation)
    rho = ellipsoid(grid, centre, np.array(lesion.radii) * scale, rotation)
    # Irregular border: the surface radius is modulated by a few smooth waves over direction.
    dx, dy, dz = grid.x - centre[0], grid.y - centre[1], grid.z - centre[2]
    norm = np.sqrt(dx**2 + dy**2 + dz**2) + 1e-6
    bump = 0.0
    for ux, uy, uz, frequency, phase, amplitude in lesion.wobble:
        bump = bump + amplitude * np.cos(frequency * (ux * dx + uy * dy + uz * dz) / norm + phase)
    return rho <= 1.0 + bump


def render_case(case: HecktorCase, grid: WorldGrid, rng: np.random.Generator):
    """Render CT (HU), PET (SUV) and labels on a canonical RAS grid; return them with ground truth."""
    s = float(min(grid.half_extent)) / _NOMINAL_HALF_FOV
    x, y, z = grid.x / s, grid.y / s, grid.z / s  # nominal mm
    shape = grid.ras_shape
    ct = np.full(shape, HU["air"], dtype=np.float32)
    suv = np.zeros(shape, dtype=np.float32)

    def put(mask, hu=None, pet=None):
        mask = np.broadcast_to(mask, shape)
        if hu is not None:
            ct[mask] = hu
        if pet is not None:
            suv[mask] = pet

    # Body: neck cylinder widening into the head above z ~ 20 mm; 5 mm subcutaneous fat.
    widen = 1.0 / (1.0 + np.exp(-(z - 20.0) / 6.0))
    rx, ry = 46.0 + 10.0 * widen, 42.0 + 14.0 * widen
    body_r = np.sqrt((x / rx) ** 2 + ((y - 2.0) / ry) ** 2)
    put(body_r <= 1.0, HU["fat"], 0.3)
    inner = body_r <= 1.0 - 5.0 / rx
    put(inner, HU["soft"], 1.0)
    # Skull and brain: the upper posterior part of the field.
    skull = ellipsoid(grid, np.array([0.0, -6.0, 74.0]) * s, np.array([54.0, 56.0, 46.0]) * s)
    put(skull <= 1.0, HU["bone"], 0.8)
    brain = skull <= 1.0 - 6.0 / 46.0
    put(brain, HU["brain"], case.brain_suv)
    neck = z < 30.0
    # Cervical spine: vertebral bodies with marrow, discs every 18 mm, spinal canal behind.
    vertebra = (np.sqrt(x**2 + (y + 18.0) ** 2) <= 9.0) & neck
    disc = (np.mod(z + 60.0, 18.0) < 3.0)
    put(vertebra, HU["bone"], 0.8)
    put(vertebra & (np.sqrt(x**2 + (y + 18.0) ** 2) <= 6.5), HU["marrow"], 1.5)
    put(vertebra & disc, 80.0, 0.8)
    put((np.sqrt(x**2 + (y + 32.0) ** 2) <= 6.0) & neck, HU["csf"], 0.5)
    # Mandible: a U-shaped bony arc in front, at the level of the oral cavity.
    arc = np.sqrt(x**2 + (y - 8.0) ** 2)
    put((arc >= 30.0) & (arc <= 36.0) & (y > 12.0) & (z > -2.0) & (z < 14.0), HU["bone"], 0.8)
    # Airway (pharynx -> larynx -> trachea).
    airway = ((x / 7.0) ** 2 + ((y - 12.0) / 5.0) ** 2 <= 1.0) & (z < 28.0)
    put(airway, HU["air"], 0.0)
    # Glands and tonsils: normal CT, physiological PET uptake.
    for sx in (-1.0, 1.0):
        put(ellipsoid(grid, np.array([sx * 12.0, 16.0, 18.0]) * s, np.array([5.0, 5.0, 7.0]) * s) <= 1, HU["soft"] + 5, case.tonsil_suv)
        put(ellipsoid(grid, np.array([sx * 26.0, 14.0, 4.0]) * s, np.array([8.0, 6.0, 6.0]) * s) <= 1, HU["soft"] + 5, 2.0)
    for centre, radius, value in case.hot_spots:
        put(inner & (ellipsoid(grid, np.array(centre) * s, np.array([radius] * 3) * s) <= 1), None, value)

    # Tumours: inside the body, never replacing bone or brain, and growing around the airway rather
    # than filling it (an obliterated lumen would give CT an easy cue); primary wins over nodes.
    allowed = inner & ~brain & (ct < 200.0) & ~np.broadcast_to(airway, shape)
    labels = np.zeros(shape, dtype=np.uint8)
    heterogeneity = 0.85 + 0.3 * ndimage.gaussian_filter(rng.random(shape), 1.5)
    for label, lesions in ((2, case.nodes), (1, [case.primary])):
        for lesion in lesions:
            mask = _lesion_mask(grid, lesion, s) & allowed
            labels[mask] = label
            ct[mask] = HU["soft"] + lesion.ct_contrast_hu
            suv[mask] = lesion.suv * heterogeneity[mask]

    # CT: slight partial-volume blur, then quantum noise. PET: scanner resolution, then noise.
    ct = ndimage.gaussian_filter(ct, 0.5) + rng.normal(0.0, CT_NOISE_SD, size=shape)
    sigma_vox = PET_FWHM_MM / 2.3548 / grid.ras_spacing
    suv = ndimage.gaussian_filter(suv, sigma_vox)
    suv = np.clip(suv * (1.0 + 0.1 * rng.normal(size=shape)) + 0.03 * rng.normal(size=shape), 0.0, None)

    truth = {
        "PatientID": case.patient_id,
        "site": case.site,
        "n_nodes_drawn": len(case.nodes),
        "gtvp_volume_ml": float((labels == 1).sum() * grid.voxel_volume_ml),
        "gtvn_volume_ml": float((labels == 2).sum() * grid.voxel_volume_ml),
        "nominal_tumour_burden_ml": case.primary.nominal_volume_ml + sum(n.nominal_volume_ml for n in case.nodes),
        "gtvp_centroid_mm": grid.centroid_mm(labels == 1),
        "primary_suv": case.primary.suv,
        "primary_ct_contrast_hu": case.primary.ct_contrast_hu,
        "ct_noise_sd_hu": CT_NOISE_SD,
        "true_event_days": case.true_event_days,
        "censor_days": case.censor_days,
        "anatomy_scale": s,
    }
    truth["tumour_volume_ml"] = truth["gtvp_volume_ml"] + truth["gtvn_volume_ml"]
    return ct.astype(np.float32), suv.astype(np.float32), labels, truth


def write_hecktor_phantoms(
    root,
    n: int = 20,
    seed: int = 0,
    shape=(64, 64, 64),
    spacing=(2.0, 2.0, 2.0),
    orientation: str = "RAS",
    progress: bool = True,
) -> Path:
    """Write `n` synthetic head-and-neck CT/PET cases in the HECKTOR 2022 layout under `root`.

    Args:
        root: output folder (created). Existing phantom files with the same names are overwritten.
        n: number of patients.
        seed: seed of the numpy Generator; same seed -> byte-identical files.
        shape: voxel grid in model order (D, H, W): D slices along inferior->superior, H along
            x (left->right), W along y (posterior->anterior).
        spacing: voxel size in mm, same (D, H, W) order; may be anisotropic.
        orientation: axis codes of the arrays on disk (e.g. "RAS", "LPS", "LAS"); the physical
            content (world coordinates) is the same for every orientation.
        progress: show a tqdm progress bar.

    Returns:
        `root` as a Path. It holds `imagesTr/<ID>__CT.nii.gz` (HU, int16), `imagesTr/<ID>__PT.nii.gz`
        (SUV, float32), `labelsTr/<ID>.nii.gz` (0 background, 1 GTVp, 2 GTVn, uint8), the clinical CSV
        and `phantom_truth.json` (per-case ground truth: tumour volumes in ml, world centroid of the
        primary, true event time, ...).
    """
    if int(n) < 1:
        raise UserInputError(f"n must be at least 1 (got {n})")
    shape_t, spacing_t = check_shape_spacing(shape, spacing)
    check_orientation(orientation)
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    grid = WorldGrid(shape_t, spacing_t)
    children = np.random.SeedSequence(int(seed)).spawn(int(n))
    rows, truths = [], []
    for index, child in enumerate(tqdm(children, desc="HECKTOR phantoms", unit="case", disable=not progress)):
        case_seed, render_seed = child.spawn(2)
        case = sample_case(index, case_seed)
        ct, pet, labels, truth = render_case(case, grid, np.random.default_rng(render_seed))
        pid = case.patient_id
        save_nifti(np.round(ct), grid, root / "imagesTr" / f"{pid}__CT.nii.gz", orientation, np.int16)
        save_nifti(pet, grid, root / "imagesTr" / f"{pid}__PT.nii.gz", orientation, np.float32)
        save_nifti(labels, grid, root / "labelsTr" / f"{pid}.nii.gz", orientation, np.uint8)
        rows.append(case.clinical)
        truths.append(truth)
    with open(root / CLINICAL_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CLINICAL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "kind": "hecktor", "seed": int(seed), "n": int(n), "shape_dhw": list(shape_t),
        "spacing_dhw": list(spacing_t), "orientation": "".join(check_orientation(orientation)), "cases": truths,
    }
    (root / TRUTH_JSON).write_text(json.dumps(meta, indent=1))
    return root


__all__ = ["write_hecktor_phantoms", "sample_case", "render_case", "HecktorCase", "Lesion", "CLINICAL_COLUMNS"]
