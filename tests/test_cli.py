import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "mpqdm.cli", *args], capture_output=True, text=True)


def test_bad_model_folder_gives_message_not_traceback(tmp_path):
    r = run("eval", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_bad_sample_count(tiny_unet_dir, tmp_path):
    r = run("eval", str(tiny_unet_dir), "--samples", "1", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--samples must be at least 2" in r.stderr


def test_help_lists_the_commands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("train-fp", "train-classifier", "eval"):
        assert cmd in r.stdout
