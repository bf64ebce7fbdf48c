"""Tiny UNICON configs for fast tests (the ModelTester idea from transformers)."""

from __future__ import annotations

from unicon_hf import UniconConfig


def tiny_vision_config(**overrides) -> dict:
    config = dict(
        hidden_size=32, num_attention_heads=2, head_dim=16, spatial_depth=2, temporal_depth=2,
        patch_size=8, temporal_patch_size=4, image_size=16, num_frames=8, codebook_size=16,
    )
    config.update(overrides)
    return config


def tiny_text_config(**overrides) -> dict:
    config = dict(
        vocab_size=64, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=32,
    )
    config.update(overrides)
    return config


def tiny_config(vision: dict | None = None, text: dict | None = None, **overrides) -> UniconConfig:
    return UniconConfig(
        vision_config=tiny_vision_config(**(vision or {})),
        text_config=tiny_text_config(**(text or {})),
        projection_dim=overrides.pop("projection_dim", 16),
        **overrides,
    )
