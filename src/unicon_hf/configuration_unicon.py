"""Configurations of the UNICON foundation model (a CT-CLIP-compatible 3D CLIP) and its task registry."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import BertConfig, PreTrainedConfig

from .errors import UserInputError


def _as_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    if len(values) != 2:
        raise UserInputError(f"{name} must be an int or [height, width], got {value!r}")
    return values


def nearest_multiples(size: int, multiple: int) -> str:
    """'the nearest valid sizes are 96 or 112' for a size that is not a multiple."""
    lower = (size // multiple) * multiple
    upper = lower + multiple
    return f"{lower} or {upper}" if lower > 0 else f"{upper}"


class UniconVisionConfig(PreTrainedConfig):
    r"""
    Configuration of the CT-CLIP image encoder ("CTViT"): a 3D ViT with factorised attention, a spatial
    transformer inside each slab of slices followed by a temporal transformer across slabs.

    Defaults are CT-CLIP v2's. Axis names follow CT-CLIP: "frames"/"temporal" is the slice axis D of
    `pixel_values` (batch, channels, D, H, W).

    Args:
        hidden_size (`int`, defaults to 512): token width (CT-CLIP `dim`).
        num_attention_heads (`int`, defaults to 8): attention heads per layer (CT-CLIP `heads`).
        head_dim (`int`, defaults to 32): width of one attention head (CT-CLIP `dim_head`).
        spatial_depth (`int`, defaults to 4): layers of the in-slab (spatial) transformer.
        temporal_depth (`int`, defaults to 4): layers of the across-slab (temporal) transformer.
        patch_size (`int` or `[int, int]`, defaults to 20): in-plane patch size (H, W).
        temporal_patch_size (`int`, defaults to 10): number of slices per patch.
        image_size (`int` or `[int, int]`, defaults to 480): in-plane input size (H, W) the CLIP projection
            was trained for; the encoder itself accepts any multiple of the patch size.
        num_frames (`int`, defaults to 240): input depth D the CLIP projection was trained for.
        num_channels (`int`, defaults to 1): input channels of the foundation patch embedding (CT only).
        codebook_size (`int`, defaults to 8192): rows of the vector-quantization codebook.
        ff_mult (`float`, defaults to 4): feed-forward width multiplier (inner = int(ff_mult * 2/3 * hidden)).
        attention_scale (`float`, defaults to 8.0): logit scale of the cosine-similarity attention.
        position_bias_layers (`int`, defaults to 2): hidden layers of the continuous position-bias MLP.
        peg_causal (`bool`, defaults to True): pad the position-generating convolution causally in D.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
        attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities.
        initializer_range (`float`, defaults to 0.02): std of the normal init of linear layers.
    """

    model_type = "unicon_vision_model"
    base_config_key = "vision_config"

    def __init__(
        self,
        hidden_size: int = 512,
        num_attention_heads: int = 8,
        head_dim: int = 32,
        spatial_depth: int = 4,
        temporal_depth: int = 4,
        patch_size: int | Sequence[int] = 20,
        temporal_patch_size: int = 10,
        image_size: int | Sequence[int] = 480,
        num_frames: int = 240,
        num_channels: int = 1,
        codebook_size: int = 8192,
        ff_mult: float = 4,
        attention_scale: float = 8.0,
        position_bias_layers: int = 2,
        peg_causal: bool = True,
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.hidden_size = int(hidden_size)
        self.num_attention_heads = int(num_attention_heads)
        self.head_dim = int(head_dim)
        self.spatial_depth = int(spatial_depth)
        self.temporal_depth = int(temporal_depth)
        self.patch_size = list(_as_pair(patch_size, "patch_size"))
        self.temporal_patch_size = int(temporal_patch_size)
        self.image_size = list(_as_pair(image_size, "image_size"))
        self.num_frames = int(num_frames)
        self.num_channels = int(num_channels)
        self.codebook_size = int(codebook_size)
        self.ff_mult = ff_mult
        self.attention_scale = float(attention_scale)
        self.position_bias_layers = int(position_bias_layers)
        self.peg_causal = bool(peg_causal)
        self.layer_norm_eps = float(layer_norm_eps)
        self.attention_dropout = float(attention_dropout)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)
        self.validate()

    def validate(self) -> None:
        positive = {
            "hidden_size": self.hidden_size, "num_attention_heads": self.num_attention_heads,
            "head_dim": self.head_dim, "temporal_patch_size": self.temporal_patch_size,
            "num_frames": self.num_frames, "num_channels": self.num_channels,
            "codebook_size": self.codebook_size, "position_bias_layers": self.position_bias_layers,
            "patch_size": min(self.patch_size), "image_size": min(self.image_size),
        }
        for name, value in positive.items():
            if value <= 0:
                raise UserInputError(f"UniconVisionConfig.{name} must be positive, got {value}")
        for name, value in (("spatial_depth", self.spatial_depth), ("temporal_depth", self.temporal_depth)):
            if value < 0:
                raise UserInputError(f"UniconVisionConfig.{name} must be >= 0, got {value}")
        for axis, size, patch in zip(("height", "width"), self.image_size, self.patch_size):
            if size % patch:
                raise UserInputError(
                    f"UniconVisionConfig.image_size {axis} {size} is not divisible by patch_size {patch}; "
                    f"the nearest valid sizes are {nearest_multiples(size, patch)}"
                )
        if self.num_frames % self.temporal_patch_size:
            raise UserInputError(
                f"UniconVisionConfig.num_frames {self.num_frames} is not divisible by temporal_patch_size "
                f"{self.temporal_patch_size}; the nearest valid sizes are "
                f"{nearest_multiples(self.num_frames, self.temporal_patch_size)}"
            )
        if not 0.0 <= self.attention_dropout < 1.0:
            raise UserInputError(f"UniconVisionConfig.attention_dropout must be in [0, 1), got {self.attention_dropout}")

    @property
    def patch_grid(self) -> tuple[int, int, int]:
        """Token grid (T, h, w) of the configured input size."""
        return (
            self.num_frames // self.temporal_patch_size,
            self.image_size[0] // self.patch_size[0],
            self.image_size[1] // self.patch_size[1],
        )

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        """Voxels per patch along (D, H, W)."""
        return (self.temporal_patch_size, self.patch_size[0], self.patch_size[1])

    @property
    def intermediate_size(self) -> int:
        """Inner width of the GEGLU feed-forward, as CT-CLIP computes it."""
        return int(self.ff_mult * (2 / 3) * self.hidden_size)


class UniconConfig(PreTrainedConfig):
    r"""
    Configuration of `UniconModel`: the frozen CT-CLIP foundation (image encoder + BERT text encoder +
    CLIP projections) and the registry of tasks added to it over time.

    Args:
        vision_config (`dict` or `UniconVisionConfig`, *optional*): the image encoder (defaults: CT-CLIP v2).
        text_config (`dict` or `BertConfig`, *optional*): the text encoder (defaults: a BERT-base, as
            CXR-BERT).
        projection_dim (`int`, defaults to 512): width of the shared image-text latent (CT-CLIP `dim_latent`).
        logit_scale_init_value (`float`, defaults to 1.0): initial value of the learnable log temperature;
            logits are multiplied by its exponential (CT-CLIP's `temperature` starts at 1.0).
        tasks (`dict[str, dict]`, *optional*): task specs added with `UniconModel.add_task`, keyed by task
            name, in the order they were added (see `unicon_hf.tasks`).
        use_vector_quantization (`bool`, defaults to True): whether the CLIP image path uses the
            codebook-quantized tokens (CT-CLIP does); a model pretrained from scratch here may turn it off.
        initializer_factor (`float`, defaults to 1.0): scale of weight initialisations.
    """

    model_type = "unicon"
    sub_configs = {"vision_config": UniconVisionConfig, "text_config": BertConfig}

    def __init__(
        self,
        vision_config: Mapping[str, Any] | UniconVisionConfig | None = None,
        text_config: Mapping[str, Any] | BertConfig | None = None,
        projection_dim: int = 512,
        logit_scale_init_value: float = 1.0,
        tasks: Mapping[str, Mapping[str, Any]] | None = None,
        use_vector_quantization: bool = True,
        initializer_factor: float = 1.0,
        **kwargs,
    ):
        if vision_config is None:
            vision_config = UniconVisionConfig()
        elif isinstance(vision_config, Mapping):
            vision_config = UniconVisionConfig(**vision_config)
        if text_config is None:
            text_config = BertConfig()
        elif isinstance(text_config, Mapping):
            text_config = BertConfig(**{k: v for k, v in text_config.items() if k != "model_type"})
        self.vision_config = vision_config
        self.text_config = text_config
        self.projection_dim = int(projection_dim)
        self.logit_scale_init_value = float(logit_scale_init_value)
        self.tasks = copy.deepcopy(dict(tasks or {}))
        self.use_vector_quantization = bool(use_vector_quantization)
        self.initializer_factor = float(initializer_factor)
        super().__init__(**kwargs)
        if self.projection_dim <= 0:
            raise UserInputError(f"UniconConfig.projection_dim must be positive, got {self.projection_dim}")

    @property
    def vision_latent_input_dim(self) -> int:
        """Input width of the CLIP image projection: (h * w * hidden) of the configured grid."""
        _, h, w = self.vision_config.patch_grid
        return h * w * self.vision_config.hidden_size
