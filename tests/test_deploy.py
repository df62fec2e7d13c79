"""`mpqdm deploy` on the tiny UNet: one folder with the artifact, the binary, the plan and the report;
the binary checked against PyTorch; stages reused on a rerun and after an interruption; bad input
stopped with the stage named and no folder left looking complete; the HTML report in Chromium."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mpqdm.backend_tvm import verify
from mpqdm.cli import main
from mpqdm.core.errors import UserError
from mpqdm.deploy.pipeline import DeployConfig, deploy
from mpqdm.testing.browser import render

REPO = Path(__file__).resolve().parent.parent
TINY = dict(steps=3, calib_samples=4, qat_iterations=1, qat_batch=2, fd_samples=8, threads=1, device="cpu")


@pytest.fixture(scope="module")
def deployed(tiny_unet_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("deploy") / "host"
    info = deploy(tiny_unet_dir, out, DeployConfig(**TINY), progress=False)
    return out, info


def test_one_folder_with_artifact_binary_plan_and_report(deployed):
    out, info = deployed
    assert json.loads((out / "deploy.json").read_text())["complete"] is True
    for f in info["files"]:
        assert (out / f).is_file(), f
    assert os.access(out / "mpqdm-run", os.X_OK)
    r = subprocess.run([str(out / "mpqdm-run"), str(out / "model.mpq"), "--count", "2", "--out", str(out / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    md = (out / "report.md").read_text()
    for part in ("## Budgets", "## Sizes", "## Speed", "## Quality", "images/samples.png", "images/bits.png"):
        assert part in md
    assert info["check"]["median_rel_error"] <= verify.MEDIAN_BOUND
    assert info["ms_per_step"] > 0 and info["peak_rss_mb"] > 0
    assert np.isfinite(info["fd"]) and np.isfinite(info["fd_fp"])


def test_rerun_reuses_every_stage(deployed, tiny_unet_dir):
    out, first = deployed
    info = deploy(tiny_unet_dir, out, DeployConfig(**TINY), progress=False)
    assert set(info["reused_stages"]) == set(first["stage_seconds"]), info["reused_stages"]
    assert info["fd"] == first["fd"]


def test_interrupted_deploy_is_not_complete_and_resumes(tiny_unet_dir, tmp_path, monkeypatch):
    out = tmp_path / "d"
    cfg = DeployConfig(**{**TINY, "qat_iterations": 0})

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify, "runtime_samples", boom)
    with pytest.raises(KeyboardInterrupt):
        deploy(tiny_unet_dir, out, cfg, progress=False)
    assert not (out / "deploy.json").exists() and not (out / "report.html").exists()
    monkeypatch.undo()
    info = deploy(tiny_unet_dir, out, cfg, progress=False)
    assert {"ptq", "compile", "build", "check"} <= set(info["reused_stages"])
    assert "samples" not in info["reused_stages"]


def test_bad_plan_names_the_stage_and_leaves_nothing_complete(tiny_unet_dir, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    out = tmp_path / "d"
    rc = main(["deploy", str(tiny_unet_dir), "--board", "host", "--plan", str(plan), "-o", str(out),
               "--calib-samples", "4", "--steps", "3", "--qat-iterations", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "stage ptq" in err[0], err
    assert not (out / "deploy.json").exists()


def test_latency_budget_on_an_unprofiled_board_says_profile_first(tiny_unet_dir, tmp_path):
    with pytest.raises(UserError, match="profiled first"):
        deploy(tiny_unet_dir, tmp_path / "d", DeployConfig(board="rpi5", latency_ms=5.0, **TINY), progress=False)
    assert not (tmp_path / "d").exists()


def test_memory_budget_allocates_and_is_met(tiny_unet_dir, tmp_path):
    cfg = DeployConfig(board="host", weight_memory_kb=16.0, **{**TINY, "qat_iterations": 0, "calib_samples": 2})
    info = deploy(tiny_unet_dir, tmp_path / "d", cfg, progress=False)
    assert info["plan"]["kind"] == "ILP"
    assert info["budgets_met"] is True and 14 < info["predicted"]["weight_kb"] <= 16.0      # 14.3: the least


def test_output_folder_of_other_files_is_refused(tiny_unet_dir, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="did not write"):
        deploy(tiny_unet_dir, tmp_path / "d", DeployConfig(**TINY), progress=False)
    assert (tmp_path / "d" / "mine.txt").read_text() == "keep"


def test_report_renders_in_chromium(deployed):
    out, _ = deployed
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html    # self-contained
    shot = REPO / "out" / "tests" / "deploy_report.png"          # kept for a look after the run
    shot.parent.mkdir(parents=True, exist_ok=True)
    r = render(out / "report.html", shot)
    assert r["errors"] == [], r["errors"]
    assert len(r["images"]) == 2 and all(i["ok"] and i["width"] > 100 for i in r["images"]), r["images"]
    assert shot.stat().st_size > 10_000


def test_default_model_statistics_ship_with_the_package():
    from mpqdm.core.resources import DEFAULT_MODEL
    from mpqdm.deploy.shipped import stats_for
    from mpqdm.frontend.model_io import model_fingerprint

    path = stats_for(model_fingerprint(DEFAULT_MODEL))
    assert path is not None and path.stat().st_size < 2_000_000


def test_the_browser_probe_sees_errors_and_broken_images(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<html><head></head><body><img alt="x" src="data:image/png;base64,AAAA">'
                    "<script>console.error('boom'); undefinedFunction();</script></body></html>")
    r = render(page, tmp_path / "bad.png")
    assert any("boom" in e for e in r["errors"]) and any("undefinedFunction" in e for e in r["errors"]), r
    assert r["images"] and not r["images"][0]["ok"]


def test_a_model_the_fd_cannot_score_is_deployed_and_checked(tmp_path):
    from mpqdm.testing.fixtures import tiny_unet

    model = tiny_unet(tmp_path / "rgb", in_channels=3, out_channels=3)
    info = deploy(model, tmp_path / "d", DeployConfig(**{**TINY, "qat_iterations": 0}), progress=False)
    assert info["fd"] is None and "samples" not in info["stage_seconds"]
    chk = info["check"]
    assert chk["checked_inputs"] == 3 * verify.CHECK_SAMPLES
    assert chk["median_rel_error"] < 1e-4      # most inputs agree to float rounding; a flip cascades in one
    assert "No FD" in (tmp_path / "d" / "report.md").read_text()
