"""The main job, end to end on a tiny plan: scripts/continual.py (in-process and as Accelerate launches),
the forgetting matrix, reports, resume after SIGKILL, and bad plans."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel

import unicon_hf  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
TINY_PLAN = ROOT / "tests" / "plans" / "tiny.yaml"
SCRIPT = ROOT / "scripts" / "continual.py"


def script_main(argv, capsys):
    """scripts/continual.py's main() in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("continual_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    code = module.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_script(*args, env_extra=None, launcher=None, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    command = (launcher or [sys.executable]) + [str(SCRIPT), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = run_script("--config", TINY_PLAN, "--output_dir", out)
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


def test_report_has_the_matrix_with_zero_bwt(tiny_run):
    out, result = tiny_run
    report = json.loads((out / "report" / "report.json").read_text())
    for key in ("stages", "tasks", "matrix", "bwt", "params_added", "seconds"):
        assert key in report
    assert [t["name"] for t in report["tasks"]] == ["findings", "prognosis", "seg_ctpet"]
    matrix = report["matrix"]
    assert len(matrix) == 3
    # every earlier task scores exactly the same after every later stage: nothing is forgotten
    for column in range(3):
        values = [row[column] for row in matrix[column:]]
        assert values[0] is not None and all(v == values[0] for v in values), (column, values)
    assert report["bwt"] == 0.0
    assert report["params_added"][2]["stem"] > 0 and report["params_added"][1]["lora"] > 0
    assert "forgetting matrix" in result.stdout and "BWT = 0.0" in result.stdout


def test_report_files_and_plots(tiny_run):
    out, _ = tiny_run
    names = {p.name for p in (out / "report").iterdir()}
    assert {"report.json", "report.md", "forgetting_matrix.png", "learning_curves.png", "km_prognosis.png"} <= names
    assert any(name.startswith("overlay_") for name in names)
    assert "| findings" in (out / "report" / "report.md").read_text() or "findings" in (out / "report" / "report.md").read_text()


def test_final_model_loads_with_auto_model_and_runs_every_task(tiny_run):
    out, _ = tiny_run
    model = AutoModel.from_pretrained(out / "model").eval()
    assert model.tasks == ["findings", "prognosis", "seg_ctpet"]
    assert (out / "model" / "preprocessor_config.json").is_file()
    card = (out / "model" / "README.md").read_text()
    assert "seg_ctpet" in card and "not for clinical use" in card.lower()
    with torch.no_grad():
        logits = model(task="seg_ctpet", pixel_values=torch.randn(1, 2, 8, 16, 16)).logits
    assert logits.shape == (1, 3, 8, 16, 16)
    assert not (out / "checkpoints" / "03_seg_ctpet").exists()  # cleaned once the stage completed


def test_dry_run_of_the_paper_plan_validates_without_data(capsys):
    code, out, err = script_main(["--config", ROOT / "configs" / "hecktor_paper.yaml", "--output_dir", "unused",
                                  "--dry_run"], capsys)
    assert code == 0, err[-3000:]
    assert "seg_ctpet" in out and "LoRA" in out


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["stages"][1]["task"].update(kind="prognosys"), r"stage 1 \('prognosis'\): task.kind 'prognosys'"),
    (lambda p: p["stages"][2]["data"].update(phantoms=None, root="/no/such/folder"), r"stage 2 \('seg_ctpet'\): data.root"),
    (lambda p: p["stages"][2]["task"].update(name="prognosis"), r"stage 2 \('prognosis'\): task.name 'prognosis' repeats"),
])
def test_bad_plan_fails_before_training_naming_stage_and_field(tmp_path, capsys, edit, message):
    import re

    plan = yaml.safe_load(TINY_PLAN.read_text())
    edit(plan)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(plan))
    code, _, err = script_main(["--config", path, "--output_dir", tmp_path / "out"], capsys)
    assert code == 2
    assert re.search(message, err), err[-2000:]
    assert not (tmp_path / "out").exists()  # nothing started


def _final_weights(out: Path) -> dict:
    return load_file(out / "model" / "model.safetensors")


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_run, tmp_path):
    reference, _ = tiny_run
    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--config", str(TINY_PLAN), "--output_dir", str(out)],
                               env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = out / "checkpoints" / "03_seg_ctpet"
    deadline = time.time() + 300
    while time.time() < deadline and not list(checkpoints.glob("step_0000002")):
        if process.poll() is not None:
            pytest.fail("the run ended before it could be killed mid-stage")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "model").exists()  # killed before the end: no final model folder
    result = run_script("--config", TINY_PLAN, "--output_dir", out, "--resume")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "resumed from" in result.stderr + result.stdout
    expected, resumed = _final_weights(reference), _final_weights(out)
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    a = json.loads((reference / "report" / "report.json").read_text())["matrix"]
    b = json.loads((out / "report" / "report.json").read_text())["matrix"]
    assert a == b


def test_two_cpu_processes_give_the_same_matrix(tiny_run, tmp_path):
    reference, _ = tiny_run
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533"]
    result = run_script("--config", TINY_PLAN, "--output_dir", out, launcher=launcher,
                        env_extra={"ACCELERATE_USE_CPU": "true"}, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "distributed" in result.stderr.lower() or (out / "report" / "report.json").is_file()
    a = json.loads((reference / "report" / "report.json").read_text())
    b = json.loads((out / "report" / "report.json").read_text())
    assert b["bwt"] == 0.0
    for row_a, row_b in zip(a["matrix"], b["matrix"]):
        for x, y in zip(row_a, row_b):
            assert (x is None) == (y is None)
            if x is not None:
                assert abs(x - y) < 0.05, (a["matrix"], b["matrix"])


def test_hub_section_pushes_each_completed_stage_as_a_branch(tmp_path):
    from test_push import RecordingApi

    from unicon_hf.training.continual import ContinualRun
    from unicon_hf.training.entrypoint import make_accelerator
    from unicon_hf.training.plan import Plan

    data = yaml.safe_load(TINY_PLAN.read_text())
    data["stages"] = data["stages"][:2]  # findings + prognosis: enough to see one push per stage
    data["hub"] = {"repo_id": "my-org/unicon-tiny", "private": True}
    api = RecordingApi()
    ContinualRun(Plan.from_dict(data), tmp_path / "out", accelerator=make_accelerator(), hub_api=api).run()
    branches = [kwargs["branch"] for name, _, kwargs in api.calls if name == "create_branch"]
    assert branches == ["stage-01_findings", "stage-02_prognosis"]  # the bare foundation goes with the first task
    uploads = [kwargs for name, repo, kwargs in api.calls if name == "upload_folder"]
    assert all(repo == "my-org/unicon-tiny" for name, repo, _ in api.calls)
    assert all("model.safetensors" in u["files"] and "README.md" in u["files"] for u in uploads)
    assert [u["revision"] for u in uploads] == branches
