"""Convert an original CT-CLIP checkpoint into a `UniconModel`.

Keys are mapped by a table of (original pattern -> our name) rules; every checkpoint key is accounted
for as used, ignored (with the reason: decoder / training-only state) or unused, and every model
weight the checkpoint does not fill is reported. A missing encoder weight is an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig

from ..configuration_unicon import UniconConfig, UniconVisionConfig
from ..errors import UserInputError
from ..modeling_unicon import UniconModel

# CT-CLIP v2 (the released checkpoint) image encoder and latent size.
CTCLIP_V2_VISION = {
    "dim": 512, "codebook_size": 8192, "image_size": 480, "patch_size": 20, "temporal_patch_size": 10,
    "spatial_depth": 4, "temporal_depth": 4, "dim_head": 32, "heads": 8, "channels": 1, "frames": 240,
}
CTCLIP_V2_DIM_LATENT = 512

# CTViT(...) argument -> UniconVisionConfig field.
VISION_ARGUMENTS = {
    "dim": "hidden_size", "codebook_size": "codebook_size", "image_size": "image_size",
    "patch_size": "patch_size", "temporal_patch_size": "temporal_patch_size",
    "spatial_depth": "spatial_depth", "temporal_depth": "temporal_depth", "dim_head": "head_dim",
    "heads": "num_attention_heads", "channels": "num_channels", "frames": "num_frames",
}
# CTViT arguments that only matter for its VQ-GAN training or decoder.
VISION_ARGUMENTS_WITHOUT_EFFECT = {
    "use_vgg_and_gan", "vgg", "discr_base_dim", "discr_attn_res_layers", "use_hinge_loss",
    "attn_dropout", "ff_dropout", "lookup_free_quantization", "lookup_free_quantization_kwargs", "dim_latent",
}

_LAYER = r"visual_transformer\.enc_(spatial|temporal)_transformer\.layers\.(\d+)"
KEY_RULES: list[tuple[str, str]] = [
    (r"visual_transformer\.to_patch_emb\.1\.(weight|bias)", r"vision_model.embeddings.input_norm.\1"),
    (r"visual_transformer\.to_patch_emb\.2\.(weight|bias)", r"vision_model.embeddings.projection.\1"),
    (r"visual_transformer\.to_patch_emb\.3\.(weight|bias)", r"vision_model.embeddings.output_norm.\1"),
    (_LAYER + r"\.0\.dsconv\.(weight|bias)", r"vision_model.\1_encoder.layers.\2.position_generator.conv.\3"),
    (_LAYER + r"\.1\.norm\.(gamma|beta)", r"vision_model.\1_encoder.layers.\2.attention.norm.\3"),
    (_LAYER + r"\.1\.to_q\.weight", r"vision_model.\1_encoder.layers.\2.attention.q_proj.weight"),
    (_LAYER + r"\.1\.to_kv\.weight", r"vision_model.\1_encoder.layers.\2.attention.kv_proj.weight"),
    (_LAYER + r"\.1\.to_out\.weight", r"vision_model.\1_encoder.layers.\2.attention.out_proj.weight"),
    (_LAYER + r"\.1\.(q_scale|k_scale)", r"vision_model.\1_encoder.layers.\2.attention.\3"),
    (_LAYER + r"\.3\.0\.(weight|bias)", r"vision_model.\1_encoder.layers.\2.feed_forward.norm.\3"),
    (_LAYER + r"\.3\.1\.weight", r"vision_model.\1_encoder.layers.\2.feed_forward.up_proj.weight"),
    (_LAYER + r"\.3\.4\.weight", r"vision_model.\1_encoder.layers.\2.feed_forward.down_proj.weight"),
    (r"visual_transformer\.enc_(spatial|temporal)_transformer\.norm_out\.(gamma|beta)", r"vision_model.\1_encoder.norm_out.\2"),
    (r"visual_transformer\.spatial_rel_pos_bias\.net\.(\d+)\.0\.(weight|bias)", r"vision_model.spatial_position_bias.mlp.\1.0.\2"),
    (r"visual_transformer\.spatial_rel_pos_bias\.net\.(\d+)\.(weight|bias)", r"vision_model.spatial_position_bias.mlp.\1.\2"),
    (r"visual_transformer\.vq\._codebook\.embed", r"vision_model.quantizer.codebook"),
    (r"text_transformer\.(.+)", r"text_model.\1"),
    (r"to_visual_latent\.weight", r"visual_projection.weight"),
    (r"to_text_latent\.weight", r"text_projection.weight"),
    (r"temperature", r"logit_scale"),
]
IGNORED_RULES: list[tuple[str, str]] = [
    (r"visual_transformer\.(dec_|to_pixels|discr|vgg)", "CTViT decoder / VQ-GAN training part, unused for encoding"),
    (r".*_first_frame\..*", "first-frame patch path of the video tokenizer, unused by CT-CLIP"),
    (r".*_extra\..*", "extra latent projection, unused at inference"),
    (r"visual_transformer\.vq\._codebook\.(cluster_size|embed_avg|initted)", "codebook EMA training state"),
    (_LAYER + r"\.1\.context_norm\.(gamma|beta)", "cross-attention context norm, unused without context"),
    (_LAYER + r"\.1\.null_kv", "empty null key/value (num_null_kv=0)"),
    (r"text_transformer\.embeddings\.position_ids", "position-id buffer of older BertModel checkpoints"),
]


@dataclass
class ConversionReport:
    """What happened to every checkpoint key and every model weight."""

    used: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"mapped {len(self.used)} checkpoint tensors"]
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} checkpoint keys:")
            lines += [f"  {key}  ({reason})" for key, reason in sorted(self.ignored.items())]
        lines.append(f"unused checkpoint keys: {len(self.unused)}")
        lines += [f"  {key}" for key in self.unused]
        lines.append(f"model weights not filled: {len(self.missing)}")
        lines += [f"  {key}" for key in self.missing]
        return "\n".join(lines)


def map_key(key: str) -> str | None:
    for pattern, replacement in KEY_RULES:
        if re.fullmatch(pattern, key):
            return re.sub(f"^{pattern}$", replacement, key)
    return None


def ignore_reason(key: str) -> str | None:
    for pattern, reason in IGNORED_RULES:
        if re.match(pattern, key):
            return reason
    return None


def build_config(
    vision_arguments: Mapping[str, Any] | None = None,
    text_config: Mapping[str, Any] | None = None,
    dim_latent: int | None = None,
) -> UniconConfig:
    """A `UniconConfig` from CT-CLIP's `CTViT(...)` arguments, `BertConfig` fields and `dim_latent`."""
    arguments = {**CTCLIP_V2_VISION, **(vision_arguments or {})}
    unknown = set(arguments) - set(VISION_ARGUMENTS) - VISION_ARGUMENTS_WITHOUT_EFFECT
    if unknown:
        raise UserInputError(
            f"unknown CTViT argument(s) {sorted(unknown)} in the vision config; known: {sorted(VISION_ARGUMENTS)}"
        )
    vision = UniconVisionConfig(**{VISION_ARGUMENTS[k]: v for k, v in arguments.items() if k in VISION_ARGUMENTS})
    try:
        text = BertConfig(**(text_config or {}))
    except (TypeError, ValueError) as error:
        raise UserInputError(f"invalid text config: {error}") from error
    return UniconConfig(
        vision_config=vision, text_config=text,
        projection_dim=dim_latent or (vision_arguments or {}).get("dim_latent") or CTCLIP_V2_DIM_LATENT,
    )


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: UniconConfig
) -> tuple[UniconModel, ConversionReport]:
    """Build a `UniconModel` from `config` and fill it from a CT-CLIP state dict (original key names)."""
    model = UniconModel(config).eval()
    target = model.state_dict()
    report = ConversionReport()
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        new_key = map_key(key)
        if new_key is None or new_key not in target:
            reason = ignore_reason(key)
            if reason is not None:
                report.ignored[key] = reason
            else:
                report.unused.append(key)
            continue
        if new_key == "vision_model.quantizer.codebook" and tensor.ndim == 3:
            tensor = tensor[0]  # (codebook heads = 1, size, dim)
        if tuple(tensor.shape) != tuple(target[new_key].shape):
            raise UserInputError(
                f"checkpoint key {key} has shape {tuple(tensor.shape)} but {new_key} needs "
                f"{tuple(target[new_key].shape)} with this config; check --vision-config/--text-config/--dim-latent"
            )
        converted[new_key] = tensor.to(target[new_key].dtype)
        report.used[key] = new_key
    report.missing = sorted(k for k in target if k not in converted and k != "text_model.embeddings.token_type_ids")
    model.load_state_dict(converted, strict=False)
    encoder_missing = [k for k in report.missing if not k.startswith("text_model.embeddings.position_ids")]
    if encoder_missing:
        raise UserInputError(
            f"the checkpoint does not fill {len(encoder_missing)} model weight(s), e.g. {encoder_missing[:5]}; "
            f"is it a CT-CLIP checkpoint, and do the configs match it?\n{report.summary()}"
        )
    return model, report


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and (safetensors) metadata of a CT-CLIP checkpoint: `.pt`/`.pth` (read with
    `weights_only=True`, never unpickling arbitrary objects) or `.safetensors`."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"checkpoint {path} does not exist")
    metadata: dict[str, str] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        # A conformance file holds the state dict under `state_dict.` beside inputs and expected outputs.
        if any(key.startswith("state_dict.") for key in tensors):
            tensors = {key[len("state_dict."):]: t for key, t in tensors.items() if key.startswith("state_dict.")}
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
            raise UserInputError(
                f"could not read {path} as a torch checkpoint with weights_only=True: {error}"
            ) from error
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
                loaded = loaded[wrapper]
        if not isinstance(loaded, Mapping):
            raise UserInputError(f"{path} does not hold a state dict (found {type(loaded).__name__})")
        tensors = {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
    if tensors and all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module."):]: value for key, value in tensors.items()}
    return tensors, metadata


def parse_json_argument(value: str | None, flag: str) -> dict[str, Any] | None:
    """A JSON object given inline or as a path to a .json file."""
    if value is None:
        return None
    text = Path(value).read_text() if Path(value).is_file() else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserInputError(f"{flag} is neither a JSON file nor inline JSON: {error}") from error
    if not isinstance(parsed, dict):
        raise UserInputError(f"{flag} must be a JSON object, got {type(parsed).__name__}")
    return parsed


def convert_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path | None = None,
    vision_arguments: Mapping[str, Any] | None = None,
    text_config: Mapping[str, Any] | None = None,
    dim_latent: int | None = None,
) -> tuple[UniconModel, ConversionReport]:
    """Read, convert and (when `output_dir` is given) save a CT-CLIP checkpoint.

    Configs not given are taken from the safetensors metadata (`vision`, `text`) when present, else
    CT-CLIP v2's defaults.
    """
    state_dict, metadata = read_checkpoint(checkpoint)
    if vision_arguments is None and "vision" in metadata:
        vision_arguments = json.loads(metadata["vision"])
    if text_config is None and "text" in metadata:
        text_config = json.loads(metadata["text"])
    config = build_config(vision_arguments, text_config, dim_latent)
    model, report = convert_state_dict(state_dict, config)
    if output_dir is not None:
        from ..hub import save_model_repo

        save_model_repo(model, output_dir)
    return model, report
