"""Output dataclasses of the task heads (prognosis, segmentation).

They subclass `transformers.utils.ModelOutput`, so they index like a dict or a tuple (skipping `None`
fields) and pass through DDP / `torch.compile` like the outputs of transformers' own models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class PrognosisOutput(ModelOutput):
    """Output of `PrognosisHead`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): survival loss (MTLR / DeepHit negative
            log-likelihood, or Cox negative partial log-likelihood); only when `event_time` and `event`
            were given.
        logits (`torch.FloatTensor` of shape `(B, num_bins + 1)` or `(B, 1)`): for MTLR and DeepHit the
            logits over the `num_bins + 1` time intervals (a softmax gives the probability that the event
            falls in each interval); for Cox the log relative hazard.
        survival (`torch.FloatTensor` of shape `(B, num_bins + 1)`, *optional*): survival probability
            S(t) = P(T > t) at the times `[0, *time_bins]` (so `survival[:, 0] == 1`). For Cox, only when a
            Breslow baseline hazard was set with `PrognosisHead.set_baseline_hazard`.
        risk (`torch.FloatTensor` of shape `(B,)`): risk score, higher means an earlier event (for the
            C-index). MTLR / DeepHit: the sum over the bin edges of the event probability so far,
            `sum_k (1 - S(t_k))`; Cox: the log relative hazard.
        time_bins (`torch.FloatTensor` of shape `(num_bins,)`): the bin edges (same unit as the training
            event times, e.g. days) that `survival` refers to, without the leading 0.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    survival: torch.FloatTensor | None = None
    risk: torch.FloatTensor | None = None
    time_bins: torch.FloatTensor | None = None


@dataclass
class SegmentationOutput(ModelOutput):
    """Output of `SegmentationDecoder`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): Dice + cross-entropy loss (MONAI
            `DiceCELoss`); only when `labels` were given.
        logits (`torch.FloatTensor` of shape `(B, num_classes, D, H, W)`): per-voxel class logits
            (class 0 is background).
        dice (`dict[str, float]`, *optional*): per-class Dice with the background excluded. Never filled by
            `forward`; evaluation code sets it with `output.dice = per_class_dice(output.logits, labels, names)`
            (`unicon_hf.training.metrics.per_class_dice`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    dice: dict[str, float] | None = None
