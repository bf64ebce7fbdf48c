"""UNICON models: the CT-CLIP image encoder alone (`UniconVisionModel`) and the foundation with its task
registry (`UniconModel`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_unicon import UniconConfig, UniconVisionConfig
from .errors import UserInputError
from .modeling_outputs import UniconOutput, UniconVisionOutput
from .modeling_tasks import UniconTaskMixin
from .tasks import TaskSpec
from .modeling_vision import (
    UniconAttention,
    UniconGainNorm,
    UniconVectorQuantizer,
    UniconVisionTransformer,
)


class UniconPreTrainedModel(PreTrainedModel):
    config_class = UniconConfig
    base_model_prefix = "unicon"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["UniconEncoderLayer", "BertLayer"]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, but a weight the checkpoint lacks or holds in another shape is an
        error naming the key instead of a silently random-initialised layer."""
        return_info = kwargs.pop("output_loading_info", False)
        # Let transformers report mismatches to us instead of raising its generic message.
        user_ignores_mismatch = kwargs.pop("ignore_mismatched_sizes", False)
        model, info = super().from_pretrained(
            *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        if user_ignores_mismatch:
            info = {**info, "mismatched_keys": []}
        problems = [f"missing weight {key}" for key in sorted(info.get("missing_keys", []))]
        for mismatch in info.get("mismatched_keys", []):
            key, found, expected = (mismatch + (None, None))[:3] if isinstance(mismatch, tuple) else (mismatch, None, None)
            problems.append(f"weight {key} has shape {tuple(found) if found else '?'}, the config needs "
                            f"{tuple(expected) if expected else '?'}")
        if problems:
            source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            raise UserInputError(
                f"cannot load {source}: " + "; ".join(problems)
                + ". The weights file does not match its config.json (was it edited or written by another version?)"
            )
        return (model, info) if return_info else model

    def _init_weights(self, module):
        config = self.config.vision_config if isinstance(self.config, UniconConfig) else self.config
        std = config.initializer_range
        if getattr(module, "_unicon_lora", False):
            return  # LoRA A/B keep PEFT's initialisation (B = 0: a new adapter starts as the identity)
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, UniconGainNorm):
            init.ones_(module.gamma)
            init.zeros_(module.beta)
        elif isinstance(module, UniconAttention):
            init.ones_(module.q_scale)
            init.ones_(module.k_scale)
        elif isinstance(module, UniconVectorQuantizer):
            # Unit-norm random rows: the lookup is by cosine similarity.
            init.normal_(module.codebook, mean=0.0, std=1.0)
            init.copy_(module.codebook, F.normalize(module.codebook, dim=-1))
        elif isinstance(module, nn.Conv3d):
            init.kaiming_uniform_(module.weight, a=5**0.5)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, UniconModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, (nn.Embedding,)):
            init.normal_(module.weight, mean=0.0, std=std)


class UniconVisionModel(UniconPreTrainedModel):
    """The CT-CLIP image encoder alone; `last_hidden_state` is the token grid (B, T, h, w, hidden)."""

    config_class = UniconVisionConfig
    input_modalities = ("image",)

    def __init__(self, config: UniconVisionConfig):
        super().__init__(config)
        self.vision_model = UniconVisionTransformer(config)
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, quantize: bool = True, **kwargs
    ) -> UniconVisionOutput:
        return self.vision_model(pixel_values, output_hidden_states=output_hidden_states, quantize=quantize)


class UniconModel(UniconTaskMixin, UniconPreTrainedModel):
    """The UNICON foundation: CT-CLIP image encoder + BERT text encoder + CLIP projections.

    Called with `pixel_values` and/or `input_ids`, it is CT-CLIP (zero-shot scoring by image-text
    similarity). Tasks added with `add_task` run with `task="<name>"` (see `unicon_hf.modeling_tasks`).
    """

    config_class = UniconConfig

    def __init__(self, config: UniconConfig):
        super().__init__(config)
        # The image encoder is a plain module sharing the vision sub-config: re-assigning through the
        # config's setter hands it the attention implementation chosen for the model.
        config._attn_implementation = config._attn_implementation
        self.vision_model = UniconVisionTransformer(config.vision_config)
        self.text_model = BertModel(config.text_config)
        self.visual_projection = nn.Linear(config.vision_latent_input_dim, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        # Task parts, rebuilt from the config so a saved model reloads with every task it learned.
        self.task_stems = nn.ModuleDict()
        self.task_heads = nn.ModuleDict()
        for spec in config.tasks.values():
            self._build_task(TaskSpec.from_dict(spec))
        self.post_init()
        if config.tasks:  # a model that has learned tasks is frozen until a task is chosen to train
            self.freeze_all_but(None)

    # ----------------------------------------------------------------------------------------- features
    def check_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
        if input_ids.ndim != 2:
            raise UserInputError(f"input_ids must be (n_texts, length), got shape {tuple(input_ids.shape)}")
        limit = self.config.text_config.max_position_embeddings
        if input_ids.shape[1] > limit:
            raise UserInputError(
                f"text is {input_ids.shape[1]} tokens long but the text encoder takes at most {limit}; "
                f"tokenize with truncation=True, max_length={limit}"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise UserInputError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids shape {tuple(input_ids.shape)}"
            )

    def encode_text(self, input_ids, attention_mask=None, token_type_ids=None):
        self.check_text(input_ids, attention_mask)
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)

    def project_image_tokens(self, quantized_tokens: torch.Tensor) -> torch.Tensor:
        """CT-CLIP's image latent: tokens averaged over T, flattened in (h, w, hidden) order, projected."""
        _, _, h, w, _ = quantized_tokens.shape
        _, expected_h, expected_w = self.config.vision_config.patch_grid
        if (h, w) != (expected_h, expected_w):
            vc = self.config.vision_config
            raise UserInputError(
                f"the CLIP image projection was built for an in-plane token grid of {expected_h}x{expected_w} "
                f"(image_size {vc.image_size} / patch_size {vc.patch_size}) but the input gives {h}x{w}; "
                f"crop or pad the volume's height and width to {vc.image_size[0]}x{vc.image_size[1]}"
            )
        pooled = quantized_tokens.mean(dim=1).flatten(1)
        return self.visual_projection(pooled)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """Projected (not normalised) image features in `pooler_output`, tokens in `last_hidden_state`."""
        vision = self.vision_model(pixel_values, quantize=self.config.use_vector_quantization)
        tokens = vision.quantized_tokens if vision.quantized_tokens is not None else vision.last_hidden_state
        return BaseModelOutputWithPooling(last_hidden_state=vision.last_hidden_state,
                                          pooler_output=self.project_image_tokens(tokens))

    def get_text_features(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs) -> BaseModelOutputWithPooling:
        """Projected (not normalised) text features (first token) in `pooler_output`."""
        text = self.encode_text(input_ids, attention_mask, token_type_ids)
        return BaseModelOutputWithPooling(last_hidden_state=text.last_hidden_state,
                                          pooler_output=self.text_projection(text.last_hidden_state[:, 0]))

    # ----------------------------------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_loss: bool = False,
        output_hidden_states: bool = False,
        task: str | None = None,
        **kwargs,
    ):
        if task is not None:
            return self.forward_task(
                task, pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                token_type_ids=token_type_ids, output_hidden_states=output_hidden_states, **kwargs,
            )
        if kwargs:
            raise UserInputError(
                f"unexpected argument(s) {sorted(kwargs)} for the foundation (CLIP) call; task inputs such as "
                f"labels need task='<name>' (known tasks: {list(self.config.tasks) or 'none'})"
            )
        if pixel_values is None and input_ids is None:
            raise UserInputError("pass pixel_values, input_ids, or both")
        if getattr(self.config, "merged_task", None):
            raise UserInputError(
                f"this model has task {self.config.merged_task!r} merged into its encoder, so it no longer computes "
                f"the foundation's CLIP scores; run it with task={self.config.merged_task!r} or use the unmerged model"
            )

        vision_output = image_embeds = text_output = text_embeds = None
        if pixel_values is not None:
            vision_output = self.vision_model(
                pixel_values, output_hidden_states=output_hidden_states,
                quantize=self.config.use_vector_quantization,
            )
            tokens = vision_output.quantized_tokens if vision_output.quantized_tokens is not None else vision_output.last_hidden_state
            image_embeds = F.normalize(self.project_image_tokens(tokens), dim=-1)
        if input_ids is not None:
            text_output = self.encode_text(input_ids, attention_mask, token_type_ids)
            text_embeds = F.normalize(self.text_projection(text_output.last_hidden_state[:, 0]), dim=-1)

        logits_per_image = logits_per_text = loss = None
        if image_embeds is not None and text_embeds is not None:
            logits_per_image = image_embeds @ text_embeds.T * self.logit_scale.exp()
            logits_per_text = logits_per_image.T
            if return_loss:
                loss = clip_loss(logits_per_image)
        return UniconOutput(
            loss=loss, logits_per_image=logits_per_image, logits_per_text=logits_per_text,
            image_embeds=image_embeds, text_embeds=text_embeds,
            text_model_output=text_output, vision_model_output=vision_output,
        )


def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy over matching image-text pairs (the i-th image goes with the i-th text)."""
    if logits_per_image.shape[0] != logits_per_image.shape[1]:
        raise UserInputError(
            f"the contrastive loss needs one text per image, got {logits_per_image.shape[0]} images and "
            f"{logits_per_image.shape[1]} texts"
        )
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)) / 2
