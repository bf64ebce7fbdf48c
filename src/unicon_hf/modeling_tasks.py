"""The task registry of `UniconModel`: stems, PEFT LoRA adapters and heads added one task at a time.

Every task owns three kinds of parts: an optional patch-embedding stem (`task_stems[name]`), a LoRA
adapter named after the task inside the frozen encoder, and a head (`task_heads[name]`). Heads have
different shapes per task, which PEFT's `modules_to_save` cannot hold, so they live in a `ModuleDict`.
Adding a task freezes everything that existed before; a task's adapter is active only inside its own
call, so earlier tasks and the foundation compute exactly what they computed before.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import UserInputError
from .prognosis_head import PrognosisHead
from .segmentation_head import SegmentationDecoder
from .modeling_vision import UniconPatchEmbeddings, check_pixel_values
from .tasks import TaskSpec
from .zero_shot_head import ZeroShotHead

TASK_PACKAGE_FILE = "task.json"
TASK_PARTS_FILE = "task_parts.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass
class TaskAddition:
    """What `add_task` added: parameter counts per part and in bytes."""

    name: str
    stem_parameters: int
    lora_parameters: int
    head_parameters: int
    encoder_parameters: int
    transformer_parameters: int
    bytes: int

    @property
    def total_parameters(self) -> int:
        return self.stem_parameters + self.lora_parameters + self.head_parameters

    @property
    def adapter_fraction(self) -> float:
        """(stem + LoRA) / the CT-CLIP image encoder (CTViT encoder + its CLIP projection `to_visual_latent`)."""
        return (self.stem_parameters + self.lora_parameters) / max(self.encoder_parameters, 1)

    @property
    def transformer_fraction(self) -> float:
        """(stem + LoRA) / the encoder's transformer stages and patch embedding alone (no CLIP projection)."""
        return (self.stem_parameters + self.lora_parameters) / max(self.transformer_parameters, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_parameters": self.total_parameters,
                "adapter_fraction": self.adapter_fraction, "transformer_fraction": self.transformer_fraction}

    def __str__(self) -> str:
        return (
            f"task {self.name!r}: +{self.total_parameters:,} parameters (stem {self.stem_parameters:,}, "
            f"LoRA {self.lora_parameters:,}, head {self.head_parameters:,}; {self.bytes / 2**20:.2f} MiB); "
            f"stem+LoRA = {100 * self.adapter_fraction:.2f}% of the image encoder with its CLIP projection, "
            f"{100 * self.transformer_fraction:.2f}% of its transformer stages"
        )


def default_feature_layers(spec: TaskSpec, spatial_depth: int) -> list[str]:
    """Segmentation: 4 spatial layers evenly spaced, ending at the last (the paper's decoder reads
    spatial-stage outputs); other kinds: the encoder output."""
    if spec.kind != "segmentation":
        return ["output"]
    if spatial_depth < 1:
        raise UserInputError(f"task {spec.name!r}: segmentation needs an encoder with at least one spatial layer")
    return [f"spatial.{max(round((i + 1) * spatial_depth / 4) - 1, 0)}" for i in range(4)]


class UniconTaskMixin:
    """Methods of `UniconModel` that manage and run tasks. Expects `task_stems`, `task_heads`,
    `vision_model`, `text_model` and the CLIP projections on `self`."""

    # ------------------------------------------------------------------------------------ registry
    @property
    def tasks(self) -> list[str]:
        """Names of the tasks added so far, in the order they were added."""
        return list(self.config.tasks)

    def task_spec(self, name: str) -> TaskSpec:
        if name not in self.config.tasks:
            known = ", ".join(repr(t) for t in self.config.tasks) or "none yet (add one with add_task)"
            raise UserInputError(f"unknown task {name!r}; known tasks: {known}")
        return TaskSpec.from_dict(self.config.tasks[name])

    def add_task(self, spec: Mapping[str, Any] | TaskSpec, tokenizer=None) -> TaskAddition:
        """Add a task: its stem, LoRA adapter and head. Every parameter that existed before is frozen;
        only the new task's parts require grad afterwards.

        Args:
            spec: the task spec (see `unicon_hf.tasks.TaskSpec`).
            tokenizer: for zero-shot classification, the text encoder's tokenizer, used once to turn the
                prompt pairs into token ids stored in the task spec.
        """
        spec = TaskSpec.from_dict(spec)
        if spec.name in self.config.tasks:
            raise UserInputError(
                f"a task named {spec.name!r} already exists; choose another name or remove_task({spec.name!r}) first"
            )
        spec = self._complete_spec(spec, tokenizer)
        self._build_task(spec)
        self.config.tasks[spec.name] = spec.to_dict()
        self.freeze_all_but(spec.name)
        return self.task_parameters(spec.name)

    def remove_task(self, name: str) -> None:
        """Remove a task's stem, adapter and head. Other tasks are untouched."""
        self.task_spec(name)
        if name in self.task_stems:
            del self.task_stems[name]
        if name in self.task_heads:
            del self.task_heads[name]
        for parent, attribute, layer in list(self._lora_layers_with_parents()):
            if name in layer.lora_A:
                with warnings.catch_warnings():
                    # PEFT notes which adapter becomes "active"; the registry activates adapters per call anyway.
                    warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
                    layer.delete_adapter(name)
            if not layer.lora_A:  # no adapter left: give the plain projection back
                setattr(parent, attribute, layer.get_base_layer())
        del self.config.tasks[name]
        self.__dict__.pop("_lora_layer_cache", None)

    def freeze_all_but(self, name: str | None) -> None:
        """requires_grad only on the parts of task `name` (nothing at all for None)."""
        for parameter_name, parameter in self.named_parameters():
            parameter.requires_grad = name is not None and self._belongs_to(parameter_name, name)

    def task_parameters(self, name: str) -> TaskAddition:
        """Parameter counts of one task's parts."""
        stem = head = lora = size = 0
        for parameter_name, parameter in self.named_parameters():
            if not self._belongs_to(parameter_name, name):
                continue
            size += parameter.numel() * parameter.element_size()
            if parameter_name.startswith(f"task_stems.{name}."):
                stem += parameter.numel()
            elif parameter_name.startswith(f"task_heads.{name}."):
                head += parameter.numel()
            else:
                lora += parameter.numel()
        transformer = sum(p.numel() for n, p in self.vision_model.named_parameters() if ".lora_" not in n)
        encoder = transformer + self.visual_projection.weight.numel()
        return TaskAddition(name, stem, lora, head, encoder, transformer, size)

    @staticmethod
    def _belongs_to(parameter_name: str, name: str) -> bool:
        return (
            parameter_name.startswith((f"task_stems.{name}.", f"task_heads.{name}."))
            or f".lora_A.{name}." in parameter_name
            or f".lora_B.{name}." in parameter_name
        )

    def _complete_spec(self, spec: TaskSpec, tokenizer) -> TaskSpec:
        """Fill what depends on this model: default feature layers, head sizes, zero-shot prompt ids."""
        spec = copy.deepcopy(spec)
        vision = self.config.vision_config
        if spec.feature_layers is None:
            spec.feature_layers = default_feature_layers(spec, vision.spatial_depth)
        for ref in spec.feature_layers:
            stage, _, index = ref.partition(".")
            depth = {"spatial": vision.spatial_depth, "temporal": vision.temporal_depth}.get(stage)
            if depth is not None and int(index) >= depth:
                raise UserInputError(f"task {spec.name!r}: feature layer {ref!r} does not exist (the {stage} stage has {depth} layers)")
        if spec.stem is None and spec.in_channels != vision.num_channels:
            raise UserInputError(
                f"task {spec.name!r} takes {spec.in_channels} channels ({', '.join(spec.modalities)}) but the "
                f"foundation patch embedding takes {vision.num_channels}: give it a stem with in_channels={spec.in_channels}"
            )
        if spec.kind == "segmentation":
            spec.head.setdefault("num_classes", len(spec.labels))
            spec.head.setdefault("pet_branch", "pet" in spec.modalities)
            if spec.head["num_classes"] != len(spec.labels):
                raise UserInputError(
                    f"task {spec.name!r}: head.num_classes {spec.head['num_classes']} differs from its "
                    f"{len(spec.labels)} labels {spec.labels}"
                )
            if len(spec.feature_layers) != 4:
                raise UserInputError(f"task {spec.name!r}: the segmentation decoder reads exactly 4 feature_layers")
        if spec.kind == "zero_shot_classification" and "prompt_input_ids" not in spec.head:
            if tokenizer is None:
                raise UserInputError(
                    f"task {spec.name!r}: adding a zero-shot classification task needs the text tokenizer "
                    f"(add_task(spec, tokenizer=...)) to encode its prompts"
                )
            encoded = tokenizer(spec.prompts(), padding=True, truncation=True,
                                max_length=self.config.text_config.max_position_embeddings)
            spec.head["prompt_input_ids"] = [list(map(int, ids)) for ids in encoded["input_ids"]]
            spec.head["prompt_attention_mask"] = [list(map(int, m)) for m in encoded["attention_mask"]]
        return spec

    def _build_task(self, spec: TaskSpec) -> None:
        """Create a task's modules (used by add_task and when a saved model is rebuilt from its config)."""
        vision = self.config.vision_config
        if spec.stem is not None:
            self.task_stems[spec.name] = UniconPatchEmbeddings(
                spec.stem["in_channels"], spec.stem["patch_size"], vision.hidden_size, vision.layer_norm_eps
            )
        patch_shape = spec.stem["patch_size"] if spec.stem is not None else vision.patch_shape
        if spec.kind == "segmentation":
            head = SegmentationDecoder(spec.head, vision.hidden_size, patch_shape)
        elif spec.kind == "prognosis":
            head = PrognosisHead(spec.head, image_dim=vision.hidden_size, text_dim=self.config.text_config.hidden_size)
        else:
            head = ZeroShotHead(spec.labels, spec.head["prompt_input_ids"], spec.head["prompt_attention_mask"])
        self.task_heads[spec.name] = head
        if spec.lora is not None and not spec.merged:
            self._inject_lora(spec)
        self.train(self.training)  # new modules (dropout!) follow the model's train/eval mode

    def _inject_lora(self, spec: TaskSpec) -> None:
        lora = spec.lora
        config = LoraConfig(r=int(lora.r), lora_alpha=lora.alpha, lora_dropout=float(lora.dropout),
                            target_modules=lora.target_modules, bias="none")
        flags = {name: p.requires_grad for name, p in self.named_parameters()}
        try:
            with warnings.catch_warnings():
                # PEFT warns that a second adapter joins the model: one adapter per task is the design.
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                inject_adapter_in_model(config, self, adapter_name=spec.name)
        except ValueError as error:
            if "not found" not in str(error) and "match" not in str(error):
                raise
            candidates = sorted({n.rsplit(".", 1)[-1] for n, m in self.vision_model.named_modules() if isinstance(m, nn.Linear)})
            raise UserInputError(
                f"task {spec.name!r}: LoRA target_modules {lora.target_modules!r} match no module of the model; "
                f"linear layers of the image encoder are named {candidates} (e.g. the default targets the "
                f"attention projections q_proj, kv_proj, out_proj)"
            ) from None
        # PEFT marks every adapter trainable on injection; the registry decides what trains.
        for name, parameter in self.named_parameters():
            parameter.requires_grad = flags.get(name, False)
        self.__dict__.pop("_lora_layer_cache", None)
        for layer in self._lora_layers():
            layer.enable_adapters(False)  # the foundation call never sees an adapter
            if spec.name in layer.lora_A:
                for sub in (layer.lora_A[spec.name], layer.lora_B[spec.name]):
                    sub._unicon_lora = True  # tells _init_weights to leave PEFT's initialisation alone
        for parameter_name, parameter in self.named_parameters():
            parameter.requires_grad = flags.get(parameter_name, False)

    def _lora_layers(self) -> list:
        # Cached: walking every module on each task call cost a third of a small model's forward. The
        # cache is keyed by the tasks present, which is what changes the set of LoRA layers.
        key = tuple((name, TaskSpec.from_dict(spec).merged) for name, spec in self.config.tasks.items())
        cache = self.__dict__.get("_lora_layer_cache")
        if cache is None or cache[0] != key or any(not isinstance(m, LoraLayer) for m in cache[1]):
            cache = (key, [m for m in self.modules() if isinstance(m, LoraLayer)])
            self.__dict__["_lora_layer_cache"] = cache
        return cache[1]

    def _lora_layers_with_parents(self):
        for parent in self.modules():
            for attribute, child in parent.named_children():
                if isinstance(child, LoraLayer):
                    yield parent, attribute, child

    @contextmanager
    def _adapter_active(self, spec: TaskSpec):
        """Inside: only `spec`'s adapter is applied (none for tasks without LoRA). requires_grad flags are
        kept as they were, because PEFT's set/enable calls rewrite them."""
        layers = list(self._lora_layers())
        flags = [(p, p.requires_grad) for layer in layers for p in layer.parameters()]
        use = spec.lora is not None and not spec.merged
        try:
            for layer in layers:
                if use and spec.name in layer.lora_A:
                    layer.enable_adapters(True)
                    layer.set_adapter(spec.name)
                else:
                    layer.enable_adapters(False)
            for parameter, flag in flags:
                parameter.requires_grad = flag
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(False)
            for parameter, flag in flags:
                parameter.requires_grad = flag

    # ------------------------------------------------------------------------------------ running
    def forward_task(
        self,
        task: str,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        event_time: torch.Tensor | None = None,
        event: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ):
        """Run one task with its own stem, adapter and head."""
        spec = self.task_spec(task)
        head = self.task_heads[task]
        with self._adapter_active(spec):
            if spec.kind == "segmentation":
                if pixel_values is None:
                    raise UserInputError(f"task {task!r} (segmentation) needs pixel_values")
                features = self._task_image_features(spec, pixel_values)
                return head(pixel_values, features, labels=labels)
            if spec.kind == "prognosis":
                inputs = head.config.inputs
                image_tokens = text_hidden = None
                if "image" in inputs:
                    if pixel_values is None:
                        raise UserInputError(f"task {task!r} uses the image: pass pixel_values")
                    image_tokens = self._task_image_features(spec, pixel_values)[0]
                if "text" in inputs:
                    if input_ids is None:
                        raise UserInputError(f"task {task!r} uses the report text: pass input_ids (and attention_mask)")
                    text_hidden = self.encode_text(input_ids, attention_mask, token_type_ids).last_hidden_state
                return head(image_tokens=image_tokens, text_hidden=text_hidden, attention_mask=attention_mask,
                            event_time=event_time, event=event)
            # zero-shot classification
            if pixel_values is None:
                raise UserInputError(f"task {task!r} (zero-shot classification) needs pixel_values")
            self._check_task_channels(spec, pixel_values)
            vision = self.vision_model(pixel_values, quantize=self.config.use_vector_quantization)
            tokens = vision.quantized_tokens if vision.quantized_tokens is not None else vision.last_hidden_state
            image_embeds = F.normalize(self.project_image_tokens(tokens), dim=-1)
            if input_ids is None:
                input_ids, attention_mask = head.prompt_input_ids, head.prompt_attention_mask
            text = self.encode_text(input_ids, attention_mask)
            text_embeds = F.normalize(self.text_projection(text.last_hidden_state[:, 0]), dim=-1)
            return head(image_embeds, text_embeds, self.logit_scale, labels=labels)

    def _check_task_channels(self, spec: TaskSpec, pixel_values: torch.Tensor) -> None:
        if isinstance(pixel_values, torch.Tensor) and pixel_values.ndim == 5 and pixel_values.shape[1] != spec.in_channels:
            raise UserInputError(
                f"task {spec.name!r} expects {spec.in_channels} input channel(s) ({', '.join(spec.modalities)}, in "
                f"that order) but pixel_values has {pixel_values.shape[1]}"
                + ("; stack the CT and the PET (on the CT grid) on the channel axis" if "pet" in spec.modalities else "")
            )

    def _task_image_features(self, spec: TaskSpec, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The encoder outputs named by `spec.feature_layers`, each (B, T, h, w, hidden)."""
        self._check_task_channels(spec, pixel_values)
        stem = self.task_stems[spec.name] if spec.name in self.task_stems else None
        if stem is not None:
            check_pixel_values(pixel_values, stem.in_channels, stem.patch_shape)
        needs_temporal = any(not ref.startswith("spatial.") for ref in spec.feature_layers)
        vision = self.vision_model(
            pixel_values, patch_embeddings=stem, output_hidden_states=True, quantize=False,
            run_temporal=needs_temporal,
        )
        features = []
        for ref in spec.feature_layers:
            if ref == "output":
                features.append(vision.last_hidden_state)
            else:
                stage, _, index = ref.partition(".")
                hidden = vision.spatial_hidden_states if stage == "spatial" else vision.temporal_hidden_states
                features.append(hidden[int(index)])
        return features

    def forward_mixed(self, tasks: Sequence[str], pixel_values=None, **inputs) -> list:
        """Batched inference where sample i runs task `tasks[i]`: samples are grouped by task, each group
        runs as one batch, and the per-sample outputs come back in input order.

        `pixel_values` may be one tensor or a list of per-sample (C, D, H, W) tensors (tasks may take
        different channel counts or sizes); other inputs are batched tensors indexed like `tasks`.
        """
        if pixel_values is not None and len(pixel_values) != len(tasks):
            raise UserInputError(f"{len(tasks)} task names for {len(pixel_values)} samples")
        results: list = [None] * len(tasks)
        for task in dict.fromkeys(tasks):
            index = [i for i, t in enumerate(tasks) if t == task]
            group = {key: value[index] for key, value in inputs.items() if value is not None}
            if pixel_values is not None:
                group["pixel_values"] = torch.stack([pixel_values[i] for i in index])
            output = self.forward_task(task, **group)
            for position, i in enumerate(index):
                results[i] = type(output)(**{
                    key: (value[position:position + 1] if isinstance(value, torch.Tensor) and value.ndim > 0
                          and value.shape[0] == len(index) else value)
                    for key, value in output.items()
                })
        return results

    # ------------------------------------------------------------------------------------ deployment
    def merge_task(self, name: str):
        """A copy of this model holding only task `name`, with its LoRA merged into the encoder weights
        (no adapter indirection at inference). The copy's foundation (CLIP) call is disabled, since its
        encoder weights are no longer the foundation's."""
        spec = self.task_spec(name)
        merged = copy.deepcopy(self)
        for other in list(merged.tasks):
            if other != name:
                merged.remove_task(other)
        for parent, attribute, layer in list(merged._lora_layers_with_parents()):
            layer.merge(adapter_names=[name])
            setattr(parent, attribute, layer.get_base_layer())
        merged.__dict__.pop("_lora_layer_cache", None)
        spec.merged = True
        merged.config.tasks[name] = spec.to_dict()
        merged.config.merged_task = name
        merged.freeze_all_but(None)
        return merged.eval()

    # ------------------------------------------------------------------------------------ packages
    def foundation_fingerprint(self) -> str:
        """sha256 of the foundation weights (encoder without adapters, text encoder, projections)."""
        digest = hashlib.sha256()
        for key, tensor in sorted(self.state_dict().items()):
            if key.startswith(("task_stems.", "task_heads.")) or ".lora_" in key:
                continue
            digest.update(key.replace(".base_layer.", ".").encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def export_task(self, name: str, output_dir: str | Path) -> Path:
        """Write task `name` as a standalone package: PEFT `adapter_config.json` + `adapter_model.safetensors`
        (when it has LoRA), `task_parts.safetensors` (stem + head) and `task.json` (spec + foundation id)."""
        spec = self.task_spec(name)
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        if spec.lora is not None and not spec.merged:
            LoraConfig(r=int(spec.lora.r), lora_alpha=spec.lora.alpha, lora_dropout=float(spec.lora.dropout),
                       target_modules=spec.lora.target_modules, bias="none",
                       base_model_name_or_path=getattr(self.config, "_name_or_path", None) or None,
                       ).save_pretrained(output_dir)
            # PEFT's own layout: `base_model.model.<module>.lora_A.weight`, adapter name removed.
            adapter = {
                "base_model.model." + key.replace(f".lora_A.{name}.", ".lora_A.").replace(f".lora_B.{name}.", ".lora_B."): t
                for key, t in state.items() if f".lora_A.{name}." in key or f".lora_B.{name}." in key
            }
            save_file({k: v.contiguous() for k, v in adapter.items()}, output_dir / ADAPTER_WEIGHTS_FILE,
                      metadata={"format": "pt"})
        parts = {key: t.contiguous() for key, t in state.items() if key.startswith((f"task_stems.{name}.", f"task_heads.{name}."))}
        save_file(parts, output_dir / TASK_PARTS_FILE, metadata={"format": "pt"})
        package = {"spec": spec.to_dict(), "foundation_fingerprint": self.foundation_fingerprint(),
                   "format": "unicon-task-package/1"}
        (output_dir / TASK_PACKAGE_FILE).write_text(json.dumps(package, indent=2))
        return output_dir

    def import_task(self, package_dir: str | Path, name: str | None = None) -> TaskAddition:
        """Add a task exported by `export_task` (optionally under another name). The package must have been
        exported from this same foundation (checked by fingerprint)."""
        package_dir = Path(package_dir)
        manifest = package_dir / TASK_PACKAGE_FILE
        if not manifest.is_file():
            raise UserInputError(f"{package_dir} is not a task package: {TASK_PACKAGE_FILE} is missing")
        package = json.loads(manifest.read_text())
        if package["foundation_fingerprint"] != self.foundation_fingerprint():
            raise UserInputError(
                f"task package {package_dir} was exported from another foundation model (fingerprint "
                f"{package['foundation_fingerprint'][:12]}... vs this model's {self.foundation_fingerprint()[:12]}...); "
                f"import it into the model it was trained on"
            )
        spec = TaskSpec.from_dict(package["spec"])
        original = spec.name
        spec.name = name or original
        addition = self.add_task(spec)
        state = {}
        for key, tensor in load_file(package_dir / TASK_PARTS_FILE).items():
            state[key.replace(f"task_stems.{original}.", f"task_stems.{spec.name}.", 1)
                  .replace(f"task_heads.{original}.", f"task_heads.{spec.name}.", 1)] = tensor
        if (package_dir / ADAPTER_WEIGHTS_FILE).is_file():
            for key, tensor in load_file(package_dir / ADAPTER_WEIGHTS_FILE).items():
                key = key.removeprefix("base_model.model.")
                key = key.replace(".lora_A.", f".lora_A.{spec.name}.").replace(".lora_B.", f".lora_B.{spec.name}.")
                state[key] = tensor
        expected = {k for k in self.state_dict() if self._belongs_to(k, spec.name) or k.startswith((f"task_stems.{spec.name}.", f"task_heads.{spec.name}."))}
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - set(self.state_dict()))
        if missing or unexpected:
            self.remove_task(spec.name)
            raise UserInputError(f"task package {package_dir} does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.load_state_dict(state, strict=False)
        return addition
