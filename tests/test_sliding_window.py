"""Memory-bounded sliding window: same result as MONAI's full-volume blending and as manual tiling, at any size."""

import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference

from unicon_hf import UserInputError
from unicon_hf.sliding_window import scan_interval, sliding_window_segmentation

ROI = (8, 8, 8)


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(2, 3, 3, padding=1).eval()

    def run(x):
        with torch.no_grad():
            return conv(x).softmax(dim=1)

    return run


def manual_blend(x, predictor, roi, overlap, pad_value):
    """Reference written the obvious way: pad, loop over every window, accumulate the full volume, divide."""
    b, c, *size = x.shape
    pads = [max(r - s, 0) for s, r in zip(size, roi)]
    padded = torch.nn.functional.pad(x, [p for d in (2, 1, 0) for p in (pads[d] // 2, pads[d] - pads[d] // 2)],
                                     value=pad_value)
    full = padded.shape[2:]
    weight_map = compute_importance_map(roi, mode="gaussian", sigma_scale=0.125)
    scores = torch.zeros(b, 3, *full)
    weights = torch.zeros(full)
    steps = scan_interval(full, roi, overlap)
    starts = []
    for n, r, step in zip(full, roi, steps):
        axis = list(range(0, max(n - r, 0) + 1, step))
        if axis[-1] != n - r:
            axis.append(n - r)
        starts.append(axis)
    for d in starts[0]:
        for h in starts[1]:
            for w in starts[2]:
                window = (slice(d, d + roi[0]), slice(h, h + roi[1]), slice(w, w + roi[2]))
                scores[(slice(None), slice(None), *window)] += predictor(padded[(slice(None), slice(None), *window)]) * weight_map
                weights[window] += weight_map
    probabilities = scores / weights
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pads, size))
    return probabilities[(slice(None), slice(None), *crop)]


@pytest.mark.parametrize("shape", [(1, 2, 19, 13, 23), (2, 2, 5, 21, 9), (1, 2, 8, 8, 8), (1, 2, 3, 4, 30)])
@pytest.mark.parametrize("overlap", [0.0, 0.6])
def test_matches_monai_and_manual_tiling(predictor, shape, overlap):
    torch.manual_seed(1)
    x = torch.randn(*shape)
    result = sliding_window_segmentation(x, predictor, ROI, 3, overlap=overlap, sw_batch_size=3, pad_value=-1.0,
                                         return_probabilities=True, probability_dtype=torch.float32)
    monai = sliding_window_inference(x, ROI, 4, predictor, overlap=overlap, mode="gaussian", cval=-1.0)
    manual = manual_blend(x, predictor, ROI, overlap, -1.0)
    assert result.labels.shape == (shape[0], *shape[2:]) and result.labels.dtype == torch.uint8
    torch.testing.assert_close(result.probabilities, monai, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.probabilities, manual, atol=1e-5, rtol=1e-5)
    # Argmax agrees wherever the top two classes are not tied within float noise.
    top2 = manual.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4
    assert torch.equal(result.labels.long()[clear], manual.argmax(dim=1)[clear])


def test_non_overlapping_tiles_are_the_predictor_itself(predictor):
    """With overlap 0 on a volume that tiles exactly, each voxel's output is its own window's prediction."""
    x = torch.randn(1, 2, 16, 8, 24)
    result = sliding_window_segmentation(x, predictor, ROI, 3, overlap=0.0, return_probabilities=True,
                                         probability_dtype=torch.float32)
    assert result.num_windows == 2 * 1 * 3
    for d in (0, 8):
        for w in (0, 8, 16):
            tile = predictor(x[:, :, d:d + 8, :, w:w + 8])
            torch.testing.assert_close(result.probabilities[:, :, d:d + 8, :, w:w + 8], tile, atol=1e-6, rtol=1e-5)
            assert torch.equal(result.labels[:, d:d + 8, :, w:w + 8].long(), tile.argmax(1))


def test_pad_value_per_channel_reaches_the_predictor():
    seen = []

    def record(x):
        seen.append(x.clone())
        return torch.zeros(x.shape[0], 2, *x.shape[2:])

    sliding_window_segmentation(torch.zeros(1, 2, 4, 8, 8), record, ROI, 2, pad_value=[-1.0, 0.5])
    window = seen[0]
    assert torch.all(window[0, 0, :2] == -1.0) and torch.all(window[0, 1, :2] == 0.5)  # depth padded 2 + 2
    assert torch.all(window[0, :, 2:6] == 0.0)


def test_bad_arguments_have_clear_errors(predictor):
    x = torch.randn(1, 2, 8, 8, 8)
    with pytest.raises(UserInputError, match="overlap"):
        sliding_window_segmentation(x, predictor, ROI, 3, overlap=1.0)
    with pytest.raises(UserInputError, match=r"\(B, C, D, H, W\)"):
        sliding_window_segmentation(x[0], predictor, ROI, 3)
    with pytest.raises(UserInputError, match="predictor must return"):
        sliding_window_segmentation(x, predictor, ROI, 5)
    with pytest.raises(UserInputError, match="blend mode"):
        sliding_window_segmentation(x, predictor, ROI, 3, mode="median")
