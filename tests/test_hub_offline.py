"""`AutoModel.from_pretrained("org/unicon-ct-pet")` from a Hugging Face cache with HF_HUB_OFFLINE=1:
with unicon_hf imported, and in a fresh process where unicon_hf cannot be imported (trust_remote_code)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel

from unicon_hf import UniconModel
from unicon_hf.hub import save_model_repo

from hubcache import add_to_hub_cache
from tiny import tiny_config
from fresh_process import WITHOUT_UNICON

REPO_ID = "org/unicon-ct-pet"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    torch.manual_seed(0)
    model = UniconModel(tiny_config()).eval()
    # with tasks, so the repo's code must rebuild stems, LoRA adapters and heads too
    model.add_task({"name": "seg_ctpet", "kind": "segmentation", "modalities": ["ct", "pet"],
                    "labels": ["background", "GTVp", "GTVn"], "stem": {"patch_size": [8, 8, 8]},
                    "lora": {"r": 2}, "head": {"feature_size": 4}})
    with torch.no_grad():
        for parameter in model.parameters():  # LoRA B starts at zero: make the adapter matter
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.eval()
    folder = save_model_repo(model, tmp_path_factory.mktemp("saved") / "unicon-ct-pet")
    hf_home = tmp_path_factory.mktemp("hf_home")
    add_to_hub_cache(folder, hf_home, REPO_ID)
    torch.manual_seed(3)
    pixel_values = torch.randn(1, 1, 8, 16, 16)
    input_ids = torch.randint(1, 64, (2, 5))
    ctpet = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        logits = model(pixel_values=pixel_values, input_ids=input_ids).logits_per_image
        segmentation = model(task="seg_ctpet", pixel_values=ctpet).logits
    return {"model": model, "ctpet": ctpet, "segmentation": segmentation, "folder": folder, "hf_home": hf_home, "pixel_values": pixel_values,
            "input_ids": input_ids, "logits": logits}


def test_repo_carries_auto_map_and_code(hub):
    config = json.loads((hub["folder"] / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_unicon.UniconModel"
    assert config["auto_map"]["AutoConfig"] == "configuration_unicon.UniconConfig"
    for name in ("modeling_unicon.py", "configuration_unicon.py", "modeling_vision.py", "modeling_outputs.py", "errors.py",
                 "modeling_tasks.py", "tasks.py", "segmentation_head.py", "prognosis_head.py", "survival.py"):
        assert (hub["folder"] / name).is_file(), name
    assert not list(hub["folder"].glob("*.bin")) and (hub["folder"] / "model.safetensors").is_file()


def test_auto_model_from_offline_cache_with_package_imported(hub):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    model = AutoModel.from_pretrained(REPO_ID, cache_dir=hub["hf_home"] / "hub").eval()
    assert isinstance(model, UniconModel)
    with torch.no_grad():
        logits = model(pixel_values=hub["pixel_values"], input_ids=hub["input_ids"]).logits_per_image
        segmentation = model(task="seg_ctpet", pixel_values=hub["ctpet"]).logits
    assert torch.equal(logits, hub["logits"])
    assert torch.equal(segmentation, hub["segmentation"])


FRESH_PROCESS = WITHOUT_UNICON + textwrap.dedent("""
    import sys

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    model = AutoModel.from_pretrained({repo!r}, trust_remote_code=True).eval()
    assert "unicon_hf" not in sys.modules
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    inputs = load_file(sys.argv[1])
    with torch.no_grad():
        logits = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"]).logits_per_image
        segmentation = model(task="seg_ctpet", pixel_values=inputs["ctpet"]).logits
    save_file({{"logits": logits.contiguous(), "segmentation": segmentation.contiguous()}}, sys.argv[2])
    print("loaded", type(model).__name__)
""")


def test_auto_model_with_trust_remote_code_in_a_fresh_process_without_the_package(hub, tmp_path):
    from safetensors.torch import load_file, save_file

    save_file({"pixel_values": hub["pixel_values"], "input_ids": hub["input_ids"], "ctpet": hub["ctpet"]},
              tmp_path / "inputs.safetensors")
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS.format(repo=REPO_ID))
    env = {**os.environ, "HF_HOME": str(hub["hf_home"]), "HF_HUB_OFFLINE": "1",
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "inputs.safetensors"), str(tmp_path / "out.safetensors")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded UniconModel" in result.stdout
    outputs = load_file(tmp_path / "out.safetensors")
    assert torch.equal(outputs["logits"], hub["logits"])
    assert torch.equal(outputs["segmentation"], hub["segmentation"])


def test_save_is_atomic_and_replaces_an_existing_folder(hub, tmp_path):
    target = tmp_path / "repo"
    save_model_repo(hub["model"], target)
    (target / "stale.txt").write_text("old")
    save_model_repo(hub["model"], target)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no staging or backup folders left
