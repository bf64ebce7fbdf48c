"""Output dataclasses of the UNICON foundation model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class UniconVisionOutput(ModelOutput):
    """
    Output of the CT-CLIP image encoder.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, T, h, w, hidden)`): encoder output
            before vector quantization (after the temporal stage's final norm).
        quantized_tokens (`torch.FloatTensor` of shape `(batch, T, h, w, hidden)`, *optional*): the codebook
            rows the tokens map to (the CLIP path's input); None when quantization is skipped.
        patch_embeddings (`torch.FloatTensor` of shape `(batch, T, h, w, hidden)`, *optional*): output of the
            patch embedding, when hidden states are requested.
        spatial_last_hidden_state (`torch.FloatTensor` of shape `(batch, T, h, w, hidden)`, *optional*): the
            spatial stage's output after its final norm, when hidden states are requested.
        spatial_hidden_states (`tuple(torch.FloatTensor)`, *optional*): the output of every spatial layer
            (before the stage norm), each `(batch, T, h, w, hidden)`, when hidden states are requested.
        temporal_hidden_states (`tuple(torch.FloatTensor)`, *optional*): the output of every temporal layer
            (before the stage norm), each `(batch, T, h, w, hidden)`, when hidden states are requested.
    """

    last_hidden_state: torch.FloatTensor | None = None
    quantized_tokens: torch.FloatTensor | None = None
    patch_embeddings: torch.FloatTensor | None = None
    spatial_last_hidden_state: torch.FloatTensor | None = None
    spatial_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    temporal_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class UniconOutput(ModelOutput):
    """
    Output of the foundation (CLIP) call of `UniconModel`.

    Args:
        loss (`torch.FloatTensor`, *optional*): symmetric CLIP contrastive loss, when `return_loss=True`.
        logits_per_image (`torch.FloatTensor` of shape `(n_images, n_texts)`): scaled cosine similarities.
        logits_per_text (`torch.FloatTensor` of shape `(n_texts, n_images)`): the transpose.
        image_embeds (`torch.FloatTensor` of shape `(n_images, projection_dim)`): L2-normalised.
        text_embeds (`torch.FloatTensor` of shape `(n_texts, projection_dim)`): L2-normalised.
        text_model_output: the BERT output.
        vision_model_output (`UniconVisionOutput`): the image encoder output.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    text_model_output: ModelOutput | None = None
    vision_model_output: UniconVisionOutput | None = None

    def to_tuple(self):
        return tuple(
            self[k] if k not in ("text_model_output", "vision_model_output") else getattr(self, k).to_tuple()
            for k in self.keys()
        )
