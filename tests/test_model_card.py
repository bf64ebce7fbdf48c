"""Model cards: front matter and model-index from the report, every matrix value on the card, recipe cards
without numbers, clear errors, and the committed cards in hub_cards/ up to date."""

import json
import math
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from unicon_hf import UniconModel, UserInputError
from unicon_hf.cli import main
from unicon_hf.model_card import render_card, render_recipe_card
from unicon_hf.training.continual_matrix import ContinualMatrix

from test_predict import save_repo

ROOT = Path(__file__).resolve().parents[1]
# Main metric per task after each stage (rows: stages; NaN: not learned yet / not measurable).
VALUES = {"findings": [0.6123, 0.6123, 0.6123, 0.6123], "rfs": [None, 0.7071, 0.7071, 0.7071],
          "seg_ct": [None, None, 0.4219, 0.4219], "seg_ctpet": [None, None, None, 0.5377]}


def make_report(model, values=VALUES):
    """A continual report of the shape scripts/continual.py writes, for the tasks of `model`."""
    matrix = ContinualMatrix()
    for stage, task in enumerate(values):
        index = matrix.add_stage(f"{stage + 1:02d}_{task}", task, model.task_spec(task).kind)
        part = model.task_parameters(task)
        matrix.set_stage_cost(index, params_added={"stem": part.stem_parameters, "lora": part.lora_parameters,
                                                   "head": part.head_parameters, "total": part.total_parameters,
                                                   "bytes": part.bytes}, seconds=1.5 + stage)
        for name, row in values.items():
            if stage < list(values).index(name):
                continue
            value = row[stage]
            matrix.record(stage, name, math.nan if value is None else value)
    report = matrix.to_dict()
    report["plan"] = {"stages": [{"task": {"name": t}, "data": {"kind": "ct-rate" if t == "findings" else "hecktor",
                                                              "phantoms": {"n": 4}}} for t in values]}
    return report


def make_model_repo(folder, values=VALUES):
    """The test model saved as a repo with its report.json (as the training run copies it)."""
    save_repo(folder)
    model = UniconModel.from_pretrained(folder)
    report = make_report(model, values)
    (folder / "report.json").write_text(json.dumps(report, allow_nan=False))
    return folder, report


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_model_repo(tmp_path_factory.mktemp("card") / "unicon-demo")


def test_card_carries_the_report_numbers(repo):
    folder, report = repo
    text = render_card(folder, repo_id="org/unicon-demo")
    card = ModelCard(text)
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-segmentation"
    assert {"medical", "ct", "pet", "3d", "continual-learning"} <= set(data["tags"])
    # model-index: each task's value after the last stage, exactly as in the report.
    results = {r.task_name.split("(")[-1].rstrip(")"): r for r in card.data.eval_results}
    assert set(results) == set(VALUES)
    for name, row in VALUES.items():
        assert results[name].metric_value == row[-1]
    assert results["findings"].dataset_name.startswith("Synthetic phantoms in the ct-rate layout")
    # The forgetting matrix: every measured value, formatted as in report.md, and '—' where none.
    for row in report["matrix"]:
        for value in row:
            if value is not None:
                assert f"{value:.4f}" in text
    assert "| 0: 01_findings | 0.6123 | — | — | — |" in text
    assert "Backward transfer (BWT, 0 = no forgetting): **0.0000**" in text
    assert "Not for clinical use" in text and "arXiv [2508.14024]" in text
    assert "synthetic phantoms only" in text


def test_card_task_table_and_input_spec(repo):
    folder, _ = repo
    text = render_card(folder, repo_id="org/unicon-demo")
    model = UniconModel.from_pretrained(folder)
    for name in model.tasks:
        part = model.task_parameters(name)
        line = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        # stem and LoRA counts from the safetensors header agree with the loaded model's parameters
        assert f"/ {part.lora_parameters:,} /" in line, line
        assert f"({part.stem_parameters:,} /" in line, line
        assert f"stage {list(VALUES).index(name)}" in line
    assert "| `seg_ctpet` | segmentation | CT + PET | background, GTVp, GTVn |" in text
    assert "resampled to 8 x 8 x 8 mm" in text  # the saved processor's spacing
    assert "sliding window of 16 x 16 x 16 voxels" in text
    assert "CT first, then PET" in text and "reoriented to `RAS`" in text


def test_unmeasured_values_stay_out_of_the_model_index(tmp_path):
    values = {**VALUES, "findings": [None, None, None, None]}
    folder, _ = make_model_repo(tmp_path / "m", values)
    card = ModelCard(render_card(folder))
    assert "findings" not in {r.task_name for r in card.data.eval_results}
    assert len(card.data.eval_results) == 3
    assert "| 3: 04_seg_ctpet | — | 0.7071 | 0.4219 | 0.5377 |" in str(card)


def test_card_needs_a_report_unless_told(repo, tmp_path):
    folder, _ = repo
    bare = tmp_path / "bare"
    save_repo(bare)
    with pytest.raises(UserInputError, match="no report.json.*--no-report"):
        render_card(bare)
    card = ModelCard(render_card(bare, require_report=False))
    assert card.data.eval_results is None
    assert "Forgetting matrix" not in str(card)
    wrong = json.loads((folder / "report.json").read_text())
    wrong["tasks"][0]["name"] = "other"
    with pytest.raises(UserInputError, match=r"task\(s\) \['other'\]"):
        render_card(folder, report=wrong)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserInputError, match="broken.json is not valid JSON"):
        render_card(folder, report=tmp_path / "broken.json")


def test_recipe_card_has_no_numbers():
    text = render_recipe_card(ROOT / "configs" / "hecktor_paper.yaml", "org/unicon-ct-pet")
    card = ModelCard(text)
    assert card.data.eval_results is None and "\nmodel-index:" not in text
    assert "recipe, not a trained model" in text and "no results" in text
    plan = yaml.safe_load((ROOT / "configs" / "hecktor_paper.yaml").read_text())
    for stage in plan["stages"]:
        assert f"`{stage['task']['name']}`" in text
    assert "${HECKTOR_ROOT}" in text and "resampled to 0.75 x 0.75 x 1.5 mm" in text
    assert "Forgetting matrix" not in text


def test_cli_card_writes_readme_and_rejects_bad_input(repo, tmp_path, capsys):
    folder, _ = repo
    out = tmp_path / "README.md"
    assert main(["card", str(folder), "--repo-id", "org/x", "--output", str(out)]) == 0
    assert ModelCard.load(out).data.model_name == "x"
    assert main(["card", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["card", "--recipe", str(ROOT / "configs" / "hecktor_paper.yaml")]) == 2


def test_committed_recipe_card_is_current():
    """hub_cards/unicon-ct-pet/README.md is regenerated from the plan (see hub_cards/README.md)."""
    committed = ROOT / "hub_cards" / "unicon-ct-pet" / "README.md"
    expected = render_recipe_card(ROOT / "configs" / "hecktor_paper.yaml", "org/unicon-ct-pet")
    assert committed.read_text() == expected, "regenerate it: see hub_cards/README.md"


def test_committed_demo_card_carries_its_report():
    """hub_cards/unicon-demo/README.md was generated from the demo run whose report.json sits beside it."""
    folder = ROOT / "hub_cards" / "unicon-demo"
    report = json.loads((folder / "report.json").read_text())
    card = ModelCard.load(folder / "README.md")
    text = str(card)
    for row in report["matrix"]:
        for value in row:
            if value is not None:
                assert f"{value:.4f}" in text
    final = {t["name"]: v for t, v in zip(report["tasks"], report["matrix"][-1]) if v is not None}
    assert {r.task_name.split("(")[-1].rstrip(")"): r.metric_value for r in card.data.eval_results} == final
    assert "synthetic phantoms only" in text and "Not for clinical use" in text
