"""Survival analysis pieces for the prognosis head: time bins, losses, curves, risk scores.

The C-index and other survival metrics live in `unicon_hf.training.metrics`.

Discrete-time models (MTLR, DeepHit) split the time axis at `K = num_bins` edges
`t_1 < ... < t_K` into `K + 1` intervals: interval 0 is `[0, t_1]`, interval `k` is `(t_k, t_{k+1}]`,
and interval `K` is `(t_K, inf)`. A model gives `K + 1` interval logits; their softmax is the
probability that the event falls in each interval, and the survival curve is evaluated at the
`K + 1` times `[0, t_1, ..., t_K]` (`S(0) = 1`). The Cox model gives one log relative hazard.

Censoring (`event = 0`): the patient was event-free at `event_time`, so the likelihood of a censored
sample is the probability of every interval from the one holding `event_time` onwards (the standard
MTLR formulation, Yu et al. 2011: the event may still happen later inside that interval); an observed
event (`event = 1`) contributes the probability of its own interval.

Why hand-written: MONAI has no survival losses; torchsurv (light: Cox, Weibull, metrics) has no MTLR or
DeepHit, and pycox has them only inside its own training framework (torchtuples); neither is a project
dependency. Each function is short and checked against hand-computed values (and, for Cox, a published
fit on real data) in tests/test_survival.py.
"""

from __future__ import annotations

import torch

from .errors import UserInputError

__all__ = [
    "time_bins_from_quantiles",
    "interval_index",
    "mtlr_logits_from_scores",
    "survival_from_logits",
    "risk_from_survival",
    "restricted_mean_survival_time",
    "mtlr_neg_log_likelihood",
    "deephit_loss",
    "cox_neg_partial_log_likelihood",
    "breslow_cumulative_baseline_hazard",
    "cox_survival",
]


def _check_targets(event_time, event, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate `event_time` / `event` and return them as (float tensor, bool tensor) of shape (B,)."""
    event_time = torch.as_tensor(event_time)
    event = torch.as_tensor(event)
    if event_time.ndim != 1 or event.ndim != 1 or event_time.shape != event.shape:
        raise UserInputError(
            f"event_time and event must be 1-D tensors of the same length (one value per sample); got shapes "
            f"{tuple(event_time.shape)} and {tuple(event.shape)}."
        )
    if batch_size is not None and event_time.shape[0] != batch_size:
        raise UserInputError(
            f"event_time/event have {event_time.shape[0]} values but the model output has {batch_size} samples."
        )
    if not torch.is_floating_point(event_time):
        event_time = event_time.double()
    if torch.isnan(event_time).any() or (event_time < 0).any():
        raise UserInputError("event_time must be non-negative and not NaN (time to event or censoring, e.g. in days).")
    if event.dtype != torch.bool:
        if not torch.isin(event, torch.tensor([0, 1], dtype=event.dtype, device=event.device)).all():
            raise UserInputError("event must hold 1 (event observed) or 0 (censored) for every sample.")
        event = event.bool()
    return event_time, event


def time_bins_from_quantiles(event_times, events, num_bins: int = 12) -> torch.Tensor:
    """Bin edges at evenly spaced quantiles (0, 1/(K-1), ..., 1) of the observed event times.

    Quantiles of the uncensored times put roughly the same number of events between edges, as in the
    MTLR baselines of HECKTOR; censored times do not set edges.

    Args:
        event_times: (N,) time to event or censoring (e.g. days) of the training set.
        events: (N,) 1 = event observed, 0 = censored.
        num_bins: number of edges `K` (the model has `K + 1` intervals).

    Returns:
        float32 tensor (K,) of strictly increasing edges.

    Raises:
        UserInputError: no events, `num_bins < 1`, or too few distinct event times for `num_bins` edges.
    """
    if int(num_bins) < 1:
        raise UserInputError(f"num_bins must be >= 1, got {num_bins}.")
    event_times, events = _check_targets(event_times, events)
    observed = event_times[events].double()
    if observed.numel() == 0:
        raise UserInputError("Cannot place survival time bins: the training data has no observed events (event == 1).")
    probs = torch.linspace(0, 1, int(num_bins), dtype=torch.float64)
    edges = torch.quantile(observed, probs).float()
    if num_bins > 1 and not (edges[1:] > edges[:-1]).all():
        distinct = int(torch.unique(observed).numel())
        raise UserInputError(
            f"Only {distinct} distinct event times among {observed.numel()} events: cannot place {num_bins} distinct "
            f"quantile bin edges. Use a smaller num_bins (at most {distinct}) or more training data."
        )
    return edges


def interval_index(event_time: torch.Tensor, time_bins: torch.Tensor) -> torch.Tensor:
    """Index (0..K) of the interval holding each time: 0 for `[0, t_1]`, k for `(t_k, t_{k+1}]`, K beyond t_K."""
    return torch.bucketize(event_time.to(time_bins.dtype), time_bins, right=False)


def mtlr_logits_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """MTLR cumulative construction: per-edge scores (B, K) -> interval logits (B, K + 1).

    MTLR scores sequence `y` (y_j = 1 once the event has happened by edge j) by `sum_j y_j * s_j`; an
    event in interval k sets y_j = 1 for all j >= k, so its logit is the reverse cumulative sum of the
    scores from k on, and the last interval (after every edge) has logit 0.
    """
    reverse_cumsum = scores.flip(-1).cumsum(-1).flip(-1)
    return torch.cat([reverse_cumsum, torch.zeros_like(scores[..., :1])], dim=-1)


def survival_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Survival S at times `[0, t_1, ..., t_K]` from interval logits (B, K + 1): S[:, k] = P(interval >= k).

    Computed in log space (log-cum-sum-exp) so that very peaked distributions stay accurate.
    """
    log_tail = logits.flip(-1).logcumsumexp(-1).flip(-1)
    return torch.exp(log_tail - log_tail[..., :1])


def risk_from_survival(survival: torch.Tensor) -> torch.Tensor:
    """Risk score (B,) = sum over the edges t_1..t_K of the event probability so far, `1 - S(t_k)`.

    Higher means an earlier event. Unlike `restricted_mean_survival_time` it needs no time unit; it is
    the (negated, shifted) number of edges the patient is expected to survive past.
    """
    return (1.0 - survival[..., 1:]).sum(-1)


def restricted_mean_survival_time(survival: torch.Tensor, time_bins: torch.Tensor) -> torch.Tensor:
    """Restricted mean survival time up to the last edge t_K (trapezoid rule over `[0, t_1, ..., t_K]`)."""
    times = torch.cat([time_bins.new_zeros(1), time_bins]).to(survival.dtype)
    return torch.trapezoid(survival, times, dim=-1)


def _log_likelihood_discrete(logits: torch.Tensor, bin_idx: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Per-sample censoring-aware log-likelihood (B,) of interval logits (B, K + 1)."""
    positions = torch.arange(logits.shape[-1], device=logits.device)
    own_interval = positions[None, :] == bin_idx[:, None]
    at_or_after = positions[None, :] >= bin_idx[:, None]
    allowed = torch.where(event[:, None], own_interval, at_or_after)
    log_numerator = logits.masked_fill(~allowed, float("-inf")).logsumexp(-1)
    return log_numerator - logits.logsumexp(-1)


def _check_discrete(logits: torch.Tensor, time_bins: torch.Tensor) -> None:
    if logits.ndim != 2 or logits.shape[-1] != time_bins.numel() + 1:
        raise UserInputError(
            f"Survival logits must have shape (B, num_bins + 1) = (B, {time_bins.numel() + 1}) for "
            f"{time_bins.numel()} time bin edges; got {tuple(logits.shape)}."
        )


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise UserInputError(f"reduction must be one of 'mean', 'sum', 'none'; got {reduction!r}.")


def mtlr_neg_log_likelihood(
    logits: torch.Tensor, event_time, event, time_bins: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """MTLR negative log-likelihood of interval logits (B, K + 1) (from `mtlr_logits_from_scores`).

    Observed event: -log P(own interval); censored: -log P(interval >= the censoring interval).
    Regularisation of the MTLR weights (the C1 term of the original) is left to the optimiser's weight decay.
    """
    _check_discrete(logits, time_bins)
    event_time, event = _check_targets(event_time, event, logits.shape[0])
    bin_idx = interval_index(event_time.to(logits.device), time_bins.to(logits.device))
    return _reduce(-_log_likelihood_discrete(logits, bin_idx, event.to(logits.device)), reduction)


def deephit_loss(
    logits: torch.Tensor,
    event_time,
    event,
    time_bins: torch.Tensor,
    alpha: float = 0.5,
    sigma: float = 0.1,
) -> torch.Tensor:
    """Single-risk DeepHit loss (Lee et al. 2018): likelihood + `alpha` * ranking loss.

    The likelihood term is the same censoring-aware discrete likelihood as MTLR, on a free softmax over
    the K + 1 intervals (no cumulative construction). The ranking term compares every acceptable pair
    (i had the event and `T_i < T_j`, or the same time with j censored) through the cumulative incidence
    at i's interval: `exp(-(F_i(T_i) - F_j(T_i)) / sigma)`, averaged over the acceptable pairs (0 when a
    batch has none), so its scale does not depend on the batch size.
    """
    _check_discrete(logits, time_bins)
    event_time, event = _check_targets(event_time, event, logits.shape[0])
    event_time, event = event_time.to(logits.device), event.to(logits.device)
    bin_idx = interval_index(event_time, time_bins.to(logits.device))
    nll = -_log_likelihood_discrete(logits, bin_idx, event).mean()

    cif = logits.softmax(-1).cumsum(-1)  # F(interval k) = P(event by the end of interval k)
    cif_at_ti = cif[:, bin_idx]  # [j, i] = F_j at i's interval
    diff = cif_at_ti.diagonal()[:, None] - cif_at_ti.T  # [i, j] = F_i(T_i) - F_j(T_i)
    earlier = event_time[:, None] < event_time[None, :]
    tie_vs_censored = (event_time[:, None] == event_time[None, :]) & ~event[None, :]
    acceptable = event[:, None] & (earlier | tie_vs_censored)
    n_pairs = acceptable.sum()
    if n_pairs == 0:
        ranking = logits.sum() * 0.0  # keep the graph so backward() works on any batch
    else:
        ranking = torch.exp(-diff / sigma)[acceptable].sum() / n_pairs
    return nll + alpha * ranking


def cox_neg_partial_log_likelihood(log_hz: torch.Tensor, event_time, event, reduction: str = "mean") -> torch.Tensor:
    """Cox negative partial log-likelihood, Breslow ties: -sum_events [eta_i - log sum_{T_j >= T_i} exp(eta_j)].

    `log_hz` is (B,) or (B, 1). With `reduction="mean"` the sum is divided by the number of events; a
    batch without events gives 0 (with a graph), since it holds no information for a Cox model. The risk
    sets are built from a (B, B) mask, fine for mini-batches and validation sets of a few thousand.
    """
    if log_hz.ndim == 2 and log_hz.shape[-1] == 1:
        log_hz = log_hz[:, 0]
    if log_hz.ndim != 1:
        raise UserInputError(f"Cox log-hazard must have shape (B,) or (B, 1); got {tuple(log_hz.shape)}.")
    event_time, event = _check_targets(event_time, event, log_hz.shape[0])
    event_time, event = event_time.to(log_hz.device), event.to(log_hz.device)
    at_risk = event_time[None, :] >= event_time[:, None]  # [i, j]: j still at risk at T_i (ties included)
    log_denominator = log_hz[None, :].expand_as(at_risk).masked_fill(~at_risk, float("-inf")).logsumexp(-1)
    terms = (log_hz - log_denominator)[event]
    if terms.numel() == 0:
        return log_hz.sum() * 0.0
    # reduction="none" returns one value per EVENT (censored samples have no term of their own).
    return _reduce(-terms, reduction)


@torch.no_grad()
def breslow_cumulative_baseline_hazard(log_hz: torch.Tensor, event_time, event, times: torch.Tensor) -> torch.Tensor:
    """Breslow estimate of the baseline cumulative hazard H0 at `times`, from a fitted Cox model's outputs.

    H0(t) = sum over distinct event times s <= t of d(s) / sum_{T_j >= s} exp(eta_j), with d(s) the number of
    events at s. Then S(t | x) = exp(-H0(t) * exp(eta(x))) (see `cox_survival`).
    """
    log_hz = log_hz.reshape(-1).double()
    event_time, event = _check_targets(event_time, event, log_hz.shape[0])
    event_time, event = event_time.to(log_hz.device).double(), event.to(log_hz.device)
    distinct = torch.unique(event_time[event])
    hazard_jumps = []
    for s in distinct:
        d = (event & (event_time == s)).sum()
        risk_sum = torch.exp(log_hz[event_time >= s]).sum()
        hazard_jumps.append(d / risk_sum)
    if not hazard_jumps:
        return torch.zeros_like(torch.as_tensor(times, dtype=torch.float32))
    jumps = torch.stack(hazard_jumps)
    times = torch.as_tensor(times, dtype=torch.float64, device=log_hz.device)
    upto = distinct[None, :] <= times.reshape(-1)[:, None]
    return (upto * jumps[None, :]).sum(-1).float().reshape(times.shape)


def cox_survival(log_hz: torch.Tensor, baseline_cumulative_hazard: torch.Tensor) -> torch.Tensor:
    """S(t | x) = exp(-H0(t) exp(eta)): (B,) or (B, 1) log-hazards and (M,) H0 values -> (B, M)."""
    return torch.exp(-baseline_cumulative_hazard[None, :] * torch.exp(log_hz.reshape(-1, 1)))
