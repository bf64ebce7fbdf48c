"""Report writer: JSON keys and numbers, Markdown matrix, real PNG plots of sensible size."""

import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from unicon_hf.errors import UserInputError
from unicon_hf.training.continual_matrix import ContinualMatrix
from unicon_hf.training.report import markdown_matrix, write_report


def _matrix() -> ContinualMatrix:
    m = ContinualMatrix()
    m.add_stage("clip", "findings", "zero_shot_classification")
    m.record(0, "findings", 0.8125)
    m.set_stage_cost(0, {"trainable": 0, "total": 0, "bytes": 0}, seconds=0.5)
    m.add_stage("prognosis", "prog", "prognosis")
    m.record(1, "findings", 0.8125)
    m.record(1, "prog", 0.6875, details={"c_index": 0.6875, "td_auc_mean": 0.7, "ibs": float("nan"),
                                          "notes": ["integrated Brier score is NaN: needs >= 2 grid times"]})
    m.set_stage_cost(1, {"trainable": 1234, "total": 1300, "bytes": 5200}, seconds=12.25)
    m.add_stage("seg ct", "seg_ct", "segmentation")
    m.record(2, "findings", 0.8125)
    m.record(2, "prog", 0.6875)
    m.record(2, "seg_ct", 0.5432, details={"dice": {"GTVp": 0.6, "GTVn": 0.4864}, "dice_mean": 0.5432,
                                            "hd95": {"GTVp": 4.0, "GTVn": float("nan")}, "notes": []})
    m.set_stage_cost(2, {"trainable": 99999, "total": 100500, "bytes": 402000}, seconds=30.0)
    return m


def _sphere_case(shape=(24, 32, 32)):
    d, h, w = np.indices(shape)
    label = (((d - 12) ** 2 + (h - 16) ** 2 + (w - 14) ** 2) <= 25).astype(np.int64)
    label[(((d - 10) ** 2 + (h - 8) ** 2 + (w - 24) ** 2) <= 9)] = 2
    prediction = np.roll(label, 2, axis=2)
    image = np.random.default_rng(0).normal(0, 0.1, shape) + 0.5 * (label > 0)
    return image, label, prediction


def _png(path):
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    return img


def test_write_report_files_json_and_markdown(tmp_path):
    rng = np.random.default_rng(1)
    risk = rng.normal(size=60)
    time = rng.exponential(400 * np.exp(-risk))  # higher risk -> earlier event
    event = rng.random(60) < 0.7
    curves = {"prognosis": {"steps": list(range(1, 51)), "loss": list(np.linspace(2, 1, 50)),
                            "eval_steps": [10, 20, 30, 40, 50], "eval_metric": [0.55, 0.6, 0.62, 0.66, 0.69],
                            "eval_name": "c_index"},
              "seg ct": {"steps": list(range(1, 31)), "loss": list(np.linspace(1.5, 0.4, 30))}}
    image, label, prediction = _sphere_case()
    files = write_report(
        tmp_path / "out", _matrix().to_dict(), curves=curves,
        survival={"prog": {"risk": risk, "time": time, "event": event}},
        overlays=[{"name": "case0", "image": image, "label": label, "prediction": prediction,
                   "spacing": (3.0, 1.0, 1.0), "class_names": ["GTVp", "GTVn"]}],
    )
    out = tmp_path / "out"
    for name in ("report.json", "report.md", "forgetting_matrix.png", "learning_curves.png", "km_prog.png",
                 "overlay_case0.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*tmp"))  # no temporary leftovers

    data = json.loads((out / "report.json").read_text())
    assert {"stages", "tasks", "matrix", "bwt", "params_added", "seconds", "plots"} <= set(data)
    assert data["matrix"][2] == [0.8125, 0.6875, 0.5432]
    assert data["matrix"][0][1] is None
    assert data["bwt"] == 0.0
    assert data["params_added"][1] == {"trainable": 1234, "total": 1300, "bytes": 5200}
    assert data["seconds"] == [0.5, 12.25, 30.0]
    assert data["details"]["1"]["prog"]["ibs"] is None
    assert set(data["plots"]) == {"forgetting_matrix", "learning_curves", "km_prog", "overlay_case0"}

    md = (out / "report.md").read_text()
    assert markdown_matrix(data) in md
    assert "| 2: seg ct | 0.8125 | 0.6875 | 0.5432 |" in md
    assert "| 1: prognosis | 0.8125 | 0.6875 | — |" in md
    assert "Backward transfer (BWT, 0 = no forgetting): **0.0000**" in md
    assert "| 1: prognosis | prog | prognosis | 1,234 | 1,300 | 5.1 KB | 12.2 |" in md
    assert "| dice.GTVn | 0.4864 |" in md and "> integrated Brier score is NaN" in md
    assert "![Kaplan-Meier, prog](km_prog.png)" in md

    sizes = {name: _png(files[name]).shape for name in ("forgetting_matrix", "learning_curves", "km_prog",
                                                        "overlay_case0")}
    for name, (h, w, _) in sizes.items():
        assert 150 < h < 2500 and 250 < w < 3000, (name, h, w)
    assert sizes["learning_curves"][1] > sizes["km_prog"][1]  # two panels are wider than one


def test_plots_have_content_not_blank(tmp_path):
    image, label, prediction = _sphere_case()
    files = write_report(tmp_path, _matrix().to_dict(), overlays=[
        {"name": "c", "image": image, "label": label, "prediction": prediction}])
    for name in ("forgetting_matrix", "overlay_c"):
        img = _png(files[name])[..., :3]
        assert img.std() > 0.05  # many distinct pixel values: something was drawn
    # contour colours of class 1 (green truth) appear in the overlay
    overlay = _png(files["overlay_c"])[..., :3]
    green = (overlay[..., 1] > 0.5) & (overlay[..., 0] < 0.3) & (overlay[..., 2] < 0.3)
    assert green.sum() > 20


def test_report_can_be_written_after_each_stage_and_replaced(tmp_path):
    m = ContinualMatrix()
    m.add_stage("prognosis", "prog", "prognosis")
    m.record(0, "prog", 0.61)
    write_report(tmp_path, m.to_dict())
    first = json.loads((tmp_path / "report.json").read_text())
    assert first["bwt"] is None and first["matrix"] == [[0.61]]
    m.add_stage("seg", "seg", "segmentation")
    m.record(1, "prog", 0.61)
    m.record(1, "seg", 0.5)
    write_report(tmp_path, m.to_dict())
    assert json.loads((tmp_path / "report.json").read_text())["bwt"] == 0.0


def test_report_input_errors(tmp_path):
    with pytest.raises(UserInputError, match=r"missing key\(s\) \['bwt'"):
        write_report(tmp_path, {"stages": [], "tasks": [], "matrix": []})
    with pytest.raises(UserInputError, match="same \\(D, H, W\\) volume"):
        write_report(tmp_path, _matrix().to_dict(), overlays=[
            {"name": "x", "image": np.zeros((4, 4, 4)), "label": np.zeros((4, 4, 5)), "prediction": np.zeros((4, 4, 4))}])


def test_matrix_heatmap_leaves_unlearned_cells_grey(tmp_path):
    m = ContinualMatrix()
    m.add_stage("a", "prog", "prognosis")
    m.record(0, "prog", 0.7)
    m.add_stage("b", "seg", "segmentation", metric="hd95_mean", higher_is_better=False)
    m.record(1, "prog", 0.7)
    m.record(1, "seg", 7.5)
    files = write_report(tmp_path, m.to_dict())
    img = _png(files["forgetting_matrix"])[..., :3]
    grey = (np.abs(img - 0xDD / 255).max(axis=-1) < 0.02).sum()
    assert grey > 500  # the (stage 0, seg) cell
    assert json.loads((tmp_path / "report.json").read_text())["average"] == 0.7  # HD95 not averaged in
