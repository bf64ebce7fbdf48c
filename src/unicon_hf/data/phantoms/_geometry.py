"""World grids and NIfTI writing shared by the phantom generators.

Phantoms are rendered once in a canonical RAS array and only then reoriented for writing, so the
same seed gives the same physical content (same world coordinates of every structure) whatever
`orientation` is asked for: only the voxel order on disk and the affine change.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, ornt_transform

from ...errors import UserInputError

_AXIS_PAIRS = ({"L", "R"}, {"A", "P"}, {"S", "I"})


def check_orientation(orientation: str) -> tuple[str, str, str]:
    """Validate axis codes such as "RAS", "LPS" or "SAR"; return them as a tuple of letters."""
    codes = tuple(str(orientation).upper())
    if len(codes) != 3 or any(sum(code in pair for code in codes) != 1 for pair in _AXIS_PAIRS):
        raise UserInputError(
            f"orientation {orientation!r} is not valid axis codes: give three letters, one of L/R, "
            "one of A/P and one of S/I, in any order (e.g. 'RAS', 'LPS', 'LAS', 'SAR')"
        )
    return codes  # type: ignore[return-value]


def check_shape_spacing(shape, spacing) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Validate `shape` and `spacing` given in model order (D, H, W); return them as tuples."""
    try:
        shape_t = tuple(int(v) for v in shape)
        spacing_t = tuple(float(v) for v in spacing)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"shape and spacing must be three numbers each (D, H, W): {error}") from None
    if len(shape_t) != 3 or len(spacing_t) != 3:
        raise UserInputError(f"shape {shape!r} and spacing {spacing!r} must each have three values (D, H, W)")
    if min(shape_t) < 8:
        raise UserInputError(f"shape {shape_t} is too small: each axis needs at least 8 voxels")
    if not all(np.isfinite(spacing_t)) or min(spacing_t) <= 0:
        raise UserInputError(f"spacing {spacing_t} must be positive millimetres")
    return shape_t, spacing_t  # type: ignore[return-value]


class WorldGrid:
    """Voxel centres of a canonical RAS array, in millimetres, centred on the world origin.

    `shape`/`spacing` are in model order (D, H, W); following the project convention the RAS array
    axes are (i, j, k) = (H, W, D), i.e. x (left->right) = H, y (posterior->anterior) = W and
    z (inferior->superior) = D. Coordinates are open grids that broadcast to the full array.
    """

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        depth, height, width = shape
        sd, sh, sw = spacing
        self.ras_shape = (height, width, depth)
        self.ras_spacing = np.array([sh, sw, sd], dtype=float)
        counts = np.array(self.ras_shape, dtype=float)
        origin = -(counts - 1) / 2 * self.ras_spacing
        self.affine = np.diag([*self.ras_spacing, 1.0])
        self.affine[:3, 3] = origin
        self.x = (origin[0] + np.arange(height) * sh)[:, None, None]
        self.y = (origin[1] + np.arange(width) * sw)[None, :, None]
        self.z = (origin[2] + np.arange(depth) * sd)[None, None, :]
        # Half extents of the field of view (to the outer voxel edges), in mm.
        self.half_extent = counts * self.ras_spacing / 2

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.ras_spacing)) / 1000.0

    def centroid_mm(self, mask: np.ndarray) -> list[float] | None:
        """World (RAS mm) centre of a boolean mask on this grid, or None when the mask is empty."""
        indices = np.argwhere(mask)
        if len(indices) == 0:
            return None
        centre = indices.mean(axis=0)
        return [float(v) for v in self.affine[:3, :3] @ centre + self.affine[:3, 3]]


def ellipsoid(grid: WorldGrid, centre, radii, rotation: np.ndarray | None = None) -> np.ndarray:
    """Normalised radius of every voxel w.r.t. an (optionally rotated) ellipsoid; <= 1 is inside."""
    dx, dy, dz = grid.x - centre[0], grid.y - centre[1], grid.z - centre[2]
    if rotation is not None:
        # Coordinates in the ellipsoid's own frame: rotation columns are its axes in world space.
        dx, dy, dz = (
            rotation[0, 0] * dx + rotation[1, 0] * dy + rotation[2, 0] * dz,
            rotation[0, 1] * dx + rotation[1, 1] * dy + rotation[2, 1] * dz,
            rotation[0, 2] * dx + rotation[1, 2] * dy + rotation[2, 2] * dz,
        )
    return np.sqrt((dx / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dz / radii[2]) ** 2)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation matrix (QR of a Gaussian matrix with the sign fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def save_nifti(array_ras: np.ndarray, grid: WorldGrid, path: Path, orientation: str, dtype) -> None:
    """Write a canonical-RAS array as NIfTI in the requested axis codes (data and affine reoriented)."""
    image = nib.Nifti1Image(np.asarray(array_ras).astype(dtype), grid.affine)
    image.header.set_xyzt_units("mm")
    transform = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(check_orientation(orientation)))
    image = image.as_reoriented(transform)
    # Scanner-based codes in both qform and sform, as converted clinical scans have.
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
