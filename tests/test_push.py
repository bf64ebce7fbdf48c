"""`unicon push`: the repo it writes (safetensors only, code, pipelines, handler, card from the report) loads
offline in a fresh process without unicon_hf via AutoModel, pipeline and the handler; Hub uploads go through
huggingface_hub's create_repo / create_branch / upload_folder (checked with a recording stand-in: no network
here); adapter-only task repos import back into their base model."""

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from unicon_hf import UniconModel, UserInputError
from unicon_hf.cli import main
from unicon_hf.data.phantoms import write_hecktor_phantoms
from unicon_hf.inference import predict
from unicon_hf.publish import local_target, push

from hubcache import add_to_hub_cache
from test_model_card import VALUES, make_model_repo
from fresh_process import WITHOUT_UNICON

REPO_ID = "org/unicon-demo"


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    folder, report = make_model_repo(tmp_path_factory.mktemp("model") / "unicon-demo")
    (folder / "pytorch_model.bin").write_bytes(b"pickled weights must never be published")
    target = tmp_path_factory.mktemp("target") / "repo"
    assert main(["push", str(folder), f"file://{target}", "--repo-id", REPO_ID]) == 0
    root = write_hecktor_phantoms(tmp_path_factory.mktemp("hecktor"), n=1, shape=(24, 32, 32), orientation="LAS",
                                  progress=False)
    return {"model": folder, "repo": target, "report": report,
            "ct": root / "imagesTr" / "CHUM-001__CT.nii.gz", "pet": root / "imagesTr" / "CHUM-001__PT.nii.gz"}


def test_pushed_repo_is_complete_and_safetensors_only(pushed):
    repo = pushed["repo"]
    names = {p.name for p in repo.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_unicon.py", "preprocessor_config.json", "tokenizer.json",
            "pipeline_unicon.py", "inference.py", "handler.py", "requirements.txt", "README.md", "report.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl", ".pth"))]
    config = json.loads((repo / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_unicon.UniconModel"
    assert "unicon-volume-segmentation" in config["custom_pipelines"]
    assert "nibabel" in (repo / "requirements.txt").read_text()
    card = ModelCard.load(repo / "README.md")
    assert {r.metric_value for r in card.data.eval_results} == {row[-1] for row in VALUES.values()}
    assert 'pipeline("unicon-volume-segmentation", model="org/unicon-demo"' in card.text


FRESH = WITHOUT_UNICON + textwrap.dedent("""
    import base64, gzip, io, json, sys

    import nibabel as nib
    from huggingface_hub import snapshot_download
    from transformers import AutoModel, pipeline

    repo_id, ct, pet = sys.argv[1:4]
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True)
    out = {"tasks": model.tasks, "model_module": type(model).__module__}
    segment = pipeline("unicon-volume-segmentation", model=repo_id, trust_remote_code=True, task_name="seg_ctpet")
    out["pipeline"] = {r["label"]: int(r["mask"].sum()) for r in segment({"ct": ct, "pet": pet})}
    root = snapshot_download(repo_id)
    sys.path.insert(0, root)  # Inference Endpoints imports handler.py from the repo root
    from handler import EndpointHandler
    handler = EndpointHandler(root)
    answer = handler({"inputs": {"ct": base64.b64encode(open(ct, "rb").read()).decode(),
                                 "pet": base64.b64encode(open(pet, "rb").read()).decode()},
                      "parameters": {"task": "seg_ctpet"}})
    image = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(answer.pop("label_image"))))
    out["handler"] = {"volumes_ml": answer["volumes_ml"], "shape": list(image.shape), "affine": image.affine.tolist(),
                      "counts": {i: int((image.get_fdata() == i).sum()) for i in range(3)}}
    assert "unicon_hf" not in sys.modules
    print(json.dumps(out))
""")


def test_pushed_repo_loads_offline_in_a_fresh_process_without_the_package(pushed, tmp_path):
    hf_home = tmp_path / "hf_home"
    add_to_hub_cache(pushed["repo"], hf_home, REPO_ID)
    script = tmp_path / "run.py"
    script.write_text(FRESH)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "mods")}
    result = subprocess.run([sys.executable, str(script), REPO_ID, str(pushed["ct"]), str(pushed["pet"])],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["tasks"] == list(VALUES)
    assert out["model_module"].startswith("transformers_modules")
    # The same answers as the installed package gives on the original folder.
    expected = predict(pushed["model"], "seg_ctpet", pushed["ct"], pet=pushed["pet"], progress=False)
    labels = np.asarray(expected.label_image.dataobj)
    ct = nib.load(pushed["ct"])
    assert out["handler"]["shape"] == list(ct.shape)
    np.testing.assert_allclose(out["handler"]["affine"], ct.affine)
    assert out["handler"]["counts"] == {str(i): int((labels == i).sum()) for i in range(3)}
    assert out["handler"]["volumes_ml"] == pytest.approx(expected.summary["volumes_ml"])
    assert out["pipeline"] == {name: int((labels == i).sum()) for i, name in enumerate(expected.summary["labels"])
                               if (labels == i).any()}


class RecordingApi:
    """Stands in for HfApi: records the calls and what the uploaded folder held at upload time."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, *, folder_path, repo_id, **kwargs):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        self.calls.append(("upload_folder", repo_id, {**kwargs, "files": files}))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


def test_hub_push_creates_repo_branch_and_uploads_the_assembled_folder(pushed):
    api = RecordingApi()
    url = push(pushed["model"], "my-org/unicon-demo", revision="stage-3", api=api)
    assert url == "https://huggingface.co/my-org/unicon-demo/commit/abc"
    (name1, repo1, create), (name2, _, branch), (name3, _, upload) = api.calls
    assert (name1, name2, name3) == ("create_repo", "create_branch", "upload_folder")
    assert repo1 == "my-org/unicon-demo" and create["private"] is True and create["exist_ok"] is True
    assert branch["branch"] == "stage-3" and upload["revision"] == "stage-3"
    assert {"model.safetensors", "handler.py", "README.md", "pipeline_unicon.py"} <= set(upload["files"])
    assert "pytorch_model.bin" not in upload["files"]
    assert "seg_ctpet" in upload["commit_message"]


def test_push_rejects_bad_targets_and_inputs(pushed, tmp_path, capsys):
    with pytest.raises(UserInputError, match="local folder .* has none"):
        push(pushed["model"], f"file://{tmp_path / 'x'}", revision="v1")
    with pytest.raises(UserInputError, match="not a Hub repo id"):
        push(pushed["model"], "org/bad name!", api=RecordingApi())
    with pytest.raises(UserInputError, match="with its owner"):
        push(pushed["model"], "unicon-demo", api=RecordingApi())
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    (pickles / "config.json").write_text("{}")
    (pickles / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(UserInputError, match=r"no safetensors weights \(only pickled \['pytorch_model.bin'\]\)"):
        push(pickles, f"file://{tmp_path / 'y'}")
    assert not (tmp_path / "y").exists()  # nothing written on failure
    no_report = tmp_path / "no_report"
    no_report.mkdir()
    for file in pushed["model"].iterdir():
        if file.name != "report.json":
            (no_report / file.name).write_bytes(file.read_bytes())
    assert main(["push", str(no_report), f"file://{tmp_path / 'z'}"]) == 2
    assert "no report.json" in capsys.readouterr().err
    assert main(["push", str(no_report), f"file://{tmp_path / 'z'}", "--no-report"]) == 0
    assert local_target("org/name") is None and local_target("./org/name") == Path("org/name")


def test_adapter_only_repo_imports_back_into_its_base(pushed, tmp_path):
    target = tmp_path / "seg-ct-adapter"
    assert main(["push", str(pushed["model"]), str(target), "--task", "seg_ct", "--base-model", REPO_ID]) == 0
    assert {p.name for p in target.iterdir()} == {"README.md", "adapter_config.json", "adapter_model.safetensors",
                                                  "task.json", "task_parts.safetensors"}
    card = ModelCard.load(target / "README.md")
    assert card.data.base_model == REPO_ID and "seg_ct" in card.text
    assert json.loads((target / "adapter_config.json").read_text())["base_model_name_or_path"] == REPO_ID
    model = UniconModel.from_pretrained(pushed["model"]).eval()
    model.import_task(target, name="seg_ct_imported")
    pixel_values = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        original = model(task="seg_ct", pixel_values=pixel_values).logits
        imported = model(task="seg_ct_imported", pixel_values=pixel_values).logits
    torch.testing.assert_close(imported, original, rtol=0, atol=0)
