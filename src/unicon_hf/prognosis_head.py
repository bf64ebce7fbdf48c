"""Prognosis head: image/text adapters, fusion MLP and a survival output (MTLR, DeepHit or Cox).

Follows UNICON's prognosis stage: the image feature is the mean of the encoder's token grid, the text
feature the mask-weighted mean of the text encoder's tokens (the EHR rewritten as a report); each goes
through an adapter MLP + LayerNorm, the concatenation through a fusion MLP (1024 -> 512 -> 128), then
a survival layer over time bins placed at quantiles of the training event times.

The head takes plain tensors so it can be built and tested without the encoder; `UniconModel` feeds
it `image_tokens` from the vision encoder and `text_hidden` from the text encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import UserInputError
from .head_config import HeadConfig
from .head_outputs import PrognosisOutput
from .survival import (
    breslow_cumulative_baseline_hazard,
    cox_neg_partial_log_likelihood,
    cox_survival,
    deephit_loss,
    mtlr_logits_from_scores,
    mtlr_neg_log_likelihood,
    risk_from_survival,
    survival_from_logits,
    time_bins_from_quantiles,
)

SURVIVAL_HEADS = ("mtlr", "deephit", "cox")
INPUT_KINDS = ("image", "text")


@dataclass
class PrognosisHeadConfig(HeadConfig):
    """Settings of a `PrognosisHead`, stored as the task spec's `head` dict.

    Args:
        inputs (`list[str]`, defaults to `["image", "text"]`): which features feed the fusion MLP:
            `["image", "text"]`, `["image"]` or `["text"]`.
        adapter_hidden_size (`int`, defaults to 512): hidden width of the image and text adapter MLPs.
        adapter_output_size (`int`, defaults to 512): output width of each adapter (LayerNorm-ed).
        fusion_hidden_sizes (`list[int]`, defaults to `[512, 128]`): widths of the fusion MLP layers; the
            last one feeds the survival layer.
        dropout (`float`, defaults to 0.2): dropout after each hidden activation.
        survival_head (`str`, defaults to `"mtlr"`): `"mtlr"`, `"deephit"` or `"cox"`.
        num_bins (`int`, defaults to 12): number of time-bin edges `K` for MTLR/DeepHit (`K + 1`
            intervals); for Cox, the times at which the survival curve is reported.
        deephit_alpha (`float`, defaults to 0.5): weight of DeepHit's ranking loss (loss = NLL + alpha * rank).
        deephit_sigma (`float`, defaults to 0.1): temperature of DeepHit's ranking loss.
    """

    head_kind = "prognosis"  # a plain class attribute (no annotation): not a field

    inputs: list[str] = field(default_factory=lambda: ["image", "text"])
    adapter_hidden_size: int = 512
    adapter_output_size: int = 512
    fusion_hidden_sizes: list[int] = field(default_factory=lambda: [512, 128])
    dropout: float = 0.2
    survival_head: str = "mtlr"
    num_bins: int = 12
    deephit_alpha: float = 0.5
    deephit_sigma: float = 0.1

    def __post_init__(self) -> None:
        self.inputs = list(self.inputs)
        self.fusion_hidden_sizes = [int(s) for s in self.fusion_hidden_sizes]
        if not self.inputs or len(set(self.inputs)) != len(self.inputs) or not set(self.inputs) <= set(INPUT_KINDS):
            raise UserInputError(
                f"prognosis head 'inputs' must be ['image', 'text'], ['image'] or ['text']; got {self.inputs!r}."
            )
        # Keep a canonical order so the fusion input layout does not depend on how the spec was written.
        self.inputs = [k for k in INPUT_KINDS if k in self.inputs]
        if self.survival_head not in SURVIVAL_HEADS:
            raise UserInputError(
                f"prognosis head 'survival_head' must be one of {list(SURVIVAL_HEADS)}; got {self.survival_head!r}."
            )
        for name in ("adapter_hidden_size", "adapter_output_size", "num_bins"):
            if int(getattr(self, name)) < 1:
                raise UserInputError(f"prognosis head '{name}' must be a positive integer; got {getattr(self, name)!r}.")
        if not self.fusion_hidden_sizes or min(self.fusion_hidden_sizes) < 1:
            raise UserInputError(
                f"prognosis head 'fusion_hidden_sizes' must be a non-empty list of positive widths; got "
                f"{self.fusion_hidden_sizes!r}."
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise UserInputError(f"prognosis head 'dropout' must be in [0, 1); got {self.dropout!r}.")
        if float(self.deephit_alpha) < 0 or float(self.deephit_sigma) <= 0:
            raise UserInputError(
                f"prognosis head needs deephit_alpha >= 0 and deephit_sigma > 0; got {self.deephit_alpha!r}, "
                f"{self.deephit_sigma!r}."
            )



class _AdapterMLP(nn.Sequential):
    """Linear -> ReLU -> Dropout -> Linear -> LayerNorm: maps one modality's pooled feature to a shared width."""

    def __init__(self, in_dim: int, hidden: int, out: int, dropout: float):
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out), nn.LayerNorm(out))


class PrognosisHead(nn.Module):
    """Survival prediction from pooled image tokens and/or pooled text tokens.

    Args:
        config: a `PrognosisHeadConfig` (or a `head` dict, passed to `PrognosisHeadConfig.from_dict`).
        image_dim: width of the encoder tokens (`image_tokens.shape[-1]`); required when `"image"` is an input.
        text_dim: width of the text encoder's hidden states; required when `"text"` is an input.

    Buffers (saved with the model): `time_bins` (num_bins,) set by `set_time_bins`; for Cox also
    `baseline_cumulative_hazard` (num_bins + 1,) set by `set_baseline_hazard`.
    """

    def __init__(self, config: PrognosisHeadConfig | dict, image_dim: int | None = None, text_dim: int | None = None):
        super().__init__()
        if isinstance(config, dict):
            config = PrognosisHeadConfig.from_dict(config)
        self.config = config
        dims = {"image": image_dim, "text": text_dim}
        for kind in config.inputs:
            if dims[kind] is None or int(dims[kind]) < 1:
                raise UserInputError(f"PrognosisHead with input '{kind}' needs {kind}_dim (the encoder width); got {dims[kind]!r}.")
        self.image_dim = int(image_dim) if "image" in config.inputs else None
        self.text_dim = int(text_dim) if "text" in config.inputs else None
        self.adapters = nn.ModuleDict(
            {
                kind: _AdapterMLP(int(dims[kind]), config.adapter_hidden_size, config.adapter_output_size, config.dropout)
                for kind in config.inputs
            }
        )
        layers: list[nn.Module] = []
        width = config.adapter_output_size * len(config.inputs)
        for size in config.fusion_hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(config.dropout)]
            width = size
        self.fusion = nn.Sequential(*layers)
        # MTLR: one score per bin edge (cumulative construction gives num_bins + 1 interval logits);
        # DeepHit: free logits over the num_bins + 1 intervals; Cox: one log relative hazard.
        out = {"mtlr": config.num_bins, "deephit": config.num_bins + 1, "cox": 1}[config.survival_head]
        self.output_layer = nn.Linear(width, out)
        # All zeros = "not set yet": valid edges are strictly increasing, so they can never be all zero.
        self.register_buffer("time_bins", torch.zeros(config.num_bins))
        if config.survival_head == "cox":
            self.register_buffer("baseline_cumulative_hazard", torch.zeros(config.num_bins + 1))

    # ---------------------------------------------------------------- time bins / baseline

    @property
    def time_bins_are_set(self) -> bool:
        """Whether `set_time_bins` has been called (or bins were loaded with the weights)."""
        edges = self.time_bins
        if edges.numel() == 1:
            return bool(edges[0] != 0)
        return bool((edges[1:] > edges[:-1]).all())

    @torch.no_grad()
    def set_time_bins(self, event_times, events) -> torch.Tensor:
        """Place the `num_bins` edges at quantiles of the training set's event times; returns them.

        Call once with the whole training set (not a batch) before training with MTLR or DeepHit.
        """
        edges = time_bins_from_quantiles(event_times, events, self.config.num_bins)
        self.time_bins.copy_(edges.to(self.time_bins))
        return self.time_bins.clone()

    @torch.no_grad()
    def set_baseline_hazard(self, log_hz: torch.Tensor, event_times, events) -> torch.Tensor:
        """Cox only: Breslow baseline cumulative hazard at `[0, *time_bins]` from the model's outputs on the training set.

        After this the Cox head also returns survival curves. Needs `set_time_bins` first.
        """
        if self.config.survival_head != "cox":
            raise UserInputError(
                f"set_baseline_hazard is for the Cox head only; this head is '{self.config.survival_head}', whose "
                "survival curve comes from its logits."
            )
        self._require_time_bins("set_baseline_hazard")
        times = torch.cat([self.time_bins.new_zeros(1), self.time_bins])
        h0 = breslow_cumulative_baseline_hazard(log_hz.detach(), event_times, events, times.cpu())
        self.baseline_cumulative_hazard.copy_(h0.to(self.baseline_cumulative_hazard))
        return self.baseline_cumulative_hazard.clone()

    def _require_time_bins(self, what: str) -> None:
        if not self.time_bins_are_set:
            raise UserInputError(
                f"PrognosisHead {what} needs time bins: call head.set_time_bins(event_times, events) with the "
                "training set's event times first (they are saved with the model)."
            )

    # ---------------------------------------------------------------- features

    def _image_feature(self, image_tokens: torch.Tensor | None) -> torch.Tensor:
        if image_tokens is None:
            raise UserInputError("This prognosis head uses the image: pass image_tokens (B, T, h, w, dim).")
        if image_tokens.ndim != 5 or image_tokens.shape[-1] != self.image_dim:
            raise UserInputError(
                f"image_tokens must have shape (B, T, h, w, {self.image_dim}); got {tuple(image_tokens.shape)}."
            )
        return image_tokens.mean(dim=(1, 2, 3))

    def _text_feature(self, text_hidden: torch.Tensor | None, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if text_hidden is None:
            raise UserInputError("This prognosis head uses the text: pass text_hidden (B, L, dim) and attention_mask (B, L).")
        if text_hidden.ndim != 3 or text_hidden.shape[-1] != self.text_dim:
            raise UserInputError(f"text_hidden must have shape (B, L, {self.text_dim}); got {tuple(text_hidden.shape)}.")
        if attention_mask is None:
            return text_hidden.mean(dim=1)
        if tuple(attention_mask.shape) != tuple(text_hidden.shape[:2]):
            raise UserInputError(
                f"attention_mask must have shape (B, L) = {tuple(text_hidden.shape[:2])} like text_hidden; got "
                f"{tuple(attention_mask.shape)}."
            )
        mask = attention_mask.to(text_hidden.dtype).unsqueeze(-1)
        counts = mask.sum(dim=1)
        if (counts == 0).any():
            empty = (counts[:, 0] == 0).nonzero()[:, 0].tolist()
            raise UserInputError(f"attention_mask has no tokens for sample(s) {empty}: every text needs at least one token.")
        return (text_hidden * mask).sum(dim=1) / counts

    # ---------------------------------------------------------------- forward

    def forward(
        self,
        image_tokens: torch.Tensor | None = None,
        text_hidden: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        event_time: torch.Tensor | None = None,
        event: torch.Tensor | None = None,
    ) -> PrognosisOutput:
        """Predict survival; compute the loss when `event_time` and `event` are given.

        Args:
            image_tokens: (B, T, h, w, image_dim) encoder token grid (needed when "image" is an input).
            text_hidden: (B, L, text_dim) text encoder last hidden state (needed when "text" is an input).
            attention_mask: (B, L) 1 for real tokens, 0 for padding; None = every token counts.
            event_time: (B,) time to event or censoring, same unit as the time bins.
            event: (B,) 1 = event observed, 0 = censored.

        Inputs that the configured `inputs` do not use are ignored, so a caller may always pass both.
        """
        features = []
        if "image" in self.config.inputs:
            features.append(self.adapters["image"](self._image_feature(image_tokens)))
        if "text" in self.config.inputs:
            features.append(self.adapters["text"](self._text_feature(text_hidden, attention_mask)))
        if len({f.shape[0] for f in features}) > 1:
            raise UserInputError(
                f"image_tokens and text_hidden have different batch sizes ({features[0].shape[0]} vs {features[1].shape[0]})."
            )
        hidden = self.fusion(torch.cat(features, dim=-1))
        raw = self.output_layer(hidden)

        kind = self.config.survival_head
        survival = None
        if kind == "cox":
            logits = raw
            risk = raw[:, 0]
            if bool(self.baseline_cumulative_hazard[-1] > 0):
                survival = cox_survival(raw.float(), self.baseline_cumulative_hazard.float())
        else:
            logits = mtlr_logits_from_scores(raw) if kind == "mtlr" else raw
            survival = survival_from_logits(logits.float())
            risk = risk_from_survival(survival)

        loss = None
        if (event_time is None) != (event is None):
            raise UserInputError("Pass both event_time and event to compute the survival loss (or neither for prediction).")
        if event_time is not None:
            # Losses in float32: log-sum-exp over bins and risk sets loses too much in bf16.
            if kind == "cox":
                loss = cox_neg_partial_log_likelihood(logits.float(), event_time, event)
            else:
                self._require_time_bins("loss")
                if kind == "mtlr":
                    loss = mtlr_neg_log_likelihood(logits.float(), event_time, event, self.time_bins)
                else:
                    loss = deephit_loss(
                        logits.float(), event_time, event, self.time_bins, self.config.deephit_alpha, self.config.deephit_sigma
                    )
        return PrognosisOutput(loss=loss, logits=logits, survival=survival, risk=risk, time_bins=self.time_bins)
