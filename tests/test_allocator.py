"""The ILP bit allocator on small hand-written statistics and latency tables."""

import json

import numpy as np
import pytest
import torch

from mpqdm.allocator.ilp import Budgets, Linear, layer_terms, solve, totals
from mpqdm.allocator.problem import build
from mpqdm.core.bitplan import BitPlan, FloatLayer
from mpqdm.core.errors import UserError
from mpqdm.core.latency import LatencyTable, partial_width
from mpqdm.core.packing import layer_weight_bytes
from mpqdm.frontend.quant.omq import omq_split
from mpqdm.testing.fixtures import host_source

BITS = list(range(1, 9))


def layer(c_out, k, costs4, kurt=None, policy="quant", shape=None, sens=1.0):
    """costs4: [8 bits][c_out] (the same numbers serve 8-bit activations, halved)."""
    costs4 = np.asarray(costs4, dtype=float)
    return {"kind": "conv2d", "policy": policy, "c_out": c_out, "c_in": k, "weights_per_channel": k,
            "macs": k * c_out, "shape": shape or f"n1_4x4x{k}-{c_out}_k1x1_s1_p0",
            "kurtosis": list(kurt if kurt is not None else np.arange(c_out, 0, -1, dtype=float)),
            "cost": {"4": costs4.tolist(), "8": (costs4 / 2).tolist()}, "sensitivity": sens,
            # end-to-end errors that make the e2e cost equal the gain cost: sens x the layer's summed error
            "e2e": {"4": (sens * costs4.sum(1)).tolist(), "8": (sens * costs4.sum(1) / 2).tolist()}}


def stats(layers: dict) -> dict:
    return {"format": "mpqdm.stats", "version": 3, "model": {"sha256": "ab" * 32, "class": "UNet2DModel"},
            "method": "mse", "smoothing": True, "candidate_bits": BITS, "abits": [4, 8], "layers": layers}


def table(st: dict, t0=0.01, slope=lambda a, b: 0.001 * b * a / 4, threads=2, quant_ms=0.0) -> LatencyTable:
    t = LatencyTable("host")
    entries = []
    for L in st["layers"].values():
        c = L["c_out"]
        for a in (4, 8):
            for b in BITS:
                for n in {c, partial_width(c)}:
                    entries.append({"op": "qconv", "shape": L["shape"], "wbits": b, "abits": a, "threads": threads,
                                    "channels": n, "kernel": "", "median_ms": t0 + n * slope(a, b), "spread": 0.0,
                                    "repeats": 1, "build_id": "test", "measured": "now", **host_source()})
            entries.append({"op": "quantize", "shape": L["shape"], "wbits": 0, "abits": a, "threads": threads,
                            "channels": 0, "kernel": "", "median_ms": quant_ms, "spread": 0.0, "repeats": 1,
                            "build_id": "test", "measured": "now", **host_source()})
    t.merge(entries)
    t.models[st["model"]["sha256"][:16]] = {"name": "test", "calls": []}
    return t


def costs_two_groups(g0, g1):
    """16 channels, groups of 8: per-channel costs so each group sums to g0[b] / g1[b]."""
    c = np.zeros((8, 16))
    for b in BITS:
        c[b - 1, :8] = g0.get(b, 100.0) / 8
        c[b - 1, 8:] = g1.get(b, 100.0) / 8
    return c


def small(g0, g1):
    st = stats({"l": layer(16, 64, costs_two_groups(g0, g1))})
    return st, build(st, table(st), 2, 8, bits=(2, 4), abits=(4,))


# fixed bytes 32 + 8 * 16 = 160; a group of 8 channels of K = 64 takes 64 * bits bytes
def test_hand_checked_optimum_under_memory():
    _, probs = small({2: 10, 4: 1}, {2: 5, 4: 4})
    for kb_bytes, want, cost in ((700, [4, 4], 5), (600, [4, 2], 6), (500, [2, 2], 15)):
        sol = solve(probs, Budgets(weight_kb=kb_bytes / 1024))
        assert sol.choice["l"] == (4, want) and sol.cost == pytest.approx(cost)
        assert sol.weight_bytes == 160 + sum(64 * b for b in want) <= kb_bytes


def test_a_linear_budget_moves_the_optimum_and_holds_on_the_chosen_widths():
    _, probs = small({2: 10, 4: 1}, {2: 5, 4: 4})           # 600 bytes alone: (4, 2), cost 6
    d = {"l": {(4, 4): np.array([0.5, 0.5]), (4, 2): np.array([-0.3, -0.2])}}   # (4, 2): 0.3, (2, 2): -0.5
    for lo, hi, want in ((-1, 1, [4, 2]), (0.0, 1, [4, 2]), (-1, 0.0, [2, 2])):
        sol = solve(probs, Budgets(weight_kb=600 / 1024, linear=Linear(d, lo, hi)))
        assert sol.choice["l"] == (4, want)
        assert lo <= sum(d["l"][4, b][g] for g, b in enumerate(want)) <= hi
    with pytest.raises(UserError, match=r"weight memory .* the smallest with the other budgets is 0.65625 KB"):
        solve(probs, Budgets(weight_kb=600 / 1024, linear=Linear(d, 0.4, 1)))     # only (4, 4) meets it


def test_bits_never_rise_along_the_kurtosis_order():
    _, probs = small({2: 1, 4: 0.9}, {2: 10, 4: 1})      # unconstrained, (2, 4) would be best
    sol = solve(probs, Budgets(weight_kb=600 / 1024))
    assert sol.choice["l"][1] == [4, 2]


def test_latency_counts_a_fixed_cost_per_width_and_is_met_as_recomputed():
    st, probs = small({2: 10, 4: 1}, {2: 5, 4: 4})
    p = probs[0]
    t = table(st)
    for bits in ([4, 2], [4, 4], [2, 2]):      # the ILP's terms are the latency table's model
        groups = list(zip(p.sizes, bits, strict=True))
        assert layer_terms(p, 4, bits)[2] == pytest.approx(t.layer_ms(p.shape, 16, 8, groups, 4, 2))
    _, _, mixed = layer_terms(p, 4, [4, 2])
    _, _, uniform = layer_terms(p, 4, [4, 4])
    assert mixed == pytest.approx(p.t0[4, 4] + p.t0[4, 2] + 8 * (p.slope[4, 4] + p.slope[4, 2]))
    assert uniform == pytest.approx(0.01 + 16 * 0.001 * 4)          # the table's full-width time
    budget = (uniform + mixed) / 2 if uniform < mixed else uniform   # mixed costs an extra fixed term
    sol = solve(probs, Budgets(latency_ms=budget))
    assert totals(probs, sol.choice)[2] <= budget + 1e-12


def test_latency_is_a_whole_unet_call():
    """Each layer's input quantizer at its activation width and the float calls count in the budget."""
    st = stats({"l": layer(16, 64, costs_two_groups({2: 10, 4: 1}, {2: 5, 4: 4}))})
    t = table(st, quant_ms=0.5)
    probs = build(st, t, 2, 8, bits=(2, 4), abits=(4,))
    assert probs[0].qt == {4: 0.5}
    sol = solve(probs, Budgets(), fixed=2.0)
    _, _, layer_ms = layer_terms(probs[0], *sol.choice["l"])
    assert sol.latency_ms == pytest.approx(layer_ms + 2.0) and sol.fixed_ms == 2.0
    fastest = 2.0 + 0.5 + 0.01 + 16 * 0.001 * 2
    with pytest.raises(UserError, match=rf"latency 2.1 ms per UNet call cannot be met.*on its own is {fastest:g}"):
        solve(probs, Budgets(latency_ms=2.1), fixed=2.0)
    assert solve(probs, Budgets(latency_ms=fastest + 1e-9), fixed=2.0).choice["l"][1] == [2, 2]


def test_infeasible_budgets_name_the_budget_and_the_smallest_value():
    _, probs = small({2: 10, 4: 1}, {2: 5, 4: 4})
    with pytest.raises(UserError, match=r"weight memory 0.3 KB cannot be met.*smallest on its own is 0.40625 KB"):
        solve(probs, Budgets(weight_kb=0.3))
    fastest = 0.01 + 16 * 0.001 * 2
    with pytest.raises(UserError, match=rf"latency 0.001 ms per UNet call cannot be met.*on its own is {fastest:g}"):
        solve(probs, Budgets(latency_ms=0.001))
    with pytest.raises(UserError, match="average weight bits 1 bits cannot be met.*on its own is 2 bits"):
        solve(probs, Budgets(avg_bits=1.0))


def test_e2e_cost_splits_the_layers_measured_error_by_output_error_share():
    L = layer(16, 64, costs_two_groups({2: 30, 4: 2}, {2: 10, 4: 2}), sens=0.5)
    L["e2e"]["4"] = [100.0 * (9 - b) for b in BITS]        # not the gain's extrapolation
    st = stats({"l": L})
    e2e = build(st, table(st), 2, 8, bits=(2, 4), abits=(4,), cost_model="e2e")[0]
    assert e2e.cost[4][2] == pytest.approx([700 * 0.75, 700 * 0.25])   # 30 : 10 of the output error
    assert e2e.cost[4][4] == pytest.approx([250, 250])
    gain = build(st, table(st), 2, 8, bits=(2, 4), abits=(4,), cost_model="gain")[0]
    assert gain.cost[4][2] == pytest.approx([15, 5])
    with pytest.raises(UserError, match="unknown cost model 'x'"):
        build(st, table(st), 2, 8, cost_model="x")
    from mpqdm.allocator.allocate import to_plan
    from mpqdm.allocator.problem import plan_cost

    for model, probs in (("e2e", [e2e]), ("gain", [gain])):   # a written plan costs what the ILP counted
        sol = solve(probs, Budgets(weight_kb=600 / 1024))
        assert plan_cost(to_plan(st, probs, sol, 8), st, model) == pytest.approx(sol.cost)


def test_statistics_without_e2e_or_of_version_2_name_the_command(tmp_path):
    from mpqdm.core.stats import read_stats

    st = stats({"l": layer(16, 64, costs_two_groups({}, {}))})
    del st["layers"]["l"]["e2e"]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(st))
    with pytest.raises(UserError, match="layer 'l' 'e2e' must map the activation widths.*re-run mpqdm stats"):
        read_stats(path)
    path.write_text(json.dumps({**st, "version": 2}))
    with pytest.raises(UserError, match=r"v2; this mpqdm reads 'mpqdm.stats' v3.*mpqdm stats MODEL_DIR --out"):
        read_stats(path)


def test_missing_latency_entry_is_named():
    st = stats({"l": layer(16, 64, costs_two_groups({}, {}))})
    t = table(st)
    del t.entries[("qconv", st["layers"]["l"]["shape"], 3, 4, 2, 16, "")]
    with pytest.raises(UserError, match="no entry op=qconv shape=n1_4x4x64-16_k1x1_s1_p0 wbits=3 abits=4"):
        build(st, t, 2, 8, bits=(2, 3), abits=(4,))


def test_pinned_and_float_layers_and_plan_round_trip(tmp_path):
    from mpqdm.allocator.allocate import to_plan

    rng = np.random.default_rng(0)
    cost = np.sort(rng.uniform(0, 1, (8, 32)), axis=0)[::-1]
    st = stats({"conv_in": layer(16, 9, cost[:, :16], policy="w8a8", shape="n1_8x8x1-16_k3x3_s1_p1"),
                "mid": layer(32, 144, cost, kurt=rng.normal(size=32)),
                "short": layer(32, 16, cost, policy="float")})
    probs = build(st, table(st), 2, 16)
    sol = solve(probs, Budgets(avg_bits=3.0))
    plan = to_plan(st, probs, sol, 16)
    assert isinstance(plan.layers["short"], FloatLayer)
    assert [(g.wbits, plan.layers["conv_in"].abits) for g in plan.layers["conv_in"].groups] == [(8, 8)]
    mid = plan.layers["mid"]
    assert list(mid.order) == list(np.argsort(-np.asarray(st["layers"]["mid"]["kurtosis"]), kind="stable"))
    path = tmp_path / "plan.json"
    plan.save(path)
    assert BitPlan.load(path) == plan
    assert plan.avg_wbits({"conv_in": 9, "mid": 144}) == pytest.approx(sol.avg_bits) and sol.avg_bits <= 3.0


def test_predicted_memory_is_what_the_packed_layers_take():
    rng = np.random.default_rng(1)
    cost = np.sort(rng.uniform(0, 1, (8, 40)), axis=0)[::-1]
    st = stats({"a": layer(40, 27, cost, kurt=rng.normal(size=40)), "b": layer(24, 50, cost[:, :24])})
    probs = build(st, table(st), 2, 8, bits=(1, 2, 3, 4, 8), abits=(4,))
    sol = solve(probs, Budgets(avg_bits=2.5))
    stored = sum(layer_weight_bytes(p.k, list(zip(p.sizes, sol.choice[p.name][1], strict=True))) for p in probs)
    assert sol.weight_bytes == stored


def test_omq_rule_is_the_special_case_of_n_plus_minus_one_at_average_n():
    """Bits {n-1, n, n+1} with the average held at n force k groups up and k down: the ILP's best k
    (whole groups) is OMQ's k searched over every multiple of the group size."""
    rng = np.random.default_rng(2)
    c_out, g, n = 48, 8, 2
    kurt = rng.normal(size=c_out)
    base = rng.uniform(0.5, 2, c_out) * (1 + np.argsort(np.argsort(-kurt)) / c_out)
    cost = np.stack([base * 4.0 ** -b * rng.uniform(0.5, 1.5, c_out) for b in BITS])
    st = stats({"l": layer(c_out, 32, cost, kurt=kurt)})
    probs = build(st, table(st), 2, g, bits=(n - 1, n, n + 1), abits=(4,))
    sol = solve(probs, Budgets(avg_bits=float(n)))
    fr = [k / c_out for k in range(0, c_out // 2 + 1, g)]
    omq = omq_split(torch.tensor(kurt), torch.tensor(cost), BITS, n, 4, group=g, fractions=fr)
    assert list(probs[0].order) == list(omq.order)
    assert [b for b in omq.bits_per_channel()] == [b for s, b in zip(probs[0].sizes, sol.choice["l"][1],
                                                                      strict=True) for _ in range(s)]


def test_group_size_must_fit_the_kernel_tile():
    st = stats({"l": layer(16, 64, costs_two_groups({}, {}))})
    with pytest.raises(UserError, match="multiple of 8"):
        build(st, table(st), 2, 12)


def test_stats_file_round_trip(tmp_path):
    from mpqdm.core.stats import read_stats, write_stats

    st = stats({"l": layer(16, 64, costs_two_groups({}, {}))})
    write_stats(st, tmp_path / "s.json")
    assert read_stats(tmp_path / "s.json") == json.loads(json.dumps(st))


def test_allocate_command_writes_plan_report_and_plots(tmp_path):
    import subprocess
    import sys

    from mpqdm.core.stats import write_stats

    rng = np.random.default_rng(3)
    cost = np.sort(rng.uniform(0, 1, (8, 32)), axis=0)[::-1]
    st = stats({"a": layer(32, 72, cost, kurt=rng.normal(size=32)), "b": layer(16, 36, cost[:, :16])})
    write_stats(st, tmp_path / "stats.json")
    table(st).save(tmp_path / "lat.json")
    out = tmp_path / "plans" / "p.json"

    def run(*extra):
        return subprocess.run([sys.executable, "-m", "mpqdm.cli", "allocate", "--stats", str(tmp_path / "stats.json"),
                               "--table", str(tmp_path / "lat.json"), "--out", str(out), "--abits", "4",
                               "--pareto-points", "3", *extra], capture_output=True, text=True)

    r = run("--weight-memory-kb", "4", "--latency-ms", "1")
    assert r.returncode == 0, r.stderr
    plan = BitPlan.load(out)
    assert set(plan.layers) == {"a", "b"} and "weight memory" in r.stdout
    for suffix in (".report.md", ".pareto.png", ".bits.png"):
        assert out.with_suffix("").with_suffix(suffix).stat().st_size > 0
    out.unlink()
    r = run("--weight-memory-kb", "0.5")
    assert r.returncode != 0 and "weight memory 0.5 KB cannot be met" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()                        # nothing written for an infeasible budget


def test_a_board_without_a_table_takes_a_memory_budget_and_refuses_a_latency_one(tmp_path):
    from mpqdm.allocator.allocate import allocate_to
    from mpqdm.core.stats import write_stats

    cost = np.sort(np.random.default_rng(4).uniform(0, 1, (8, 32)), axis=0)[::-1]
    write_stats(stats({"a": layer(32, 72, cost)}), tmp_path / "stats.json")
    plan, sol, report = allocate_to(tmp_path / "p.json", tmp_path / "stats.json", "rpi5", Budgets(None, 1.0, None),
                                    abits=4, pareto_points=2)
    assert sol.latency_ms is None and sol.weight_bytes <= 1024
    assert "not modelled" in report.read_text() and set(plan.layers) == {"a"}
    with pytest.raises(UserError, match="profiled first"):
        allocate_to(tmp_path / "q.json", tmp_path / "stats.json", "rpi5", Budgets(1.0, None, None), abits=4)


def test_a_table_of_another_cpu_serves_memory_budgets_and_refuses_latency_ones(tmp_path, capsys):
    from mpqdm.allocator.allocate import allocate
    from mpqdm.boards.registry import latency_path, load_board
    from mpqdm.core.resources import DEFAULT_MODEL
    from mpqdm.deploy.shipped import stats_for
    from mpqdm.frontend.model_io import model_fingerprint

    host = load_board("host")
    if not host.cpu_features:
        pytest.skip("this host shows no kernel features, so no table can differ from it")
    doc = json.loads(latency_path(host).read_text())
    for e in doc["entries"]:
        e["features"] = []
    other = tmp_path / "latency.json"
    other.write_text(json.dumps(doc))
    stats = stats_for(model_fingerprint(DEFAULT_MODEL))
    _, sol, _, _ = allocate(stats, "host", Budgets(weight_kb=800), abits=4, table_path=other)
    assert sol.latency_ms is None and sol.weight_bytes <= 800 * 1024
    assert "Latency is not modelled" in capsys.readouterr().err
    with pytest.raises(UserError, match="measured on a CPU with features"):
        allocate(stats, "host", Budgets(latency_ms=100.0), abits=4, table_path=other)


def test_a_solve_stopped_by_its_time_limit_keeps_its_plan_or_says_it_found_none(monkeypatch):
    """CBC's time limit: a feasible plan comes back marked not optimal; none found is not 'infeasible'."""
    import pulp

    _, probs = small({2: 10, 4: 1}, {2: 5, 4: 4})
    real = pulp.LpProblem.solve

    def stopped_with_plan(self, solver=None, **kw):
        real(self, solver, **kw)
        self.sol_status = pulp.LpSolutionIntegerFeasible      # what CBC reports when it stops on time
        return self.status

    monkeypatch.setattr(pulp.LpProblem, "solve", stopped_with_plan)
    sol = solve(probs, Budgets(weight_kb=600 / 1024), time_limit=1.0)
    assert not sol.optimal and sol.choice["l"] == (4, [4, 2])

    def stopped_without(self, solver=None, **kw):
        self.status, self.sol_status = pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound
        return self.status

    monkeypatch.setattr(pulp.LpProblem, "solve", stopped_without)
    with pytest.raises(UserError, match=r"found no plan within its time limit \(1 s\).*--time-limit"):
        solve(probs, Budgets(weight_kb=600 / 1024), time_limit=1.0)
    monkeypatch.setattr(pulp.LpProblem, "solve", real)
    assert solve(probs, Budgets(weight_kb=600 / 1024), time_limit=60).optimal
