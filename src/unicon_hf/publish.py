"""Publishing a UNICON model: `push(model_dir, target)` (what `unicon push` runs) and adapter-only task repos.

A pushed repo is self-contained: safetensors weights (pickled weights are never uploaded), `config.json` with
`auto_map` and the flat code files (`AutoModel.from_pretrained(..., trust_remote_code=True)` without unicon_hf),
`preprocessor_config.json` and the tokenizer, the custom pipelines (`custom_pipelines` + `pipeline_unicon.py`),
`handler.py` for Inference Endpoints with its `requirements.txt`, and the model card generated from the run's
report.

The target is a Hub repo id (`org/name`, uploaded with `huggingface_hub`; `revision` makes/uses a branch) or a
local folder (`file:///abs/path`, or a path starting with `/`, `./`, `../` or `~`), written atomically; the local
form is what tests and air-gapped sites use.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import UserInputError
from .hub import replace_folder

WEIGHT_SUFFIXES = (".safetensors",)
COPIED_SUFFIXES = (".safetensors", ".json", ".py", ".md", ".txt", ".png", ".model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")
HANDLER_FILE = "handler.py"
# What the repo's remote code imports beyond transformers and torch (Inference Endpoints installs these).
ENDPOINT_REQUIREMENTS = ["nibabel>=5.2", "monai>=1.4", "peft>=0.21.2,<0.22", "scipy>=1.11", "pillow>=10",
                         "safetensors>=0.4"]


# ------------------------------------------------------------------------------------------------ targets
def local_target(target: str | os.PathLike) -> Path | None:
    """The folder a target names, or None when it is a Hub repo id."""
    if isinstance(target, os.PathLike):
        return Path(target)
    text = str(target)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if text.startswith(("/", "./", "../", "~")) or text in (".", ".."):
        return Path(text).expanduser()
    return None


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UserInputError(f"{repo_id!r} is not a Hub repo id ({error}); give 'org/name', or a local folder as "
                             f"file:///path or ./path") from None
    if "/" not in repo_id:
        raise UserInputError(f"give the repo id with its owner, e.g. 'my-org/{repo_id}'")


# ------------------------------------------------------------------------------------------------ assembling
def _model_files(model_dir: Path) -> list[Path]:
    if not model_dir.is_dir():
        raise UserInputError(f"model folder {model_dir} does not exist")
    if not (model_dir / "config.json").is_file():
        raise UserInputError(f"{model_dir} has no config.json; save the model with unicon_hf.hub.save_model_repo")
    files = [p for p in sorted(model_dir.iterdir()) if p.is_file() and not p.name.startswith(".")]
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
        raise UserInputError(
            f"{model_dir} has no safetensors weights{f' (only pickled {pickles})' if pickles else ''}; only "
            f"safetensors are published: re-save with unicon_hf.hub.save_model_repo(model, folder)")
    return [p for p in files if p.suffix in COPIED_SUFFIXES and p.name != HANDLER_FILE]


def _code_complete(folder: Path) -> bool:
    config = json.loads((folder / "config.json").read_text())
    modules = {ref.split(".")[0] for ref in (config.get("auto_map") or {}).values() if isinstance(ref, str)}
    return bool(modules) and all((folder / f"{m}.py").is_file() for m in modules)


def assemble_repo(model_dir: str | os.PathLike, output_dir: str | os.PathLike, *, repo_id: str | None = None,
                  card: bool = True, report: Any = None, require_report: bool = True) -> list[str]:
    """Write everything a UNICON repo holds into `output_dir` (created, must be empty); returns the file names.

    Args:
        model_dir: a saved model folder (e.g. `OUT/model` of a continual run).
        repo_id: used in the card's title and snippets.
        card: (re)generate README.md from the config and report; False keeps the folder's own README.md.
        report: the continual report for the card (default `model_dir/report.json`).
        require_report: refuse to write a card without a report.
    """
    from .hub import save_model_repo
    from .pipeline_unicon import save_pipelines

    model_dir, output_dir = Path(model_dir), Path(output_dir)
    files = _model_files(model_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if any(output_dir.iterdir()):
        raise UserInputError(f"{output_dir} is not empty")
    for file in files:
        shutil.copy2(file, output_dir / file.name)
    if not _code_complete(output_dir):
        # Saved without auto_map/code (e.g. a plain save_pretrained): re-save so remote code loading works.
        from transformers import AutoModel

        model = AutoModel.from_pretrained(model_dir)
        save_model_repo(model, output_dir / ".resaved")
        for file in (output_dir / ".resaved").iterdir():
            os.replace(file, output_dir / file.name)
        (output_dir / ".resaved").rmdir()
    if json.loads((output_dir / "config.json").read_text()).get("tasks"):
        save_pipelines(output_dir)  # a bare foundation (e.g. after CLIP pretraining) has no task pipeline
    shutil.copy2(Path(__file__).with_name(HANDLER_FILE), output_dir / HANDLER_FILE)
    (output_dir / "requirements.txt").write_text("\n".join(ENDPOINT_REQUIREMENTS) + "\n")
    if card or not (output_dir / "README.md").is_file():
        from .model_card import write_card

        write_card(output_dir, repo_id=repo_id or model_dir.name, report=report, require_report=require_report)
    return sorted(p.name for p in output_dir.iterdir())


def _write_local(staging: Path, target: Path) -> Path:
    """Move an assembled repo into place; an existing target is replaced only after the new one is complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise UserInputError(f"push target {target} exists and is not a folder")
    new = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    shutil.rmtree(new)
    shutil.copytree(staging, new)
    return replace_folder(new, target)


def _upload(staging: Path, repo_id: str, *, revision: str | None, private: bool, token: str | None,
            commit_message: str, api: Any) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    api = api or HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(folder_path=str(staging), repo_id=repo_id, repo_type="model", revision=revision,
                                 commit_message=commit_message)
    except LocalTokenNotFoundError:
        raise UserInputError("no Hugging Face token: log in with `hf auth login` or pass --token / token=") from None
    except OfflineModeIsEnabled:
        raise UserInputError("HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it, or push to a local "
                             "folder (file:///path)") from None
    except HfHubHTTPError as error:
        raise UserInputError(f"the Hub refused the upload to {repo_id!r}: {str(error).splitlines()[0]}") from None
    return str(getattr(info, "commit_url", None) or info)


def push(model_dir: str | os.PathLike, target: str | os.PathLike, *, revision: str | None = None,
         private: bool = True, token: str | None = None, commit_message: str | None = None, card: bool = True,
         report: Any = None, require_report: bool = True, repo_id: str | None = None, api: Any = None) -> str:
    """Publish a saved model folder to a Hub repo or a local folder; returns the commit URL or the folder path.

    Args:
        model_dir: the model folder (e.g. `OUT/model` of `scripts/continual.py`).
        target: Hub repo id `org/name`, or a local folder (`file:///path`, `/path`, `./path`).
        revision: Hub branch to create/upload to (e.g. one per stage); local targets take none.
        private: create the Hub repo private (default) or public.
        token: Hub token (default: the logged-in one).
        commit_message: default "Upload UNICON model (tasks ...)".
        card, report, require_report: see `assemble_repo`.
        repo_id: the Hub id the card names, for a local target (default: the folder name).
        api: an `HfApi`-like object (for tests and custom endpoints).
    """
    folder = local_target(target)
    if folder is None:
        _check_repo_id(str(target))
    elif revision:
        raise UserInputError(f"--revision names a Hub branch; a local folder ({folder}) has none: push each "
                             f"revision to its own folder")
    repo_id = str(target) if folder is None else (repo_id or folder.name)
    with tempfile.TemporaryDirectory(prefix="unicon-push-") as tmp:
        staging = Path(tmp) / "repo"
        assemble_repo(model_dir, staging, repo_id=repo_id, card=card, report=report, require_report=require_report)
        if folder is not None:
            return str(_write_local(staging, folder))
        tasks = list(json.loads((staging / "config.json").read_text()).get("tasks", {}))
        message = commit_message or f"Upload UNICON model (tasks: {', '.join(tasks)})"
        return _upload(staging, str(target), revision=revision, private=private, token=token,
                       commit_message=message, api=api)


# ------------------------------------------------------------------------------------------------ adapters
def export_adapter_repo(model: Any, task: str, output_dir: str | os.PathLike, *, base_model: str) -> Path:
    """Write one task as an adapter-only repo that names its base model: the task package of
    `UniconModel.export_task` (PEFT `adapter_config.json` + `adapter_model.safetensors` when the task has LoRA,
    `task_parts.safetensors` with its stem and head, `task.json`) plus a README.md.

    `model` is a `UniconModel` or a model folder. The base model must be the repo the task was trained on
    (checked by weight fingerprint at import).
    """
    from .model_card import render_adapter_card

    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(model))
    model.task_spec(task)  # unknown task -> message listing the tasks
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise UserInputError(f"{output_dir} is not empty")
    model.export_task(task, output_dir)
    manifest = json.loads((output_dir / "task.json").read_text())
    manifest["base_model"] = base_model
    (output_dir / "task.json").write_text(json.dumps(manifest, indent=2))
    adapter_config = output_dir / "adapter_config.json"
    if adapter_config.is_file():  # PEFT reads the base model from here
        config = json.loads(adapter_config.read_text())
        config["base_model_name_or_path"] = base_model
        adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True))
    (output_dir / "README.md").write_text(render_adapter_card(output_dir, base_model))
    return output_dir


def push_adapter(model: Any, task: str, target: str | os.PathLike, *, base_model: str, revision: str | None = None,
                 private: bool = True, token: str | None = None, commit_message: str | None = None,
                 api: Any = None) -> str:
    """`export_adapter_repo` to a Hub repo or a local folder (same targets as `push`)."""
    folder = local_target(target)
    if folder is None:
        _check_repo_id(str(target))
    elif revision:
        raise UserInputError("--revision names a Hub branch; a local folder has none")
    with tempfile.TemporaryDirectory(prefix="unicon-adapter-") as tmp:
        staging = export_adapter_repo(model, task, Path(tmp) / "repo", base_model=base_model)
        if folder is not None:
            return str(_write_local(staging, folder))
        return _upload(staging, str(target), revision=revision, private=private, token=token,
                       commit_message=commit_message or f"Upload UNICON task {task!r} (adapter for {base_model})",
                       api=api)


__all__ = ["push", "assemble_repo", "local_target", "export_adapter_repo", "push_adapter"]
