"""Stage plans: the shipped configs validate, bad plans fail before training naming stage and field."""

import copy
from pathlib import Path

import pytest
import yaml

from unicon_hf.errors import UserInputError
from unicon_hf.training.plan import Plan, load_plan, save_plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _minimal(tmp_path) -> dict:
    """A small valid plan dict with a real HECKTOR-like root on disk."""
    root = tmp_path / "hecktor"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "hecktor2022_clinical_info_training.csv").write_text("PatientID,Relapse,RFS\n")
    return {
        "seed": 3,
        "model": {"from_pretrained": "org/unicon-ct"},
        "stages": [
            {"task": {"name": "prog", "kind": "prognosis", "modalities": ["ct"], "lora": {"r": 2, "alpha": 32}},
             "data": {"kind": "hecktor", "root": str(root)},
             "train": {"max_steps": 10, "learning_rate": 1.0e-4}},
            {"task": {"name": "seg_ct", "kind": "segmentation", "labels": ["GTVp", "GTVn"],
                      "stem": {"patch_size": [16, 16, 16], "in_channels": 1}},
             "data": {"kind": "hecktor", "root": str(root), "fold": 1},
             "train": {"epochs": 2, "early_stopping": {"metric": "dice_mean", "patience": 2}}},
        ],
    }


def _errors(data, **kwargs) -> str:
    with pytest.raises(UserInputError) as info:
        Plan.from_dict(data, source="test.yaml", **kwargs)
    return str(info.value)


def test_demo_plan_validates_with_five_stages_and_round_trips(tmp_path):
    plan = load_plan(CONFIGS / "demo.yaml")
    assert plan.task_names() == ["findings", "prognosis", "prognosis_text", "seg_ct", "seg_ctpet"]
    assert plan.model.pretrain is not None and plan.model.pretrain.data.phantoms.n >= 2
    ctpet = plan.stages[4].task
    assert ctpet["stem"]["in_channels"] == 2 and ctpet["head"]["pet_branch"] is True
    assert ctpet["head"]["num_classes"] == 3  # background + GTVp + GTVn
    assert plan.stages[1].task["head"]["survival_head"] == "mtlr"
    assert plan.stages[2].task["head"]["inputs"] == ["text"]  # the text-only comparison
    save_plan(plan, tmp_path / "again.yaml")
    again = load_plan(tmp_path / "again.yaml")
    assert again.to_dict() == plan.to_dict()


def test_paper_plan_validates_with_paper_recipe(monkeypatch, tmp_path):
    for var in ("CTCLIP_DIR", "HECKTOR_ROOT", "CTRATE_ROOT"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    plan = load_plan(CONFIGS / "hecktor_paper.yaml", check_paths=False)
    prog, seg_ct, seg_ctpet = (s.task for s in plan.stages[1:])
    assert prog["lora"] == {"r": 2, "alpha": 32, "dropout": 0.2, "target_modules": ["q_proj", "kv_proj", "out_proj"]}
    assert prog["head"]["num_bins"] == 12 and prog["head"]["survival_head"] == "mtlr"
    assert seg_ct["lora"]["r"] == 8 and seg_ct["stem"] == {"patch_size": [16, 16, 16], "in_channels": 1}
    assert seg_ct["input_size"] == [96, 96, 96]
    assert seg_ctpet["stem"]["in_channels"] == 2 and seg_ctpet["head"]["pet_branch"]
    assert all(s.train.learning_rate == 1e-4 and s.train.weight_decay == 1e-5 for s in plan.stages[1:])
    assert len(plan.stages[0].task["labels"]) == 18
    assert plan.model.from_pretrained == str(tmp_path / "ctclip_dir")  # env var expanded


def test_paper_plan_with_paths_checked_names_the_missing_paths(monkeypatch, tmp_path):
    monkeypatch.delenv("HECKTOR_ROOT", raising=False)
    monkeypatch.setenv("CTCLIP_DIR", str(tmp_path / "nope"))
    monkeypatch.setenv("CTRATE_ROOT", str(tmp_path))
    message = str(pytest.raises(UserInputError, load_plan, CONFIGS / "hecktor_paper.yaml").value)
    assert f"from_pretrained folder '{tmp_path / 'nope'}' does not exist" in message
    assert "stage 1 ('prognosis_ct_ehr'): data.root '${HECKTOR_ROOT}' uses environment variable(s) HECKTOR_ROOT" in message


def test_minimal_plan_defaults(tmp_path):
    plan = Plan.from_dict(_minimal(tmp_path))
    prog, seg = plan.stages
    assert prog.data.val_fraction == 0.2 and seg.data.fold == 1 and seg.data.val_fraction is None
    assert prog.task["lora"]["target_modules"] is None  # the task kind picks its default targets
    assert seg.task["input_size"] == [96, 96, 96]
    assert seg.train.early_stopping.mode == "max"  # inferred from the metric
    assert Plan.from_dict(plan.to_dict()).to_dict() == plan.to_dict()


def test_unknown_task_kind_names_stage_field_and_suggests(tmp_path):
    data = _minimal(tmp_path)
    data["stages"][1]["task"]["kind"] = "segmentaton"
    message = _errors(data)
    assert ("stage 1 ('seg_ct'): task.kind 'segmentaton' is not one of zero_shot_classification, prognosis, "
            "segmentation (did you mean 'segmentation'?)") in message


def test_missing_data_path_says_which_and_that_it_does_not_exist(tmp_path):
    data = _minimal(tmp_path)
    data["stages"][0]["data"]["root"] = str(tmp_path / "missing")
    assert f"stage 0 ('prog'): data.root '{tmp_path / 'missing'}' does not exist" in _errors(data)
    # and a root that exists but is not a HECKTOR folder
    (tmp_path / "empty").mkdir()
    data["stages"][0]["data"]["root"] = str(tmp_path / "empty")
    assert "is not a HECKTOR 2022 folder" in _errors(data) and "imagesTr" in _errors(data)
    # check_paths=False validates a plan written for another machine
    data["stages"][0]["data"]["root"] = str(tmp_path / "missing")
    Plan.from_dict(data, check_paths=False)


def test_repeated_task_name_is_rejected(tmp_path):
    data = _minimal(tmp_path)
    data["stages"][1]["task"]["name"] = "prog"
    data["stages"][1]["task"]["kind"] = "prognosis"
    data["stages"][1]["task"].pop("stem")
    data["stages"][1]["train"]["early_stopping"]["metric"] = "c_index"
    assert "stage 1 ('prog'): task.name 'prog' repeats the task of stage 0" in _errors(data)


def test_unknown_keys_get_closest_name(tmp_path):
    data = _minimal(tmp_path)
    data["stages"][0]["train"]["learning_rte"] = 1e-3
    data["stages"][0]["task"]["lroa"] = {"r": 2}
    data["stgaes"] = []
    message = _errors(data)
    assert "stage 0 ('prog'): unknown key train.'learning_rte' (did you mean 'learning_rate'?)" in message
    assert "unknown key task.'lroa' (did you mean 'lora'?)" in message
    assert "plan: unknown key 'stgaes' (did you mean 'stages'?)" in message
    assert message.startswith("3 problems in plan test.yaml")  # all reported at once


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda s: s["task"].update(modalities=["ct", "mri"]), "task.modalities must be a list drawn from ct, pet"),
        (lambda s: s["task"].update(modalities=["pet", "ct"]), "CT first, then PET"),
        (lambda s: s["task"].update(labels=[]), "task.labels is required for segmentation"),
        (lambda s: s["task"].update(labels=["GTVp", "background"]), "'background' can only be the first label"),
        (lambda s: s["task"].update(lora={"r": 0}), "task.lora.r (rank) must be a positive integer, got 0"),
        (lambda s: s["task"].update(modalities=["ct", "pet"]), "task.stem.in_channels must equal the number of modalities (2"),
        (lambda s: s["task"].update(input_size=[96, 96, 90]), "must be divisible by stem.patch_size"),
        (lambda s: s["task"].update(head={"num_classes": 4}), "task.head.num_classes 4 must be len(labels) + 1 = 3"),
        (lambda s: s["task"].update(head={"featuresize": 8}), "task.head: Unknown segmentation head field(s) ['featuresize']"),
        (lambda s: s["data"].update(kind="ct-rate"), "data.kind 'ct-rate' cannot feed a segmentation task"),
        (lambda s: s["data"].update(val_fraction=0.2), "give val_fraction or fold, not both"),
        (lambda s: s["data"].update(phantoms={"n": 4}), "exactly one of root"),
        (lambda s: s["train"].update(max_steps=5), "exactly one of max_steps or epochs"),
        (lambda s: s["train"].update(scheduler="cosin"), "train.scheduler 'cosin' is not one of cosine, linear, constant (did you mean 'cosine'?)"),
        (lambda s: s["train"].update(mixed_precision="bf32"), "train.mixed_precision 'bf32'"),
        (lambda s: s["train"].update(learning_rate="1e-4"), "write 1.0e-4"),
        (lambda s: s["train"]["early_stopping"].update(metric="c_index"), "early_stopping.metric 'c_index' is not one of loss, dice_mean"),
        (lambda s: s.update(eval={"main_metric": "dice"}), "eval.main_metric 'dice'"),
    ],
)
def test_stage_field_errors(tmp_path, edit, expected):
    data = _minimal(tmp_path)
    edit(data["stages"][1])
    message = _errors(data)
    assert expected in message
    assert "stage 1" in message


def test_model_errors(tmp_path):
    data = _minimal(tmp_path)
    data["model"] = {"from_pretrained": "org/x", "config": {}}
    assert "model: give exactly one of from_pretrained" in _errors(data)
    data["model"] = {"config": {"projection_dim": -1}}
    assert "model.config: not a valid UniconConfig" in _errors(data)
    data["model"] = {"config": {}, "pretrain": {"data": {"kind": "hecktor", "phantoms": {"n": 8}}, "train": {"max_steps": 5}}}
    assert "model.pretrain: data.kind must be 'ct-rate'" in _errors(data)


def test_phantom_data_needs_no_paths(tmp_path):
    data = _minimal(tmp_path)
    data["stages"][0]["data"] = {"kind": "hecktor", "phantoms": {"n": 6, "seed": 1, "shape": [32, 32, 32]}}
    plan = Plan.from_dict(data)
    assert plan.stages[0].data.phantoms.shape == [32, 32, 32]
    data["stages"][0]["data"]["phantoms"]["n"] = 1
    assert "data.phantoms.n must be an integer >= 2" in _errors(data)


def test_load_plan_file_errors(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_plan(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [\n")
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_plan(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(UserInputError, match="expected a mapping"):
        load_plan(listing)


def test_plan_dict_is_not_mutated(tmp_path):
    data = _minimal(tmp_path)
    before = copy.deepcopy(data)
    Plan.from_dict(data)
    assert data == before
