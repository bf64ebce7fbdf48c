"""`UniconProcessor`: the image processor, a BERT tokenizer and the EHR-to-report rewrite in one object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import AutoTokenizer
from transformers.image_processing_base import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .data.ehr_report import Rewriter, ehr_to_report
from .errors import UserInputError
from .image_processing_unicon import UniconImageProcessor


class UniconProcessor(ProcessorMixin):
    r"""Prepares everything a `UniconModel` reads: volumes -> `pixel_values`, text/EHR -> `input_ids`.

    Args:
        image_processor (`UniconImageProcessor`): volume preprocessing (saved as part of the processor).
        tokenizer (`BertTokenizerFast` or `BertTokenizer`): the text encoder's tokenizer.
        max_length (`int`, defaults to 256): texts are truncated to this many tokens and padded to the longest.
        rewriter (callable, optional): `(record, deterministic_text) -> text` used by `ehr_to_report`
            (e.g. an LLM rewrite); not saved with the processor, pass it again after loading.

    Loading: `UniconProcessor.from_pretrained(path)` rebuilds the image processor from the saved config
    and the tokenizer with `AutoTokenizer`, so it works offline and without `AutoImageProcessor`
    registration (transformers' default resolves the image processor through the Auto mapping).
    """

    def __init__(self, image_processor=None, tokenizer=None, max_length: int = 256, rewriter: Rewriter | None = None):
        if not isinstance(image_processor, UniconImageProcessor):
            raise UserInputError(f"UniconProcessor needs a UniconImageProcessor, got {type(image_processor).__name__}.")
        if tokenizer is None:
            raise UserInputError("UniconProcessor needs a tokenizer (e.g. unicon_hf.data.tokenizer.default_tokenizer()).")
        self.max_length = int(max_length)
        self._rewriter = rewriter
        super().__init__(image_processor, tokenizer)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # transformers resolves sub-processors through the Auto mappings; ours is not registered there
        # unless the package registers it, so load the known classes directly.
        subfolder = kwargs.pop("subfolder", "")
        image_processor = UniconImageProcessor.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        return [image_processor, tokenizer]

    def ehr_text(self, ehr: Mapping | list[Mapping]) -> list[str]:
        """Report-like text for one EHR record or a list of them (see `unicon_hf.data.ehr_report`)."""
        records = [ehr] if isinstance(ehr, Mapping) else list(ehr)
        return [ehr_to_report(record, rewriter=self._rewriter) for record in records]

    def __call__(self, ct=None, pet=None, label=None, text: str | list[str] | None = None,
                 ehr: Mapping | list[Mapping] | None = None, *, output_size: Any = None,
                 return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Process volumes and/or text.

        Args:
            ct, pet, label: as `UniconImageProcessor.preprocess` (one case or a list of cases).
            text: report text(s) to tokenize.
            ehr: clinical record(s) (column -> value); rewritten with `ehr_to_report`, then tokenized. Cannot be
                combined with `text`.
            output_size: overrides the image processor's output size for this call (default: its own).
            return_tensors: "pt" or None.

        Returns:
            BatchFeature with `pixel_values`, `labels`, `geometry` (from the image processor) and `input_ids`,
            `attention_mask` (+ `token_type_ids`) from the tokenizer; `text` holds the texts fed to it.
        """
        if kwargs:
            raise UserInputError(f"UniconProcessor got unexpected arguments {sorted(kwargs)}.")
        if (pet is not None or label is not None) and ct is None:
            raise UserInputError("pet/label volumes need their CT (ct=...): PET and labels are put on the CT's grid.")
        if ct is None and text is None and ehr is None:
            raise UserInputError("UniconProcessor needs at least one of ct=..., text=..., ehr=....")
        if text is not None and ehr is not None:
            raise UserInputError("give either text=... or ehr=... (EHR records are turned into text), not both.")
        data: dict[str, Any] = {}
        skip = []
        if ct is not None:
            image_kwargs = {} if output_size is None else {"output_size": output_size}
            images = self.image_processor(ct, pet=pet, label=label, return_tensors=return_tensors, **image_kwargs)
            data.update(images.data)
            skip.append("geometry")
        if ehr is not None:
            text = self.ehr_text(ehr)
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if not all(isinstance(t, str) for t in texts):
                raise UserInputError("text must be a string or a list of strings.")
            tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors=return_tensors)
            data.update(tokens.data)
            data["text"] = texts
            skip.append("text")
        return BatchFeature(data=data, tensor_type=return_tensors, skip_tensor_conversion=skip)

    def invert_label(self, prediction, record, dtype=None):
        """See `UniconImageProcessor.invert_label`."""
        return self.image_processor.invert_label(prediction, record, dtype=dtype)

    def invert_map(self, values, record, fill: float = 0.0):
        """See `UniconImageProcessor.invert_map`."""
        return self.image_processor.invert_map(values, record, fill=fill)

    @property
    def model_input_names(self):
        return ["pixel_values", "input_ids", "attention_mask", "token_type_ids"]
