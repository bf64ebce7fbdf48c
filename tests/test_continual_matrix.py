"""Forgetting matrix arithmetic: R, average, BWT (exactly 0 when frozen), FWT, params, JSON."""

import json
import math

import pytest
import torch

from unicon_hf.errors import UserInputError
from unicon_hf.training.continual_matrix import ContinualMatrix, parameter_summary, params_added


def _three_stages(frozen: bool = True) -> ContinualMatrix:
    m = ContinualMatrix()
    m.add_stage("prognosis", "prog", "prognosis", baseline=0.60)
    m.record(0, "prog", 0.7123456789)
    m.add_stage("seg ct", "seg_ct", "segmentation", baseline=0.50)
    m.record(1, "prog", 0.7123456789 if frozen else 0.70)
    m.record(1, "seg_ct", 0.55)
    m.add_stage("seg ct+pet", "seg_ctpet", "segmentation")
    m.record(2, "prog", 0.7123456789 if frozen else 0.68)
    m.record(2, "seg_ct", 0.55 if frozen else 0.45)
    m.record(2, "seg_ctpet", 0.65)
    return m


def test_matrix_layout_average_and_bwt_exactly_zero_when_unchanged():
    m = _three_stages()
    r = m.matrix
    assert r.shape == (3, 3)
    assert math.isnan(r[0, 1]) and math.isnan(r[0, 2]) and math.isnan(r[1, 2])  # not yet learned
    assert m.bwt() == 0.0  # exact, not approx
    assert all(v == 0.0 for v in m.bwt_per_task().values())
    assert m.average_performance() == pytest.approx((0.7123456789 + 0.55 + 0.65) / 3)
    assert m.forgetting() == {"prog": 0.0, "seg_ct": 0.0}


def test_bwt_forgetting_and_fwt_hand_values():
    m = _three_stages(frozen=False)
    # prog: 0.68 - 0.7123456789; seg_ct: 0.45 - 0.55; mean over the 2 earlier tasks
    assert m.bwt() == pytest.approx(((0.68 - 0.7123456789) + (0.45 - 0.55)) / 2)
    assert m.forgetting()["prog"] == pytest.approx(0.7123456789 - 0.68)
    # FWT: own-stage value minus baseline, over tasks with a baseline
    assert m.fwt() == pytest.approx(((0.7123456789 - 0.60) + (0.55 - 0.50)) / 2)


def test_lower_is_better_metric_is_sign_flipped():
    m = ContinualMatrix()
    m.add_stage("a", "seg", "segmentation", metric="hd95_mean", higher_is_better=False)
    m.record(0, "seg", 5.0)
    m.add_stage("b", "prog", "prognosis")
    m.record(1, "seg", 7.0)  # distance grew: worse
    m.record(1, "prog", 0.6)
    assert m.bwt() == pytest.approx(-2.0)


def test_single_stage_bwt_is_nan_and_errors_name_stage_and_task():
    m = ContinualMatrix()
    m.add_stage("only", "prog", "prognosis")
    m.record(0, "prog", 0.7)
    assert math.isnan(m.bwt())
    with pytest.raises(UserInputError, match=r"stage 1 \('again'\): task 'prog' was already learned at stage 0"):
        m.add_stage("again", "prog", "prognosis")
    m.add_stage("seg", "seg", "segmentation")
    with pytest.raises(UserInputError, match="learned at stage 1"):
        m.record(0, "seg", 0.5)
    with pytest.raises(UserInputError, match="unknown task 'nope'"):
        m.record(1, "nope", 0.5)


def test_json_roundtrip_nan_is_null_and_numbers_survive():
    m = _three_stages()
    m.set_stage_cost(0, params_added={"trainable": 10, "total": 12, "bytes": 48}, seconds=1.5)
    m.record(0, "prog", 0.7123456789, details={"c_index": 0.7123456789, "td_auc_mean": float("nan")})
    text = json.dumps(m.to_dict(), allow_nan=False)  # fails if any NaN leaked
    data = json.loads(text)
    assert {"stages", "tasks", "matrix", "bwt", "params_added", "seconds"} <= set(data)
    assert data["matrix"][0][1] is None and data["matrix"][2][0] == 0.7123456789
    assert data["params_added"][0] == {"trainable": 10, "total": 12, "bytes": 48}
    assert data["seconds"][0] == 1.5 and data["seconds"][1] is None
    assert data["details"]["0"]["prog"]["td_auc_mean"] is None
    again = ContinualMatrix.from_dict(data)
    assert again.to_dict() == data


def test_parameter_summary_and_params_added():
    base = torch.nn.Linear(4, 4)  # 20 params
    before = parameter_summary(base)
    base.requires_grad_(False)
    model = torch.nn.Sequential(base, torch.nn.Linear(4, 2))  # + 10 trainable
    after = parameter_summary(model)
    assert before == {"trainable": 20, "total": 20, "bytes": 80}
    assert params_added(before, after) == {"trainable": 10, "total": 10, "bytes": 40}
