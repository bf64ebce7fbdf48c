"""Memory-bounded sliding-window segmentation: Gaussian-blended windows, argmax emitted slab by slab.

MONAI's `sliding_window_inference` keeps a float32 accumulator of `n_classes x volume` plus a count map of
the same spatial size for the whole volume (its `buffer_steps` option only batches transfers between
devices; the output buffer stays full size). For a 512 x 512 x 300 CT and 3 classes that is ~1.3 GB before
any argmax, and it grows with the number of classes. Here the windows are placed exactly as MONAI places
them (`monai.data.utils.dense_patch_slices`, MONAI's scan interval) and weighted with MONAI's Gaussian
importance map, but they are visited slab by slab along the depth axis: all windows that start at the
same depth are accumulated into a buffer one window deep, after which the slices no later window can
reach are final, so their argmax (and, on request, their normalised probabilities) are written out and
the buffer slides on. Peak memory is `n_classes x roi_depth x H x W` instead of `n_classes x D x H x W`,
and the result is the same as MONAI's (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices
from tqdm.auto import tqdm

from .errors import UserInputError

BLEND_MODES = ("gaussian", "constant")


@dataclass
class SlidingWindowResult:
    """Output of `sliding_window_segmentation`.

    Args:
        labels (`torch.Tensor` of shape `(B, D, H, W)`, uint8 or int64): argmax class per voxel (uint8 when
            there are at most 256 classes, to keep the full-size output small).
        probabilities (`torch.Tensor` of shape `(B, K, D, H, W)`, *optional*): blended class probabilities
            (what the predictor returned, weighted-averaged over the windows), in `probability_dtype`; only
            when requested.
        num_windows (`int`): windows evaluated per volume.
    """

    labels: torch.Tensor
    probabilities: torch.Tensor | None
    num_windows: int


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Step between window starts per axis, MONAI's rule: `int(roi * (1 - overlap))` (at least 1), or the
    window size when the window spans the axis."""
    steps = []
    for size, roi in zip(image_size, roi_size):
        steps.append(int(roi) if roi == size else max(int(roi * (1 - overlap)), 1))
    return tuple(steps)


def _check(inputs: torch.Tensor, roi_size: Sequence[int], overlap: float, sw_batch_size: int, mode: str) -> tuple[int, ...]:
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 5:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise UserInputError(f"sliding window inputs must be a (B, C, D, H, W) tensor, got {shape}")
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != 3 or min(roi) < 1:
        raise UserInputError(f"roi_size must be 3 positive integers (D, H, W), got {roi_size!r}")
    if not 0.0 <= float(overlap) < 1.0:
        raise UserInputError(f"overlap must be in [0, 1), got {overlap!r}")
    if int(sw_batch_size) < 1:
        raise UserInputError(f"sw_batch_size must be a positive integer, got {sw_batch_size!r}")
    if mode not in BLEND_MODES:
        raise UserInputError(f"blend mode must be one of {list(BLEND_MODES)}, got {mode!r}")
    return roi


def _pad(inputs: torch.Tensor, roi: Sequence[int], pad_value: float | Sequence[float]) -> tuple[torch.Tensor, list[int]]:
    """Pad axes shorter than the window symmetrically (MONAI's split: the smaller half before), one constant
    per channel (e.g. air for CT, 0 for PET); returns the padded tensor and the padding before each axis."""
    before, pads = [], []
    for size, window in zip(inputs.shape[2:], roi):
        diff = max(window - size, 0)
        before.append(diff // 2)
        pads.append((diff // 2, diff - diff // 2))
    if not any(sum(p) for p in pads):
        return inputs, before
    values = [float(pad_value)] * inputs.shape[1] if isinstance(pad_value, (int, float)) else [float(v) for v in pad_value]
    if len(values) != inputs.shape[1]:
        raise UserInputError(f"pad_value has {len(values)} entries for {inputs.shape[1]} input channels")
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad lists the last axis first
    channels = [F.pad(inputs[:, c:c + 1], flat, mode="constant", value=v) for c, v in enumerate(values)]
    return torch.cat(channels, dim=1), before


def _emit(scores, weights, local: slice, out: slice, crop_h: slice, crop_w: slice, labels: torch.Tensor,
          probabilities: torch.Tensor | None, chunk: int = 8) -> None:
    """Write the final slices `local` of the slab buffer into `labels` / `probabilities` at `out`, a few slices at
    a time (argmax returns int64: for a whole slab that alone would be 8 bytes per voxel)."""
    for start in range(0, local.stop - local.start, chunk):
        stop = min(start + chunk, local.stop - local.start)
        src = slice(local.start + start, local.start + stop)
        dst = slice(out.start + start, out.start + stop)
        region = scores[:, src, crop_h, crop_w]
        labels[dst] = region.argmax(dim=0).to(device=labels.device, dtype=labels.dtype)
        if probabilities is not None:
            normalised = region.float() / weights[src, crop_h, crop_w].float()
            probabilities[:, dst] = normalised.to(device=probabilities.device, dtype=probabilities.dtype)


def sliding_window_segmentation(
    inputs: torch.Tensor,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    roi_size: Sequence[int],
    num_classes: int,
    *,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    pad_value: float | Sequence[float] = 0.0,
    return_probabilities: bool = False,
    probability_dtype: torch.dtype = torch.float16,
    accumulate_dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> SlidingWindowResult:
    """Segment a volume larger (or smaller) than the model's window.

    Args:
        inputs: (B, C, D, H, W) model input; it may stay on the CPU while windows run on `device`.
        predictor: maps a batch of windows (n, C, *roi_size) to (n, num_classes, *roi_size) values to blend,
            normally softmax probabilities.
        roi_size: window size (D, H, W), e.g. the task's `input_size`.
        num_classes: channels the predictor returns.
        overlap: fraction of a window shared with its neighbour along each axis (MONAI's meaning).
        sw_batch_size: windows per predictor call.
        mode: "gaussian" (MONAI's importance map with `sigma_scale`) or "constant" (plain average).
        pad_value: constant(s) for axes shorter than the window, one per channel or one for all.
        return_probabilities: also return the blended probabilities (a full `num_classes x volume` array in
            `probability_dtype`; leave off when only labels are needed, which keeps memory bounded).
        accumulate_dtype: dtype of the slab accumulator (float32; float16/bfloat16 halve it).
        device: where windows are evaluated and blended; defaults to the inputs' device. Labels are returned
            on the inputs' device.
        progress: show a tqdm bar over the windows.

    Returns:
        `SlidingWindowResult` with labels (B, D, H, W) and optional probabilities (B, K, D, H, W), on the
        input's original grid (padding removed).
    """
    roi = _check(inputs, roi_size, overlap, sw_batch_size, mode)
    device = torch.device(device) if device is not None else inputs.device
    output_device = inputs.device
    batch, _, *size = inputs.shape
    padded, before = _pad(inputs, roi, pad_value)
    padded_size = tuple(padded.shape[2:])
    windows = dense_patch_slices(padded_size, roi, scan_interval(padded_size, roi, overlap))
    # dense_patch_slices enumerates depth-major; group the windows by their depth start.
    groups: dict[int, list[tuple[slice, ...]]] = {}
    for window in windows:
        groups.setdefault(window[0].start, []).append(window)
    depth_starts = sorted(groups)
    importance = compute_importance_map(roi, mode=mode, sigma_scale=sigma_scale, device=device,
                                        dtype=torch.float32).to(accumulate_dtype)
    roi_d = roi[0]
    _, height, width = padded_size
    crop_h = slice(before[1], before[1] + size[1])
    crop_w = slice(before[2], before[2] + size[2])
    label_dtype = torch.uint8 if num_classes <= 256 else torch.int64
    labels = torch.empty((batch, *size), dtype=label_dtype, device=output_device)
    probabilities = (torch.empty((batch, num_classes, *size), dtype=probability_dtype, device=output_device)
                     if return_probabilities else None)
    bar = tqdm(total=batch * len(windows), desc="sliding window", unit="window", disable=not progress)
    for b in range(batch):
        # The slab buffer covers padded depths [origin, origin + roi_d).
        scores = torch.zeros((num_classes, roi_d, height, width), dtype=accumulate_dtype, device=device)
        weights = torch.zeros((roi_d, height, width), dtype=accumulate_dtype, device=device) if return_probabilities else None
        for index, d0 in enumerate(depth_starts):
            group = groups[d0]
            for first in range(0, len(group), sw_batch_size):
                chunk = group[first:first + sw_batch_size]
                x = torch.cat([padded[(slice(b, b + 1), slice(None), *w)] for w in chunk]).to(device)
                y = predictor(x)
                if not isinstance(y, torch.Tensor) or tuple(y.shape) != (len(chunk), num_classes, *roi):
                    got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
                    raise UserInputError(
                        f"the predictor must return ({len(chunk)}, {num_classes}, {', '.join(map(str, roi))}) for "
                        f"{len(chunk)} window(s), got {got}"
                    )
                y = y.to(accumulate_dtype) * importance
                for i, w in enumerate(chunk):
                    scores[:, :, w[1], w[2]] += y[i]
                    if weights is not None:
                        weights[:, w[1], w[2]] += importance
                bar.update(len(chunk))
            # Padded depths [d0, done) are final: no later window starts before `done`.
            done = depth_starts[index + 1] if index + 1 < len(depth_starts) else d0 + roi_d
            step = done - d0
            start, stop = max(d0, before[0]), min(done, before[0] + size[0])
            if stop > start:
                local = slice(start - d0, stop - d0)
                out = slice(start - before[0], stop - before[0])
                _emit(scores, weights, local, out, crop_h, crop_w, labels[b],
                      None if probabilities is None else probabilities[b])
            # Slide the buffer so that it starts at the next group's depth: slice by slice, because a copy
            # between overlapping views is undefined and a cloned copy would double the buffer for a moment.
            for i in range(max(roi_d - step, 0)):
                scores[:, i] = scores[:, i + step]
                if weights is not None:
                    weights[i] = weights[i + step]
            scores[:, max(roi_d - step, 0):] = 0
            if weights is not None:
                weights[max(roi_d - step, 0):] = 0
    bar.close()
    return SlidingWindowResult(labels=labels, probabilities=probabilities, num_windows=len(windows))
