"""Body-weight SUV on real vendor PET DICOM slices (pysuv's IDC samples), checked independently."""

from __future__ import annotations

import copy
import math

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from realdata import pysuv_pet_dicoms
from unicon_hf.data.suv import dicom_pet_to_suv, suv_body_weight_factor
from unicon_hf.errors import UserInputError


def _seconds(tm) -> float:
    text = str(tm).strip()
    return int(text[0:2]) * 3600 + int(text[2:4]) * 60 + float(text[4:] or 0)


def independent_factor(ds):
    """Textbook SUVbw factor from the raw header, or the name of the field that makes it impossible."""
    if "ImagePositionPatient" not in ds:
        return "ImagePositionPatient"
    if str(ds.get("Units", "")).upper() != "BQML":
        return "Units"
    if not ds.get("PatientWeight") or float(ds.PatientWeight) <= 0:
        return "PatientWeight"
    info = ds.RadiopharmaceuticalInformationSequence[0]
    for keyword in ("RadionuclideTotalDose", "RadionuclideHalfLife"):
        if not info.get(keyword) or float(info.get(keyword)) <= 0:
            return keyword
    weight_g, dose, half_life = float(ds.PatientWeight) * 1000, float(info.RadionuclideTotalDose), float(info.RadionuclideHalfLife)
    if ds.DecayCorrection == "ADMIN":
        return weight_g / dose
    if ds.DecayCorrection != "START":
        return "DecayCorrection"
    if not info.get("RadiopharmaceuticalStartTime"):
        return "RadiopharmaceuticalStartTime"
    reference = _seconds(ds.SeriesTime)
    if ds.get("AcquisitionTime"):
        reference = min(reference, _seconds(ds.AcquisitionTime))
    uptake = (reference - _seconds(info.RadiopharmaceuticalStartTime)) % 86400
    if uptake > 12 * 3600:
        return "inconsistent"
    return weight_g / (dose * 0.5 ** (uptake / half_life))


@pytest.fixture(scope="module")
def vendor_files():
    return pysuv_pet_dicoms()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("vendor", ["ge", "philips", "siemens"])
def test_real_slices_match_independent_suv(vendor_files, vendor):
    files = vendor_files[vendor]
    assert len(files) >= 20
    computed = 0
    for path in files:
        ds = pydicom.dcmread(path)
        expected = independent_factor(ds)
        if isinstance(expected, str):
            # Files a body-weight SUV cannot be computed from: a clear error naming the problem and the file.
            with pytest.raises(UserInputError) as error:
                dicom_pet_to_suv([path])
            assert expected in str(error.value) and path.name in str(error.value), (path.name, str(error.value))
            continue
        computed += 1
        volume, affine = dicom_pet_to_suv([path])
        stored = ds.pixel_array
        activity = stored.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        valid = stored != np.iinfo(stored.dtype).min if np.issubdtype(stored.dtype, np.signedinteger) else np.ones_like(stored, bool)
        assert volume.shape == (ds.Columns, ds.Rows, 1) and volume.dtype == np.float32
        np.testing.assert_allclose(volume[..., 0].T[valid], (activity * expected)[valid], rtol=1e-5, atol=1e-6)
        assert suv_body_weight_factor(ds) == pytest.approx(expected, rel=1e-6) or ds.AcquisitionTime < ds.SeriesTime
        # Affine: voxel (i=column, j=row) lands where DICOM puts that pixel (LPS -> RAS).
        row_dir, col_dir = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
        c, r = 7, 11
        lps = np.array(ds.ImagePositionPatient, float) + row_dir * c * float(ds.PixelSpacing[1]) + col_dir * r * float(ds.PixelSpacing[0])
        np.testing.assert_allclose((affine @ [c, r, 0, 1])[:3], lps * [-1, -1, 1], atol=1e-4)
    assert computed >= 5, f"only {computed} {vendor} files had BQML headers usable for SUV"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_philips_private_suv_scale_factor_agrees(vendor_files):
    """Philips stores its own SUV factor in (7053,1000) (per stored value): ours * RescaleSlope should match it."""
    ratios = []
    for path in vendor_files["philips"]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if (0x7053, 0x1000) in ds and isinstance(independent_factor(ds), float):
            ratios.append(suv_body_weight_factor(ds) * float(ds.RescaleSlope) / float(ds[0x7053, 0x1000].value))
    assert len(ratios) >= 4
    # Seen here: 0.995, 0.995, 0.997, 0.997 and 0.967 (Philips' own timing differs slightly).
    assert np.median(np.abs(np.array(ratios) - 1)) < 0.01
    assert max(abs(r - 1) for r in ratios) < 0.05


def _usable_slice(vendor_files):
    for path in vendor_files["ge"]:
        ds = pydicom.dcmread(path)
        if isinstance(independent_factor(ds), float) and ds.DecayCorrection == "START":
            return path, ds
    pytest.fail("no usable GE slice")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_series_volume_sorted_by_position(tmp_path, vendor_files):
    path, ds = _usable_slice(vendor_files)
    normal = np.cross(np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float))
    slopes = [1.0, 2.0, 0.5]
    for k in (2, 0, 1):  # written out of order
        copy_ds = copy.deepcopy(ds)
        copy_ds.ImagePositionPatient = list(np.array(ds.ImagePositionPatient, float) + normal * 3.0 * k)
        copy_ds.RescaleSlope = float(ds.RescaleSlope) * slopes[k]
        copy_ds.SOPInstanceUID = generate_uid()
        copy_ds.save_as(tmp_path / f"slice_{k}.dcm")
    (tmp_path / "notes.txt").write_text("not DICOM, ignored when reading a folder")
    volume, affine = dicom_pet_to_suv(tmp_path)
    single, _ = dicom_pet_to_suv([path])
    assert volume.shape == (ds.Columns, ds.Rows, 3)
    for k in range(3):
        np.testing.assert_allclose(volume[..., k], single[..., 0] * slopes[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(affine[:3, 2], normal * 3.0 * [-1, -1, 1], atol=1e-6)
    np.testing.assert_allclose(affine[:3, 3], np.array(ds.ImagePositionPatient, float) * [-1, -1, 1], atol=1e-4)


def _save(ds, path):
    ds.save_as(path)
    return path


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("edit,message", [
    (lambda ds: delattr(ds, "PatientWeight"), "PatientWeight"),
    (lambda ds: delattr(ds.RadiopharmaceuticalInformationSequence[0], "RadionuclideHalfLife"), "RadionuclideHalfLife"),
    (lambda ds: delattr(ds.RadiopharmaceuticalInformationSequence[0], "RadionuclideTotalDose"), "RadionuclideTotalDose"),
    (lambda ds: delattr(ds, "SeriesTime"), "SeriesTime"),
    (lambda ds: delattr(ds, "DecayCorrection"), "DecayCorrection"),
    (lambda ds: setattr(ds, "DecayCorrection", "NONE"), "DecayCorrection"),
    (lambda ds: setattr(ds, "Units", "CNTS"), "Units"),
    (lambda ds: setattr(ds, "PatientWeight", 0), "PatientWeight"),
])
def test_header_problems_name_the_field_and_file(tmp_path, vendor_files, edit, message):
    _, ds = _usable_slice(vendor_files)
    broken = copy.deepcopy(ds)
    edit(broken)
    path = _save(broken, tmp_path / "broken.dcm")
    with pytest.raises(UserInputError, match=message) as error:
        dicom_pet_to_suv([path])
    assert "broken.dcm" in str(error.value)
    with pytest.raises(UserInputError, match=message):
        suv_body_weight_factor(broken)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_admin_decay_correction_uses_the_injected_dose(vendor_files):
    _, ds = _usable_slice(vendor_files)
    admin = copy.deepcopy(ds)
    admin.DecayCorrection = "ADMIN"
    info = ds.RadiopharmaceuticalInformationSequence[0]
    assert suv_body_weight_factor(admin) == pytest.approx(float(ds.PatientWeight) * 1000 / float(info.RadionuclideTotalDose))
    assert suv_body_weight_factor(ds) > suv_body_weight_factor(admin)  # START: the dose has decayed
    # Injection before midnight, scan after it: the clock wraps instead of going negative.
    late = copy.deepcopy(ds)
    late.SeriesTime, late.AcquisitionTime = "003000", "003000"
    late.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "233000"
    weight_g, dose, half = float(ds.PatientWeight) * 1000, float(info.RadionuclideTotalDose), float(info.RadionuclideHalfLife)
    assert suv_body_weight_factor(late) == pytest.approx(weight_g / (dose * math.exp(-math.log(2) * 3600 / half)))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_series_errors(tmp_path, vendor_files):
    _, ds = _usable_slice(vendor_files)
    a, b = copy.deepcopy(ds), copy.deepcopy(ds)
    b.SOPInstanceUID = generate_uid()
    _save(a, tmp_path / "a.dcm")
    _save(b, tmp_path / "b.dcm")
    with pytest.raises(UserInputError, match="repeats the position"):
        dicom_pet_to_suv(tmp_path)
    b.SeriesInstanceUID = generate_uid()
    _save(b, tmp_path / "b.dcm")
    with pytest.raises(UserInputError, match="2 different series"):
        dicom_pet_to_suv(tmp_path)
    (tmp_path / "fake.dcm").write_text("not a DICOM file")
    with pytest.raises(UserInputError, match="fake.dcm"):
        dicom_pet_to_suv([tmp_path / "fake.dcm"])
    with pytest.raises(UserInputError, match="does not exist"):
        dicom_pet_to_suv(tmp_path / "missing")
    with pytest.raises(UserInputError, match="no DICOM"):
        (tmp_path / "empty").mkdir()
        dicom_pet_to_suv(tmp_path / "empty")
