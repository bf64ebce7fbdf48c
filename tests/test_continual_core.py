"""Continual expansion: tasks as stems + LoRA adapters + heads, with zero forgetting by construction."""

import copy

import pytest
import torch

from unicon_hf import UniconModel, UserInputError
from unicon_hf.data.tokenizer import build_tokenizer
from unicon_hf.tasks import PROMPT_TEMPLATES

from tiny import tiny_config

FINDINGS = ["Lung nodule", "Pleural effusion", "Cardiomegaly"]
SEG_LABELS = ["background", "GTVp", "GTVn"]
SMALL_PROGNOSIS_HEAD = {"adapter_hidden_size": 16, "adapter_output_size": 16, "fusion_hidden_sizes": [16, 8],
                        "num_bins": 4, "dropout": 0.0}


def prognosis_spec(name="prognosis", **head):
    return {"name": name, "kind": "prognosis", "modalities": ["ct"], "lora": {"r": 2, "alpha": 32, "dropout": 0.2},
            "head": {**SMALL_PROGNOSIS_HEAD, **head}}


def segmentation_spec(name, modalities):
    return {"name": name, "kind": "segmentation", "modalities": modalities, "labels": SEG_LABELS,
            "stem": {"patch_size": [8, 8, 8], "in_channels": len(modalities)}, "input_size": [16, 16, 16],
            "lora": {"r": 4, "alpha": 32, "dropout": 0.2}, "head": {"feature_size": 4}}


@pytest.fixture(scope="module")
def tokenizer():
    texts = [template.format(label=f) for f in FINDINGS for template in PROMPT_TEMPLATES]
    return build_tokenizer(texts + ["Clinical summary: a patient with a tumour."], vocab_size=64)


def new_model(tokenizer):
    torch.manual_seed(0)
    return UniconModel(tiny_config(text={"vocab_size": len(tokenizer)})).eval()


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ct = torch.randn(2, 1, 16, 16, 16, generator=g)
    pet = torch.rand(2, 1, 16, 16, 16, generator=g) * 5
    labels = torch.randint(0, 3, (2, 16, 16, 16), generator=g)
    input_ids = torch.randint(5, 40, (2, 10), generator=g)
    return {"ct": ct, "ctpet": torch.cat([ct, pet], 1), "labels": labels, "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids), "event_time": torch.tensor([100.0, 400.0]),
            "event": torch.tensor([1.0, 0.0])}


def task_inputs(name, data):
    if name == "prognosis":
        return dict(pixel_values=data["ct"][:, :, :8], input_ids=data["input_ids"], attention_mask=data["attention_mask"])
    if name == "seg_ct":
        return dict(pixel_values=data["ct"])
    if name == "seg_ctpet":
        return dict(pixel_values=data["ctpet"])
    return dict(pixel_values=data["ct"][:, :, :8])  # zero-shot: the foundation's 8x16x16 input


def snapshot(model, data):
    """Every task's outputs and the base zero-shot logits."""
    out = {}
    with torch.no_grad():
        out["base"] = model(pixel_values=data["ct"][:, :, :8], input_ids=data["input_ids"],
                            attention_mask=data["attention_mask"]).logits_per_image.clone()
        for name in model.tasks:
            result = model(task=name, **task_inputs(name, data))
            key = {"segmentation": "logits", "prognosis": "logits", "zero_shot_classification": "probabilities"}
            out[name] = result[key[model.task_spec(name).kind]].clone()
    return out


def foundation_state(model):
    return {k.replace(".base_layer.", "."): v.clone() for k, v in model.state_dict().items()
            if not k.startswith(("task_stems.", "task_heads.")) and ".lora_" not in k}


def train(model, name, data, steps=3):
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable, "the new task has nothing to train"
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    for _ in range(steps):
        if name == "prognosis":
            out = model(task=name, **task_inputs(name, data), event_time=data["event_time"], event=data["event"])
        else:
            out = model(task=name, **task_inputs(name, data), labels=data["labels"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    return out.loss.item()


@pytest.fixture(scope="module")
def grown(tokenizer):
    """A tiny model grown through zero-shot -> prognosis -> segmentation CT -> segmentation CT+PET."""
    model = new_model(tokenizer)
    data = batch()
    history = {"start_foundation": foundation_state(model), "snapshots": [], "additions": []}
    history["additions"].append(model.add_task(
        {"name": "findings", "kind": "zero_shot_classification", "labels": FINDINGS}, tokenizer=tokenizer))
    history["snapshots"].append(snapshot(model, data))
    for spec in (prognosis_spec(), segmentation_spec("seg_ct", ["ct"]), segmentation_spec("seg_ctpet", ["ct", "pet"])):
        before = snapshot(model, data)
        addition = model.add_task(spec)
        if spec["kind"] == "prognosis":
            model.task_heads["prognosis"].set_time_bins(torch.tensor([50.0, 100, 200, 400, 800]), torch.ones(5))
        trained_parameters = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
        train(model, spec["name"], data)
        changed = [n for n, p in model.named_parameters() if n in trained_parameters and not torch.equal(p, trained_parameters[n])]
        after = snapshot(model, data)
        history["snapshots"].append(after)
        history["additions"].append(addition)
        history.setdefault("checks", []).append((spec["name"], before, after, changed))
    history["model"] = model
    history["data"] = data
    return history


def test_every_earlier_task_and_the_base_logits_are_bit_identical_after_each_stage(grown):
    for name, before, after, changed in grown["checks"]:
        assert changed, f"training {name} changed none of its parameters"
        for earlier, value in before.items():
            assert torch.equal(after[earlier], value), f"{earlier} changed while training {name}"


def test_foundation_weights_are_bit_identical_to_the_start(grown):
    now = foundation_state(grown["model"])
    assert now.keys() == grown["start_foundation"].keys()
    for key, value in grown["start_foundation"].items():
        assert torch.equal(now[key], value), key


def test_only_the_new_task_trains(grown, tokenizer):
    model = copy.deepcopy(grown["model"])
    model.add_task(prognosis_spec("prognosis_b"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("prognosis_b" in n for n in trainable)


def test_parameter_counts_are_reported(grown):
    additions = {a.name: a for a in grown["additions"]}
    assert additions["findings"].total_parameters == 0  # prompts only: no weights
    assert additions["prognosis"].stem_parameters == 0 and additions["prognosis"].lora_parameters > 0
    assert additions["seg_ctpet"].stem_parameters > additions["seg_ct"].stem_parameters > 0
    assert additions["seg_ct"].head_parameters > 0
    assert "parameters (stem" in str(additions["seg_ct"])


def test_adapter_budget_for_a_ctclip_v2_sized_encoder():
    from unicon_hf import UniconConfig

    with torch.device("meta"):  # counts only: no memory for the 300M-parameter model
        model = UniconModel(UniconConfig())
        seg = model.add_task({"name": "seg_ctpet", "kind": "segmentation", "modalities": ["ct", "pet"],
                              "labels": SEG_LABELS, "stem": {"patch_size": [16, 16, 16], "in_channels": 2},
                              "input_size": [96, 96, 96], "lora": {"r": 8}})
        prognosis = model.add_task({"name": "prognosis", "kind": "prognosis", "lora": {"r": 2}})
    # The 2-channel 16^3 stem (4.2M) dominates; LoRA r=8 on the 4 spatial layers is 82k.
    assert seg.lora_parameters == 4 * (8 * (512 + 256) + 8 * (512 + 512) + 8 * (256 + 512))
    assert seg.adapter_fraction < 0.03
    assert prognosis.adapter_fraction < 0.001


def test_save_load_round_trip_is_bit_exact_for_all_tasks(grown, tmp_path):
    model = grown["model"]
    model.save_pretrained(tmp_path / "grown")
    reloaded = UniconModel.from_pretrained(tmp_path / "grown").eval()
    assert reloaded.tasks == model.tasks
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    a, b = snapshot(model, grown["data"]), snapshot(reloaded, grown["data"])
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_export_import_of_one_task_reproduces_its_outputs(grown, tokenizer, tmp_path):
    model = grown["model"]
    package = model.export_task("seg_ctpet", tmp_path / "pkg")
    assert {p.name for p in package.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                    "task_parts.safetensors", "task.json"}
    other = new_model(tokenizer)  # another copy of the same foundation
    other.import_task(package)
    data = grown["data"]
    with torch.no_grad():
        a = model(task="seg_ctpet", pixel_values=data["ctpet"]).logits
        b = other(task="seg_ctpet", pixel_values=data["ctpet"]).logits
    assert torch.equal(a, b)
    # the package is PEFT's format: a LoraConfig reads it
    from peft import LoraConfig
    assert LoraConfig.from_pretrained(package).r == 4


def test_import_into_another_foundation_is_refused(grown, tokenizer, tmp_path):
    package = grown["model"].export_task("prognosis", tmp_path / "pkg")
    torch.manual_seed(123)
    stranger = UniconModel(tiny_config(text={"vocab_size": len(tokenizer)}))
    with pytest.raises(UserInputError, match="another foundation"):
        stranger.import_task(package)


def test_merged_task_matches_unmerged(grown):
    model = grown["model"]
    data = grown["data"]
    for name in ("seg_ctpet", "prognosis"):
        merged = model.merge_task(name)
        assert merged.tasks == [name]
        assert not any(".lora_" in k for k in merged.state_dict())
        with torch.no_grad():
            a = model(task=name, **task_inputs(name, data)).logits
            b = merged(task=name, **task_inputs(name, data)).logits
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
        with pytest.raises(UserInputError, match="merged into its encoder"):
            merged(pixel_values=data["ct"][:, :, :8])


def test_mixed_batch_equals_per_task_calls(grown):
    model = grown["model"]
    data = grown["data"]
    ct = data["ct"]
    samples = [data["ctpet"][0], ct[0], data["ctpet"][1], ct[1]]
    tasks = ["seg_ctpet", "seg_ct", "seg_ctpet", "seg_ct"]
    with torch.no_grad():
        mixed = model.forward_mixed(tasks, samples)
        seg_ct = model(task="seg_ct", pixel_values=ct).logits
        seg_ctpet = model(task="seg_ctpet", pixel_values=data["ctpet"]).logits
    torch.testing.assert_close(mixed[0].logits, seg_ctpet[:1])
    torch.testing.assert_close(mixed[1].logits, seg_ct[:1])
    torch.testing.assert_close(mixed[2].logits, seg_ctpet[1:])
    torch.testing.assert_close(mixed[3].logits, seg_ct[1:])


def test_zero_shot_task_gives_per_label_probabilities(grown):
    model = grown["model"]
    with torch.no_grad():
        out = model(task="findings", pixel_values=grown["data"]["ct"][:, :, :8])
    assert out.probabilities.shape == (2, 3) and out.label_names == FINDINGS
    assert ((out.probabilities > 0) & (out.probabilities < 1)).all()
    # it is the base CLIP call with the prompt pair: recompute by hand
    head = model.task_heads["findings"]
    with torch.no_grad():
        base = model(pixel_values=grown["data"]["ct"][:, :, :8], input_ids=head.prompt_input_ids,
                     attention_mask=head.prompt_attention_mask).logits_per_image
    torch.testing.assert_close(out.probabilities, base.reshape(2, 3, 2).softmax(-1)[..., 0])


def test_remove_task(grown):
    model = copy.deepcopy(grown["model"])
    before = snapshot(model, grown["data"])
    model.remove_task("seg_ct")
    assert "seg_ct" not in model.tasks and "seg_ct" not in model.task_heads and "seg_ct" not in model.task_stems
    assert not any(".seg_ct." in k for k in model.state_dict())
    after = snapshot(model, grown["data"])
    for name in after:
        assert torch.equal(after[name], before[name]), name


# ------------------------------------------------------------------------------------------------ errors
def test_unknown_task_lists_the_known_ones(grown):
    with pytest.raises(UserInputError, match=r"unknown task 'seg_pet'; known tasks: 'findings', 'prognosis', 'seg_ct', 'seg_ctpet'"):
        grown["model"](task="seg_pet", pixel_values=grown["data"]["ct"])


def test_wrong_modality_count_says_which_channels(grown):
    with pytest.raises(UserInputError, match=r"'seg_ctpet' expects 2 input channel\(s\) \(ct, pet, in that order\) but pixel_values has 1"):
        grown["model"](task="seg_ctpet", pixel_values=grown["data"]["ct"])


def test_duplicate_task_name_is_refused(grown):
    with pytest.raises(UserInputError, match="already exists"):
        copy.deepcopy(grown["model"]).add_task(prognosis_spec())


def test_lora_target_that_matches_nothing_is_refused(tokenizer):
    model = new_model(tokenizer)
    spec = prognosis_spec()
    spec["lora"]["target_modules"] = ["to_qkv"]
    with pytest.raises(UserInputError, match=r"match no module.*q_proj"):
        model.add_task(spec)
    assert model.tasks == []


@pytest.mark.parametrize("spec, message", [
    ({"name": "x", "kind": "segmentaton", "labels": ["a", "b"]}, r"kind 'segmentaton' is not one of .*did you mean 'segmentation'"),
    ({"name": "x", "kind": "segmentation"}, r"needs 'labels'"),
    ({"name": "x-y", "kind": "prognosis"}, r"task name 'x-y' is not valid"),
    ({"name": "x", "kind": "prognosis", "modalities": ["pet"]}, r"modalities \['pet'\] must be"),
    ({"name": "x", "kind": "prognosis", "lora": {"r": 0}}, r"lora.r must be a positive rank"),
    ({"name": "x", "kind": "prognosis", "lora": {"rank": 2}}, r"lora: unknown field 'rank'; valid fields: \['alpha', 'dropout', 'r', 'target_modules'\]"),
    ({"name": "x", "kind": "segmentation", "labels": SEG_LABELS, "modalities": ["ct", "pet"]}, r"give it a stem with in_channels=2"),
])
def test_bad_specs_name_the_task_and_field(tokenizer, spec, message):
    with pytest.raises(UserInputError, match=message):
        new_model(tokenizer).add_task(spec)


def test_zero_shot_task_needs_a_tokenizer(tokenizer):
    with pytest.raises(UserInputError, match="needs the text tokenizer"):
        new_model(tokenizer).add_task({"name": "f", "kind": "zero_shot_classification", "labels": FINDINGS})
