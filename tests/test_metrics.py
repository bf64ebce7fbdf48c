"""Task metrics checked against hand-computed cases (and the evaluate modules, offline)."""

import math

import numpy as np
import pytest
import torch

from unicon_hf.errors import UserInputError
from unicon_hf.training import metrics as M

# ---------------------------------------------------------------- classification


def test_auroc_hand_case_and_single_class_label():
    scores = np.array([[0.1, 0.2], [0.4, 0.9], [0.35, 0.3], [0.8, 0.5]])
    labels = np.array([[0, 0], [0, 0], [1, 0], [1, 0]])
    out = M.auroc(scores, labels, ["Cardiomegaly", "Emphysema"])
    # Positives {0.35, 0.8} vs negatives {0.1, 0.4}: 3 of 4 pairs ordered right.
    assert out["auroc"]["Cardiomegaly"] == pytest.approx(0.75)
    assert math.isnan(out["auroc"]["Emphysema"])
    assert out["auroc_macro"] == pytest.approx(0.75)
    assert any("Emphysema" in n and "only class 0" in n for n in out["notes"])


def test_auroc_ties_count_half_and_bad_labels_rejected():
    out = M.auroc([0.5, 0.5, 0.2, 0.9], [0, 1, 0, 1])
    # pairs (pos 0.5 vs neg 0.5)=0.5, (0.5 vs 0.2)=1, (0.9 vs 0.5)=1, (0.9 vs 0.2)=1 -> 3.5/4
    assert out["auroc_macro"] == pytest.approx(0.875)
    with pytest.raises(UserInputError, match="0/1"):
        M.auroc([0.1, 0.2], [0, 2])


# ---------------------------------------------------------------- survival


def test_c_index_hand_cases():
    t = [1, 2, 3, 4]
    e = [1, 1, 0, 1]
    # comparable pairs: (0,1) (0,2) (0,3) (1,2) (1,3); case 2 is censored, case 3 has no later time
    assert M.concordance_index([4, 3, 2, 1], t, e)["c_index"] == 1.0
    assert M.concordance_index([1, 2, 3, 4], t, e)["c_index"] == 0.0
    tied = M.concordance_index([4, 3, 3, 1], t, e)  # pair (1,2) tied in risk -> 0.5
    assert tied["c_index"] == pytest.approx(4.5 / 5)
    assert tied["comparable"] == 5 and tied["tied_risk"] == 1


def test_c_index_time_ties_follow_sksurv_convention():
    # event and censoring at t=2: comparable (event first), discordant here; (0,2) concordant.
    out = M.concordance_index([1, 2, 0], [2, 2, 3], [1, 0, 1])
    assert out["comparable"] == 2 and out["c_index"] == pytest.approx(0.5)
    # two events at the same time are not comparable
    both = M.concordance_index([1, 2], [2, 2], [1, 1])
    assert math.isnan(both["c_index"]) and both["notes"]


def test_c_index_matches_bruteforce_formula_on_random_data():
    rng = np.random.default_rng(0)
    t = rng.integers(1, 30, 60).astype(float)
    e = rng.integers(0, 2, 60)
    r = rng.normal(size=60).round(1)  # rounding creates risk ties
    num = den = 0.0
    for i in range(60):
        for j in range(60):
            if i != j and e[i] and (t[i] < t[j] or (t[i] == t[j] and not e[j])):
                den += 1
                num += 1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0
    assert M.concordance_index(r, t, e)["c_index"] == pytest.approx(num / den)


def test_kaplan_meier_and_censoring_distribution_hand_case():
    t = [1, 2, 3, 4, 5]
    e = [1, 0, 1, 1, 0]
    times, s = M.kaplan_meier(t, e)
    # S: 4/5 after t=1; censoring at 2; 3 at risk at t=3 -> *2/3; 2 at risk at t=4 -> *1/2
    assert np.allclose(s[np.searchsorted(times, [1, 3, 4])], [0.8, 0.8 * 2 / 3, 0.8 * 2 / 3 / 2])
    ct, g = M.censoring_survival(t, e)
    assert ct.tolist() == [2, 5] and np.allclose(g, [0.75, 0.0])


def test_time_dependent_auc_hand_cases():
    # No censoring: plain case/control AUC.
    out = M.time_dependent_auc([4, 3, 1, 2], [1, 2, 3, 4], [1, 1, 1, 1], [2, 3])
    assert out["td_auc"] == pytest.approx([1.0, 2 / 3])
    # Censoring at 2 -> G(3-) = 0.75, so the case at t=3 weighs 4/3:
    # tau=3: cases t=1 (risk 1, beats no control) and t=3 (risk 3, beats control risk 2 not 5)
    out = M.time_dependent_auc([1, 4, 3, 2, 5], [1, 2, 3, 4, 5], [1, 0, 1, 1, 0], [3])
    assert out["td_auc"][0] == pytest.approx((4 / 3) / ((1 + 4 / 3) * 2))
    assert out["td_auc_mean"] == pytest.approx(2 / 7)


def test_brier_and_integrated_brier_hand_case():
    t, e = [1, 2, 3, 4, 5], [1, 0, 1, 1, 0]
    s = np.array([0.2, 0.5, 0.4, 0.9, 0.7])
    surv = np.stack([s, s], axis=1)  # same prediction at both grid times
    out = M.brier_scores(surv, t, e, [1.5, 3])
    # t=1.5: dead {0}: .2^2; alive {1,2,3,4} (G=1): .25+.36+.01+.09 -> 0.75/5
    # t=3: dead {0 (w 1), 2 (w 4/3)}; alive {3,4} / G(3)=.75; case 1 censored before -> 0
    bs3 = (0.04 + 0.16 * 4 / 3 + (0.01 + 0.09) / 0.75) / 5
    assert out["brier"] == pytest.approx([0.15, bs3])
    assert out["ibs"] == pytest.approx((0.15 + bs3) / 2)
    with pytest.raises(UserInputError, match="survival must be"):
        M.brier_scores(surv[:, :1], t, e, [1.5, 3])


def test_logrank_separates_groups():
    early = M.logrank_test([1, 2, 3, 4, 5, 6], [1] * 6, [20, 21, 22, 23, 24, 25], [1] * 6)
    same = M.logrank_test([1, 2, 3, 4], [1] * 4, [1, 2, 3, 4], [1] * 4)
    assert early["p_value"] < 0.01 and same["p_value"] == pytest.approx(1.0)


def test_prognosis_metrics_on_real_larynx_data():
    """lifelines' larynx table (real patients): stage must predict survival (C-index > 0.5)."""
    import csv

    from realdata import lifelines_larynx_csv

    rows = list(csv.DictReader(open(lifelines_larynx_csv())))
    time = np.array([float(r["time"]) for r in rows])
    event = np.array([int(r["death"]) for r in rows])
    # the table one-hot encodes stage (I is the reference level)
    stage = np.array([1 + int(r["Stage_II"]) + 2 * int(r["Stage_III"]) + 3 * int(r["Stage_IV"]) for r in rows], float)
    out = M.prognosis_metrics(stage, time, event)
    assert 0.6 < out["c_index"] < 0.75
    assert 0.55 < out["td_auc_mean"] < 0.9
    assert out["comparable_pairs"] > 1000
    # Reference value from torchsurv 0.2.0 `ConcordanceIndex` on the same risk (stage + age/100),
    # computed once outside the suite (torchsurv is not a dependency).
    age = np.array([float(r["age"]) for r in rows])
    assert M.concordance_index(stage + age / 100, time, event)["c_index"] == pytest.approx(0.6691928093056045, abs=1e-12)


def test_survival_input_errors_are_clear():
    with pytest.raises(UserInputError, match="event must be 0"):
        M.concordance_index([1, 2], [1, 2], [1, 3])
    with pytest.raises(UserInputError, match="risk has 1 values for 2 cases"):
        M.concordance_index([1], [1, 2], [1, 1])


# ---------------------------------------------------------------- segmentation


def _two_cases():
    pred = np.zeros((2, 4, 4, 4), np.int64)
    gt = np.zeros_like(pred)
    # case 0: class 1 gt 8 voxels, prediction 8 voxels overlapping 4; class 2: 2 false-positive voxels
    gt[0, 0:2, 0:2, 0:2] = 1
    pred[0, 1:3, 0:2, 0:2] = 1
    pred[0, 3, 3, 2:4] = 2
    # case 1: class 2 perfect (4 voxels); class 1 absent everywhere
    gt[1, 2:4, 2:4, 0] = 2
    pred[1, 2:4, 2:4, 0] = 2
    return pred, gt


def test_dice_excludes_background_and_aggregated_dice_counts_empty_cases():
    pred, gt = _two_cases()
    out = M.segmentation_metrics(pred, gt, ["GTVp", "GTVn"], hd95=False)
    assert out["dice"] == pytest.approx({"GTVp": 0.5, "GTVn": 1.0})  # empty-gt cases skipped
    # aggregated: GTVp 2*4/(8+8); GTVn 2*4/((2+0) + (4+4)) -- the false positives count
    assert out["aggregated_dice"] == pytest.approx({"GTVp": 0.5, "GTVn": 0.8})
    assert out["dice_mean"] == pytest.approx(0.75)
    assert any("skips 1 of 2" in n for n in out["notes"])


def test_segmentation_accumulates_over_updates_like_one_batch():
    pred, gt = _two_cases()
    acc = M.SegmentationMetrics(["GTVp", "GTVn"], hd95=False)
    acc.update(pred[0], gt[0])
    acc.update(torch.from_numpy(pred[1:]), torch.from_numpy(gt[1:]))
    assert acc.compute()["aggregated_dice"] == pytest.approx({"GTVp": 0.5, "GTVn": 0.8})


def test_hd95_uses_spacing_on_the_right_axis_and_nan_for_empty():
    pred = np.zeros((1, 6, 6, 6), np.int64)
    gt = np.zeros_like(pred)
    gt[0, 2, 2, 1] = 1
    pred[0, 2, 2, 4] = 1  # 3 voxels apart along W
    gt[0, 0, 0, 0] = 2  # class 2: prediction empty
    out = M.segmentation_metrics(pred, gt, ["GTVp", "GTVn"], spacing=(1.0, 1.0, 2.0))
    assert out["hd95"]["GTVp"] == pytest.approx(6.0)
    assert math.isnan(out["hd95"]["GTVn"])
    assert out["hd95_mean"] == pytest.approx(6.0)
    out = M.segmentation_metrics(pred, gt, ["GTVp", "GTVn"], spacing=(2.0, 1.0, 1.0))
    assert out["hd95"]["GTVp"] == pytest.approx(3.0)


def test_segmentation_input_errors():
    with pytest.raises(UserInputError, match=r"values must be in 0..2"):
        M.segmentation_metrics(np.full((4, 4, 4), 3), np.zeros((4, 4, 4), int), ["GTVp", "GTVn"])
    with pytest.raises(UserInputError, match="must both be"):
        M.segmentation_metrics(np.zeros((4, 4, 4), int), np.zeros((4, 4, 5), int), ["GTVp"])


def test_main_metric_table():
    assert M.main_metric("prognosis") == ("c_index", True)
    with pytest.raises(UserInputError, match="segmentaton"):
        M.main_metric("segmentaton")


# ---------------------------------------------------------------- evaluate modules (offline)


@pytest.fixture(scope="module")
def offline_modules(tmp_path_factory):
    """evaluate copies module scripts into its modules cache: keep that copy inside a tmp folder.

    Module-scoped: Python imports the `evaluate_modules` package once per process, so every load in
    this file must use the same folder.
    """
    import os

    import evaluate.config

    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest: no Hub access possible
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path_factory.mktemp("hf_modules"))
        yield


def test_c_index_evaluate_module_loads_offline_and_matches(offline_modules):
    from unicon_hf.metrics import available_metrics, load_metric

    assert {"c_index", "dice"} <= set(available_metrics())
    metric = load_metric("c_index", keep_in_memory=True)
    # streamed in two batches, as an eval loop would
    metric.add_batch(predictions=[4, 3], references=[1, 2], events=[1, 1])
    metric.add_batch(predictions=[3, 1], references=[3, 4], events=[0, 1])
    out = metric.compute()
    assert out["c_index"] == pytest.approx(4.5 / 5) and out["comparable"] == 5


def test_dice_evaluate_module_matches_direct_computation(offline_modules):
    from unicon_hf.metrics import load_metric

    pred, gt = _two_cases()
    metric = load_metric("dice", keep_in_memory=True)
    out = metric.compute(predictions=[p.ravel() for p in pred], references=[g.ravel() for g in gt],
                         class_names=["GTVp", "GTVn"])
    assert out["aggregated_dice"] == pytest.approx({"GTVp": 0.5, "GTVn": 0.8})
    assert out["dice"] == pytest.approx({"GTVp": 0.5, "GTVn": 1.0})


def test_load_metric_unknown_name_suggests():
    from unicon_hf.metrics import load_metric

    with pytest.raises(UserInputError, match="Did you mean 'c_index'"):
        load_metric("cindex")
