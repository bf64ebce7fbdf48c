"""transformers pipelines: in this process, and offline from a HF cache in a fresh process without unicon_hf."""

import json
import os
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from transformers import pipeline

from unicon_hf import UserInputError
from unicon_hf.data.phantoms import write_hecktor_phantoms
from unicon_hf.pipeline_unicon import PIPELINES, save_pipelines

from hubcache import add_to_hub_cache
from test_predict import save_repo
from fresh_process import WITHOUT_UNICON

REPO_ID = "org/unicon-ct-pet"


def local_pipeline(task, folder, **kwargs):
    """The installed package's pipeline class (the repo's custom_pipelines entry would need trust_remote_code)."""
    return pipeline(task, model=str(folder), pipeline_class=PIPELINES[task], **kwargs)
TASKS = ["unicon-prognosis", "unicon-volume-segmentation", "unicon-zero-shot-ct-classification"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    folder = save_repo(tmp_path_factory.mktemp("saved") / "unicon-ct-pet")
    save_pipelines(folder)
    hf_home = tmp_path_factory.mktemp("hf_home")
    add_to_hub_cache(folder, hf_home, REPO_ID)
    root = write_hecktor_phantoms(tmp_path_factory.mktemp("hecktor"), n=1, shape=(24, 32, 32), orientation="LAS",
                                  progress=False)
    png = tmp_path_factory.mktemp("png") / "slice.png"
    gray = np.zeros((20, 24), dtype=np.uint8)
    gray[4:12, 6:18] = 200
    Image.fromarray(gray).save(png)
    return {"folder": folder, "hf_home": hf_home, "ct": root / "imagesTr" / "CHUM-001__CT.nii.gz",
            "pet": root / "imagesTr" / "CHUM-001__PT.nii.gz", "png": png}


def test_repo_carries_the_pipelines_and_their_code(hub):
    config = json.loads((hub["folder"] / "config.json").read_text())
    assert sorted(config["custom_pipelines"]) == TASKS
    assert config["custom_pipelines"]["unicon-volume-segmentation"]["impl"] == \
        "pipeline_unicon.UniconVolumeSegmentationPipeline"
    for name in ("pipeline_unicon.py", "inference.py", "sliding_window.py", "image_processing_unicon.py",
                 "volume_geometry.py", "preprocessor_config.json"):
        assert (hub["folder"] / name).is_file(), name


def test_pipelines_in_process(hub):
    segment = local_pipeline("unicon-volume-segmentation", hub["folder"], task_name="seg_ctpet")
    results = segment({"ct": hub["ct"], "pet": hub["pet"]})
    ct = nib.load(hub["ct"])
    assert results and {r["label"] for r in results} <= {"background", "GTVp", "GTVn"}
    for result in results:
        assert result["mask"].shape == ct.shape and result["score"] is None
        np.testing.assert_array_equal(result["label_image"].affine, ct.affine)
    assert sum(r["mask"].sum() for r in results) == np.prod(ct.shape)  # classes partition the volume
    flat = segment(str(hub["png"]), task_name="seg_ct")
    assert all(isinstance(r["mask"], Image.Image) and r["mask"].size == (24, 20) for r in flat)

    classify = local_pipeline("unicon-zero-shot-ct-classification", hub["folder"])
    scores = classify(hub["ct"])
    assert [set(s) for s in scores] == [{"label", "score"}] * 2
    assert scores[0]["score"] >= scores[1]["score"]
    assert {s["label"] for s in classify(Image.open(hub["png"]))} == {"Lung nodule", "Cardiomegaly"}

    prognosis = local_pipeline("unicon-prognosis", hub["folder"])
    result = prognosis({"ct": hub["ct"], "ehr": {"Age": 70, "Gender": "F", "T-stage": "T3"}})
    assert np.isfinite(result["risk"]) and result["risk_group"] in ("high", "low")
    assert len(result["survival"]["probability"]) == 5


def test_segmentation_pipeline_needs_a_task_name_when_ambiguous(hub):
    with pytest.raises(UserInputError, match="choose one with task_name"):
        local_pipeline("unicon-volume-segmentation", hub["folder"])


FRESH_PROCESS = WITHOUT_UNICON + textwrap.dedent("""
    import json, sys

    from transformers import pipeline

    ct, pet, png = sys.argv[1:4]
    segment = pipeline("unicon-volume-segmentation", model={repo!r}, trust_remote_code=True, task_name="seg_ctpet")
    assert type(segment).__module__.startswith("transformers_modules"), type(segment).__module__
    results = segment({{"ct": ct, "pet": pet}})
    out = {{"segmentation": {{r["label"]: int(r["mask"].sum()) for r in results}},
            "shape": list(results[0]["label_image"].shape), "affine": results[0]["label_image"].affine.tolist()}}
    classify = pipeline("unicon-zero-shot-ct-classification", model={repo!r}, trust_remote_code=True)
    out["zero_shot"] = classify(png)
    prognosis = pipeline("unicon-prognosis", model={repo!r}, trust_remote_code=True)
    out["prognosis"] = prognosis({{"ct": ct, "text": "Clinical summary: 70-year-old woman."}})["risk"]
    assert "unicon_hf" not in sys.modules
    print(json.dumps(out))
""")


def test_pipelines_offline_in_a_fresh_process_without_the_package(hub, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(FRESH_PROCESS.format(repo=REPO_ID))
    env = {**os.environ, "HF_HOME": str(hub["hf_home"]), "HF_HUB_OFFLINE": "1",
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, str(script), str(hub["ct"]), str(hub["pet"]), str(hub["png"])],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    ct = nib.load(hub["ct"])
    assert out["shape"] == list(ct.shape)
    np.testing.assert_allclose(out["affine"], ct.affine)
    assert sum(out["segmentation"].values()) == np.prod(ct.shape)
    # Same numbers as with the package installed.
    local = local_pipeline("unicon-volume-segmentation", hub["folder"], task_name="seg_ctpet")
    assert {r["label"]: int(r["mask"].sum()) for r in local({"ct": hub["ct"], "pet": hub["pet"]})} == out["segmentation"]
    assert {s["label"] for s in out["zero_shot"]} == {"Lung nodule", "Cardiomegaly"}
    assert np.isfinite(out["prognosis"])
