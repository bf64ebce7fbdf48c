"""SegmentationDecoder: shapes for several patch sizes, loss, PET branch, Dice metric, errors."""

import math

import pytest
import torch

from unicon_hf.errors import UserInputError
from unicon_hf.head_outputs import SegmentationOutput
from unicon_hf.segmentation_head import (
    SegmentationDecoder,
    SegmentationHeadConfig,
    stage_upsampling_factors,
)
from unicon_hf.training.metrics import per_class_dice

DIM = 16


def _decoder(patch, **head):
    torch.manual_seed(0)
    cfg = SegmentationHeadConfig.from_dict({"feature_size": 4, **head})
    return SegmentationDecoder(cfg, hidden_size=DIM, patch_size=patch)


def _grids(pixel_values, patch, seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = [s // p for s, p in zip(pixel_values.shape[2:], patch)]
    return [torch.randn(pixel_values.shape[0], *grid, DIM, generator=g) for _ in range(4)]


def test_upsampling_factors():
    assert stage_upsampling_factors((16, 16, 16)) == [(2, 2, 2)] * 4
    assert stage_upsampling_factors((4, 16, 8)) == [(2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 1)]
    assert stage_upsampling_factors((32, 1, 16)) == [(4, 1, 2), (2, 1, 2), (2, 1, 2), (2, 1, 2)]
    for patch in [(16, 16, 16), (4, 16, 8), (32, 1, 16)]:
        factors = stage_upsampling_factors(patch)
        assert tuple(math.prod(f[a] for f in factors) for a in range(3)) == patch


@pytest.mark.parametrize(
    "shape, patch",
    [((1, 1, 32, 32, 32), (8, 8, 8)), ((1, 1, 16, 32, 32), (4, 8, 8)), ((2, 1, 16, 32, 16), (16, 16, 16))],
)
def test_output_shapes(shape, patch):
    decoder = _decoder(patch, num_classes=3)
    x = torch.randn(shape)
    out = decoder(x, _grids(x, patch))
    assert isinstance(out, SegmentationOutput) and out.loss is None and out.dice is None
    assert out.logits.shape == (shape[0], 3, *shape[2:])


def test_paper_geometry_96_cube_patch_16():
    decoder = _decoder((16, 16, 16), num_classes=3, feature_size=1)
    x = torch.randn(1, 1, 96, 96, 96)
    with torch.no_grad():
        logits = decoder(x, _grids(x, (16, 16, 16))).logits
    assert logits.shape == (1, 3, 96, 96, 96)


def test_isotropic_16_matches_monai_unetr_layout():
    """Same module names and shapes as MONAI's UNETR decoder, so its weights load 1:1."""
    from monai.networks.nets import UNETR

    unetr = UNETR(in_channels=1, out_channels=3, img_size=32, feature_size=4, hidden_size=DIM, mlp_dim=32, num_heads=4)
    ref = {k: v.shape for k, v in unetr.state_dict().items() if not k.startswith("vit.")}
    ours = {k: v.shape for k, v in _decoder((16, 16, 16), num_classes=3).state_dict().items()}
    assert ours == ref


def _blob(shape=(1, 1, 8, 16, 16)):
    x = torch.randn(shape) * 0.1
    labels = torch.zeros(shape[0], *shape[2:], dtype=torch.long)
    labels[:, 2:6, 3:9, 3:9] = 1
    labels[:, 3:5, 11:14, 11:14] = 2
    x[:, 0][labels > 0] += 2.0  # visible in the raw image the shallow encoder sees
    return x, labels


def test_loss_decreases_on_a_toy_blob():
    patch = (2, 4, 4)
    decoder = _decoder(patch, num_classes=3)
    x, labels = _blob()
    grids = _grids(x, patch)
    opt = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        out = decoder(x, grids, labels=labels)
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses


def test_pet_branch_changes_output_and_gets_gradient():
    patch = (2, 4, 4)
    decoder = _decoder(patch, num_classes=3, pet_branch=True)
    x = torch.randn(1, 2, 8, 16, 16)
    grids = _grids(x, patch)
    base = decoder(x, grids).logits
    x_pet = x.clone()
    x_pet[:, 1] += 3.0
    assert not torch.allclose(base, decoder(x_pet, grids).logits)
    # without the PET branch the second channel is ignored
    ct_only = _decoder(patch, num_classes=3)
    torch.testing.assert_close(ct_only(x, grids).logits, ct_only(x_pet, grids).logits)
    _, labels = _blob()
    decoder(x, grids, labels=labels).loss.backward()
    grads = [p.grad for p in decoder.pet_encoder1.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    with pytest.raises(UserInputError, match=r"channels \(CT, PET\); got 1"):
        decoder(x[:, :1], grids)


def test_dice_excludes_background_hand_made():
    labels = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    labels[0, :2] = 1  # 32 voxels of class 1; class 2 absent
    pred = labels.clone()
    pred[0, 0, 0] = 0  # miss 4 voxels of class 1 -> Dice = 2*28 / (28 + 32)
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 4, 1, 2, 3).float()
    dice = per_class_dice(logits, labels, ["background", "GTVp", "GTVn"])
    assert set(dice) == {"GTVp", "GTVn"}  # no background entry
    assert dice["GTVp"] == pytest.approx(56 / 60, rel=1e-5)
    assert math.isnan(dice["GTVn"])  # absent from the reference: not measurable, not 0
    # background Dice here would be ~0.94 and inflate a mean; a perfect prediction gives 1
    assert per_class_dice(torch.nn.functional.one_hot(labels, 3).permute(0, 4, 1, 2, 3).float(), labels)["class_1"] == 1.0
    with pytest.raises(UserInputError, match="foreground classes"):
        per_class_dice(logits, labels, ["only_one"])


def test_bad_patch_size_and_hidden_states_count():
    with pytest.raises(UserInputError, match=r"power-of-two.*\[12\]"):
        _decoder((12, 16, 16))
    with pytest.raises(UserInputError, match="3 entries"):
        _decoder((16, 16))
    decoder = _decoder((8, 8, 8))
    x = torch.randn(1, 1, 32, 32, 32)
    grids = _grids(x, (8, 8, 8))
    with pytest.raises(UserInputError, match="exactly 4 token grids.*got 3"):
        decoder(x, grids[:3])
    with pytest.raises(UserInputError, match=r"hidden_states\[2\] must have shape"):
        decoder(x, grids[:2] + [grids[2][:, :2]] + grids[3:])
    with pytest.raises(UserInputError, match="divisible by the patch size"):
        decoder(torch.randn(1, 1, 30, 32, 32), grids)
    with pytest.raises(UserInputError, match=r"labels must be integer class indices in \[0, 2\]"):
        decoder(x, grids, labels=torch.full((1, 32, 32, 32), 3))


@pytest.mark.parametrize(
    "bad, message",
    [({"num_classes": 1}, "num_classes"), ({"norm_name": "layer"}, "'instance', 'batch'"), ({"depth": 2}, "Unknown segmentation")],
)
def test_config_errors_and_round_trip(bad, message):
    with pytest.raises(UserInputError, match=message):
        SegmentationHeadConfig.from_dict(bad)
    cfg = SegmentationHeadConfig.from_dict({"num_classes": 3, "pet_branch": True})
    assert SegmentationHeadConfig.from_dict(cfg.to_dict()) == cfg
