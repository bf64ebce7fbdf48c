"""PrognosisHead: config, input modes, shapes, time-bin buffer, errors, and that it learns."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from unicon_hf.errors import UserInputError
from unicon_hf.head_outputs import PrognosisOutput
from unicon_hf.prognosis_head import PrognosisHead, PrognosisHeadConfig
from unicon_hf.training.metrics import concordance_index

IMG, TXT = 32, 24
SMALL = {"adapter_hidden_size": 16, "adapter_output_size": 16, "fusion_hidden_sizes": [16, 8], "num_bins": 5, "dropout": 0.0}


def _head(**overrides):
    torch.manual_seed(0)
    return PrognosisHead(PrognosisHeadConfig.from_dict({**SMALL, **overrides}), image_dim=IMG, text_dim=TXT)


def _inputs(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, 2, 3, 3, IMG, generator=g)
    text = torch.randn(b, 7, TXT, generator=g)
    mask = torch.ones(b, 7, dtype=torch.long)
    mask[:, 5:] = 0
    return tokens, text, mask


TIMES = torch.tensor([100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 50.0, 700.0])
EVENTS = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1])


def test_config_round_trip_and_defaults():
    cfg = PrognosisHeadConfig.from_dict({"survival_head": "deephit", "inputs": ["text", "image"]})
    assert cfg.inputs == ["image", "text"]  # canonical order
    assert cfg.num_bins == 12 and cfg.fusion_hidden_sizes == [512, 128]
    assert PrognosisHeadConfig.from_dict(cfg.to_dict()) == cfg
    assert PrognosisHeadConfig.from_dict(None) == PrognosisHeadConfig()


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"survival_head": "weibull"}, "'mtlr', 'deephit', 'cox'"),
        ({"inputs": ["image", "ehr"]}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"num_bins": 0}, "num_bins"),
        ({"dropout": 1.5}, "dropout"),
        ({"hidden": 3}, "Unknown prognosis head field"),
    ],
)
def test_config_errors(bad, message):
    with pytest.raises(UserInputError, match=message):
        PrognosisHeadConfig.from_dict(bad)


def test_paper_sizes_by_default():
    head = PrognosisHead(PrognosisHeadConfig(), image_dim=512, text_dim=768)
    assert [m.out_features for m in head.adapters["image"] if isinstance(m, torch.nn.Linear)] == [512, 512]
    assert head.adapters["text"][0].in_features == 768
    linears = [m for m in head.fusion if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 512), (512, 128)]
    assert (head.output_layer.in_features, head.output_layer.out_features) == (128, 12)


@pytest.mark.parametrize("survival_head", ["mtlr", "deephit", "cox"])
@pytest.mark.parametrize("inputs", [["image", "text"], ["image"], ["text"]])
def test_shapes_for_every_mode(survival_head, inputs):
    head = _head(survival_head=survival_head, inputs=inputs)
    head.set_time_bins(TIMES, EVENTS)
    tokens, text, mask = _inputs()
    out = head(image_tokens=tokens, text_hidden=text, attention_mask=mask, event_time=TIMES[:4], event=EVENTS[:4])
    assert isinstance(out, PrognosisOutput)
    assert out.risk.shape == (4,) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.time_bins.shape == (5,)
    if survival_head == "cox":
        assert out.logits.shape == (4, 1) and out.survival is None  # no baseline hazard yet
    else:
        assert out.logits.shape == (4, 6) and out.survival.shape == (4, 6)
        torch.testing.assert_close(out.survival[:, 0], torch.ones(4))
        assert (out.survival[:, 1:] <= out.survival[:, :-1] + 1e-6).all()
    fusion_in = head.fusion[0].in_features
    assert fusion_in == 16 * len(inputs)
    out.loss.backward()
    for kind in inputs:
        assert head.adapters[kind][0].weight.grad.abs().sum() > 0


def test_padding_tokens_do_not_change_the_prediction():
    head = _head().eval()
    tokens, text, mask = _inputs()
    a = head(image_tokens=tokens, text_hidden=text, attention_mask=mask).risk
    text2 = text.clone()
    text2[:, 5:] = 1e3  # masked positions
    b = head(image_tokens=tokens, text_hidden=text2, attention_mask=mask).risk
    torch.testing.assert_close(a, b)


def test_single_input_modes_ignore_the_other_input():
    head = _head(inputs=["image"]).eval()
    tokens, text, mask = _inputs()
    a = head(image_tokens=tokens).logits
    b = head(image_tokens=tokens, text_hidden=text * 5, attention_mask=mask).logits
    torch.testing.assert_close(a, b)
    with pytest.raises(UserInputError, match="pass image_tokens"):
        head(text_hidden=text, attention_mask=mask)
    text_head = _head(inputs=["text"])
    with pytest.raises(UserInputError, match="pass text_hidden"):
        text_head(image_tokens=tokens)
    with pytest.raises(UserInputError, match="image_dim"):
        PrognosisHead(PrognosisHeadConfig(), image_dim=None, text_dim=TXT)


def test_shape_errors_name_the_tensor():
    head = _head()
    tokens, text, mask = _inputs()
    with pytest.raises(UserInputError, match=r"image_tokens must have shape \(B, T, h, w, 32\)"):
        head(image_tokens=tokens[..., :8], text_hidden=text, attention_mask=mask)
    with pytest.raises(UserInputError, match="text_hidden must have shape"):
        head(image_tokens=tokens, text_hidden=text[0], attention_mask=mask)
    with pytest.raises(UserInputError, match="attention_mask must have shape"):
        head(image_tokens=tokens, text_hidden=text, attention_mask=mask[:, :3])
    with pytest.raises(UserInputError, match="different batch sizes"):
        head(image_tokens=tokens[:2], text_hidden=text, attention_mask=mask)
    empty = mask.clone()
    empty[2] = 0
    with pytest.raises(UserInputError, match=r"sample\(s\) \[2\]"):
        head(image_tokens=tokens, text_hidden=text, attention_mask=empty)
    with pytest.raises(UserInputError, match="both event_time and event"):
        head(image_tokens=tokens, text_hidden=text, attention_mask=mask, event_time=TIMES[:4])
    with pytest.raises(UserInputError, match="event_time/event have 8 values"):
        head.set_time_bins(TIMES, EVENTS)
        head(image_tokens=tokens, text_hidden=text, attention_mask=mask, event_time=TIMES, event=EVENTS)


def test_loss_needs_time_bins_and_bins_travel_with_the_weights(tmp_path):
    head = _head()
    tokens, text, mask = _inputs()
    assert not head.time_bins_are_set
    with pytest.raises(UserInputError, match="set_time_bins"):
        head(image_tokens=tokens, text_hidden=text, attention_mask=mask, event_time=TIMES[:4], event=EVENTS[:4])
    # prediction without bins is fine: survival is over intervals, the bins only name their times
    assert head(image_tokens=tokens, text_hidden=text, attention_mask=mask).survival.shape == (4, 6)
    edges = head.set_time_bins(TIMES, EVENTS)
    assert head.time_bins_are_set and edges[0] == 100.0 and edges[-1] == 700.0
    save_file(head.state_dict(), tmp_path / "head.safetensors")
    fresh = _head()
    fresh.load_state_dict(load_file(tmp_path / "head.safetensors"))
    torch.testing.assert_close(fresh.time_bins, edges)
    head.eval(), fresh.eval()
    a = head(image_tokens=tokens, text_hidden=text, attention_mask=mask, event_time=TIMES[:4], event=EVENTS[:4])
    b = fresh(image_tokens=tokens, text_hidden=text, attention_mask=mask, event_time=TIMES[:4], event=EVENTS[:4])
    torch.testing.assert_close(a.loss, b.loss)


def test_cox_baseline_hazard_gives_survival_curves():
    head = _head(survival_head="cox").eval()
    tokens, text, mask = _inputs(b=8)
    with pytest.raises(UserInputError, match="set_time_bins"):
        head.set_baseline_hazard(torch.zeros(8), TIMES, EVENTS)
    head.set_time_bins(TIMES, EVENTS)
    log_hz = head(image_tokens=tokens, text_hidden=text, attention_mask=mask).logits
    head.set_baseline_hazard(log_hz, TIMES, EVENTS)
    out = head(image_tokens=tokens, text_hidden=text, attention_mask=mask)
    assert out.survival.shape == (8, 6)
    torch.testing.assert_close(out.survival[:, 0], torch.ones(8))
    assert (out.survival[:, 1:] <= out.survival[:, :-1] + 1e-6).all()
    # higher log-hazard -> lower survival at the last edge
    order = out.risk.argsort()
    assert out.survival[order[-1], -1] <= out.survival[order[0], -1]
    with pytest.raises(UserInputError, match="Cox head only"):
        _head().set_baseline_hazard(log_hz, TIMES, EVENTS)


@pytest.mark.parametrize("inputs", [["image", "text"], ["text"]])
def test_head_learns_risk_from_features(inputs):
    """Risk driven by one direction in the pooled image and text features -> C-index well above 0.5."""
    g = torch.Generator().manual_seed(1)

    def data(n):
        z = torch.randn(n, generator=g)
        tokens = torch.randn(n, 1, 2, 2, IMG, generator=g) * 0.5
        tokens[..., 0] += z[:, None, None, None]
        text = torch.randn(n, 6, TXT, generator=g) * 0.5
        text[..., 0] += z[:, None]
        t_event = -torch.log(torch.rand(n, generator=g)) / torch.exp(1.5 * z)
        t_cens = -torch.log(torch.rand(n, generator=g)) / 0.3
        return tokens, text, torch.minimum(t_event, t_cens), (t_event <= t_cens).long()

    tokens, text, t, e = data(256)
    head = _head(inputs=inputs)
    head.set_time_bins(t, e)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    first = None
    for _ in range(80):
        opt.zero_grad()
        loss = head(image_tokens=tokens, text_hidden=text, event_time=t, event=e).loss
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert loss.item() < first
    vt, vx, vtime, ve = data(256)
    with torch.no_grad():
        risk = head.eval()(image_tokens=vt, text_hidden=vx).risk
    c = concordance_index(risk.numpy(), vtime.numpy(), ve.numpy())["c_index"]
    assert c > 0.7, f"validation C-index {c:.3f}"
