"""Building blocks of the CT-CLIP image encoder ("CTViT"), from small to large.

Numerics follow the original implementation exactly (DESIGN.md section 3), including two quirks that
weight compatibility depends on: the attention pre-norm feeds only the query path, and the temporal
stage's position-generating convolution views its (B*h*w, T, dim) buffer as (B, T, h, w) in memory
order without transposing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_unicon import UniconVisionConfig, nearest_multiples
from .errors import UserInputError
from .modeling_outputs import UniconVisionOutput


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Plain softmax attention; `attention_mask` is an additive bias broadcastable to (B, heads, N, N)."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def check_pixel_values(pixel_values: torch.Tensor, in_channels: int, patch_shape, what: str = "pixel_values") -> None:
    """Raise a clear error for a tensor the encoder cannot take (rank, channels, sizes, non-finite values)."""
    if not isinstance(pixel_values, torch.Tensor):
        raise UserInputError(f"{what} must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.ndim != 5:
        hint = " (add a batch axis with .unsqueeze(0))" if pixel_values.ndim == 4 else ""
        raise UserInputError(
            f"{what} must have 5 dimensions (batch, channels, depth, height, width), got shape "
            f"{tuple(pixel_values.shape)}{hint}"
        )
    if pixel_values.shape[1] != in_channels:
        raise UserInputError(
            f"{what} has {pixel_values.shape[1]} channel(s) but this patch embedding expects {in_channels} "
            f"(channel order: CT first, then PET)"
        )
    for axis, size, patch in zip(("depth", "height", "width"), pixel_values.shape[2:], patch_shape):
        if size % patch:
            raise UserInputError(
                f"{what} {axis} {size} is not divisible by the patch size {patch} along that axis; "
                f"crop or pad it to {nearest_multiples(size, patch)}"
            )
    if pixel_values.is_floating_point() and not torch.isfinite(pixel_values).all():
        bad = int((~torch.isfinite(pixel_values)).sum())
        raise UserInputError(
            f"{what} contains {bad} NaN or infinite value(s); fix the source volume or fill them before "
            f"calling the model"
        )


class UniconGainNorm(nn.Module):
    """LayerNorm with a learnable gain and a fixed zero bias (CT-CLIP's `gamma` parameter, `beta` buffer)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta, self.eps)


class UniconPatchEmbeddings(nn.Module):
    """Cut (B, C, D, H, W) into (pd, ph, pw) blocks, flatten each as (channel, slice, row, column),
    then LayerNorm -> Linear -> LayerNorm. Returns tokens (B, T, h, w, hidden).

    Also used, with other patch shapes and channel counts, as the per-task "stem" of new tasks.
    """

    def __init__(self, in_channels: int, patch_shape, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.in_channels = int(in_channels)
        self.patch_shape = tuple(int(p) for p in patch_shape)
        patch_dim = self.in_channels * math.prod(self.patch_shape)
        self.input_norm = nn.LayerNorm(patch_dim, eps=eps)
        self.projection = nn.Linear(patch_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        check_pixel_values(pixel_values, self.in_channels, self.patch_shape)
        b, c, d, h, w = pixel_values.shape
        pd, ph, pw = self.patch_shape
        blocks = pixel_values.reshape(b, c, d // pd, pd, h // ph, ph, w // pw, pw)
        blocks = blocks.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, d // pd, h // ph, w // pw, -1)
        return self.output_norm(self.projection(self.input_norm(blocks)))


class UniconContinuousPositionBias(nn.Module):
    """Attention bias (heads, h*w, h*w) of the spatial stage from log-scaled relative (row, col) offsets.

    The relative offsets are cached per grid size. The bias itself is computed once per forward pass
    (shared by every spatial layer) and, when no gradient is needed, cached per grid until a weight of
    the MLP changes.
    """

    def __init__(self, config: UniconVisionConfig):
        super().__init__()
        dim, slope = config.hidden_size, 0.1
        layers = [nn.Sequential(nn.Linear(2, dim), nn.LeakyReLU(slope))]
        layers += [nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(slope)) for _ in range(config.position_bias_layers - 1)]
        layers.append(nn.Linear(dim, config.num_attention_heads))
        self.mlp = nn.ModuleList(layers)
        self._offsets: dict[tuple, torch.Tensor] = {}
        self._bias: dict[tuple, tuple[tuple, torch.Tensor]] = {}

    def _relative_offsets(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, str(device))
        if key not in self._offsets:
            grid = torch.stack(torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"))
            grid = grid.reshape(2, -1).T  # (h*w, 2) in row-major token order
            offsets = (grid[:, None, :] - grid[None, :, :]).float()
            self._offsets[key] = torch.sign(offsets) * torch.log(offsets.abs() + 1)
        return self._offsets[key]

    def _weights_version(self) -> tuple:
        # Tensor._version increases on every in-place write (optimizer steps, load_state_dict copies), so a
        # cached bias can never outlive the weights it was computed from.
        return tuple((p.data_ptr(), p._version) for p in self.parameters())

    def forward(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        cacheable = not torch.is_grad_enabled() or not any(p.requires_grad for p in self.parameters())
        key = (h, w, str(device), dtype)
        if cacheable and key in self._bias and self._bias[key][0] == self._weights_version():
            return self._bias[key][1]
        hidden = self._relative_offsets(h, w, device).to(self.mlp[-1].weight.dtype)
        for layer in self.mlp:
            hidden = layer(hidden)
        bias = hidden.permute(2, 0, 1).to(dtype).contiguous()
        if cacheable:
            self._bias[key] = (self._weights_version(), bias.detach())
        return bias


class UniconPositionGenerator(nn.Module):
    """PEG: depthwise 3x3x3 convolution over the token grid, causal (front-padded) along T."""

    def __init__(self, config: UniconVisionConfig):
        super().__init__()
        self.causal = config.peg_causal
        self.conv = nn.Conv3d(config.hidden_size, config.hidden_size, kernel_size=3, groups=config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, grid_shape: tuple[int, int, int, int]) -> torch.Tensor:
        # Viewing the buffer as (B, T, h, w) in memory order, whatever the stage's layout, is the original's
        # behaviour (a no-op reshape in the spatial stage, a scrambled one in the temporal stage).
        x = hidden_states.reshape(*grid_shape, -1).permute(0, 4, 1, 2, 3)
        frame_padding = (2, 0) if self.causal else (1, 1)
        x = F.pad(x, (1, 1, 1, 1, *frame_padding))
        x = self.conv(x).permute(0, 2, 3, 4, 1)
        return x.reshape(hidden_states.shape)


class UniconAttention(nn.Module):
    """Cosine-similarity multi-head attention: l2-normalised q and k with learnable per-dim scales,
    logits scaled by a constant, additive bias; non-causal. Runs through transformers' attention
    interface (eager / SDPA). The pre-norm feeds only the query path, as in the original."""

    def __init__(self, config: UniconVisionConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scaling = config.attention_scale
        self.is_causal = False  # transformers' SDPA path defaults to causal otherwise
        inner = self.num_heads * self.head_dim
        self.norm = UniconGainNorm(config.hidden_size, config.layer_norm_eps)
        self.q_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.kv_proj = nn.Linear(config.hidden_size, 2 * inner, bias=False)
        self.out_proj = nn.Linear(inner, config.hidden_size, bias=False)
        self.q_scale = nn.Parameter(torch.ones(self.head_dim))
        self.k_scale = nn.Parameter(torch.ones(self.head_dim))

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        heads_shape = (batch, length, self.num_heads, self.head_dim)
        query = self.q_proj(self.norm(hidden_states)).view(heads_shape).transpose(1, 2)
        key, value = self.kv_proj(hidden_states).chunk(2, dim=-1)
        key = key.reshape(heads_shape).transpose(1, 2)
        value = value.reshape(heads_shape).transpose(1, 2)
        query = F.normalize(query, dim=-1) * self.q_scale
        key = F.normalize(key, dim=-1) * self.k_scale
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        mask = None if attention_bias is None else attention_bias.unsqueeze(0).to(query.dtype)
        output, _ = attention(
            self, query, key, value, mask,
            scaling=self.scaling, dropout=self.config.attention_dropout if self.training else 0.0,
        )
        return self.out_proj(output.reshape(batch, length, -1))


class UniconFeedForward(nn.Module):
    """LayerNorm -> Linear -> GEGLU (first half value, second half gate) -> Linear, bias-free linears."""

    def __init__(self, config: UniconVisionConfig):
        super().__init__()
        inner = config.intermediate_size
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.up_proj = nn.Linear(config.hidden_size, 2 * inner, bias=False)
        self.down_proj = nn.Linear(inner, config.hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        value, gate = self.up_proj(self.norm(hidden_states)).chunk(2, dim=-1)
        return self.down_proj(F.gelu(gate) * value)


class UniconEncoderLayer(nn.Module):
    """x = PEG(x) + x; x = Attention(x) + x; x = FeedForward(x) + x."""

    def __init__(self, config: UniconVisionConfig):
        super().__init__()
        self.position_generator = UniconPositionGenerator(config)
        self.attention = UniconAttention(config)
        self.feed_forward = UniconFeedForward(config)

    def forward(self, hidden_states, grid_shape, attention_bias=None):
        hidden_states = self.position_generator(hidden_states, grid_shape) + hidden_states
        hidden_states = self.attention(hidden_states, attention_bias) + hidden_states
        return self.feed_forward(hidden_states) + hidden_states


class UniconEncoderStage(nn.Module):
    """A stack of encoder layers followed by a gain-only LayerNorm."""

    def __init__(self, config: UniconVisionConfig, depth: int):
        super().__init__()
        self.layers = nn.ModuleList([UniconEncoderLayer(config) for _ in range(depth)])
        self.norm_out = UniconGainNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, hidden_states, grid_shape, attention_bias=None, output_hidden_states=False):
        all_hidden = []
        for layer in self.layers:
            hidden_states = layer(hidden_states, grid_shape, attention_bias)
            if output_hidden_states:
                all_hidden.append(hidden_states)
        return self.norm_out(hidden_states), tuple(all_hidden)


class UniconVectorQuantizer(nn.Module):
    """Map each token to the codebook row of highest cosine similarity; output that row as stored.

    In training mode the straight-through estimator passes gradients to the tokens.
    """

    def __init__(self, config: UniconVisionConfig):
        super().__init__()
        self.register_buffer("codebook", torch.zeros(config.codebook_size, config.hidden_size))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        similarity = F.normalize(tokens, dim=-1) @ F.normalize(self.codebook.to(tokens.dtype), dim=-1).T
        indices = similarity.argmax(dim=-1)
        quantized = self.codebook.to(tokens.dtype)[indices]
        if self.training:
            quantized = tokens + (quantized - tokens).detach()
        return quantized, indices


class UniconVisionTransformer(nn.Module):
    """Patch embedding -> spatial stage (per slab, with position bias) -> temporal stage (per token column).

    `patch_embeddings` lets a task run the shared stages on its own stem (another patch size or
    channel count) while everything else stays the foundation's.
    """

    def __init__(self, config: UniconVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = UniconPatchEmbeddings(
            config.num_channels, config.patch_shape, config.hidden_size, config.layer_norm_eps
        )
        self.spatial_position_bias = UniconContinuousPositionBias(config)
        self.spatial_encoder = UniconEncoderStage(config, config.spatial_depth)
        self.temporal_encoder = UniconEncoderStage(config, config.temporal_depth)
        self.quantizer = UniconVectorQuantizer(config)

    def forward(
        self,
        pixel_values: torch.Tensor,
        patch_embeddings: nn.Module | None = None,
        output_hidden_states: bool = False,
        quantize: bool = True,
        run_temporal: bool = True,
    ) -> UniconVisionOutput:
        """`run_temporal=False` stops after the spatial stage (for heads that read only spatial layers):
        `last_hidden_state` is then the spatial stage output and nothing is quantized."""
        embed = patch_embeddings if patch_embeddings is not None else self.embeddings
        tokens = embed(pixel_values)
        batch, t, h, w, dim = tokens.shape
        grid_shape = (batch, t, h, w)

        bias = self.spatial_position_bias(h, w, tokens.device, tokens.dtype)
        spatial, spatial_hidden = self.spatial_encoder(
            tokens.reshape(batch * t, h * w, dim), grid_shape, bias, output_hidden_states
        )
        spatial = spatial.reshape(batch, t, h, w, dim)
        spatial_hidden = tuple(x.reshape(batch, t, h, w, dim) for x in spatial_hidden)
        if not run_temporal:
            return UniconVisionOutput(
                last_hidden_state=spatial, patch_embeddings=tokens if output_hidden_states else None,
                spatial_last_hidden_state=spatial, spatial_hidden_states=spatial_hidden if output_hidden_states else None,
            )

        temporal_input = spatial.permute(0, 2, 3, 1, 4).reshape(batch * h * w, t, dim)
        temporal, temporal_hidden = self.temporal_encoder(temporal_input, grid_shape, None, output_hidden_states)
        encoded = temporal.reshape(batch, h, w, t, dim).permute(0, 3, 1, 2, 4)

        quantized = None
        if quantize:
            quantized, _ = self.quantizer(encoded.reshape(batch, -1, dim))
            quantized = quantized.reshape(encoded.shape)

        if not output_hidden_states:
            return UniconVisionOutput(last_hidden_state=encoded, quantized_tokens=quantized)
        return UniconVisionOutput(
            last_hidden_state=encoded,
            quantized_tokens=quantized,
            patch_embeddings=tokens,
            spatial_last_hidden_state=spatial,
            spatial_hidden_states=spatial_hidden,
            temporal_hidden_states=tuple(
                x.reshape(batch, h, w, t, dim).permute(0, 3, 1, 2, 4) for x in temporal_hidden
            ),
        )
