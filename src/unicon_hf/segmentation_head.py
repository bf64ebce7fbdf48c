"""UNETR-style segmentation decoder on the encoder's token grids, with an optional PET skip branch.

Built from MONAI's UNETR blocks, wired as in MONAI's `UNETR` (same module names and state-dict keys),
with two additions from the UNICON paper and this project:

- any power-of-two patch size per axis (isotropic 16^3, 8^3, or anisotropic such as 4x16x16): the
  four decoder stages upsample each axis by a per-stage factor so that their product is the patch
  size; an axis with fewer levels than stages stops being upsampled in the shallowest stages;
- for CT+PET tasks a second shallow encoder on the PET channel whose full-resolution skip is summed
  with the CT skip (the paper's design); the CT skip always reads channel 0.

Inputs are plain tensors so the decoder can be built and tested without the encoder; which encoder
layers provide the four token grids is decided by the model's config, not here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.losses import DiceCELoss
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.blocks.dynunet_block import get_conv_layer
from torch import nn

from .errors import UserInputError
from .head_config import HeadConfig
from .head_outputs import SegmentationOutput

NORM_NAMES = ("instance", "batch")
NUM_STAGES = 4  # UNETR: 3 intermediate token grids as skips + the bottleneck


@dataclass
class SegmentationHeadConfig(HeadConfig):
    """Settings of a `SegmentationDecoder`, stored as the task spec's `head` dict.

    Args:
        num_classes (`int`, defaults to 3): output classes including background (HECKTOR: background,
            GTVp, GTVn).
        feature_size (`int`, defaults to 16): channels of the full-resolution stage; deeper stages use
            2x, 4x, 8x this (as in UNETR).
        norm_name (`str`, defaults to `"instance"`): normalisation in the MONAI blocks: `"instance"` or `"batch"`.
        res_block (`bool`, defaults to `True`): residual convolution blocks (MONAI `UnetResBlock`) instead
            of plain ones.
        pet_branch (`bool`, defaults to `False`): add a shallow encoder on the PET channel (channel 1)
            whose skip is summed with the CT skip; needs `pixel_values` with 2 channels.
        dropout (`float`, defaults to 0.0): channel dropout (`Dropout3d`) before the final 1x1x1 convolution.
    """

    head_kind = "segmentation"  # a plain class attribute (no annotation): not a field

    num_classes: int = 3
    feature_size: int = 16
    norm_name: str = "instance"
    res_block: bool = True
    pet_branch: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if int(self.num_classes) < 2:
            raise UserInputError(
                f"segmentation head 'num_classes' must be >= 2 (background + at least one structure); got {self.num_classes!r}."
            )
        if int(self.feature_size) < 1:
            raise UserInputError(f"segmentation head 'feature_size' must be a positive integer; got {self.feature_size!r}.")
        if self.norm_name not in NORM_NAMES:
            raise UserInputError(f"segmentation head 'norm_name' must be one of {list(NORM_NAMES)}; got {self.norm_name!r}.")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise UserInputError(f"segmentation head 'dropout' must be in [0, 1); got {self.dropout!r}.")
        self.num_classes, self.feature_size = int(self.num_classes), int(self.feature_size)
        self.res_block, self.pet_branch = bool(self.res_block), bool(self.pet_branch)



def stage_upsampling_factors(patch_size: Sequence[int]) -> list[tuple[int, int, int]]:
    """Per-stage, per-axis upsampling factors (deepest stage first) whose product per axis is the patch size.

    An axis with patch 2^L gets L doublings spread over the 4 stages, deepest stages first (so 16 ->
    2,2,2,2; 8 -> 2,2,2,1; 4 -> 2,2,1,1; 32 -> 4,2,2,2).

    Raises:
        UserInputError: not 3 entries, or an entry that is not a power of two.
    """
    patch_size = tuple(int(p) for p in patch_size)
    if len(patch_size) != 3:
        raise UserInputError(f"patch_size must have 3 entries (D, H, W); got {patch_size}.")
    bad = [p for p in patch_size if p < 1 or p & (p - 1)]
    if bad:
        raise UserInputError(
            f"SegmentationDecoder needs power-of-two patch sizes (it upsamples by factors of 2); patch_size "
            f"{patch_size} has {bad}. Use e.g. 16, 8 or 4 on that axis."
        )
    levels = [int(math.log2(p)) for p in patch_size]
    return [
        tuple(2 ** (lv // NUM_STAGES + (1 if stage < lv % NUM_STAGES else 0)) for lv in levels)
        for stage in range(NUM_STAGES)
    ]


def _skip_upsampler(hidden_size, out_channels, factors, config) -> UnetrPrUpBlock:
    """A MONAI `UnetrPrUpBlock` taking a token grid up by `factors[0]`, then `factors[1]`, ... .

    `UnetrPrUpBlock` uses one upsampling kernel for all its layers; with anisotropic patches the layers
    need different strides, so the transposed convolutions after the first are rebuilt (same MONAI
    layer, same keys) with their own factor.
    """
    block = UnetrPrUpBlock(
        spatial_dims=3,
        in_channels=hidden_size,
        out_channels=out_channels,
        num_layer=len(factors) - 1,
        kernel_size=3,
        stride=1,
        upsample_kernel_size=factors[0],
        norm_name=config.norm_name,
        conv_block=True,
        res_block=config.res_block,
    )
    for layer, factor in zip(block.blocks, factors[1:]):
        if factor != factors[0]:
            layer[0] = get_conv_layer(
                3, out_channels, out_channels, kernel_size=factor, stride=factor, conv_only=True, is_transposed=True
            )
    return block


class SegmentationDecoder(nn.Module):
    """UNETR decoder: 4 token grids + the raw image -> per-voxel logits (B, num_classes, D, H, W).

    Args:
        config: a `SegmentationHeadConfig` (or a `head` dict).
        hidden_size: width of the encoder tokens.
        patch_size: the encoder stem's patch size (pd, ph, pw), powers of two.
    """

    def __init__(self, config: SegmentationHeadConfig | dict, hidden_size: int, patch_size: Sequence[int]):
        super().__init__()
        if isinstance(config, dict):
            config = SegmentationHeadConfig.from_dict(config)
        if int(hidden_size) < 1:
            raise UserInputError(f"SegmentationDecoder needs the encoder width hidden_size >= 1; got {hidden_size!r}.")
        self.config = config
        self.hidden_size = int(hidden_size)
        self.factors = stage_upsampling_factors(patch_size)
        self.patch_size = tuple(int(p) for p in patch_size)
        fs, f = config.feature_size, self.factors

        def basic_block(in_channels):
            return UnetrBasicBlock(3, in_channels, fs, kernel_size=3, stride=1, norm_name=config.norm_name, res_block=config.res_block)

        def up_block(in_channels, out_channels, factor):
            return UnetrUpBlock(3, in_channels, out_channels, 3, factor, config.norm_name, res_block=config.res_block)

        # Names follow MONAI's UNETR (encoder1..4, decoder5..2, out) so its decoder weights map 1:1.
        self.encoder1 = basic_block(1)  # CT channel only
        self.pet_encoder1 = basic_block(1) if config.pet_branch else None
        self.encoder2 = _skip_upsampler(self.hidden_size, fs * 2, f[:3], config)
        self.encoder3 = _skip_upsampler(self.hidden_size, fs * 4, f[:2], config)
        self.encoder4 = _skip_upsampler(self.hidden_size, fs * 8, f[:1], config)
        self.decoder5 = up_block(self.hidden_size, fs * 8, f[0])
        self.decoder4 = up_block(fs * 8, fs * 4, f[1])
        self.decoder3 = up_block(fs * 4, fs * 2, f[2])
        self.decoder2 = up_block(fs * 2, fs, f[3])
        self.dropout = nn.Dropout3d(config.dropout)
        self.out = UnetOutBlock(3, fs, config.num_classes)
        self.loss_fct = DiceCELoss(to_onehot_y=True, softmax=True)

    @property
    def in_channels(self) -> int:
        """Channels `pixel_values` must have: 2 (CT, PET) with the PET branch, else at least 1 (CT)."""
        return 2 if self.config.pet_branch else 1

    def _check_inputs(self, pixel_values, hidden_states, labels) -> None:
        if not torch.is_tensor(pixel_values) or pixel_values.ndim != 5:
            shape = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
            raise UserInputError(f"pixel_values must be a (B, C, D, H, W) tensor; got {shape}.")
        b, c, *spatial = pixel_values.shape
        if c < self.in_channels:
            raise UserInputError(
                f"This segmentation decoder has a PET branch and needs pixel_values with channels (CT, PET); got {c} channel(s)."
            )
        if any(s % p for s, p in zip(spatial, self.patch_size)):
            raise UserInputError(
                f"pixel_values spatial size {tuple(spatial)} must be divisible by the patch size {self.patch_size} "
                "(crop or pad the input, e.g. to the task's input_size)."
            )
        if not isinstance(hidden_states, (list, tuple)) or len(hidden_states) != NUM_STAGES:
            n = len(hidden_states) if isinstance(hidden_states, (list, tuple)) else type(hidden_states).__name__
            raise UserInputError(
                f"hidden_states must be a list of exactly {NUM_STAGES} token grids (3 intermediate encoder outputs, then the "
                f"deepest); got {n}."
            )
        grid = tuple(s // p for s, p in zip(spatial, self.patch_size))
        expected = (b, *grid, self.hidden_size)
        for i, h in enumerate(hidden_states):
            if not torch.is_tensor(h) or tuple(h.shape) != expected:
                shape = tuple(h.shape) if torch.is_tensor(h) else type(h).__name__
                raise UserInputError(
                    f"hidden_states[{i}] must have shape (B, T, h, w, dim) = {expected} for pixel_values of spatial size "
                    f"{tuple(spatial)} and patch size {self.patch_size}; got {shape}."
                )
        if labels is not None:
            if labels.ndim == 5 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if tuple(labels.shape) != (b, *spatial):
                raise UserInputError(f"labels must have shape (B, D, H, W) = {(b, *spatial)}; got {tuple(labels.shape)}.")
            if labels.is_floating_point() or labels.min() < 0 or labels.max() >= self.config.num_classes:
                raise UserInputError(
                    f"labels must be integer class indices in [0, {self.config.num_classes - 1}]; got dtype {labels.dtype}, "
                    f"range [{labels.min().item()}, {labels.max().item()}]."
                )

    def forward(
        self,
        pixel_values: torch.Tensor,
        hidden_states: Sequence[torch.Tensor],
        labels: torch.Tensor | None = None,
    ) -> SegmentationOutput:
        """Decode; compute Dice + cross-entropy when `labels` are given.

        Args:
            pixel_values: (B, C, D, H, W) the raw network input: CT in channel 0, PET in channel 1 when present.
            hidden_states: 4 token grids (B, T, h, w, hidden_size) with (T, h, w) = (D, H, W) / patch_size,
                shallowest first, the last one the bottleneck.
            labels: (B, D, H, W) (or (B, 1, D, H, W)) int class indices, 0 = background.
        """
        self._check_inputs(pixel_values, hidden_states, labels)
        skip = self.encoder1(pixel_values[:, :1])
        if self.pet_encoder1 is not None:
            skip = skip + self.pet_encoder1(pixel_values[:, 1:2])
        grids = [h.permute(0, 4, 1, 2, 3) for h in hidden_states]  # (B, dim, T, h, w) for the convolutions
        x = self.decoder5(grids[3], self.encoder4(grids[2]))
        x = self.decoder4(x, self.encoder3(grids[1]))
        x = self.decoder3(x, self.encoder2(grids[0]))
        x = self.decoder2(x, skip)
        logits = self.out(self.dropout(x))
        loss = None
        if labels is not None:
            target = labels if labels.ndim == 5 else labels[:, None]
            # float32: the softmax/log inside Dice and CE is unreliable in bf16 autocast.
            loss = self.loss_fct(logits.float(), target)
        return SegmentationOutput(loss=loss, logits=logits)
