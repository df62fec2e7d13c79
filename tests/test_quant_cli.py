import json
import subprocess
import sys

from mpqdm.core.bitplan import BitPlan


def run(*args):
    return subprocess.run([sys.executable, "-m", "mpqdm.cli", *args], capture_output=True, text=True)


CAL = ["--calib-samples", "2", "--calib-steps", "3", "--device", "cpu"]


def test_quantize_stats_and_eval_on_export(tiny_unet_dir, tmp_path):
    exp = tmp_path / "q"
    r = run("quantize", str(tiny_unet_dir), "--plan", "omq", "--wbits", "2", "--abits", "4",
            "--group", "2", "--out", str(exp), *CAL)
    assert r.returncode == 0, r.stderr
    assert "average" in r.stdout
    plan = BitPlan.load(exp / "quant_plan.json")
    r = run("eval", str(exp), "--samples", "4", "--steps", "5", "--batch", "4", "--out", str(tmp_path / "ev"),
            "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["samples"] == 4
    st = tmp_path / "stats.json"
    r = run("stats", str(tiny_unet_dir), "--out", str(st), *CAL)
    assert r.returncode == 0, r.stderr
    stats = json.loads(st.read_text())
    assert stats["layers"].keys() == plan.layers.keys()
    conv = stats["layers"]["down_blocks.0.resnets.0.conv1"]
    assert len(conv["cost"]["4"]) == 8 and len(conv["cost"]["4"][0]) == conv["c_out"]
    # more bits, less error, summed over the layer
    sums = [sum(row) for row in conv["cost"]["8"]]
    assert sums[0] > sums[3] > sums[7] >= 0
    assert conv["macs"] == 8 * 8 * 9 * 32 * 32 and conv["sensitivity"] > 0
    assert conv["shape"] == "n1_32x32x8-8_k3x3_s1_p1"     # the latency table's key for the allocator


def test_bad_inputs_are_named(tiny_unet_dir, tmp_path):
    r = run("quantize", str(tiny_unet_dir), "--wbits", "9", *CAL)
    assert r.returncode == 2 and "--wbits: bits must be in 1..8" in r.stderr and "Traceback" not in r.stderr
    r = run("quantize", str(tiny_unet_dir), "--calib-steps", "0", "--device", "cpu")
    assert r.returncode == 2 and "at least one sampling step" in r.stderr
    from mpqdm.frontend.model_io import model_fingerprint

    plan = tmp_path / "plan.json"
    doc = {"format": "mpqdm.bitplan", "version": 1, "model": {"sha256": "0" * 64, "class": "UNet2DModel"},
           "group_size": 8, "smoothing": True, "layers": {"conv_in": {"float": True}}}
    plan.write_text(json.dumps(doc))
    r = run("quantize", str(tiny_unet_dir), "--plan", str(plan), *CAL)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "plan is for model 000000" in r.stderr
    doc["model"]["sha256"] = model_fingerprint(tiny_unet_dir)
    plan.write_text(json.dumps(doc))
    r = run("quantize", str(tiny_unet_dir), "--plan", str(plan), *CAL)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "misses layers" in r.stderr, r.stderr
