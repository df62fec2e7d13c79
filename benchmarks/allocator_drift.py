"""Is the dimming of allocator_diagnosis.py additive over layers? A candidate allocation term, tested.

Run: .venv/bin/python benchmarks/allocator_drift.py [--threads 1] [--base uniform]
Per quantized layer of the default model and width (A4/A8 x W1/2/3/4/8), with that layer alone at the
width (PTQ ranges, mse) and every other layer FP (--base fp) or as in the uniform W3A4 plan (--base
uniform): the drift of 8 free-running DDIM samples (20 steps, noise seed 777) against the FP model's
from the same noise, 1 - x0 gain (allocator_diagnosis.py's measure; positive: dimmer), and their paired
MSE. All widths of a layer run in one batch. Then for each plan of allocator_diagnosis.py (its exports,
made there when missing): the drift measured with the whole plan quantized, against the sum over its
layers of the single-layer drifts (each width weighted by its share of the layer's channels; around
uniform: uniform's measured drift plus each layer's change from uniform's width).
An additive term would be a linear budget for the ILP: with --base uniform the W3A4 ILP is also solved
with its predicted drift in DRIFT_RANGE (benchmarks/allocator_plans/drift-W3A4.json, allocator_diagnosis.py's
row ilp-drift) and its drift measured.
Writes benchmarks/results/allocator_drift[_uniform].{json,md}; the per-layer tables are kept in
out/allocator/drift/."""

from __future__ import annotations

import argparse
import collections
import copy
import json
import time
from pathlib import Path

import allocator_diagnosis as diag

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "out" / "allocator" / "drift"
RESULTS = ROOT / "benchmarks" / "results"
N, SEED, WIDTHS = 8, 777, [(a, b) for a in (4, 8) for b in (1, 2, 3, 4, 8)]
PLANS = ["uniform", "omq", "ilp", "ilp-no-1bit", "ilp-bits-234", "ilp-lowres-3bit", "uniform-a8", "ilp-a8"]


def sample(model, x, sched, idx=None):
    """DDIM from x; the step index goes to idx (one layer's variants) or to the quantized model."""
    import torch

    from mpqdm.frontend.quant.swap import set_step
    from mpqdm.frontend.sampling import ddim_sample

    def eps(x, t, i):
        if idx is not None:
            idx.value = i
        elif hasattr(model, "mpq_step_index"):
            set_step(model, i)
        return model(x, t).sample

    with torch.no_grad():
        return ddim_sample(eps, x, sched).clamp(-1, 1) + 1   # background 0, as allocator_diagnosis.py's x0 gain


def drift(x, ref) -> tuple[list[float], list[float]]:
    """Per variant (x: [V*N, ...]) 1 - mean x0 gain against ref [N, ...], and the paired MSE."""
    x, r = x.view(-1, N, ref[0].numel()), ref.view(1, N, -1)
    gain = ((x * r).sum(2) / (r * r).sum(2)).mean(1)
    return [float(1 - g) for g in gain], [float(m) for m in ((x - r) ** 2).mean((1, 2))]


def layer_drifts(unet, alphas, sched, noise, ref, base=None, base_name="fp") -> dict:
    """{layer: {"a:b": [drift, mse]}} with that layer alone at width (a, b) and every other layer FP,
    or, with `base` (a quantized model), every other layer as in `base`."""
    import torch

    from mpqdm.frontend.quant.calibrate import CalibConfig, calibrate
    from mpqdm.frontend.quant.e2e import Widths
    from mpqdm.frontend.quant.layers import QuantLayer
    from mpqdm.frontend.quant.quantizer import StepIndex
    from mpqdm.frontend.quant.ranges import init_layer
    from mpqdm.frontend.quant.swap import LayerPolicy, quant_targets, set_module

    path = WORK / f"layers-{base_name}-n{N}-seed{SEED}-{len(WIDTHS)}widths.json"     # one file per noise and widths
    if path.is_file():
        return json.loads(path.read_text())
    calib = calibrate(unet, alphas, CalibConfig(), False)
    model = unet if base is None else base
    out, t0 = {}, time.perf_counter()
    for name, fp in quant_targets(unet).items():
        if LayerPolicy().kind(name) != "quant":
            continue
        idx = StepIndex() if base is None else base.mpq_step_index
        variants = []
        for a, b in WIDTHS:
            layer = QuantLayer(copy.deepcopy(fp), torch.full((fp.weight.shape[0],), b), a, 20, idx)
            init_layer(layer, calib.layers[name], "mse", True)
            variants.append(layer)
        kept = model.get_submodule(name)
        set_module(model, name, Widths(variants))
        try:
            d, m = drift(sample(model, noise.repeat(len(WIDTHS), 1, 1, 1), sched, idx if base is None else None),
                         ref)
        finally:
            set_module(model, name, kept)
        out[name] = {f"{a}:{b}": [round(dv, 5), round(mv, 5)] for (a, b), dv, mv in zip(WIDTHS, d, m, strict=True)}
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def widths_of(plan) -> dict:
    """{layer: {"a:b": share of the layer's channels}} over a plan's quantized layers."""
    from mpqdm.core.bitplan import LayerPlan

    out = {}
    for name, lp in plan.layers.items():
        if isinstance(lp, LayerPlan):
            bits = lp.bits_per_channel()
            out[name] = {f"{lp.abits}:{b}": n / len(bits) for b, n in collections.Counter(bits).items()}
    return out


def predicted(plan, layers: dict, base=None) -> tuple[float, float]:
    """Summed single-layer [drift, mse] of the plan's widths; around a base plan ((its plan, its measured
    [drift, mse])), the base's measured value plus each layer's change from the base's width."""
    tot = [0.0, 0.0] if base is None else list(base[1])
    ref = {} if base is None else widths_of(base[0])
    for name, shares in widths_of(plan).items():
        if name not in layers:
            continue
        for sign, sh in ((1, shares), (-1, ref.get(name, {}))):
            for w, f in sh.items():
                for k in (0, 1):
                    tot[k] += sign * f * layers[name][w][k]
    return tot[0], tot[1]


DRIFT_PLAN, DRIFT_RANGE = "drift-W3A4.json", (-0.02, 0.01)     # the predicted drift the plan may have
DRIFT_NOISE = 0.01        # a layer's change of drift below this counts 0 (8 samples; 0.005 was exploited)


def drift_budget(layers: dict, base) -> callable:
    """problems -> (an ilp.Linear budget keeping the predicted drift around `base` in DRIFT_RANGE, a note):
    each group of a layer counts its share of the layer's channels times the layer's drift at that width
    (its drift at the base's width where the two differ by less than DRIFT_NOISE)."""
    import numpy as np

    from mpqdm.allocator.ilp import Linear

    const = base[1][0] - predicted(base[0], layers)[0]      # the base's measured drift less its summed one

    def make(problems):
        coeff = {}
        for p in problems:
            if p.name not in layers or p.pinned:
                continue
            share = np.asarray(p.sizes, dtype=float) / p.c_out
            at = sum(f * layers[p.name][w][0] for w, f in widths_of(base[0]).get(p.name, {}).items())
            d = {(a, b): layers[p.name][f"{a}:{b}"][0] for a in p.cost for b in p.cost[a]}
            coeff[p.name] = {k: (v if abs(v - at) >= DRIFT_NOISE else at) * share for k, v in d.items()}
        lo, hi = DRIFT_RANGE
        note = f"predicted drift in [{lo}, {hi}] around uniform W3A4, changes under {DRIFT_NOISE} as 0"
        return Linear(coeff, lo - const, hi - const), note
    return make


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--base", choices=("fp", "uniform"), default="fp",
                    help="the other layers' state while one layer's widths are measured")
    args = ap.parse_args()
    import torch
    from scipy.stats import spearmanr

    from mpqdm.core.bitplan import BitPlan
    from mpqdm.core.resources import DEFAULT_MODEL
    from mpqdm.frontend.evaluate import load_for_sampling
    from mpqdm.frontend.model_io import load_scheduler, load_unet
    from mpqdm.frontend.sampling import ddim_schedule
    from mpqdm.testing.bench import markdown_table, save_rows

    if args.threads:
        torch.set_num_threads(args.threads)
    unet = load_unet(DEFAULT_MODEL).eval()
    alphas = load_scheduler(DEFAULT_MODEL).alphas_cumprod
    sched = ddim_schedule(alphas, 20)
    noise = torch.randn((N, 1, 32, 32), generator=torch.Generator().manual_seed(SEED))
    ref = sample(unet, noise, sched)
    measured = {}
    for key in PLANS:
        exp = diag.export_for(key, diag.WORK / key)
        qunet, _, _ = load_for_sampling(exp, 20)
        (d,), (m,) = drift(sample(qunet, noise, sched), ref)
        measured[key] = (BitPlan.load(exp / "quant_plan.json"), (d, m), qunet)
    base = None
    if args.base != "fp":
        plan, dm, qunet = measured[args.base]
        base = (plan, dm)
        layers = layer_drifts(unet, alphas, sched, noise, ref, base=qunet, base_name=args.base)
    else:
        layers = layer_drifts(unet, alphas, sched, noise, ref)
    if base is not None and args.base == "uniform":
        import allocator_fd as fd_bench

        path = fd_bench.ilp_plan("W3A4", 3, 4, None, name=DRIFT_PLAN, linear=drift_budget(layers, base))
        plan = BitPlan.load(path)
        (d,), (m,) = drift(sample(load_for_sampling(diag.export_for("ilp-drift", diag.WORK / "ilp-drift"), 20)[0],
                                  noise, sched), ref)
        measured["ilp-drift"] = (plan, (d, m), None)
    rows = []
    for key, (plan, (d, m), _) in measured.items():
        pd, pm = predicted(plan, layers, base)
        rows.append({"plan": key, "drift": round(d, 4), "drift_sum_of_layers": round(pd, 4),
                     "mse": round(m, 4), "mse_sum_of_layers": round(pm, 4)})
        print(rows[-1], flush=True)
    rest = [r for r in rows if r["plan"] != args.base]          # the base predicts itself exactly
    rho = {k: round(float(spearmanr([r[k] for r in rest], [r[k + "_sum_of_layers"] for r in rest]).statistic), 3)
           for k in ("drift", "mse")}
    stem = "allocator_drift" + ("" if args.base == "fp" else f"_{args.base}")
    around = "every other layer FP" if base is None else f"every other layer as in the {args.base} plan"
    save_rows(RESULTS / f"{stem}.json", rows, samples=N, noise_seed=SEED, spearman=rho, layers=layers,
              base=args.base)
    (RESULTS / f"{stem}.md").write_text(
        "# Allocator: is a plan's drift (1 - x0 gain) the sum of its layers' drifts? (default model, W3 budget)\n\n"
        f"Command: `.venv/bin/python benchmarks/allocator_drift.py --base {args.base}` (what each column is: "
        f"its docstring). Single-layer widths measured with {around}.\n\n"
        + markdown_table([{k: v if k == "plan" else f"{v:.4f}" for k, v in r.items()} for r in rows], list(rows[0]))
        + f"\nSpearman, measured against summed (the base plan left out): drift {rho['drift']}, "
        f"paired MSE {rho['mse']}.\n")


if __name__ == "__main__":
    main()
