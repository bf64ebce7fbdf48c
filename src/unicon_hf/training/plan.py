"""Stage plans: the YAML file that drives a continual run, loaded into dataclasses and validated.

A plan names the model to start from, an optional CLIP pretraining stage, and a list of stages,
each adding one task (see the task-spec convention in `UniconConfig.tasks`) with its data,
training and evaluation settings:

```yaml
seed: 0
model:
  config: {...}                 # a fresh UniconConfig, or
  from_pretrained: org/name     # a saved / converted foundation (folder or Hub repo)
  pretrain: {data: {...}, train: {...}}   # optional CLIP stage
stages:
  - task: {name: seg_ct, kind: segmentation, modalities: [ct], labels: [GTVp, GTVn], ...}
    data: {kind: hecktor, root: /data/hecktor2022, val_fraction: 0.2}
    train: {max_steps: 1000, batch_size: 2, learning_rate: 1.0e-4, ...}
    eval: {sliding_window_overlap: 0.5}
```

Everything is checked before any training (`load_plan` / `Plan.from_dict`): all problems are
collected and raised together as one `UserInputError`, each line naming where it is, e.g.
`stage 2 ('seg_ct'): task.kind 'segmentaton' is not one of zero_shot_classification, prognosis,
segmentation (did you mean 'segmentation'?)`. Unknown keys get the closest valid name.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UserInputError

TASK_KINDS = ("zero_shot_classification", "prognosis", "segmentation")
MODALITIES = ("ct", "pet")
DATA_KINDS = ("hecktor", "ct-rate", "nifti-folder")
SCHEDULERS = ("cosine", "linear", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")
# Which data layouts can feed which task kind (CT-RATE has no PET, masks or survival; HECKTOR has
# no reports or findings labels); a nifti-folder with a metadata.csv can carry anything.
DATA_FOR_TASK = {
    "zero_shot_classification": ("ct-rate", "nifti-folder"),
    "prognosis": ("hecktor", "nifti-folder"),
    "segmentation": ("hecktor", "nifti-folder"),
}
# Metrics a stage may select on (early stopping) or report as its main metric, per task kind.
TASK_METRICS = {
    "zero_shot_classification": ("auroc_macro",),
    "prognosis": ("c_index", "td_auc_mean", "ibs"),
    "segmentation": ("dice_mean", "aggregated_dice_mean", "hd95_mean"),
}
LOWER_IS_BETTER = ("loss", "ibs", "hd95_mean")
# The encoder's attention projections (modeling_vision): LoRA's default targets, as in the paper.
DEFAULT_LORA_TARGETS = ["q_proj", "kv_proj", "out_proj"]
TASK_KEYS = ("name", "kind", "modalities", "labels", "stem", "lora", "input_size", "head")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Problems:
    """Collects validation messages so the user sees every problem of a plan at once."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.messages.append(f"{where}: {message}" if where else message)

    def raise_if_any(self, source: str) -> None:
        if self.messages:
            lines = "\n".join(f"  - {m}" for m in self.messages)
            count = len(self.messages)
            raise UserInputError(f"{count} problem{'s' if count > 1 else ''} in plan {source}:\n{lines}")


def _suggest(name: str, valid: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(data: Any, valid: tuple[str, ...], where: str, what: str, problems: _Problems) -> dict:
    """Return `data` as a dict, reporting a non-mapping and every unknown key (with a suggestion)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.add(where, f"{what} must be a mapping of settings, got {type(data).__name__} {data!r}")
        return {}
    for key in data:
        if key not in valid:
            problems.add(where, f"unknown key {what + '.' if what else ''}{key!r}{_suggest(key, valid)}; "
                                f"valid keys: {', '.join(valid)}")
    return {k: v for k, v in data.items() if k in valid}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int_triplet(value: Any, where: str, name: str, problems: _Problems, minimum: int = 1) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_int(v) and v >= minimum for v in value):
        problems.add(where, f"{name} must be 3 integers >= {minimum} (D, H, W), got {value!r}")
        return None
    return [int(v) for v in value]


def _expand_path(value: str) -> str:
    return os.path.expanduser(os.path.expandvars(str(value)))


def _unset_variables(expanded: str) -> list[str]:
    """Environment variables still unexpanded after `os.path.expandvars` (i.e. not set)."""
    return re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", expanded)


def _check_path(value: str, where: str, name: str, problems: _Problems, check_paths: bool, hint: str = "") -> str:
    expanded = _expand_path(value)
    unset = _unset_variables(expanded)
    if unset and check_paths:  # without path checks (a dry run) an unset variable is only a path not known yet
        problems.add(where, f"{name} {value!r} uses environment variable(s) {', '.join(unset)} that are not set")
    elif check_paths and not Path(expanded).exists():
        problems.add(where, f"{name} {expanded!r} does not exist; {hint or 'fix the path'}")
    return expanded


# ---------------------------------------------------------------------------------------------
# Dataclasses
# ---------------------------------------------------------------------------------------------


@dataclass
class PhantomSpec:
    """Synthetic data generated on the fly (`unicon_hf.data.phantoms`).

    Attributes:
        n: number of cases (>= 2: one must go to validation).
        seed: generator seed (same seed -> identical files).
        shape: voxel grid (D, H, W); the generator's default when None.
        spacing: voxel size in mm (D, H, W); the generator's default when None.
    """

    n: int = 20
    seed: int = 0
    shape: list[int] | None = None
    spacing: list[float] | None = None


@dataclass
class DataSpec:
    """Where a stage's cases come from and how they are split.

    Attributes:
        kind: layout: `hecktor`, `ct-rate` or `nifti-folder`.
        root: dataset folder (environment variables and `~` are expanded); or use `phantoms`.
        phantoms: generate synthetic cases in the `kind` layout instead of reading `root`.
        val_fraction: fraction of cases held out for validation (default 0.2 when no fold is given).
        fold: use the `fold` column of the clinical CSV: this fold is validation, the rest training.
        clinical_csv: HECKTOR clinical table, when not `<root>/hecktor2022_clinical_info_training.csv`.
        max_cases: use at most this many cases (quick runs); None = all.
    """

    kind: str = "hecktor"
    root: str | None = None
    phantoms: PhantomSpec | None = None
    val_fraction: float | None = None
    fold: int | None = None
    clinical_csv: str | None = None
    max_cases: int | None = None


@dataclass
class EarlyStopping:
    """Stop a stage when the validation `metric` has not improved for `patience` evaluations."""

    patience: int = 5
    metric: str = "loss"
    mode: str = "min"


@dataclass
class TrainSpec:
    """Optimisation settings of one stage (AdamW; only the new task's parameters are trained).

    Attributes:
        max_steps: optimizer steps (0 = evaluation-only stage); exclusive with `epochs`.
        epochs: passes over the training split; exclusive with `max_steps`.
        batch_size: cases per device per step.
        learning_rate, weight_decay: AdamW settings.
        scheduler: `cosine`, `linear` or `constant` (after warmup).
        warmup_steps: linear warmup steps.
        gradient_accumulation_steps: micro-batches per optimizer step.
        mixed_precision: `no`, `bf16` or `fp16` (Accelerate).
        eval_every: validate every N optimizer steps (None: at the end of each epoch / the stage).
        checkpoint_every: save Accelerate state every N optimizer steps (None: only at stage end).
        max_grad_norm: gradient clipping (None: off).
        early_stopping: optional `{patience, metric, mode}` on the validation split.
    """

    max_steps: int | None = None
    epochs: int | None = None
    batch_size: int = 2
    learning_rate: float = 1e-4
    weight_decay: float = 1e-5
    scheduler: str = "cosine"
    warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    eval_every: int | None = None
    checkpoint_every: int | None = None
    max_grad_norm: float | None = 1.0
    early_stopping: EarlyStopping | None = None


@dataclass
class EvalSpec:
    """Evaluation settings of a stage's task (used after this and every later stage).

    Attributes:
        batch_size: cases per evaluation batch.
        main_metric: metric stored in the forgetting matrix (default: the kind's main metric).
        baseline: reference value of the main metric for forward transfer (e.g. single-task result).
        sliding_window_overlap: overlap of sliding-window inference windows (segmentation).
        sw_batch_size: windows per forward pass (segmentation).
        hd95: compute HD95 (segmentation; slower).
        overlays: number of cases drawn as segmentation overlays in the report.
    """

    batch_size: int = 1
    main_metric: str | None = None
    baseline: float | None = None
    sliding_window_overlap: float = 0.25
    sw_batch_size: int = 1
    hd95: bool = True
    overlays: int = 2


@dataclass
class StagePlan:
    """One continual stage: the task it adds and how to train and evaluate it."""

    task: dict[str, Any]
    data: DataSpec
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)

    @property
    def name(self) -> str:
        return self.task["name"]


@dataclass
class PretrainSpec:
    """CLIP contrastive pretraining of a fresh foundation on image-report pairs (CT-RATE layout)."""

    data: DataSpec
    train: TrainSpec = field(default_factory=TrainSpec)


@dataclass
class ModelSpec:
    """The foundation to start from: `from_pretrained` (folder or Hub repo id) or a fresh `config`."""

    from_pretrained: str | None = None
    revision: str | None = None
    config: dict[str, Any] | None = None
    pretrain: PretrainSpec | None = None


@dataclass
class HubSpec:
    """Optional push of each completed stage to a Hub repo (one revision per stage)."""

    repo_id: str
    private: bool = True


@dataclass
class Plan:
    """A validated stage plan. Build with `load_plan(path)` or `Plan.from_dict(data)`."""

    seed: int
    model: ModelSpec
    stages: list[StagePlan]
    processor: dict[str, Any] = field(default_factory=dict)  # UniconImageProcessor settings
    hub: HubSpec | None = None
    source: str = "<dict>"

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", check_paths: bool = True) -> Plan:
        """Validate a plan dict (as read from YAML) and build it; raises one `UserInputError` listing every problem.

        Args:
            data: the plan mapping.
            source: where it came from (shown in errors).
            check_paths: check that data roots and local model folders exist (turn off to validate a
                plan written for another machine).
        """
        return _PlanBuilder(source, check_paths).build(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-serialisable) that `from_dict` turns back into an equal plan."""
        out = asdict(self)
        out.pop("source")
        if out["hub"] is None:
            out.pop("hub")
        return out

    def task_names(self) -> list[str]:
        """Task names in stage order."""
        return [s.name for s in self.stages]

    def summary(self) -> str:
        """A few human-readable lines describing the plan (for dry runs and logs)."""
        model = self.model
        start = f"from_pretrained {model.from_pretrained}" if model.from_pretrained else "fresh config"
        lines = [f"plan {self.source}: seed {self.seed}, model {start}"
                 + (f", CLIP pretraining on {_describe_data(model.pretrain.data)}" if model.pretrain else "")]
        for i, stage in enumerate(self.stages):
            t, tr = stage.task, stage.train
            budget = f"{tr.max_steps} steps" if tr.max_steps is not None else f"{tr.epochs} epochs"
            budget = "evaluation only" if tr.max_steps == 0 else f"{budget}, lr {tr.learning_rate:g}"
            lora = f"LoRA r={t['lora']['r']}" if t.get("lora") else "no LoRA"
            lines.append(f"  stage {i} {t['name']!r}: {t['kind']} on {'+'.join(t['modalities'])}, {lora}, "
                         f"{budget}, data {_describe_data(stage.data)}")
        return "\n".join(lines)


def _describe_data(data: DataSpec) -> str:
    if data.phantoms is not None:
        return f"{data.kind} phantoms (n={data.phantoms.n}, seed={data.phantoms.seed})"
    return f"{data.kind} at {data.root}"


def load_plan(path: str | os.PathLike, check_paths: bool = True) -> Plan:
    """Read a YAML stage plan and validate it (see `Plan.from_dict`)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"plan file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserInputError(f"plan {path}: not valid YAML: {exc}") from exc
    return Plan.from_dict(data, source=str(path), check_paths=check_paths)


def save_plan(plan: Plan, path: str | os.PathLike) -> None:
    """Write a plan as YAML (e.g. next to a run's outputs, to record what ran)."""
    import yaml

    Path(path).write_text(yaml.safe_dump(plan.to_dict(), sort_keys=False))


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


class _PlanBuilder:
    """Walks a plan dict, building dataclasses and collecting every problem with its location."""

    def __init__(self, source: str, check_paths: bool):
        self.source = source
        self.check_paths = check_paths
        self.problems = _Problems()

    def build(self, data: Any) -> Plan:
        p = self.problems
        if not isinstance(data, dict):
            raise UserInputError(f"plan {self.source}: expected a mapping with seed, model and stages, got "
                                 f"{type(data).__name__}")
        top = _check_keys(data, ("seed", "model", "processor", "stages", "hub"), "plan", "", p)
        seed = top.get("seed", 0)
        if not _is_int(seed):
            p.add("plan", f"seed must be an integer, got {seed!r}")
            seed = 0
        if "model" not in top:
            p.add("plan", "missing 'model' (from_pretrained: PATH_OR_REPO, or config: {...})")
            model = ModelSpec()
        else:
            model = self._model(top["model"])
        stages_data = top.get("stages")
        stages: list[StagePlan] = []
        if not isinstance(stages_data, list) or not stages_data:
            p.add("plan", "'stages' must be a non-empty list of stages (each with task, data, train)")
        else:
            seen: dict[str, int] = {}
            for i, stage_data in enumerate(stages_data):
                stage = self._stage(i, stage_data, seen)
                if stage is not None:
                    stages.append(stage)
        processor = top.get("processor") or {}
        if not isinstance(processor, dict):
            p.add("plan", f"processor must be a mapping of UniconImageProcessor settings, got {processor!r}")
            processor = {}
        else:
            from ..image_processing_unicon import UniconImageProcessor

            try:
                UniconImageProcessor(**processor)
            except (UserInputError, TypeError) as exc:
                p.add("plan", f"processor: {exc}")
        hub = None
        if top.get("hub") is not None:
            h = _check_keys(top["hub"], _field_names(HubSpec), "hub", "hub", p)
            if not isinstance(h.get("repo_id"), str) or "/" not in h.get("repo_id", ""):
                p.add("hub", f"repo_id must be 'owner/name', got {h.get('repo_id')!r}")
            else:
                hub = HubSpec(repo_id=h["repo_id"], private=bool(h.get("private", True)))
        p.raise_if_any(self.source)
        return Plan(seed=seed, model=model, stages=stages, processor=processor, hub=hub, source=self.source)

    # ---------------------------------------------------------------- model
    def _model(self, data: Any) -> ModelSpec:
        p = self.problems
        m = _check_keys(data, _field_names(ModelSpec), "model", "model", p)
        spec = ModelSpec(from_pretrained=m.get("from_pretrained"), revision=m.get("revision"), config=m.get("config"))
        if (spec.from_pretrained is None) == (spec.config is None):
            p.add("model", "give exactly one of from_pretrained (a folder or Hub repo id) or config (a fresh model)")
        if spec.from_pretrained is not None:
            spec.from_pretrained = self._check_pretrained(str(spec.from_pretrained))
        if spec.config is not None:
            if not isinstance(spec.config, dict):
                p.add("model", f"config must be a mapping of UniconConfig fields, got {spec.config!r}")
            else:
                try:
                    from ..configuration_unicon import UniconConfig

                    UniconConfig(**spec.config)
                except (UserInputError, TypeError, ValueError) as exc:
                    p.add("model.config", f"not a valid UniconConfig: {exc}")
        if m.get("pretrain") is not None:
            pre = _check_keys(m["pretrain"], _field_names(PretrainSpec), "model.pretrain", "pretrain", p)
            data_spec = self._data(pre.get("data"), "model.pretrain", "zero_shot_classification", ["ct"])
            train = self._train(pre.get("train"), "model.pretrain", None)
            if "data" not in pre:
                p.add("model.pretrain", "missing 'data' (image-report pairs in the ct-rate layout)")
            elif data_spec.kind != "ct-rate":
                p.add("model.pretrain", f"data.kind must be 'ct-rate' (image-report pairs), got {data_spec.kind!r}")
            spec.pretrain = PretrainSpec(data=data_spec, train=train)
        return spec

    def _check_pretrained(self, value: str) -> str:
        """A local folder (must exist) or a Hub repo id 'owner/name'; returns the expanded value."""
        expanded = _expand_path(value)
        looks_local = expanded.startswith(("/", ".", "~")) or Path(expanded).exists() or expanded.count("/") > 1
        if looks_local or _unset_variables(expanded):
            return _check_path(value, "model", "from_pretrained folder", self.problems, self.check_paths,
                               hint="convert a CT-CLIP checkpoint there (unicon convert-ctclip) or give a Hub repo id")
        if not re.match(r"^[\w.-]+/[\w.-]+$", expanded):
            self.problems.add("model", f"from_pretrained {value!r} is neither an existing folder nor a Hub repo id "
                                       "'owner/name'")
        return expanded

    # ---------------------------------------------------------------- stages
    def _stage(self, i: int, data: Any, seen: dict[str, int]) -> StagePlan | None:
        p = self.problems
        task_data = data.get("task") if isinstance(data, dict) else None
        name = task_data.get("name") if isinstance(task_data, dict) else None
        where = f"stage {i} ({name!r})" if name else f"stage {i}"
        s = _check_keys(data, ("task", "data", "train", "eval"), where, "", p)
        if not isinstance(data, dict):
            return None
        for required in ("task", "data"):
            if required not in s:
                p.add(where, f"missing '{required}'")
        task = self._task(s.get("task"), where)
        if task is None:
            return None
        if isinstance(name, str):
            if name in seen:
                p.add(where, f"task.name {name!r} repeats the task of stage {seen[name]}; each stage must add a new "
                             "task (give it a new name, e.g. "
                             f"{name + '_' + '_'.join(task['modalities'])!r})")
            else:
                seen[name] = i
        data_spec = self._data(s.get("data"), where, task["kind"], task["modalities"])
        train = self._train(s.get("train"), where, task["kind"])
        eval_spec = self._eval(s.get("eval"), where, task["kind"])
        return StagePlan(task=task, data=data_spec, train=train, eval=eval_spec)

    def _task(self, data: Any, where: str) -> dict[str, Any] | None:
        p = self.problems
        t = _check_keys(data, TASK_KEYS, where, "task", p)
        if not t:
            return None
        name = t.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            p.add(where, f"task.name must be a name like 'seg_ct' (letters, digits, underscores; it keys adapters "
                         f"and heads), got {name!r}")
        kind = t.get("kind")
        if kind not in TASK_KINDS:
            p.add(where, f"task.kind {kind!r} is not one of {', '.join(TASK_KINDS)}{_suggest(kind, TASK_KINDS)}")
        modalities = t.get("modalities", ["ct"])
        if (not isinstance(modalities, list) or not modalities or len(set(modalities)) != len(modalities)
                or not all(m in MODALITIES for m in modalities)):
            p.add(where, f"task.modalities must be a list drawn from {', '.join(MODALITIES)} without repeats, "
                         f"got {modalities!r}")
            modalities = ["ct"]
        elif modalities != sorted(modalities, key=MODALITIES.index):
            p.add(where, f"task.modalities must list CT first, then PET (the channel order), got {modalities!r}")
        labels = t.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
            p.add(where, f"task.labels must be a list of names, got {labels!r}")
            labels = []
        elif len(set(labels)) != len(labels):
            p.add(where, f"task.labels repeat a name: {labels!r}")
        if kind in ("segmentation", "zero_shot_classification") and not labels:
            what = ("the foreground structures in label-value order, e.g. [GTVp, GTVn]" if kind == "segmentation"
                    else "the findings to classify")
            p.add(where, f"task.labels is required for {kind}: {what}")
        if kind == "segmentation" and labels and labels[0].lower() == "background":
            labels = labels[1:]  # label 0 is always background; the plan keeps the foreground structures
        if kind == "segmentation" and any(x.lower() == "background" for x in labels):
            p.add(where, "task.labels: 'background' can only be the first label (label value 0)")
        stem = self._stem(t.get("stem"), where, modalities)
        lora = self._lora(t.get("lora"), where)
        input_size = _int_triplet(t.get("input_size"), where, "task.input_size", p)
        if kind == "segmentation" and input_size is None and t.get("input_size") is None:
            input_size = [96, 96, 96]
        if stem and input_size and any(s % q for s, q in zip(input_size, stem["patch_size"])):
            p.add(where, f"task.input_size {input_size} must be divisible by stem.patch_size {stem['patch_size']}")
        head = t.get("head") or {}
        if not isinstance(head, dict):
            p.add(where, f"task.head must be a mapping of head settings, got {head!r}")
            head = {}
        head = self._head(kind, head, labels, modalities, where)
        return {"name": name, "kind": kind, "modalities": list(modalities), "labels": list(labels), "stem": stem,
                "lora": lora, "input_size": input_size, "head": head}

    def _stem(self, data: Any, where: str, modalities: list[str]) -> dict | None:
        p = self.problems
        if data is None:
            if "pet" in modalities:
                p.add(where, f"task.modalities {modalities} need a new stem (patch embedding) with in_channels "
                             f"{len(modalities)}: add stem: {{patch_size: [16, 16, 16], in_channels: {len(modalities)}}}")
            return None
        s = _check_keys(data, ("patch_size", "in_channels"), where, "task.stem", p)
        patch = _int_triplet(s.get("patch_size", [16, 16, 16]), where, "task.stem.patch_size", p)
        channels = s.get("in_channels", len(modalities))
        if not _is_int(channels) or channels != len(modalities):
            p.add(where, f"task.stem.in_channels must equal the number of modalities ({len(modalities)}: "
                         f"{'+'.join(modalities)}), got {channels!r}")
        return {"patch_size": patch, "in_channels": len(modalities)} if patch else None

    def _lora(self, data: Any, where: str) -> dict | None:
        p = self.problems
        if data is None:
            return None
        s = _check_keys(data, ("r", "alpha", "dropout", "target_modules"), where, "task.lora", p)
        r = s.get("r", 8)
        if not _is_int(r) or r <= 0:
            p.add(where, f"task.lora.r (rank) must be a positive integer, got {r!r}; remove 'lora' to train "
                         "without LoRA")
        alpha = s.get("alpha", 32)
        if not _is_number(alpha) or alpha <= 0:
            p.add(where, f"task.lora.alpha must be a positive number, got {alpha!r}")
        dropout = s.get("dropout", 0.0)
        if not _is_number(dropout) or not 0 <= dropout < 1:
            p.add(where, f"task.lora.dropout must be in [0, 1), got {dropout!r}")
        # None lets the task spec choose the kind's default (segmentation: spatial stage only).
        targets = s.get("target_modules")
        if targets is not None and not (isinstance(targets, str) or (isinstance(targets, list) and targets
                                                                     and all(isinstance(x, str) for x in targets))):
            p.add(where, f"task.lora.target_modules must be a list of module names or a regex, got {targets!r}")
        return {"r": r, "alpha": alpha, "dropout": dropout, "target_modules": targets}

    def _head(self, kind: Any, head: dict, labels: list[str], modalities: list[str], where: str) -> dict:
        """Check the head dict with the head's own config class, so the plan and the model agree."""
        p = self.problems
        try:
            if kind == "prognosis":
                from ..prognosis_head import PrognosisHeadConfig

                return asdict(PrognosisHeadConfig.from_dict(head))
            if kind == "segmentation":
                from ..segmentation_head import SegmentationHeadConfig

                config = SegmentationHeadConfig.from_dict({"num_classes": len(labels) + 1,
                                                           "pet_branch": "pet" in modalities, **head})
                if labels and config.num_classes != len(labels) + 1:
                    p.add(where, f"task.head.num_classes {config.num_classes} must be len(labels) + 1 = "
                                 f"{len(labels) + 1} (background + {', '.join(labels)})")
                if config.pet_branch and "pet" not in modalities:
                    p.add(where, "task.head.pet_branch needs 'pet' in task.modalities")
                return config.to_dict()
        except UserInputError as exc:
            p.add(where, f"task.head: {exc}")
        except TypeError as exc:
            p.add(where, f"task.head: {exc}")
        return dict(head)

    # ---------------------------------------------------------------- data / train / eval
    def _data(self, data: Any, where: str, kind: Any, modalities: list[str]) -> DataSpec:
        p = self.problems
        d = _check_keys(data, _field_names(DataSpec), where, "data", p)
        spec = DataSpec(kind=d.get("kind", "hecktor"))
        if spec.kind not in DATA_KINDS:
            p.add(where, f"data.kind {spec.kind!r} is not one of {', '.join(DATA_KINDS)}{_suggest(spec.kind, DATA_KINDS)}")
        elif kind in DATA_FOR_TASK and spec.kind not in DATA_FOR_TASK[kind]:
            p.add(where, f"data.kind {spec.kind!r} cannot feed a {kind} task; use one of {', '.join(DATA_FOR_TASK[kind])}")
        elif "pet" in modalities and spec.kind == "ct-rate":
            p.add(where, "data.kind 'ct-rate' has no PET; a CT+PET task needs hecktor or nifti-folder data")
        if (d.get("root") is None) == (d.get("phantoms") is None):
            p.add(where, "data needs exactly one of root (a dataset folder) or phantoms ({n, seed, shape})")
        if d.get("root") is not None:
            spec.root = _check_path(d["root"], where, "data.root", p, self.check_paths,
                                    hint="fix the path, or use `phantoms: {n: 20, seed: 0}` for synthetic data")
            if self.check_paths and spec.kind == "hecktor" and Path(spec.root).is_dir():
                self._check_hecktor(spec, d, where, kind)
        if d.get("phantoms") is not None:
            spec.phantoms = self._phantoms(d["phantoms"], where)
            if spec.kind == "nifti-folder":
                p.add(where, "data.phantoms are generated in the hecktor or ct-rate layout; set data.kind to one of those")
        if d.get("val_fraction") is not None and d.get("fold") is not None:
            p.add(where, "data: give val_fraction or fold, not both")
        if d.get("fold") is not None:
            if not _is_int(d["fold"]) or d["fold"] < 0:
                p.add(where, f"data.fold must be a non-negative integer, got {d['fold']!r}")
            spec.fold = d["fold"]
        else:
            frac = d.get("val_fraction", 0.2)
            if not _is_number(frac) or not 0 < frac < 1:
                p.add(where, f"data.val_fraction must be in (0, 1), got {frac!r}")
            spec.val_fraction = frac
        if d.get("clinical_csv") is not None:
            spec.clinical_csv = _check_path(d["clinical_csv"], where, "data.clinical_csv", p, self.check_paths)
        if d.get("max_cases") is not None:
            if not _is_int(d["max_cases"]) or d["max_cases"] < 2:
                p.add(where, f"data.max_cases must be an integer >= 2, got {d['max_cases']!r}")
            spec.max_cases = d["max_cases"]
        return spec

    def _check_hecktor(self, spec: DataSpec, d: dict, where: str, kind: Any) -> None:
        root = Path(spec.root)
        needed = [root / "imagesTr"]
        if kind == "segmentation":
            needed.append(root / "labelsTr")
        if kind == "prognosis" and d.get("clinical_csv") is None:
            needed.append(root / "hecktor2022_clinical_info_training.csv")
        for path in needed:
            if not path.exists():
                self.problems.add(where, f"data.root is not a HECKTOR 2022 folder: {str(path)!r} does not exist")

    def _phantoms(self, data: Any, where: str) -> PhantomSpec | None:
        p = self.problems
        d = _check_keys(data, _field_names(PhantomSpec), where, "data.phantoms", p)
        spec = PhantomSpec(n=d.get("n", 20), seed=d.get("seed", 0))
        if not _is_int(spec.n) or spec.n < 2:
            p.add(where, f"data.phantoms.n must be an integer >= 2 (training + validation), got {spec.n!r}")
        if not _is_int(spec.seed):
            p.add(where, f"data.phantoms.seed must be an integer, got {spec.seed!r}")
        spec.shape = _int_triplet(d.get("shape"), where, "data.phantoms.shape", p, minimum=8)
        if d.get("spacing") is not None:
            sp = d["spacing"]
            if not isinstance(sp, list) or len(sp) != 3 or not all(_is_number(v) and v > 0 for v in sp):
                p.add(where, f"data.phantoms.spacing must be 3 positive numbers in mm (D, H, W), got {sp!r}")
            else:
                spec.spacing = [float(v) for v in sp]
        return spec

    def _train(self, data: Any, where: str, kind: Any) -> TrainSpec:
        p = self.problems
        d = _check_keys(data, _field_names(TrainSpec), where, "train", p)
        spec = TrainSpec(**{k: v for k, v in d.items() if k != "early_stopping"})
        if (spec.max_steps is None) == (spec.epochs is None):
            p.add(where, "train needs exactly one of max_steps or epochs")
        if spec.max_steps is not None and (not _is_int(spec.max_steps) or spec.max_steps < 0):
            p.add(where, f"train.max_steps must be an integer >= 0 (0 = evaluate only), got {spec.max_steps!r}")
        if spec.epochs is not None and (not _is_int(spec.epochs) or spec.epochs < 1):
            p.add(where, f"train.epochs must be an integer >= 1, got {spec.epochs!r}")
        for name in ("batch_size", "gradient_accumulation_steps"):
            value = getattr(spec, name)
            if not _is_int(value) or value < 1:
                p.add(where, f"train.{name} must be an integer >= 1, got {value!r}")
        for name in ("eval_every", "checkpoint_every"):
            value = getattr(spec, name)
            if value is not None and (not _is_int(value) or value < 1):
                p.add(where, f"train.{name} must be an integer >= 1 (optimizer steps) or null, got {value!r}")
        if not _is_number(spec.learning_rate) or spec.learning_rate <= 0:
            p.add(where, f"train.learning_rate must be a positive number, got {spec.learning_rate!r} "
                         "(YAML reads 1e-4 as a string: write 1.0e-4)")
        if not _is_number(spec.weight_decay) or spec.weight_decay < 0:
            p.add(where, f"train.weight_decay must be a number >= 0, got {spec.weight_decay!r}")
        if spec.max_grad_norm is not None and (not _is_number(spec.max_grad_norm) or spec.max_grad_norm <= 0):
            p.add(where, f"train.max_grad_norm must be positive or null, got {spec.max_grad_norm!r}")
        if spec.scheduler not in SCHEDULERS:
            p.add(where, f"train.scheduler {spec.scheduler!r} is not one of {', '.join(SCHEDULERS)}"
                         f"{_suggest(spec.scheduler, SCHEDULERS)}")
        if not _is_int(spec.warmup_steps) or spec.warmup_steps < 0:
            p.add(where, f"train.warmup_steps must be an integer >= 0, got {spec.warmup_steps!r}")
        elif _is_int(spec.max_steps) and spec.max_steps > 0 and spec.warmup_steps >= spec.max_steps:
            p.add(where, f"train.warmup_steps {spec.warmup_steps} must be below max_steps {spec.max_steps}")
        if spec.mixed_precision not in MIXED_PRECISION:
            p.add(where, f"train.mixed_precision {spec.mixed_precision!r} is not one of {', '.join(MIXED_PRECISION)}"
                         f"{_suggest(spec.mixed_precision, MIXED_PRECISION)}")
        if d.get("early_stopping") is not None:
            e = _check_keys(d["early_stopping"], _field_names(EarlyStopping), where, "train.early_stopping", p)
            metric = e.get("metric", "loss")
            valid = ("loss",) + TASK_METRICS.get(kind, ())
            if metric not in valid:
                p.add(where, f"train.early_stopping.metric {metric!r} is not one of {', '.join(valid)}"
                             f"{_suggest(metric, valid)}")
            mode = e.get("mode", "min" if metric in LOWER_IS_BETTER else "max")
            if mode not in ("min", "max"):
                p.add(where, f"train.early_stopping.mode must be 'min' or 'max', got {mode!r}")
            patience = e.get("patience", 5)
            if not _is_int(patience) or patience < 1:
                p.add(where, f"train.early_stopping.patience must be an integer >= 1 (evaluations), got {patience!r}")
            spec.early_stopping = EarlyStopping(patience=patience, metric=metric, mode=mode)
        return spec

    def _eval(self, data: Any, where: str, kind: Any) -> EvalSpec:
        p = self.problems
        d = _check_keys(data, _field_names(EvalSpec), where, "eval", p)
        spec = EvalSpec(**d)
        if spec.main_metric is not None and spec.main_metric not in TASK_METRICS.get(kind, ()):
            valid = TASK_METRICS.get(kind, ())
            p.add(where, f"eval.main_metric {spec.main_metric!r} is not one of {', '.join(valid)}"
                         f"{_suggest(spec.main_metric, valid)}")
        if spec.baseline is not None and not _is_number(spec.baseline):
            p.add(where, f"eval.baseline must be a number (the main metric of a reference model), got {spec.baseline!r}")
        if not _is_number(spec.sliding_window_overlap) or not 0 <= spec.sliding_window_overlap < 1:
            p.add(where, f"eval.sliding_window_overlap must be in [0, 1), got {spec.sliding_window_overlap!r}")
        for name in ("batch_size", "sw_batch_size"):
            if not _is_int(getattr(spec, name)) or getattr(spec, name) < 1:
                p.add(where, f"eval.{name} must be an integer >= 1, got {getattr(spec, name)!r}")
        if not _is_int(spec.overlays) or spec.overlays < 0:
            p.add(where, f"eval.overlays must be an integer >= 0, got {spec.overlays!r}")
        return spec
