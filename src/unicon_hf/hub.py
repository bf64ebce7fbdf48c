"""Writing model repos that load anywhere: safetensors weights, config with `auto_map`, and the code
files, so `AutoModel.from_pretrained(repo, trust_remote_code=True)` works without unicon_hf installed."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from transformers import PreTrainedModel


def save_model_repo(model: PreTrainedModel, output_dir: str | os.PathLike, **save_kwargs) -> Path:
    """`save_pretrained` with the auto classes registered, written atomically.

    The folder is first written beside its destination and renamed into place, so an interrupted
    save never leaves a half-written model folder.
    """
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    model.config.__class__.register_for_auto_class()
    model.__class__.register_for_auto_class("AutoModel")
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(staging, **save_kwargs)
        replace_folder(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def replace_folder(complete: Path, target: Path) -> Path:
    """Rename a fully written folder into `target`; an existing target is set aside first and removed only
    once the new one is in place, so a crash never leaves a half-written folder at `target`."""
    if target.exists():
        backup = target.with_name(f".{target.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        target.rename(backup)
        complete.rename(target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        complete.rename(target)
    return target
