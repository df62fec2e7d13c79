"""The deploy report's predicted latency: only from a table this CPU's kernels can use."""

from mpqdm.boards.registry import load_board
from mpqdm.core.bitplan import BitPlan
from mpqdm.core.io import write_json
from mpqdm.deploy.report import predicted
from mpqdm.frontend.quant.export import read_meta
from mpqdm.testing.fixtures import hand_table


def test_a_table_of_other_cpu_features_predicts_no_latency(tiny_omq_export, tmp_path):
    board = load_board("host")
    other = ["neon"] if board.arch == "x86_64" else ["avx2"]      # features no kernel of this board uses
    table = hand_table([{"op": "add", "shape": "EltwiseSpec(n=1, h=1, w=1, c=8)", "wbits": 0, "abits": 0,
                         "threads": 1, "channels": 0, "median_ms": 0.001, "spread": 0.0, "repeats": 1,
                         "build_id": "x", "measured": "2026-12-04T00:00:00Z"}])
    table["entries"][0]["features"] = other
    write_json(tmp_path / "latency.json", table)
    plan = BitPlan.load(tiny_omq_export / "quant_plan.json")
    out = predicted(tiny_omq_export, plan, read_meta(tiny_omq_export), board, tmp_path / "latency.json", 1)
    assert out["latency_ms"] is None and "measured on a CPU with features" in out["latency_note"]
    assert out["weight_kb"] > 0
