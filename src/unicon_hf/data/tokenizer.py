"""A small BERT WordPiece tokenizer trained here from our own texts (no Hub download).

CT-CLIP uses CXR-BERT's vocabulary, which would need a download. For demos, tests and phantom
data we instead learn a WordPiece vocabulary from our texts after the `tokenizers` library's BERT
normalisation (lower-casing, accent stripping) and pre-tokenisation, and wrap it in
`transformers.BertTokenizerFast`, so `save_pretrained` / `from_pretrained` work offline and the
text side of `UniconProcessor` behaves like any BERT tokenizer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
from tokenizers import normalizers, pre_tokenizers
from transformers import BertTokenizerFast

from ..errors import UserInputError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DEFAULT_VOCAB_SIZE = 4000
MODEL_MAX_LENGTH = 512


def train_wordpiece_vocab(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> dict[str, int]:
    """Learn a WordPiece vocabulary (token -> id, special tokens first) from `texts`, deterministically.

    Texts go through `tokenizers`' own BERT normaliser and pre-tokeniser. The vocabulary is the five
    special tokens, every character seen (word-initial `c` and continuation `##c`, so no seen text
    ever maps to [UNK]) and then whole words by decreasing frequency (ties alphabetical) up to
    `vocab_size`; unseen words fall back to known pieces as WordPiece does.

    Written here rather than with `tokenizers.trainers.WordPieceTrainer` because that trainer breaks
    ties between equally frequent merges in hash-map order: the same texts give a different vocabulary
    (different tokens and ids) in every run, while a demo model and its default tokenizer need the
    same ids every time.
    """
    texts = [str(t) for t in texts if t is not None and str(t).strip()]
    if not texts:
        raise UserInputError("build_tokenizer needs at least one non-empty text to learn a vocabulary from")
    if int(vocab_size) <= len(SPECIAL_TOKENS):
        raise UserInputError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens (got {vocab_size})")
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    alphabet = sorted({word[0] for word in counts} | {f"##{c}" for word in counts for c in word[1:]})
    words = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    tokens = SPECIAL_TOKENS + alphabet + words
    return {token: index for index, token in enumerate(tokens[: max(int(vocab_size), len(SPECIAL_TOKENS) + len(alphabet))])}


def build_tokenizer(
    texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, save_dir: str | Path | None = None
) -> BertTokenizerFast:
    """Train a WordPiece vocabulary on `texts` and return a BERT tokenizer using it.

    Args:
        texts: training texts (reports, EHR reports, prompts).
        vocab_size: the largest vocabulary to learn (the special tokens and every character seen
            are always kept, even beyond it); a small corpus gives fewer tokens.
        save_dir: when given, the tokenizer is also saved there with `save_pretrained`.

    Returns:
        A `BertTokenizerFast` ([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4; lower-casing BERT
        normalisation; `[CLS] text [SEP]` templates).
    """
    vocab = train_wordpiece_vocab(texts, vocab_size)
    # BertTokenizerFast builds the same BERT normaliser / pre-tokeniser / WordPiece pipeline around
    # the vocabulary, so the saved files are those of any BERT tokenizer.
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=MODEL_MAX_LENGTH)
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


def zero_shot_prompts(findings: Iterable[str]) -> list[str]:
    """CT-CLIP's prompt pair for each finding: "{finding} is present." / "{finding} is not present."."""
    return [f"{finding} is {state}present." for finding in findings for state in ("", "not ")]


def default_corpus() -> list[str]:
    """The fixed built-in corpus of the default tokenizer.

    Chest phantom report sentences and impressions, the zero-shot prompts for CT-RATE's 18 findings,
    and EHR reports of synthetic HECKTOR records plus records covering every stage and missing values.
    """
    # Imported here: the phantom modules pull scipy/nibabel that a tokenizer user may not need.
    from .ehr_report import ehr_to_report
    from .phantoms.chest_reports import FINDINGS, sentence_corpus
    from .phantoms.hecktor import sample_case

    texts = sentence_corpus() + list(FINDINGS) + zero_shot_prompts(FINDINGS)
    texts.append("Non-contrast chest CT. Axial images with 1.5 mm slice thickness.")
    for index, seed in enumerate(np.random.SeedSequence(20240).spawn(60)):
        texts.append(ehr_to_report(sample_case(index, seed).clinical))
    for stage in ("I", "II", "III", "IV", "IVA", "IVB", "IVC"):
        texts.append(ehr_to_report({"age": 60, "sex": "F", "stage": stage, "M-stage": "M1" if stage == "IVC" else "M0"}))
    texts.append(ehr_to_report({}))
    return texts


@lru_cache(maxsize=1)
def _default_vocab(vocab_size: int) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(train_wordpiece_vocab(default_corpus(), vocab_size).items(), key=lambda kv: kv[1]))


def default_tokenizer(save_dir: str | Path | None = None, vocab_size: int = DEFAULT_VOCAB_SIZE) -> BertTokenizerFast:
    """A tokenizer built from `default_corpus()`: the same vocabulary every time, so a demo model always has one."""
    tokenizer = BertTokenizerFast(vocab=dict(_default_vocab(int(vocab_size))), do_lower_case=True,
                                  model_max_length=MODEL_MAX_LENGTH)
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


__all__ = ["build_tokenizer", "default_tokenizer", "default_corpus", "train_wordpiece_vocab", "zero_shot_prompts",
           "SPECIAL_TOKENS"]
