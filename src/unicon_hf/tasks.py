"""Task specs: what a task adds to the foundation, as plain data stored in `UniconConfig.tasks`.

A spec is a JSON-serialisable dict; `TaskSpec` validates and normalises it once, with errors that
name the task and the field.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import UserInputError

TASK_KINDS = ("zero_shot_classification", "prognosis", "segmentation")
MODALITIES = ("ct", "pet")
# The encoder's attention projections, in both stages (prognosis, zero-shot) or the spatial stage only
# (segmentation: its decoder reads spatial-layer outputs, as in the paper).
ALL_ATTENTION_TARGETS = r"vision_model\.(spatial|temporal)_encoder\.layers\.\d+\.attention\.(q_proj|kv_proj|out_proj)"
SPATIAL_ATTENTION_TARGETS = r"vision_model\.spatial_encoder\.layers\.\d+\.attention\.(q_proj|kv_proj|out_proj)"
PROMPT_TEMPLATES = ("{label} is present.", "{label} is not present.")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _unknown_fields(given: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserInputError(f"{where}: unknown field {key!r}{hint}; valid fields: {sorted(known)}")


@dataclass
class LoraSpec:
    """LoRA settings of a task.

    Args:
        r (`int`, defaults to 8): rank.
        alpha (`float`, defaults to 32): scaling numerator (scale = alpha / r).
        dropout (`float`, defaults to 0.2): dropout on the LoRA input during training.
        target_modules (`str` or `list[str]`, *optional*): a regex over full module names or a list of
            module-name suffixes, as PEFT takes them; default: the encoder's q/kv/out projections (spatial
            stage only for segmentation).
    """

    r: int = 8
    alpha: float = 32
    dropout: float = 0.2
    target_modules: str | list[str] | None = None


@dataclass
class TaskSpec:
    """A validated task spec (see the module docstring and DESIGN.md section 4).

    `feature_layers` names the encoder outputs a head reads: 'spatial.N' / 'temporal.N' (output of that
    layer) or 'output' (the encoder output); filled with the kind's default when a task is added.
    `merged` marks a task whose LoRA was merged into the encoder weights (see `UniconModel.merge_task`).
    """

    name: str
    kind: str
    modalities: list[str] = field(default_factory=lambda: ["ct"])
    labels: list[str] = field(default_factory=list)  # segmentation: by label value, 'background' first
    stem: dict[str, Any] | None = None
    lora: LoraSpec | None = None
    input_size: list[int] | None = None
    head: dict[str, Any] = field(default_factory=dict)
    feature_layers: list[str] | None = None
    merged: bool = False

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> TaskSpec:
        if isinstance(spec, TaskSpec):
            return spec
        if not isinstance(spec, Mapping):
            raise UserInputError(f"a task spec must be a mapping, got {type(spec).__name__}")
        name = spec.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise UserInputError(
                f"task name {name!r} is not valid: use letters, digits and underscores, starting with a letter"
            )
        where = f"task {name!r}"
        _unknown_fields(spec, [f for f in cls.__dataclass_fields__], where)
        kind = spec.get("kind")
        if kind not in TASK_KINDS:
            close = difflib.get_close_matches(str(kind), TASK_KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserInputError(f"{where}: kind {kind!r} is not one of {', '.join(TASK_KINDS)}{hint}")
        modalities = list(spec.get("modalities") or ["ct"])
        bad = [m for m in modalities if m not in MODALITIES]
        if bad or len(set(modalities)) != len(modalities) or modalities[0] != "ct":
            raise UserInputError(
                f"{where}: modalities {modalities} must be ['ct'] or ['ct', 'pet'] (CT first, the channel order)"
            )
        labels = [str(label) for label in spec.get("labels") or []]
        if kind == "segmentation" and labels and labels[0].lower() != "background":
            labels = ["background", *labels]  # label value 0; plans may list the foreground structures only
        if len(set(labels)) != len(labels):
            raise UserInputError(f"{where}: labels repeat a name: {labels}")
        if kind in ("segmentation", "zero_shot_classification") and not labels:
            raise UserInputError(
                f"{where}: a {kind} task needs 'labels' (segmentation: class names, background first; "
                f"zero-shot: finding names)"
            )
        stem = dict(spec["stem"]) if spec.get("stem") else None
        if stem is not None:
            _unknown_fields(stem, ["patch_size", "in_channels"], f"{where} stem")
            patch = stem.get("patch_size")
            if isinstance(patch, int):
                patch = [patch] * 3
            if not isinstance(patch, Sequence) or len(patch) != 3 or min(int(p) for p in patch) < 1:
                raise UserInputError(f"{where}: stem.patch_size must be [depth, height, width] of positive ints, got {patch!r}")
            stem = {"patch_size": [int(p) for p in patch], "in_channels": int(stem.get("in_channels", len(modalities)))}
            if stem["in_channels"] != len(modalities):
                raise UserInputError(
                    f"{where}: stem.in_channels {stem['in_channels']} must equal the number of modalities "
                    f"{modalities} ({len(modalities)})"
                )
        lora = spec.get("lora")
        if lora is not None and not isinstance(lora, LoraSpec):
            if not isinstance(lora, Mapping):
                raise UserInputError(f"{where}: lora must be a mapping or null, got {lora!r}")
            _unknown_fields(lora, list(LoraSpec.__dataclass_fields__), f"{where} lora")
            lora = LoraSpec(**lora)
        if lora is not None:
            if int(lora.r) <= 0:
                raise UserInputError(f"{where}: lora.r must be a positive rank, got {lora.r}")
            if not 0.0 <= float(lora.dropout) < 1.0:
                raise UserInputError(f"{where}: lora.dropout must be in [0, 1), got {lora.dropout}")
            if lora.target_modules is None:
                lora.target_modules = SPATIAL_ATTENTION_TARGETS if kind == "segmentation" else ALL_ATTENTION_TARGETS
        input_size = spec.get("input_size")
        if input_size is not None:
            input_size = [int(s) for s in input_size]
            if len(input_size) != 3 or min(input_size) < 1:
                raise UserInputError(f"{where}: input_size must be [depth, height, width], got {spec.get('input_size')!r}")
            if stem is not None:
                for axis, size, patch in zip(("depth", "height", "width"), input_size, stem["patch_size"]):
                    if size % patch:
                        raise UserInputError(
                            f"{where}: input_size {axis} {size} is not divisible by the stem patch size {patch}"
                        )
        if kind == "zero_shot_classification" and stem is not None:
            raise UserInputError(
                f"{where}: a zero-shot classification task scores images with the foundation's CLIP projection, "
                f"which is tied to the foundation patch embedding: remove its stem"
            )
        if kind == "zero_shot_classification" and modalities != ["ct"]:
            raise UserInputError(f"{where}: zero-shot classification uses the CT foundation: modalities must be ['ct']")
        if kind != "segmentation" and stem is not None and stem["in_channels"] != len(modalities):
            raise UserInputError(f"{where}: stem.in_channels must equal the number of modalities")
        feature_layers = spec.get("feature_layers")
        if feature_layers is not None:
            feature_layers = [str(f) for f in feature_layers]
            for ref in feature_layers:
                if not re.fullmatch(r"(spatial|temporal)\.\d+|output", ref):
                    raise UserInputError(
                        f"{where}: feature_layers entry {ref!r} must be 'spatial.N', 'temporal.N' or 'output'"
                    )
        head = dict(spec.get("head") or {})
        return cls(name=name, kind=kind, modalities=modalities, labels=labels, stem=stem, lora=lora,
                   input_size=input_size, head=head, feature_layers=feature_layers,
                   merged=bool(spec.get("merged", False)))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.lora is None:
            data["lora"] = None
        return data

    @property
    def in_channels(self) -> int:
        return len(self.modalities)

    def prompts(self) -> list[str]:
        """Zero-shot prompt pair per label, present first: [l0 present, l0 absent, l1 present, ...]."""
        return [template.format(label=label) for label in self.labels for template in PROMPT_TEMPLATES]
