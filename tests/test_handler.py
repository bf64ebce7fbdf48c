"""The Inference Endpoints handler on phantoms: segmentation (base64 NIfTI on the input grid), 2D PNG, prognosis and
zero-shot JSON; bad requests answered with a clear error while the handler keeps serving."""

import base64
import gzip
import io
import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from unicon_hf.data.phantoms import write_hecktor_phantoms
from unicon_hf.handler import EndpointHandler
from unicon_hf.inference import predict
from unicon_hf.publish import assemble_repo

from test_model_card import make_model_repo


def b64(path):
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model, _ = make_model_repo(tmp_path_factory.mktemp("model") / "unicon-demo")
    repo = tmp_path_factory.mktemp("repo") / "r"
    assemble_repo(model, repo)
    root = write_hecktor_phantoms(tmp_path_factory.mktemp("hecktor"), n=1, shape=(24, 32, 32), orientation="LPS",
                                  progress=False)
    png = tmp_path_factory.mktemp("png") / "slice.png"
    gray = np.zeros((20, 24), dtype=np.uint8)
    gray[4:12, 6:18] = 200
    Image.fromarray(gray).save(png)
    return {"handler": EndpointHandler(str(repo)), "model": model, "png": png,
            "ct": root / "imagesTr" / "CHUM-001__CT.nii.gz", "pet": root / "imagesTr" / "CHUM-001__PT.nii.gz"}


def test_segmentation_returns_labels_on_the_input_grid(served):
    answer = served["handler"]({"inputs": {"ct": b64(served["ct"]), "pet": b64(served["pet"])},
                                "parameters": {"task": "seg_ctpet", "overlap": 0.5}})
    assert "error" not in answer, answer
    assert answer["label_image_format"] == "nifti-gzip-base64"
    image = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(answer.pop("label_image"))))
    ct = nib.load(served["ct"])
    assert image.shape == ct.shape
    np.testing.assert_array_equal(image.affine, ct.affine)
    expected = predict(served["model"], "seg_ctpet", served["ct"], pet=served["pet"], overlap=0.5, progress=False)
    np.testing.assert_array_equal(np.asarray(image.dataobj), np.asarray(expected.label_image.dataobj))
    assert answer["volumes_ml"] == pytest.approx(expected.summary["volumes_ml"])
    assert answer["input"] == {"ct": "<ct payload>", "pet": "<pet payload>"}  # no server paths leak
    json.dumps(answer)  # the whole answer is JSON


def test_raw_bytes_body_uncompressed_nifti_and_png(served, tmp_path):
    handler = served["handler"]
    plain = tmp_path / "ct.nii"
    nib.save(nib.load(served["ct"]), plain)
    answer = handler({"inputs": plain.read_bytes(), "parameters": {"task": "seg_ct", "return_label_image": False}})
    assert set(answer["volumes_ml"]) == {"GTVp", "GTVn"} and "label_image" not in answer
    flat = handler({"inputs": {"ct": "data:image/png;base64," + b64(served["png"])}, "parameters": {"task": "seg_ct"}})
    mask = Image.open(io.BytesIO(base64.b64decode(flat["label_png"])))
    assert mask.size == (24, 20) and flat["input"]["ct"] == "<ct payload>"


def test_prognosis_and_zero_shot(served):
    handler = served["handler"]
    risk = handler({"inputs": {"ct": b64(served["ct"]), "ehr": {"Age": 70, "Gender": "F", "T-stage": "T3"}},
                    "parameters": {"task": "rfs"}})
    assert np.isfinite(risk["risk"]) and risk["risk_group"] in ("high", "low")
    assert len(risk["survival"]["probability"]) == len(risk["survival"]["times"])
    findings = handler({"inputs": b64(served["ct"]), "parameters": {"task": "findings"}})
    assert set(findings["probabilities"]) == {"Lung nodule", "Cardiomegaly"}
    assert all(0.0 <= p <= 1.0 for p in findings["probabilities"].values())


def test_bad_requests_get_clear_errors_and_the_handler_keeps_serving(served, tmp_path):
    handler = served["handler"]
    ct = b64(served["ct"])
    cases = {
        "not a NIfTI (.nii / .nii.gz) or PNG/JPEG file": {"inputs": {"ct": base64.b64encode(b"hello").decode()},
                                                          "parameters": {"task": "seg_ct"}},
        "single DICOM file": {"inputs": {"ct": base64.b64encode(b"\0" * 128 + b"DICM" + b"\0" * 64).decode()},
                              "parameters": {"task": "seg_ct"}},
        "gzip-compressed but not a NIfTI": {"inputs": {"ct": base64.b64encode(gzip.compress(b"x" * 600)).decode()},
                                            "parameters": {"task": "seg_ct"}},
        "not valid base64": {"inputs": {"ct": "%%%"}, "parameters": {"task": "seg_ct"}},
        "needs CT and PET": {"inputs": {"ct": ct}, "parameters": {"task": "seg_ctpet"}},
        "several tasks": {"inputs": {"ct": ct}},
        "unknown parameter(s) ['window']": {"inputs": {"ct": ct}, "parameters": {"task": "seg_ct", "window": 3}},
        "unknown input(s) ['mri']": {"inputs": {"ct": ct, "mri": ct}, "parameters": {"task": "seg_ct"}},
        "no 'inputs'": {"parameters": {"task": "seg_ct"}},
        "nope": {"inputs": {"ct": ct}, "parameters": {"task": "nope"}},
    }
    for message, request in cases.items():
        answer = handler(request)
        assert set(answer) == {"error"} and message in answer["error"], (message, answer)
    small = EndpointHandler(str(handler.path), max_voxels=1000)
    answer = small({"inputs": {"ct": ct}, "parameters": {"task": "seg_ct"}})
    assert "24,576 voxels (shape (32, 32, 24)), over this endpoint's limit of 1,000" in answer["error"]
    # still serving after all of that
    assert "volumes_ml" in handler({"inputs": {"ct": ct}, "parameters": {"task": "seg_ct"}})
