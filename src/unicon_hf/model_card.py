"""Model cards (README.md) for UNICON repos, generated from what the repo holds: `config.json` (tasks),
`preprocessor_config.json` (input specification), `model.safetensors` (per-task parameter counts) and the
continual run's `report.json` (metrics, forgetting matrix, stage costs).

Every number on a card comes from those files; a value the report marks as not measurable (NaN / null) is
shown as `—` and left out of the `model-index`, never filled in. A *recipe* card (`render_recipe_card`) is
made from a stage plan before any training and carries no results at all.

The card body is a Jinja template (`model_card_template.md`, shipped inside the package so `unicon card`
works from a wheel); the YAML front matter is built with `huggingface_hub.ModelCardData`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .errors import UserInputError
from .training.report import format_value

TEMPLATE = Path(__file__).with_name("model_card_template.md")
REPORT_FILE = "report.json"

# How each task kind appears in the Hub metadata (model-index task types are free text; these match the
# closest Hub pipeline so the card's widget and search make sense).
KIND_INFO: dict[str, dict[str, str]] = {
    "segmentation": {"task_type": "image-segmentation", "task_name": "3D tumour segmentation",
                     "pipeline": "unicon-volume-segmentation", "metric_type": "dice",
                     "metric_name": "Dice (mean over foreground classes)"},
    "zero_shot_classification": {"task_type": "zero-shot-image-classification",
                                 "task_name": "Zero-shot CT abnormality classification",
                                 "pipeline": "unicon-zero-shot-ct-classification", "metric_type": "roc_auc",
                                 "metric_name": "AUROC (macro over findings)"},
    "prognosis": {"task_type": "survival-prediction", "task_name": "Recurrence-free survival prediction",
                  "pipeline": "unicon-prognosis", "metric_type": "c_index", "metric_name": "Harrell's C-index"},
}
# Hub pipeline tag: the first kind present in this order.
PIPELINE_TAG_ORDER = (("segmentation", "image-segmentation"),
                      ("zero_shot_classification", "zero-shot-image-classification"))
CT_RATE_HUB_ID = "ibrahimhamamci/CT-RATE"


# ------------------------------------------------------------------------------------------------ reading
def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"{path} is missing: {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path} is not valid JSON ({error}); {what}") from None


def load_report(model_dir: str | os.PathLike, report: str | os.PathLike | Mapping | None = None) -> dict | None:
    """The continual report for a model folder: `report` (dict or path) if given, else `model_dir/report.json`
    (the training run copies it there), else None."""
    if isinstance(report, Mapping):
        return dict(report)
    path = Path(report) if report is not None else Path(model_dir) / REPORT_FILE
    if report is None and not path.is_file():
        return None
    data = _read_json(path, "give the report.json written by scripts/continual.py (OUT/report/report.json)")
    missing = [key for key in ("stages", "tasks", "matrix") if key not in data]
    if missing:
        raise UserInputError(f"{path} is not a continual report: key(s) {missing} missing")
    return data


def task_parameter_counts(weights: str | os.PathLike, task_names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per task: parameters of its stem, LoRA and head, and their bytes, read from the safetensors header only
    (no tensor is loaded, so this is instant even for a large model)."""
    from safetensors import safe_open

    counts = {name: {"stem": 0, "lora": 0, "head": 0, "bytes": 0} for name in task_names}
    with safe_open(str(weights), framework="pt") as handle:
        for key in handle.keys():
            for name in task_names:
                if key.startswith(f"task_stems.{name}."):
                    part = "stem"
                elif key.startswith(f"task_heads.{name}."):
                    part = "head"
                elif f".lora_A.{name}." in key or f".lora_B.{name}." in key:
                    part = "lora"
                else:
                    continue
                tensor = handle.get_slice(key)
                numel = 1
                for size in tensor.get_shape():
                    numel *= int(size)
                counts[name][part] += numel
                counts[name]["bytes"] += numel * _dtype_bytes(tensor.get_dtype())
    for part in counts.values():
        part["total"] = part["stem"] + part["lora"] + part["head"]
    return counts


def _dtype_bytes(dtype: str) -> int:
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return max(int(digits) // 8, 1) if digits else 1


# ------------------------------------------------------------------------------------------------ formatting
def _fmt(value: Any, digits: int = 4) -> str:
    return format_value(value, digits)


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    if n < 1024:
        return f"{n} B"
    if n < 1024 ** 2:
        return f"{n / 1024:.1f} KB"
    return f"{n / 1024 ** 2:.2f} MB"


def _range(window: Sequence[float], scale: float) -> str:
    return f"[{window[0] / scale:g}, {window[1] / scale:g}]"


def input_spec(processor: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]], vision: Mapping[str, Any]) -> str:
    """The input specification section: modalities and channel order, orientation, spacing, value ranges and
    the crop/window sizes, as the saved processor applies them."""
    spacing = processor.get("target_spacing", [0.75, 0.75, 1.5])
    axcodes = processor.get("axcodes", "RAS")
    ct_window, ct_scale = processor.get("ct_window", [-1000.0, 1000.0]), processor.get("ct_scale", 1000.0)
    pet_window, pet_scale = processor.get("pet_window", [0.0, 20.0]), processor.get("pet_scale", 10.0)
    full = [vision.get("num_frames"), *(_pair(vision.get("image_size")))]
    output = processor.get("output_size") or full
    lines = [
        "| | |", "|---|---|",
        "| Input files | CT as NIfTI (`.nii`/`.nii.gz`) or a DICOM series; PET as NIfTI **in SUV** (body weight) or a PET "
        "DICOM series (converted to SUV from the vendor headers); one 2D PNG slice for segmentation / zero-shot |",
        "| Channel order | CT first, then PET (`pixel_values` is (batch, channel, slices, rows, columns)) |",
        f"| Orientation | reoriented to `{axcodes}`; array axes (i, j, k) become (slices=k, rows=i, columns=j) |",
        "| Spacing | " + ("native spacing kept (no resampling)" if spacing is None
                         else f"resampled to {' x '.join(f'{s:g}' for s in spacing)} mm along (i, j, k)") + " |",
        f"| CT values | HU clipped to [{ct_window[0]:g}, {ct_window[1]:g}], divided by {ct_scale:g} -> "
        f"{_range(ct_window, ct_scale)}; padding = {processor.get('ct_pad_value', -1000.0):g} HU (air) |",
        f"| PET values | SUV clipped to [{pet_window[0]:g}, {pet_window[1]:g}], divided by {pet_scale:g} -> "
        f"{_range(pet_window, pet_scale)}; PET is resampled onto the CT grid |",
        f"| Classification / prognosis input | centred crop/pad to {' x '.join(map(str, output))} (slices x rows x columns) |",
    ]
    for task in tasks:
        if task.get("kind") == "segmentation":
            size = task.get("input_size") or full
            lines.append(f"| Segmentation `{task['name']}` | whole volume, sliding window of {' x '.join(map(str, size))} "
                         f"voxels; labels returned on the input CT's exact grid (shape and affine) |")
    lines.append("")
    lines.append("The preprocessing is saved with the model (`preprocessor_config.json`) and applied and inverted "
                 "by the pipelines, `unicon predict` and the endpoint handler; feed raw CT in HU and PET in SUV.")
    return "\n".join(lines)


def _pair(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value, value]


def tasks_table(tasks: Sequence[Mapping[str, Any]], report: Mapping[str, Any] | None,
                counts: Mapping[str, Mapping[str, int]] | None) -> str:
    """One row per task: kind, modalities (channel order), labels, LoRA, added parameters, when it was added."""
    added = {}
    if report:
        stages = report.get("stages", [])
        for entry in report.get("tasks", []):
            stage = stages[entry["stage"]] if entry["stage"] < len(stages) else {}
            added[entry["name"]] = f"stage {entry['stage']} (`{stage.get('name', '?')}`)"
    lines = ["| task | kind | modalities | labels | LoRA | added parameters (stem / LoRA / head) | size | added at |",
             "|---|---|---|---|---|---:|---:|---|"]
    for task in tasks:
        lora = task.get("lora")
        lora_text = f"r={lora.get('r', 8)}, alpha={lora.get('alpha', 32)}" if lora else "none"
        labels = ", ".join(task.get("labels") or []) or "—"
        count = (counts or {}).get(task["name"])
        params = (f"{count['total']:,} ({count['stem']:,} / {count['lora']:,} / {count['head']:,})" if count
                  else "—")
        size = _size(count["bytes"]) if count else "—"
        modalities = " + ".join(m.upper() for m in task.get("modalities", ["ct"]))
        lines.append(f"| `{task['name']}` | {task['kind']} | {modalities} | {labels} | {lora_text} | {params} | {size} | "
                     f"{added.get(task['name'], '—')} |")
    return "\n".join(lines)


def _report_tables(report: Mapping[str, Any]) -> dict[str, Any]:
    # The training package renders the report tables the same way as report.md; reuse it when installed.
    from .training.report import markdown_matrix, markdown_stages, markdown_summary

    notes = []
    details = report.get("details") or {}
    if details:
        last = details.get(str(max(int(s) for s in details)), {})
        for task, numbers in last.items():
            notes += [f"`{task}`: {note}" for note in (numbers.get("notes") or [])]
    return {"summary": markdown_summary(report), "matrix": markdown_matrix(report),
            "stages_table": markdown_stages(report), "notes": notes}


def _stage_data(report: Mapping[str, Any] | None, task_name: str) -> dict[str, Any]:
    plan = (report or {}).get("plan") or {}
    for stage in plan.get("stages", []):
        if stage.get("task", {}).get("name") == task_name:
            return stage.get("data") or {}
    return {}


def _dataset(data: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(name, type, Hub dataset id or None) of a stage's data, as the plan describes it."""
    kind = data.get("kind", "unknown")
    if data.get("phantoms") and not data.get("root"):
        return (f"Synthetic phantoms in the {kind} layout (unicon_hf)", f"unicon-phantoms-{kind}", None)
    if kind == "ct-rate":
        return ("CT-RATE", CT_RATE_HUB_ID, CT_RATE_HUB_ID)
    if kind == "hecktor":
        return ("HECKTOR 2022", "hecktor2022", None)
    return (str(kind), str(kind), None)


def eval_results(report: Mapping[str, Any]) -> list[EvalResult]:
    """model-index entries: each task's main metric after the last stage (measured values only)."""
    results = []
    final_row = report["matrix"][-1] if report.get("matrix") else []
    for index, task in enumerate(report["tasks"]):
        value = final_row[index] if index < len(final_row) else None
        if value is None or (isinstance(value, float) and value != value):
            continue  # not measurable in this run: no number is better than an invented one
        info = KIND_INFO.get(task["kind"], {})
        name, dataset_type, _ = _dataset(_stage_data(report, task["name"]))
        results.append(EvalResult(
            task_type=info.get("task_type", task["kind"]), task_name=f"{info.get('task_name', task['kind'])} "
            f"({task['name']})", dataset_type=dataset_type, dataset_name=name, dataset_split="validation",
            # the task name as the dataset config keeps tasks on the same data (CT vs CT+PET) as separate
            # model-index entries (the Hub groups results by task type + dataset)
            dataset_config=task["name"],
            metric_type=task["metric"], metric_name=info.get("metric_name", task["metric"]),
            metric_value=float(value)))
    return results


def usage(repo_id: str, tasks: Sequence[Mapping[str, Any]]) -> str:
    """Code to run the model: AutoModel, the custom pipelines, the CLI and the endpoint payload."""
    seg = next((t for t in tasks if t["kind"] == "segmentation"), None)
    first = seg or (tasks[0] if tasks else {"name": "TASK", "kind": "segmentation", "modalities": ["ct"]})
    pet = "pet" in first.get("modalities", [])
    inputs = '{"ct": "case_CT.nii.gz", "pet": "case_PT.nii.gz"}' if pet else '"case_CT.nii.gz"'
    pipeline_task = KIND_INFO.get(first["kind"], {}).get("pipeline", "unicon-volume-segmentation")
    cli_pet = " --pet case_PT.nii.gz" if pet else ""
    files = {"ct": "<base64 NIfTI>", **({"pet": "<base64 NIfTI>"} if pet else {})}
    payload = json.dumps({"inputs": files, "parameters": {"task": first["name"]}})
    return "\n".join([
        "```python",
        "from transformers import AutoModel, pipeline",
        "",
        f'model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)',
        "print(model.tasks)  # every task this model can run",
        "",
        f'run = pipeline("{pipeline_task}", model="{repo_id}", trust_remote_code=True, task_name="{first["name"]}")',
        f"result = run({inputs})",
        "```",
        "",
        "With the `unicon_hf` package installed, from the command line:",
        "",
        "```bash",
        f"unicon predict --model {repo_id} --task {first['name']} --ct case_CT.nii.gz{cli_pet} --output out/",
        "```",
        "",
        f"As an Inference Endpoint (the repo ships `handler.py`): POST `{payload}`; the answer is JSON "
        "(segmentation adds the label volume as a base64 `.nii.gz`).",
    ])


def _limitations(tasks: Sequence[Mapping[str, Any]], synthetic: bool, recipe: bool) -> list[str]:
    items = []
    if synthetic:
        items.append("Trained and evaluated on synthetic phantoms only: the metrics describe phantoms, not patients, "
                     "and say nothing about performance on real scans. This model exists to demonstrate and test the "
                     "software.")
    if recipe:
        items.append("A recipe only: its quality depends entirely on the data and compute you train it with; report "
                     "your own held-out numbers.")
    items += [
        "Metrics are computed on the held-out split of the run that produced the card, with a single seed; small "
        "validation sets give wide confidence intervals.",
        "Segmentation Dice excludes the background class. Zero-shot probabilities are softmax scores over a "
        "prompt pair, not calibrated probabilities.",
        "Inputs must match the specification above: PET must already be in SUV (or come as DICOM with the vendor "
        "dose headers); scans from other anatomy, contrast phases or scanners than those trained on may fail "
        "silently.",
        "The prognosis risk group uses the model's own survival curve (high if S(middle time bin) < 0.5), not a "
        "cut-off calibrated on a cohort.",
    ]
    if any("pet" in t.get("modalities", []) for t in tasks):
        items.append("CT+PET tasks require both scans of the same study, co-registered by their affines (PET is "
                     "resampled onto the CT grid; a large mismatch is rejected).")
    return items


def _card_data(*, tasks, report, license, base_model, datasets, repo_id, recipe) -> ModelCardData:
    kinds = {t["kind"] for t in tasks}
    tags = ["medical", "3d", "ct", "continual-learning", "unicon", "lora", "custom_code"]
    if any("pet" in t.get("modalities", []) for t in tasks):
        tags.append("pet")
    tags += sorted({"segmentation": "segmentation", "prognosis": "survival-analysis",
                    "zero_shot_classification": "zero-shot-classification"}[k] for k in kinds if k in
                   ("segmentation", "prognosis", "zero_shot_classification"))
    if recipe:
        tags.append("recipe")
    if datasets is None:
        hub_ids = {_dataset(_stage_data(report, t["name"]))[2] for t in tasks} if report else set()
        datasets = sorted(d for d in hub_ids if d)
    pipeline_tag = next((tag for kind, tag in PIPELINE_TAG_ORDER if kind in kinds), None)
    results = eval_results(report) if report and not recipe else None
    return ModelCardData(
        license=license, library_name="transformers", pipeline_tag=pipeline_tag, tags=tags,
        base_model=base_model or None, datasets=datasets or None, model_name=repo_id.split("/")[-1],
        eval_results=results or None,
    )


def _render(*, title, tasks, processor, vision, report, counts, repo_id, license, base_model, datasets, recipe,
            plan_source=None, plan_table=None, template=None, report_source=None) -> str:
    from . import __version__

    synthetic = bool(report) and all(_dataset(_stage_data(report, t["name"]))[2] is None
                                     and _stage_data(report, t["name"]).get("phantoms")
                                     for t in tasks if _stage_data(report, t["name"]))
    names = ", ".join(f"`{t['name']}`" for t in tasks)
    if synthetic:
        intended = ("Demonstration, teaching and software testing: trying the UNICON workflow (add a task, keep every "
                    "old task exact, publish, serve) on a CPU in minutes. The tasks imitate head-and-neck PET/CT "
                    "tumour segmentation and survival and chest-CT findings on synthetic phantoms.")
    else:
        intended = ("Research on 3D CT (and PET/CT) analysis: reproducing and extending UNICON-style continual "
                    "learning (zero-shot chest-CT findings, head-and-neck tumour segmentation (GTVp, GTVn) and "
                    "recurrence-free survival), benchmarking, and feature extraction for research cohorts.")
    values = {
        "card_data": None, "title": title, "recipe": recipe, "task_names": names,
        "intended_use": intended, "input_spec": input_spec(processor, tasks, vision),
        "tasks_table": tasks_table(tasks, report, counts), "usage": usage(repo_id, tasks),
        "limitations": _limitations(tasks, synthetic, recipe), "version": __version__,
        "plan_source": plan_source, "plan_table": plan_table, "report_source": report_source, "matrix": None,
    }
    if report and not recipe:
        values.update(_report_tables(report))
    data = _card_data(tasks=tasks, report=report, license=license, base_model=base_model, datasets=datasets,
                      repo_id=repo_id, recipe=recipe)
    values.pop("card_data")
    template_path = Path(template) if template else TEMPLATE
    if not template_path.is_file():
        raise UserInputError(f"card template {template_path} does not exist")
    card = ModelCard.from_template(data, template_path=str(template_path), **values)
    return str(card)


# ------------------------------------------------------------------------------------------------ public API
def render_card(model_dir: str | os.PathLike, *, repo_id: str | None = None,
                report: str | os.PathLike | Mapping | None = None, license: str = "apache-2.0",
                base_model: str | None = None, datasets: Sequence[str] | None = None,
                template: str | os.PathLike | None = None, require_report: bool = True) -> str:
    """The README.md text of a saved UNICON model folder.

    Args:
        model_dir: folder with `config.json`, `model.safetensors` and (normally) `preprocessor_config.json`
            and `report.json`.
        repo_id: the Hub repo id used in the usage snippets and the title (default: the folder name).
        report: the continual report (dict or path); default `model_dir/report.json`.
        license, base_model, datasets: front-matter fields (datasets default: the Hub datasets the report's
            plan trained on, if any).
        template: another Jinja template (default: the one shipped with unicon_hf).
        require_report: raise when no report is found (a card without results must be asked for explicitly).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserInputError(f"model folder {model_dir} does not exist")
    config = _read_json(model_dir / "config.json", "save the model with unicon_hf.hub.save_model_repo first")
    tasks = list((config.get("tasks") or {}).values())
    if not tasks:
        raise UserInputError(f"{model_dir}/config.json has no tasks; a card describes a model with at least one task")
    processor_file = model_dir / "preprocessor_config.json"
    processor = _read_json(processor_file, "") if processor_file.is_file() else {}
    data = load_report(model_dir, report)
    if data is None and require_report:
        raise UserInputError(
            f"{model_dir} has no {REPORT_FILE}: the card's numbers come from the continual report. Pass --report "
            f"OUT/report/report.json (written by scripts/continual.py), or --no-report for a card without results")
    if data is not None:
        unknown = sorted({t["name"] for t in data["tasks"]} - {t["name"] for t in tasks})
        if unknown:
            raise UserInputError(f"report lists task(s) {unknown} that {model_dir}/config.json does not have; "
                                 f"give the report of the run that produced this model")
    weights = model_dir / "model.safetensors"
    counts = task_parameter_counts(weights, [t["name"] for t in tasks]) if weights.is_file() else None
    repo_id = repo_id or model_dir.name
    return _render(title=f"UNICON: {repo_id}", tasks=tasks, processor=processor, vision=config.get("vision_config", {}),
                   report=data, counts=counts, repo_id=repo_id, license=license, base_model=base_model,
                   datasets=datasets, recipe=False, template=template,
                   report_source=f"{len(data['stages'])} stages" if data else "no report")


def write_card(model_dir: str | os.PathLike, output: str | os.PathLike | None = None, **kwargs) -> Path:
    """Render the card of `model_dir` and write it to `output` (default `model_dir/README.md`)."""
    path = Path(output) if output else Path(model_dir) / "README.md"
    text = render_card(model_dir, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def render_recipe_card(plan_path: str | os.PathLike, repo_id: str, *, license: str = "apache-2.0",
                       base_model: str | None = None, template: str | os.PathLike | None = None) -> str:
    """The card of a stage plan that has not been run (e.g. the paper recipe for `org/unicon-ct-pet`): tasks,
    input specification and the plan, explicitly without results."""
    import yaml

    from .image_processing_unicon import UniconImageProcessor

    # The raw YAML, not `load_plan`: a recipe names data through environment variables (`${HECKTOR_ROOT}`) that
    # are unset where the card is written, and the card should show them as written.
    plan_path = Path(plan_path)
    try:
        plan = yaml.safe_load(plan_path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"stage plan {plan_path} does not exist") from None
    except yaml.YAMLError as error:
        raise UserInputError(f"stage plan {plan_path} is not valid YAML ({error})") from None
    stages = (plan or {}).get("stages") if isinstance(plan, dict) else None
    if not stages or not all(isinstance(s, dict) and isinstance(s.get("task"), dict) and "name" in s["task"]
                             and "kind" in s["task"] for s in stages):
        raise UserInputError(f"stage plan {plan_path}: 'stages' must be a list of stages, each with a task that has "
                             f"a name and a kind")
    tasks = [{"modalities": ["ct"], **stage["task"]} for stage in stages]
    processor = UniconImageProcessor(**(plan.get("processor") or {})).to_dict()
    model = plan.get("model") or {}
    vision = (model.get("config") or {}).get("vision_config") or {"num_frames": 240, "image_size": 480}
    rows = ["| stage | task | kind | data | training |", "|---|---|---|---|---|"]
    for index, stage in enumerate(stages):
        data, train = stage.get("data") or {}, stage.get("train") or {}
        source = data.get("root") or ("phantoms" if data.get("phantoms") else "—")
        steps = (f"{train['epochs']} epochs" if train.get("epochs") else
                 f"{train['max_steps']} steps" if train.get("max_steps") is not None else "—")
        rows.append(f"| {index} | `{stage['task']['name']}` | {stage['task']['kind']} | {data.get('kind', '—')}: "
                    f"`{source}` | {steps} |")
    start = model.get("from_pretrained") or "a fresh foundation (CLIP pretraining in the plan)"
    plan_table = (f"Foundation: `{start}`.\n\n" + "\n".join(rows) +
                  f"\n\nRun it with `accelerate launch scripts/continual.py --config configs/{plan_path.name} "
                  f"--output_dir runs/paper`, then `unicon card runs/paper/model --repo-id {repo_id}` and "
                  f"`unicon push runs/paper/model {repo_id}`.")
    return _render(title=f"UNICON: {repo_id} (recipe)", tasks=tasks, processor=processor, vision=vision, report=None,
                   counts=None, repo_id=repo_id, license=license, base_model=base_model, datasets=None, recipe=True,
                   plan_source=Path(plan_path).name, plan_table=plan_table, template=template)


def render_adapter_card(package_dir: str | os.PathLike, base_model: str, *, license: str = "apache-2.0") -> str:
    """README.md of an adapter-only repo (one task exported with `UniconModel.export_task`): what the task is, its
    size, the base model it needs, and how to add it to that model."""
    package_dir = Path(package_dir)
    manifest = _read_json(package_dir / "task.json", "export the task with UniconModel.export_task first")
    spec = manifest["spec"]
    from safetensors import safe_open

    sizes = {}
    lora_file = package_dir / "adapter_model.safetensors"
    for file in (lora_file, package_dir / "task_parts.safetensors"):
        if file.is_file():  # every tensor in these files belongs to the task
            with safe_open(str(file), framework="pt") as handle:
                sizes[file.name] = sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys())
    data = ModelCardData(license=license, library_name="peft" if lora_file.is_file() else "transformers",
                         base_model=base_model, tags=["medical", "3d", "ct", "unicon", "continual-learning",
                                                      "adapter", *(["pet"] if "pet" in spec.get("modalities", []) else [])])
    modalities = " + ".join(m.upper() for m in spec.get("modalities", ["ct"]))
    rows = "\n".join(f"| `{name}` | {count:,} |" for name, count in sizes.items())
    body = f"""
# UNICON task `{spec['name']}` (adapter for `{base_model}`)

One task of a UNICON model, exported alone: {spec['kind']} on {modalities}
(labels: {', '.join(spec.get('labels') or []) or '—'}). It holds only the parts this task added — LoRA
weights in PEFT's format (`adapter_config.json`, `adapter_model.safetensors`), the task's patch embedding and
head (`task_parts.safetensors`) and its spec (`task.json`) — and needs its base model, **`{base_model}`**:
the import checks that the base weights are exactly those the task was trained on.

| file | parameters |
|---|---:|
{rows}

**Not for clinical use.** Research artefact; not validated for any clinical decision.

## How to use

```python
from huggingface_hub import snapshot_download
from transformers import AutoModel

model = AutoModel.from_pretrained("{base_model}", trust_remote_code=True)
model.import_task(snapshot_download("<this repo id>"))
print(model.tasks)  # now includes "{spec['name']}"
```
"""
    return f"---\n{data.to_yaml()}\n---\n{body}"


__all__ = ["render_card", "write_card", "render_recipe_card", "load_report", "task_parameter_counts",
           "eval_results", "input_spec", "render_adapter_card"]
