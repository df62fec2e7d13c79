"""The board farm on 127.0.0.1: TVM's tracker and a stock RPC server, profiling the tiny model's
call kinds through them; a server killed mid-run leaves a partial table that a rerun completes."""

import json
import subprocess
import sys
import threading
import time

import pytest

from mpqdm.backend_tvm.artifact import read_artifact
from mpqdm.backend_tvm.compile import compile_export
from mpqdm.backend_tvm.profile import profile
from mpqdm.core.errors import UserError
from mpqdm.core.latency import LatencyTable
from mpqdm.testing import farm
from mpqdm.testing.fixtures import tiny_export

SMALL = {"wbits": (2,), "abits": (4,), "repeats": 1, "min_repeat_ms": 0, "progress": False, "passes": 1}


@pytest.fixture(scope="module")
def tracker():
    proc, port = farm.start_tracker()
    yield port
    farm.stop(proc)


def test_profile_through_the_tracker_matches_a_local_run(tracker, tiny_unet_dir, tmp_path):
    compiled = tmp_path / "compiled"
    compile_export(tiny_export(tiny_unet_dir, tmp_path / "export"), "host", compiled, progress=False)
    server = farm.start_server(tracker, "host-farm")
    try:
        remote = profile(tiny_unet_dir, "host", table_path=tmp_path / "remote.json",
                         tracker=f"127.0.0.1:{tracker}", key="host-farm", **SMALL)
        r = subprocess.run([sys.executable, "-m", "mpqdm.cli", "bench", str(compiled), "--board", "host",
                            "--tracker", f"127.0.0.1:{tracker}", "--key", "host-farm", "--threads", "1"],
                           capture_output=True, text=True, timeout=300)
    finally:
        farm.stop(server)
    assert r.returncode == 0, r.stderr
    b = json.loads((compiled / "bench-host-farm.json").read_text())
    assert b["key"] == "host-farm" and b["ms_per_step"] > 0 and not b["emulated"]
    assert len(b["calls"]) == len(read_artifact(compiled / "model.mpq")["calls"])
    assert sum(b["ms_by_kind"].values()) == pytest.approx(sum(c["ms"] for c in b["calls"]), rel=1e-3)
    assert "ms per step at 1 thread;" in r.stdout and "qconv" in r.stdout
    local = profile(tiny_unet_dir, "host", table_path=tmp_path / "local.json", **SMALL)
    r, lo = LatencyTable.load(tmp_path / "remote.json"), LatencyTable.load(tmp_path / "local.json")
    assert set(r.entries) == set(lo.entries) and r.models == lo.models          # the same table, shape for shape
    assert remote["entries"] == local["entries"] == len(r.entries)
    assert {e["key"] for e in r.entries.values()} == {"host-farm"}
    assert {e["key"] for e in lo.entries.values()} == {"local"}
    assert all(e["median_ms"] > 0 for e in r.entries.values())


def test_a_server_killed_mid_run_leaves_a_partial_table_a_rerun_completes(tracker, tiny_unet_dir, tmp_path):
    table = tmp_path / "lat.json"
    server = farm.start_server(tracker, "host-kill")
    result = {}

    def run():
        try:
            result["info"] = profile(tiny_unet_dir, "host", table_path=table, tracker=f"127.0.0.1:{tracker}",
                                     key="host-kill", batch=4, **SMALL)
        except UserError as exc:
            result["error"] = str(exc)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (table.is_file() and LatencyTable.load(table).entries):
        time.sleep(0.05)
    farm.stop(server)                                   # the board drops after its first batch
    t.join(timeout=300)
    assert "dropped" in result.get("error", "") and "run the same command again" in result["error"]
    partial = len(LatencyTable.load(table).entries)
    assert partial >= 4
    server = farm.start_server(tracker, "host-kill")
    try:
        info = profile(tiny_unet_dir, "host", table_path=table, tracker=f"127.0.0.1:{tracker}", key="host-kill",
                       batch=4, **SMALL)
    finally:
        farm.stop(server)
    assert info["skipped"] == partial and info["entries"] == info["jobs"] - partial   # nothing measured twice
    assert len(LatencyTable.load(table).entries) == info["jobs"]


def test_bad_farms_are_named(tracker, tiny_unet_dir, tmp_path):
    table = tmp_path / "lat.json"
    with pytest.raises(UserError, match=r"cannot reach the RPC tracker at 127.0.0.1:\d+.*rpc_tracker"):
        profile(tiny_unet_dir, "host", table_path=table, tracker=f"127.0.0.1:{farm.free_port()}", **SMALL)
    with pytest.raises(UserError, match=r"no board holds key 'nobody'.*waited 1 s.*--key nobody"):
        profile(tiny_unet_dir, "host", table_path=table, tracker=f"127.0.0.1:{tracker}", key="nobody", wait_s=1,
                **SMALL)
    with pytest.raises(UserError, match="is not HOST:PORT"):
        profile(tiny_unet_dir, "host", table_path=table, tracker="somewhere", **SMALL)
    assert not table.exists() or not LatencyTable.load(table).entries


def test_a_board_whose_cpu_is_not_its_profiles_is_refused(tracker, tiny_unet_dir, tmp_path):
    """A profile naming another CPU than the server reports: refused before anything is timed."""
    from mpqdm.boards.registry import BOARDS_DIR

    text = (BOARDS_DIR / "host" / "board.toml").read_text().replace('name = "host"', 'name = "other-x86"')
    board = tmp_path / "other-x86"
    board.mkdir()
    (board / "board.toml").write_text(text.replace('cpu = "detect"', 'cpu = "Some Other CPU"'))
    server = farm.start_server(tracker, "other-x86")
    try:
        with pytest.raises(UserError, match=r"reports CPU '.*', profile 'other-x86' describes 'Some Other CPU'"):
            profile(tiny_unet_dir, str(board), table_path=tmp_path / "lat.json", tracker=f"127.0.0.1:{tracker}",
                    **SMALL)
    finally:
        farm.stop(server)
    assert not LatencyTable.load(tmp_path / "lat.json", "other-x86").entries
