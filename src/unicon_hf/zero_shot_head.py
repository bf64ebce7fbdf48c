"""Zero-shot classification over the frozen CLIP space: per label, softmax over the pair of prompts
"{label} is present." / "{label} is not present." gives P(present)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .errors import UserInputError


@dataclass
class ZeroShotClassificationOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor`, *optional*): binary cross-entropy against `labels`, when given.
        logits (`torch.FloatTensor` of shape `(batch, n_labels, 2)`): scaled similarities to the
            (present, not present) prompts of each label.
        probabilities (`torch.FloatTensor` of shape `(batch, n_labels)`): P(present) per label.
        label_names (`list[str]`): the labels, in column order.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    probabilities: torch.FloatTensor | None = None
    label_names: list[str] | None = None


class ZeroShotHead(nn.Module):
    """Holds the tokenized prompt pairs of a task as buffers, so the model needs no tokenizer to run it."""

    def __init__(self, labels: list[str], prompt_input_ids: list[list[int]], prompt_attention_mask: list[list[int]]):
        super().__init__()
        if len(prompt_input_ids) != 2 * len(labels):
            raise UserInputError(
                f"zero-shot head needs 2 prompts per label ({2 * len(labels)}), got {len(prompt_input_ids)}"
            )
        self.labels = list(labels)
        # Persistent, so they are saved with the weights: a model rebuilt on the meta device (from_pretrained)
        # gets its values from the checkpoint, not from tensors created at construction.
        self.register_buffer("prompt_input_ids", torch.tensor(prompt_input_ids, dtype=torch.long))
        self.register_buffer("prompt_attention_mask", torch.tensor(prompt_attention_mask, dtype=torch.long))

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor,
                labels: torch.Tensor | None = None) -> ZeroShotClassificationOutput:
        """`image_embeds` (B, dim) and `text_embeds` (2 * n_labels, dim), both L2-normalised."""
        logits = (image_embeds @ text_embeds.T * logit_scale.exp()).reshape(len(image_embeds), len(self.labels), 2)
        probabilities = logits.softmax(dim=-1)[..., 0]
        loss = None
        if labels is not None:
            if labels.shape != probabilities.shape:
                raise UserInputError(
                    f"labels must be (batch, {len(self.labels)}) 0/1 values for {self.labels}, got {tuple(labels.shape)}"
                )
            # log-odds of "present" vs "not present" is the logit difference
            loss = F.binary_cross_entropy_with_logits(logits[..., 0] - logits[..., 1], labels.float())
        return ZeroShotClassificationOutput(loss=loss, logits=logits, probabilities=probabilities,
                                            label_names=list(self.labels))
