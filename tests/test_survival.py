"""Survival losses and curves: hand-computed tiny cases, censoring behaviour, fits on synthetic and real data."""

import math

import numpy as np
import pytest
import torch

from unicon_hf.errors import UserInputError
from unicon_hf.survival import (
    breslow_cumulative_baseline_hazard,
    cox_neg_partial_log_likelihood,
    cox_survival,
    deephit_loss,
    interval_index,
    mtlr_logits_from_scores,
    mtlr_neg_log_likelihood,
    restricted_mean_survival_time,
    risk_from_survival,
    survival_from_logits,
    time_bins_from_quantiles,
)
from unicon_hf.training.metrics import concordance_index as _c_index

EDGES = torch.tensor([1.0, 2.0])  # 3 intervals: [0, 1], (1, 2], (2, inf)


def test_time_bins_are_quantiles_of_event_times_only():
    times = torch.tensor([5.0, 1.0, 3.0, 100.0, 2.0, 4.0])
    events = torch.tensor([1, 1, 1, 0, 1, 1])  # the censored 100 must not move the edges
    edges = time_bins_from_quantiles(times, events, num_bins=3)
    np.testing.assert_allclose(edges.numpy(), np.quantile([5, 1, 3, 2, 4], [0, 0.5, 1]), rtol=1e-6)
    assert edges.dtype == torch.float32


def test_time_bins_errors():
    with pytest.raises(UserInputError, match="no observed events"):
        time_bins_from_quantiles(torch.tensor([1.0, 2.0]), torch.tensor([0, 0]), num_bins=2)
    with pytest.raises(UserInputError, match="distinct event times"):
        time_bins_from_quantiles(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1, 1, 1]), num_bins=3)
    with pytest.raises(UserInputError, match="1 \\(event observed\\) or 0"):
        time_bins_from_quantiles(torch.tensor([1.0, 2.0]), torch.tensor([1, 2]), num_bins=2)
    with pytest.raises(UserInputError, match="non-negative"):
        time_bins_from_quantiles(torch.tensor([-1.0, 2.0]), torch.tensor([1, 1]), num_bins=2)


def test_interval_index_edges_belong_to_the_earlier_interval():
    idx = interval_index(torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 7.0]), EDGES)
    assert idx.tolist() == [0, 0, 0, 1, 1, 2]


def test_mtlr_cumulative_construction():
    logits = mtlr_logits_from_scores(torch.tensor([[1.0, -0.5]]))
    # interval 0: both "event by edge" tasks are on; interval 1: only the second; interval 2: none.
    torch.testing.assert_close(logits, torch.tensor([[0.5, -0.5, 0.0]]))


def test_mtlr_nll_hand_computed():
    logits = mtlr_logits_from_scores(torch.tensor([[1.0, -0.5]] * 3))
    z = math.exp(0.5) + math.exp(-0.5) + 1.0
    p = [math.exp(0.5) / z, math.exp(-0.5) / z, 1.0 / z]
    times = torch.tensor([0.5, 1.5, 3.0])
    events = torch.tensor([1, 0, 1])
    per_sample = mtlr_neg_log_likelihood(logits, times, events, EDGES, reduction="none")
    expected = [-math.log(p[0]), -math.log(p[1] + p[2]), -math.log(p[2])]  # censored: interval 1 onwards
    np.testing.assert_allclose(per_sample.numpy(), expected, rtol=1e-6)
    mean = mtlr_neg_log_likelihood(logits, times, events, EDGES)
    assert mean.item() == pytest.approx(sum(expected) / 3, rel=1e-6)
    torch.testing.assert_close(survival_from_logits(logits[:1]), torch.tensor([[1.0, p[1] + p[2], p[2]]]))


def test_censored_likelihood_is_weaker_than_event_likelihood():
    logits = torch.randn(4, 3)
    times = torch.tensor([0.5, 1.5, 1.5, 3.0])
    as_events = mtlr_neg_log_likelihood(logits, times, torch.ones(4), EDGES, reduction="none")
    as_censored = mtlr_neg_log_likelihood(logits, times, torch.zeros(4), EDGES, reduction="none")
    assert (as_censored <= as_events + 1e-6).all()
    # censored in the first interval: every interval is possible, so the likelihood is 1
    assert as_censored[0].item() == pytest.approx(0.0, abs=1e-6)
    # censored in the last interval carries the same information as an event there
    assert as_censored[3].item() == pytest.approx(as_events[3].item(), rel=1e-6)


def test_censored_sample_pushes_mass_later():
    scores = torch.zeros(1, 2, requires_grad=True)
    loss = mtlr_neg_log_likelihood(mtlr_logits_from_scores(scores), torch.tensor([1.5]), torch.tensor([0]), EDGES)
    loss.backward()
    # lowering the score of edge 1 ("event by t_1") raises the censored likelihood; edge 2 is not informative
    assert scores.grad[0, 0] > 0
    survival_before = survival_from_logits(mtlr_logits_from_scores(scores.detach()))
    survival_after = survival_from_logits(mtlr_logits_from_scores(scores.detach() - 0.5 * scores.grad))
    assert survival_after[0, 1] > survival_before[0, 1]


def test_extreme_logits_give_finite_loss_and_gradients():
    logits = torch.tensor([[80.0, -80.0, 0.0], [-90.0, 0.0, 90.0]], requires_grad=True)
    times, events = torch.tensor([3.0, 0.5]), torch.tensor([1, 1])  # each event in its least likely interval
    for loss in (
        mtlr_neg_log_likelihood(logits, times, events, EDGES),
        deephit_loss(logits, times, events, EDGES),
    ):
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(grad).all()
    log_hz = torch.tensor([200.0, -200.0, 0.0], requires_grad=True)
    loss = cox_neg_partial_log_likelihood(log_hz, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(log_hz.grad).all()


def test_deephit_hand_computed():
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    times, events = torch.tensor([0.5, 1.5]), torch.tensor([1, 0])
    z = math.e + 2
    nll = (-math.log(math.e / z) - math.log(2 / 3)) / 2  # A: event in interval 0; B: censored in interval 1
    diff = math.e / z - 1 / 3  # F_A(T_A) - F_B(T_A): the one acceptable pair (A earlier, with event)
    expected = nll + 0.3 * math.exp(-diff / 0.1)
    got = deephit_loss(logits, times, events, EDGES, alpha=0.3, sigma=0.1)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # no acceptable pair (all censored): only the likelihood remains
    only_nll = deephit_loss(logits, times, torch.tensor([0, 0]), EDGES, alpha=0.3)
    assert only_nll.item() == pytest.approx((0.0 - math.log(2 / 3)) / 2, rel=1e-6)


def test_cox_breslow_hand_computed():
    eta = torch.tensor([0.1, 0.2, 0.3])
    e = [math.exp(v) for v in (0.1, 0.2, 0.3)]
    loss = cox_neg_partial_log_likelihood(eta, torch.tensor([1.0, 2.0, 2.0]), torch.tensor([1, 1, 0]))
    expected = -((0.1 - math.log(sum(e))) + (0.2 - math.log(e[1] + e[2]))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Breslow ties: two events at t=1 share the full risk set as denominator
    tied = cox_neg_partial_log_likelihood(eta, torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1, 1, 1]))
    expected_tied = -((0.1 - math.log(sum(e))) + (0.2 - math.log(sum(e))) + (0.3 - math.log(e[2]))) / 3
    assert tied.item() == pytest.approx(expected_tied, rel=1e-6)
    # a batch with no events carries no information: zero loss, backward still works
    eta_g = eta.clone().requires_grad_()
    none = cox_neg_partial_log_likelihood(eta_g, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 0]))
    none.backward()
    assert none.item() == 0.0 and (eta_g.grad == 0).all()


def test_breslow_baseline_and_cox_survival():
    eta = torch.zeros(3)
    h0 = breslow_cumulative_baseline_hazard(eta, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 0, 1]), torch.tensor([0.5, 1.0, 2.5, 3.0]))
    # jumps: 1/3 at t=1 (3 at risk), 1/1 at t=3 (1 at risk)
    torch.testing.assert_close(h0, torch.tensor([0.0, 1 / 3, 1 / 3, 4 / 3]))
    s = cox_survival(torch.tensor([0.0, math.log(2.0)]), h0)
    torch.testing.assert_close(s[1], torch.exp(-2 * h0))
    assert (s[:, 1:] <= s[:, :-1] + 1e-7).all()


def test_survival_curve_risk_and_rmst():
    logits = torch.tensor([[0.0, 0.0, 0.0], [-5.0, -5.0, 5.0]])
    s = survival_from_logits(logits)
    torch.testing.assert_close(s[0], torch.tensor([1.0, 2 / 3, 1 / 3]))
    risk = risk_from_survival(s)
    assert risk[0] > risk[1]  # the second patient is expected to live past every edge
    rmst = restricted_mean_survival_time(s, EDGES)
    assert rmst[0].item() == pytest.approx(0.5 * (1 + 2 / 3) + 0.5 * (2 / 3 + 1 / 3), rel=1e-6)


def concordance_index(time, risk, event):
    """The project's Harrell C-index (`unicon_hf.training.metrics`), as a number."""
    return _c_index(risk, time, event)["c_index"]


def _synthetic(n, generator):
    x = torch.randn(n, 4, generator=generator)
    rate = torch.exp(1.5 * x[:, 0])  # only feature 0 matters
    t_event = -torch.log(torch.rand(n, generator=generator)) / rate
    t_censor = -torch.log(torch.rand(n, generator=generator)) / 0.3
    return x, torch.minimum(t_event, t_censor), (t_event <= t_censor).long()


@pytest.mark.parametrize("kind", ["mtlr", "deephit", "cox"])
def test_training_reaches_good_c_index(kind):
    g = torch.Generator().manual_seed(0)
    x, t, e = _synthetic(400, g)
    x_val, t_val, e_val = _synthetic(300, g)
    edges = time_bins_from_quantiles(t, e, num_bins=8)
    torch.manual_seed(0)
    out = {"mtlr": 8, "deephit": 9, "cox": 1}[kind]
    model = torch.nn.Linear(4, out)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        y = model(x)
        if kind == "mtlr":
            loss = mtlr_neg_log_likelihood(mtlr_logits_from_scores(y), t, e, edges)
        elif kind == "deephit":
            loss = deephit_loss(y, t, e, edges)
        else:
            loss = cox_neg_partial_log_likelihood(y, t, e)
        loss.backward()
        opt.step()
    with torch.no_grad():
        y = model(x_val)
        if kind == "cox":
            risk = y[:, 0]
        else:
            logits = mtlr_logits_from_scores(y) if kind == "mtlr" else y
            risk = risk_from_survival(survival_from_logits(logits))
    c = concordance_index(t_val.numpy(), risk.numpy(), e_val.numpy())
    assert c > 0.75, f"{kind}: C-index {c:.3f}"


def test_cox_on_real_larynx_data_matches_published_breslow_fit():
    """Real data (Kardaun's larynx cancer cohort, shipped in lifelines): our Breslow partial likelihood,
    maximised with LBFGS, recovers the reference Cox fit (stage dummies + age, Breslow ties), and its value
    equals statsmodels' PHReg log-likelihood. Reference numbers from statsmodels `PHReg(ties="breslow")`
    (run once on the GPU machine, where statsmodels is installed): params 0.13856, 0.63835, 1.69306, 0.018902,
    llf -188.179435144; Efron ties give 0.1400, 0.6424, 1.7060, 0.0190 (rejected here for stage IV)."""
    import csv

    from realdata import lifelines_larynx_csv

    with open(lifelines_larynx_csv()) as f:
        rows = list(csv.DictReader(f))
    x = torch.tensor([[float(r[c]) for c in ("Stage_II", "Stage_III", "Stage_IV", "age")] for r in rows], dtype=torch.float64)
    t = torch.tensor([float(r["time"]) for r in rows], dtype=torch.float64)
    e = torch.tensor([int(r["death"]) for r in rows])
    assert x.shape == (90, 4) and int(e.sum()) == 50
    beta = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([beta], lr=1, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = cox_neg_partial_log_likelihood(x @ beta, t, e, reduction="sum")
        loss.backward()
        return loss

    opt.step(closure)
    fitted = beta.detach().numpy()
    assert np.all(np.abs(fitted - [0.13856, 0.63835, 1.69306, 0.018902]) < 1e-4), fitted
    statsmodels_beta = torch.tensor([0.13856389751945322, 0.6383497305156346, 1.693056436314387, 0.018901839197891252], dtype=torch.float64)
    llf = -cox_neg_partial_log_likelihood(x @ statsmodels_beta, t, e, reduction="sum")
    assert llf.item() == pytest.approx(-188.17943514409015, abs=1e-8)
    c = concordance_index(t.numpy(), (x @ beta).detach().numpy(), e.numpy())
    assert 0.6 < c < 0.75  # stage + age are moderately prognostic
