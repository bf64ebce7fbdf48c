"""set_transform callables: shapes the model expects, pos/neg crops, DataLoader with 2 workers, inverse."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from unicon_hf.data.loaders import load_ct_rate, load_hecktor
from unicon_hf.data.phantoms import write_ct_rate_phantoms, write_hecktor_phantoms
from unicon_hf.data.tokenizer import default_tokenizer
from unicon_hf.data.transforms import EvalTransform, TrainTransform
from unicon_hf.errors import UserInputError
from unicon_hf.image_processing_unicon import UniconImageProcessor


@pytest.fixture(scope="module")
def hecktor(tmp_path_factory):
    root = write_hecktor_phantoms(tmp_path_factory.mktemp("hecktor"), n=8, seed=3, shape=(32, 32, 32),
                                  spacing=(2.0, 2.0, 2.0), orientation="LAS", progress=False)
    return load_hecktor(root, check="header", progress=False)


@pytest.fixture(scope="module")
def processor():
    return UniconImageProcessor(target_spacing=(2.0, 2.0, 2.0), output_size=(32, 32, 32))


def test_train_transform_shapes_and_fields(hecktor, processor):
    tokenizer = default_tokenizer()
    train = hecktor["train"].with_transform(
        TrainTransform(processor, crop_size=(16, 24, 24), tokenizer=tokenizer, max_length=96)
    )
    row = train[0]
    assert row["pixel_values"].shape == (2, 16, 24, 24) and row["pixel_values"].dtype == torch.float32
    assert row["labels"].shape == (16, 24, 24) and row["labels"].dtype == torch.int64
    assert set(row["labels"].unique().tolist()) <= {0, 1, 2}
    assert row["event_time"].dtype == torch.float32 and row["event"].item() in (0, 1)
    assert row["text"].startswith("Clinical summary:") and "TNM staging:" in row["text"]
    assert row["input_ids"].shape == (96,) and row["attention_mask"].shape == (96,)
    assert -1.5 <= float(row["pixel_values"][0].min()) and float(row["pixel_values"][0].max()) <= 1.5


def test_pos_neg_sampling_finds_foreground(hecktor, processor):
    """With pos=1, neg=0 every crop is centred on tumour, so every crop contains some."""
    transform = TrainTransform(processor, crop_size=(8, 8, 8), pos=1.0, neg=0.0, seed=1)
    train = hecktor["train"].with_transform(transform)
    assert all(int((train[i]["labels"] > 0).sum()) > 0 for i in range(len(train)))
    background = hecktor["train"].with_transform(TrainTransform(processor, crop_size=(8, 8, 8), pos=0.0, neg=1.0))
    tumour_share = [float((background[i]["labels"] > 0).float().mean()) for i in range(len(train))]
    assert np.mean(tumour_share) < 0.5


def test_dataloader_two_workers(hecktor, processor):
    train = hecktor["train"].with_transform(TrainTransform(processor, crop_size=(16, 16, 16), seed=0))
    loader = torch.utils.data.DataLoader(train, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert len(batches) == 3  # 6 training cases
    for batch in batches:
        assert batch["pixel_values"].shape == (2, 2, 16, 16, 16)
        assert batch["labels"].shape == (2, 16, 16, 16) and batch["event"].shape == (2,)
        assert len(batch["text"]) == 2
    # Workers reseed from torch's per-worker seed: two epochs give different random crops.
    again = list(loader)
    assert any(not torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(batches, again))


def test_eval_transform_is_deterministic_and_invertible(hecktor, processor):
    validation = hecktor["validation"].with_transform(EvalTransform(processor))
    row = validation[0]
    assert row["pixel_values"].shape == (2, 32, 32, 32) and row["labels"].shape == (32, 32, 32)
    assert torch.equal(validation[0]["pixel_values"], row["pixel_values"])
    record = json.loads(row["geometry"])
    back = processor.invert_label(row["labels"], record)
    original = nib.load(record["files"]["label"])
    assert np.array_equal(back.affine, original.affine)
    assert np.array_equal(np.asarray(back.dataobj), np.asarray(original.dataobj))
    full = hecktor["validation"].with_transform(EvalTransform(processor, output_size=None, text=None))
    assert "text" not in full[0] and full[0]["pixel_values"].shape[0] == 2


def test_ct_rate_rows(tmp_path):
    root = write_ct_rate_phantoms(tmp_path / "ctrate", n=3, seed=0, shape=(16, 24, 24), spacing=(5.0, 5.5, 5.5),
                                  progress=False)
    ds = load_ct_rate(root, check="header", progress=False)
    processor = UniconImageProcessor(target_spacing=(5.5, 5.5, 5.0), output_size=(16, 24, 24))
    train = ds["train"].with_transform(TrainTransform(processor, crop_size=(8, 16, 16)))
    row = train[0]
    assert row["pixel_values"].shape == (1, 8, 16, 16)
    assert row["labels"].shape == (18,) and row["labels"].dtype == torch.float32
    assert row["text"] == ds["train"][0]["report"]
    evaluation = ds["train"].with_transform(EvalTransform(processor))
    assert evaluation[0]["pixel_values"].shape == (1, 16, 24, 24)


def test_bad_transform_arguments(processor):
    with pytest.raises(UserInputError, match="crop_size"):
        TrainTransform(processor, crop_size=(8, 8))
    with pytest.raises(UserInputError, match="UniconImageProcessor"):
        EvalTransform(object())
