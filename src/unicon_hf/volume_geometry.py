"""Volume reading, validation and the exactly invertible grid operations of `UniconImageProcessor`.

Every geometric step is described by plain numbers that go into a JSON record, so a prediction made
on the model grid can be mapped back onto the file it came from:

1. reorientation to canonical axis codes (nibabel's orientation tools: an exact flip/permutation),
2. resampling to the target spacing along the (reoriented) voxel axes, on a grid that covers the
   whole native field of view and is centred on it,
3. centred crop/pad to the output size,
4. the (i, j, k) -> (D=k, H=i, W=j) transpose of the model arrays (CT-CLIP's axis order).

Why not MONAI's `Spacing`/`Orientation` + `Invert`: their inverse lives in a MetaTensor's
`applied_operations`, which is not JSON and does not survive `datasets`/DataLoader round trips, and
`Spacing` materialises a full sampling grid (4 floats per output voxel, > 1 GB for one chest CT).
Resampling along voxel axes is separable, so it is done per axis: nearest by index gathering (exactly
the same rule forwards and backwards, which is what makes label round trips exact, see
`resample_axes`), linear with `scipy.ndimage.affine_transform` and a diagonal matrix (streamed).
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import nibabel.processing
import numpy as np
from nibabel.filebasedimages import ImageFileError

from .errors import UserInputError

# Spacings closer than this (relative) are treated as equal: the axis is then left untouched, so a
# volume already at the target spacing is never interpolated.
SPACING_RTOL = 1e-4
# The (i, j, k) canonical array becomes the model's (D, H, W) = (k, i, j).
MODEL_AXES = (2, 0, 1)
INVERSE_MODEL_AXES = (1, 2, 0)


@dataclass
class Volume:
    """A 3D array with its voxel-to-world affine and a name for error messages."""

    array: np.ndarray
    affine: np.ndarray
    name: str
    dtype: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


@dataclass
class Grid:
    """The voxel grid of a file, read from its header only (no voxel data)."""

    shape: tuple[int, ...]
    affine: np.ndarray
    name: str


def describe(source: Any) -> str:
    """Name of an input for messages: its file path when there is one."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, dict) and source.get("path"):
        return str(source["path"])
    file_map = getattr(source, "file_map", None)
    if file_map and "image" in file_map and getattr(file_map["image"], "filename", None):
        return str(file_map["image"].filename)
    if isinstance(source, tuple):
        return "<(array, affine) input>"
    return "<in-memory image>"


def open_image(source: Any, role: str) -> Any:
    """Open a NIfTI path / nibabel image / datasets `{'path','bytes'}` dict lazily (header only)."""
    name = describe(source)
    if isinstance(source, dict) and source.get("bytes") is None and source.get("path"):
        source = source["path"]
    try:
        if isinstance(source, (str, Path)):
            if not Path(source).exists():
                raise UserInputError(f"{role} file {name} does not exist.")
            image = nib.load(str(source))
        elif isinstance(source, dict) and source.get("bytes") is not None:
            raw = source["bytes"]
            image = nib.Nifti1Image.from_bytes(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        else:
            image = source
    except UserInputError:
        raise
    except (ImageFileError, OSError, EOFError, zlib.error, ValueError) as err:
        raise UserInputError(
            f"{role} file {name} is not a readable NIfTI file ({type(err).__name__}: {err}). "
            "Convert it to .nii/.nii.gz (e.g. with dcm2niix) or remove it from the dataset."
        ) from None
    if not isinstance(image, nib.spatialimages.SpatialImage):
        raise UserInputError(f"{role} {name}: expected a NIfTI path or nibabel image, got {type(image).__name__}.")
    return image


def _validate_geometry(shape: Sequence[int], affine: np.ndarray, zooms: Sequence[float] | None, name: str, role: str):
    if len(shape) != 3:
        raise UserInputError(
            f"{role} {name} has {len(shape)} dimensions (shape {tuple(shape)}); a 3D volume is required"
            + (" (split 4D series/channels into one file per volume)." if len(shape) > 3 else ".")
        )
    if min(shape) < 2:
        raise UserInputError(
            f"{role} {name} has shape {tuple(shape)}: a single slice is 2D, but a 3D volume is required."
        )
    if zooms is not None:
        bad = [float(z) for z in zooms[:3] if not np.isfinite(z) or z <= 0]
        if bad:
            raise UserInputError(
                f"{role} {name} has zero/negative voxel spacing {tuple(float(z) for z in zooms[:3])} in its header "
                "(pixdim); fix the header (e.g. re-export the NIfTI) so every spacing is positive."
            )
    if not np.all(np.isfinite(affine)):
        raise UserInputError(f"{role} {name} has a non-finite affine; fix the file's sform/qform.")
    columns = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    if np.any(columns <= 1e-6) or abs(np.linalg.det(np.asarray(affine)[:3, :3])) <= 1e-12:
        raise UserInputError(
            f"{role} {name} has zero voxel spacing in its affine (column lengths {_mm(columns)}); "
            "fix the file's sform/qform so every voxel axis has a positive length."
        )


def _raw_zooms(source: Any, image: Any) -> np.ndarray | None:
    """pixdim[1:4] exactly as stored in the file.

    nibabel silently replaces zero/negative pixdim on load (with only a log warning), which would hide
    a broken export, so the header is re-read here without its fixes.
    """
    path = describe(source)  # also finds the file behind a nibabel image (e.g. one decoded by datasets)
    if not isinstance(image.header, nib.Nifti1Header) or path.startswith("<") or not Path(path).is_file():
        return None
    try:
        with nib.openers.ImageOpener(path) as handle:
            raw = type(image.header).from_fileobj(handle, check=False)
    except Exception:  # unreadable here means unreadable later too; read_volume reports it then
        return None
    return np.asarray(raw["pixdim"][1:4], dtype=np.float64)


def read_grid(source: Any, role: str = "image") -> Grid:
    """Open a volume's header and validate its geometry (3D, positive spacing) without reading voxels."""
    image = open_image(source, role)
    name = describe(source)
    shape = tuple(image.shape)
    spatial = shape[:3] if len(shape) == 4 and shape[3] == 1 else shape
    zooms = _raw_zooms(source, image)
    if zooms is None and hasattr(image.header, "get_zooms"):
        zooms = image.header.get_zooms()[: len(spatial)]
    _validate_geometry(spatial, image.affine, zooms, name, role)
    return Grid(shape=tuple(int(n) for n in spatial), affine=np.asarray(image.affine, dtype=np.float64), name=name)


def read_volume(source: Any, role: str = "image", *, is_label: bool = False, check_nan: bool = True) -> Volume:
    """Read and validate one 3D volume.

    Args:
        source: a NIfTI path, a nibabel image, a datasets `{'path', 'bytes'}` dict or an `(array, affine)` tuple.
        role: what the volume is ("CT", "PET", "label"), used in error messages.
        is_label: read integer labels (no scaling to float; checked to be whole numbers).
        check_nan: reject volumes with NaN voxels.

    Raises:
        UserInputError: not a NIfTI, truncated/corrupt, not 3D, zero/negative spacing, NaN voxels,
            non-integer labels; the message names the file.
    """
    if isinstance(source, tuple) and len(source) == 2:
        array, affine = np.asarray(source[0]), np.asarray(source[1], dtype=np.float64)
        name, zooms = describe(source), None
        if affine.shape != (4, 4):
            raise UserInputError(f"{role} {name}: the affine must be 4x4, got shape {affine.shape}.")
        dtype = str(array.dtype)
    else:
        image = open_image(source, role)
        name = describe(source)
        header = image.header
        shape = tuple(image.shape)
        # A trailing singleton 4th axis (common in exports) is still one 3D volume.
        spatial = shape[:3] if len(shape) == 4 and shape[3] == 1 else shape
        zooms = _raw_zooms(source, image)
        if zooms is None and hasattr(header, "get_zooms"):
            zooms = header.get_zooms()[: len(spatial)]
        _validate_geometry(spatial, image.affine, zooms, name, role)
        # `image.dataobj` decompresses the payload here: truncation only shows up at this point.
        try:
            array = np.asanyarray(image.dataobj)
        except (OSError, EOFError, zlib.error, ValueError) as err:
            raise UserInputError(
                f"{role} file {name} is truncated or corrupt ({type(err).__name__}: {err}); re-download or re-export it."
            ) from None
        array = array.reshape(spatial)
        affine = np.asarray(image.affine, dtype=np.float64)
        dtype = str(image.get_data_dtype())
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    _validate_geometry(array.shape, affine, zooms, name, role)
    if is_label:
        if np.issubdtype(array.dtype, np.floating):
            if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
                raise UserInputError(f"label {name} has non-integer or NaN values; a label map must hold class ids.")
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.int32)
    else:
        array = array.astype(np.float32, copy=False)
        if check_nan:
            nan = np.isnan(array)
            count = int(nan.sum())
            if count:
                first = tuple(int(v) for v in np.unravel_index(int(np.flatnonzero(nan)[0]), array.shape))
                raise UserInputError(
                    f"{role} {name} has {count} NaN voxel(s) (first at voxel index {first}); check the conversion "
                    "that wrote it (e.g. missing slices or bad rescale slope) or replace NaNs with the background value."
                )
    return Volume(array=array, affine=affine, name=name, dtype=dtype)


def spacing_of(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing (mm) along each voxel axis: the lengths of the affine's columns."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def world_box(shape: Sequence[int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world bounding box (mm) of the voxel-edge field of view: (lower corner, upper corner)."""
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape], indexing="ij")).reshape(3, -1)
    world = np.asarray(affine)[:3, :3] @ corners + np.asarray(affine)[:3, 3:4]
    return world.min(axis=1), world.max(axis=1)


def _mm(values) -> tuple:
    return tuple(round(float(v), 2) for v in values)


def check_same_space(a: Volume | Grid, b: Volume | Grid, tolerance_mm: float, what: str = "CT and PET") -> None:
    """Raise unless the two volumes' world bounding boxes agree within `tolerance_mm` at both corners."""
    lo_a, hi_a = world_box(a.shape, a.affine)
    lo_b, hi_b = world_box(b.shape, b.affine)
    lower, upper = lo_b - lo_a, hi_b - hi_a
    if max(np.abs(lower).max(), np.abs(upper).max()) > tolerance_mm:
        raise UserInputError(
            f"{what} do not cover the same physical space: {a.name} vs {b.name}: the second's bounding box is offset "
            f"by {_mm(lower)} mm at the lower corner and {_mm(upper)} mm at the upper "
            f"corner (world x, y, z; tolerance {tolerance_mm} mm). Register/resample them onto one field of view, "
            "or raise the tolerance if the difference is expected."
        )


def check_label_grid(ct: Volume | Grid, label: Volume | Grid) -> None:
    """Raise unless the label lies on the CT's voxel grid (same shape, same affine)."""
    if tuple(label.shape) != tuple(ct.shape):
        raise UserInputError(
            f"label {label.name} has shape {tuple(label.shape)} but its CT {ct.name} has shape {tuple(ct.shape)}; "
            "a label must be drawn on the CT's voxel grid (resample it onto the CT with nearest neighbour)."
        )
    if not np.allclose(label.affine, ct.affine, atol=1e-3):
        raise UserInputError(
            f"label {label.name} and CT {ct.name} have the same shape but different affines "
            f"(max difference {np.abs(label.affine - ct.affine).max():.4g}); the label must be on the CT's grid."
        )


# --------------------------------------------------------------------------------------------- orientation
def reorient(array: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray, list]:
    """Flip/permute array axes so they point along `axcodes`; returns (array, affine, ornt transform)."""
    start = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(start, nib.orientations.axcodes2ornt(tuple(axcodes)))
    out = nib.orientations.apply_orientation(array, transform)
    new_affine = np.asarray(affine) @ nib.orientations.inv_ornt_aff(transform, array.shape)
    return out, new_affine, transform.tolist()


def undo_reorient(array: np.ndarray, transform: list) -> np.ndarray:
    """Inverse of `reorient` on the array (the affine comes from the record)."""
    transform = np.asarray(transform, dtype=float)
    inverse = np.zeros_like(transform)
    # transform[i] = (new axis, flip) for old axis i; invert the permutation, keep the flips.
    for old_axis, (new_axis, flip) in enumerate(transform):
        inverse[int(new_axis)] = (old_axis, flip)
    return np.ascontiguousarray(nib.orientations.apply_orientation(array, inverse))


# --------------------------------------------------------------------------------------------- resampling
def target_grid(shape: Sequence[int], affine: np.ndarray, target_spacing: Sequence[float] | None):
    """Grid at `target_spacing` along the voxel axes, covering the native field of view, centred on it.

    Returns (shape, affine, scale, shift) where target voxel t sits at native voxel coordinate
    `scale * t + shift` on each axis.
    """
    native = spacing_of(affine)
    if target_spacing is None:
        target_spacing = native
    new_shape, scale, shift = [], [], []
    for n, h_native, h_target in zip(shape, native, target_spacing):
        if abs(h_target / h_native - 1.0) < SPACING_RTOL:
            new_shape.append(int(n)), scale.append(1.0), shift.append(0.0)
            continue
        ratio = float(h_target) / float(h_native)
        # Enough target voxels to cover all n native voxels edge to edge (tiny epsilon against 1e-15 noise).
        m = max(1, math.ceil(n / ratio - 1e-6))
        new_shape.append(m), scale.append(ratio), shift.append((n - 1) / 2.0 - ratio * (m - 1) / 2.0)
    mapping = np.eye(4)
    mapping[:3, :3] = np.diag(scale)
    mapping[:3, 3] = shift
    return new_shape, np.asarray(affine) @ mapping, scale, shift


def _nearest_indices(n_src: int, n_dst: int, scale: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
    coords = scale * np.arange(n_dst) + shift
    inside = (coords >= -0.5) & (coords < n_src - 0.5)
    return np.clip(np.rint(coords), 0, n_src - 1).astype(np.intp), inside


def _is_identity(n_src: int, n_dst: int, scale: float, shift: float) -> bool:
    return n_src == n_dst and scale == 1.0 and shift == 0.0


def resample_axes(array: np.ndarray, out_shape: Sequence[int], scale: Sequence[float], shift: Sequence[float],
                  *, nearest: bool, fill: float = 0.0) -> np.ndarray:
    """Resample the last three axes: output voxel t takes the source value at `scale * t + shift`.

    Nearest: each output voxel copies the source voxel whose box contains that point (outside the
    source field of view: `fill`). Because forward and inverse use this same rule, a label mapped to a
    grid that is at least as fine on every axis and back is returned unchanged (each native voxel's
    nearest target voxel is within half a target spacing < half a native spacing, so it maps back to it).
    Linear: trilinear, edge values extended (the grids differ by at most one voxel at the edges).

    Written by hand rather than with scipy.ndimage: trilinear interpolation along voxel axes is separable,
    and three 1D passes take ~1 s on a chest CT where scipy's generic 3D path takes ~15 s.
    """
    out = array
    for axis in range(3):
        dim = out.ndim - 3 + axis
        n_src, n_dst = out.shape[dim], int(out_shape[axis])
        if _is_identity(n_src, n_dst, scale[axis], shift[axis]):
            continue
        coords = scale[axis] * np.arange(n_dst) + shift[axis]
        if nearest:
            index = np.clip(np.rint(coords), 0, n_src - 1).astype(np.intp)
            inside = (coords >= -0.5) & (coords < n_src - 0.5)
            out = np.take(out, index, axis=dim)
            if not inside.all():
                np.moveaxis(out, dim, 0)[~inside] = fill
            continue
        coords = np.clip(coords, 0, n_src - 1)
        low = np.clip(np.floor(coords), 0, n_src - 2).astype(np.intp)
        weight = (coords - low).astype(np.float32).reshape([-1 if d == dim else 1 for d in range(out.ndim)])
        below, above = np.take(out, low, axis=dim), np.take(out, low + 1, axis=dim)
        # below + w * (above - below), in place to keep one extra volume in memory at most.
        above -= below
        above *= weight
        below += above
        out = below
    return out


def resample_onto(volume: Volume, shape: Sequence[int], affine: np.ndarray, axcodes: str) -> np.ndarray:
    """Linear resampling of `volume` onto another grid (e.g. PET onto the CT's target grid), in world space.

    When the two grids are axis-aligned once `volume` is reoriented to `axcodes` (the usual PET/CT case)
    this is the fast separable path of `resample_axes`; otherwise (oblique/rotated grids) nibabel's
    general `resample_from_to`.
    """
    array, source_affine, _ = reorient(volume.array, volume.affine, axcodes)
    mapping = np.linalg.solve(source_affine, np.asarray(affine))  # target voxel -> source voxel
    linear = mapping[:3, :3]
    diagonal = np.diag(linear)
    if np.allclose(linear, np.diag(diagonal), atol=1e-6) and np.all(diagonal > 0):
        return resample_axes(array, shape, diagonal.tolist(), mapping[:3, 3].tolist(), nearest=False)
    image = nib.Nifti1Image(np.asarray(volume.array, dtype=np.float32), volume.affine)
    resampled = nibabel.processing.resample_from_to(image, (tuple(shape), np.asarray(affine)), order=1, mode="nearest")
    return np.asarray(resampled.dataobj, dtype=np.float32)


# --------------------------------------------------------------------------------------------- crop / pad
def crop_pad_plan(shape: Sequence[int], size: Sequence[int] | None) -> dict:
    """Centred crop/pad of `shape` to `size` (same axes); `None` keeps the shape."""
    size = list(shape) if size is None else [int(s) for s in size]
    pad_before, pad_after, crop_start = [], [], []
    for n, s in zip(shape, size):
        if s >= n:
            pad_before.append((s - n) // 2), pad_after.append(s - n - (s - n) // 2), crop_start.append(0)
        else:
            pad_before.append(0), pad_after.append(0), crop_start.append((n - s) // 2)
    return {"size": size, "pad_before": pad_before, "pad_after": pad_after, "crop_start": crop_start}


def undo_crop_pad(array: np.ndarray, plan: dict, shape: Sequence[int], fill: float) -> np.ndarray:
    """Place a cropped/padded array (last three axes) back on the uncropped grid; removed parts get `fill`."""
    out = np.full((*array.shape[:-3], *shape), fill, dtype=array.dtype)
    src, dst = [], []
    for n, s, before, start in zip(shape, plan["size"], plan["pad_before"], plan["crop_start"]):
        length = min(n - start, s - before)
        src.append(slice(before, before + length))
        dst.append(slice(start, start + length))
    out[(..., *dst)] = array[(..., *src)]
    return out


def model_affine(resampled_affine: np.ndarray, plan: dict) -> np.ndarray:
    """Voxel-to-world affine of the model array (D, H, W): where each model voxel lies in the patient."""
    offset = np.eye(4)
    offset[:3, 3] = np.asarray(plan["crop_start"]) - np.asarray(plan["pad_before"])
    permute = np.zeros((4, 4))
    permute[3, 3] = 1
    for model_axis, canonical_axis in enumerate(MODEL_AXES):
        permute[canonical_axis, model_axis] = 1
    return np.asarray(resampled_affine) @ offset @ permute
