"""WordPiece tokenizer trained from our own texts: content, determinism, offline save/load round trip."""

from __future__ import annotations

import csv

import pytest
from transformers import AutoTokenizer, BertTokenizerFast

from unicon_hf.data.ehr_report import ehr_to_report
from unicon_hf.data.phantoms import FINDINGS, write_ct_rate_phantoms
from unicon_hf.data.tokenizer import SPECIAL_TOKENS, build_tokenizer, default_tokenizer, zero_shot_prompts
from unicon_hf.errors import UserInputError


@pytest.fixture(scope="module")
def phantom_reports(tmp_path_factory):
    root = write_ct_rate_phantoms(tmp_path_factory.mktemp("ctrate"), n=12, seed=0, shape=(16, 32, 32),
                                  spacing=(10.0, 11.0, 11.0), progress=False)
    with open(root / "radiology_text_reports" / "train_reports.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [row["Findings_EN"] for row in rows] + [row["Impressions_EN"] for row in rows]


def test_build_from_phantom_reports_and_round_trip(tmp_path, phantom_reports):
    tokenizer = build_tokenizer(phantom_reports, vocab_size=500, save_dir=tmp_path / "tok")
    assert isinstance(tokenizer, BertTokenizerFast)
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert 50 < len(tokenizer) <= 500
    encoded = tokenizer(phantom_reports[0])["input_ids"]
    assert encoded[0] == tokenizer.cls_token_id and encoded[-1] == tokenizer.sep_token_id
    assert all(tokenizer.unk_token_id not in tokenizer(text)["input_ids"] for text in phantom_reports)
    assert tokenizer.decode(encoded, skip_special_tokens=True) == phantom_reports[0].lower()
    for loader in (BertTokenizerFast.from_pretrained, AutoTokenizer.from_pretrained):
        loaded = loader(str(tmp_path / "tok"), local_files_only=True)
        assert loaded.get_vocab() == tokenizer.get_vocab()
        batch = loaded(phantom_reports[:3], padding=True, truncation=True, max_length=64)
        assert batch["input_ids"] == tokenizer(phantom_reports[:3], padding=True, truncation=True, max_length=64)["input_ids"]
        assert batch["input_ids"][0][0] == 2 and loaded.pad_token_id == 0


def test_build_is_deterministic_and_depends_on_texts(phantom_reports):
    first = build_tokenizer(phantom_reports, vocab_size=300).get_vocab()
    assert first == build_tokenizer(phantom_reports, vocab_size=300).get_vocab()
    assert first != build_tokenizer(["completely different words here", "zebra quartz"], vocab_size=300).get_vocab()
    # Unseen characters map to [UNK] rather than failing.
    tokenizer = build_tokenizer(["abc abd"], vocab_size=50)
    assert tokenizer.unk_token_id in tokenizer("xyz")["input_ids"]


@pytest.mark.parametrize("texts,vocab_size", [([], 100), (["", "  ", None], 100), (["fine"], 3)])
def test_build_rejects_bad_input(texts, vocab_size):
    with pytest.raises(UserInputError):
        build_tokenizer(texts, vocab_size=vocab_size)


def test_default_tokenizer_covers_prompts_and_reports(tmp_path):
    tokenizer = default_tokenizer(save_dir=tmp_path)
    assert tokenizer.get_vocab() == default_tokenizer().get_vocab()
    prompts = zero_shot_prompts(FINDINGS)
    assert len(prompts) == 36 and prompts[:2] == ["Medical material is present.", "Medical material is not present."]
    texts = prompts + [
        ehr_to_report({"PatientID": "CHUM-001", "Gender": "F", "Age": 58, "T-stage": "T2", "N-stage": "N1",
                       "M-stage": "M0", "TNM group": "III", "HPV status (0=-, 1=+)": 1, "Chemotherapy": 1}),
        ehr_to_report({"time": 2.5, "age": 57, "death": 0, "Stage_II": 0, "Stage_III": 0, "Stage_IV": 1}),
        "There is a 12 mm nodule in the right upper lobe. Bilateral pleural effusion is present.",
    ]
    for text in texts:
        assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"], text
    # Each finding name is a few pieces, so the present/not-present prompts differ only by "not".
    present, absent = tokenizer(prompts[0])["input_ids"], tokenizer(prompts[1])["input_ids"]
    assert len(absent) == len(present) + 1
    assert AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True).get_vocab() == tokenizer.get_vocab()
