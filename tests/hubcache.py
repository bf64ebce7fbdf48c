"""Put a saved model folder into a Hugging Face cache as if it had been downloaded from the Hub."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path


def add_to_hub_cache(folder: str | Path, hf_home: str | Path, repo_id: str) -> Path:
    """Copy `folder` to `<hf_home>/hub/models--org--name/snapshots/<commit>/` with `refs/main` -> commit.

    That is all `from_pretrained("org/name")` needs with HF_HUB_OFFLINE=1. Returns the snapshot path.
    """
    folder = Path(folder)
    digest = hashlib.sha1()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode())
        digest.update(file.read_bytes())
    commit = digest.hexdigest()  # 40 hex digits, like a git commit
    repo_dir = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    shutil.copytree(folder, snapshot, dirs_exist_ok=True)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot
