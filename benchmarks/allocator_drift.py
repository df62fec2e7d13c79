"""Is the dimming of allocator_diagnosis.py additive over layers? A candidate allocation term, tested.

Run: .venv/bin/python benchmarks/allocator_drift.py [--threads 1]
Per quantized layer of the default model and width (A4/A8 x W1/2/3/4/8), with that layer alone
quantized (PTQ ranges, mse) and every other layer FP: the drift of 8 free-running DDIM samples (20
steps, noise seed 777) against the FP model's from the same noise, 1 - x0 gain (allocator_diagnosis.py's
measure; positive: dimmer), and their paired MSE. All widths of a layer run in one batch. Then for
each plan of allocator_diagnosis.py (its exports, made there when missing): the drift measured with
the whole plan quantized, against the sum over its layers of the single-layer drifts (each width
weighted by its share of the layer's channels). An additive term would be a linear budget for the ILP.
Writes benchmarks/results/allocator_drift.{json,md}; the per-layer table is kept in out/allocator/drift/.
"""

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


def layer_drifts(unet, alphas, sched, noise, ref) -> dict:
    import torch

    from mpqdm.frontend.quant.calibrate import CalibConfig, calibrate
    from mpqdm.frontend.quant.e2e import Widths
    from mpqdm.frontend.quant.layers import QuantLayer
    from mpqdm.frontend.quant.quantizer import StepIndex
    from mpqdm.frontend.quant.ranges import init_layer
    from mpqdm.frontend.quant.swap import LayerPolicy, quant_targets, set_module

    path = WORK / f"layers-n{N}-seed{SEED}-{len(WIDTHS)}widths.json"     # one file per noise and widths
    if path.is_file():
        return json.loads(path.read_text())
    calib = calibrate(unet, alphas, CalibConfig(), False)
    out, t0 = {}, time.perf_counter()
    for name, fp in quant_targets(unet).items():
        if LayerPolicy().kind(name) != "quant":
            continue
        idx = StepIndex()
        variants = []
        for a, b in WIDTHS:
            layer = QuantLayer(copy.deepcopy(fp), torch.full((fp.weight.shape[0],), b), a, 20, idx)
            init_layer(layer, calib.layers[name], "mse", True)
            variants.append(layer)
        set_module(unet, name, Widths(variants))
        try:
            d, m = drift(sample(unet, noise.repeat(len(WIDTHS), 1, 1, 1), sched, idx), ref)
        finally:
            set_module(unet, name, fp)
        out[name] = {f"{a}:{b}": [round(dv, 5), round(mv, 5)] for (a, b), dv, mv in zip(WIDTHS, d, m, strict=True)}
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


def predicted(plan, layers: dict) -> tuple[float, float]:
    from mpqdm.core.bitplan import LayerPlan

    d = m = 0.0
    for name, lp in plan.layers.items():
        if isinstance(lp, LayerPlan) and name in layers:
            bits = lp.bits_per_channel()
            for b, n in collections.Counter(bits).items():
                dv, mv = layers[name][f"{lp.abits}:{b}"]
                d, m = d + n / len(bits) * dv, m + n / len(bits) * mv
    return d, m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=0)
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
    layers = layer_drifts(unet, alphas, sched, noise, ref)
    rows = []
    for key in PLANS:
        exp = diag.export_for(key, diag.WORK / key)
        qunet, _, _ = load_for_sampling(exp, 20)
        (d,), (m,) = drift(sample(qunet, noise, sched), ref)
        pd, pm = predicted(BitPlan.load(exp / "quant_plan.json"), layers)
        rows.append({"plan": key, "drift": round(d, 4), "drift_sum_of_layers": round(pd, 4),
                     "mse": round(m, 4), "mse_sum_of_layers": round(pm, 4)})
        print(rows[-1], flush=True)
    rho = {k: round(float(spearmanr([r[k] for r in rows], [r[k + "_sum_of_layers"] for r in rows]).statistic), 3)
           for k in ("drift", "mse")}
    save_rows(RESULTS / "allocator_drift.json", rows, samples=N, noise_seed=SEED, spearman=rho, layers=layers)
    (RESULTS / "allocator_drift.md").write_text(
        "# Allocator: is a plan's drift (1 - x0 gain) the sum of its layers' drifts? (default model, W3 budget)\n\n"
        "Command: `.venv/bin/python benchmarks/allocator_drift.py` (what each column is: its docstring)\n\n"
        + markdown_table([{k: v if k == "plan" else f"{v:.4f}" for k, v in r.items()} for r in rows], list(rows[0]))
        + f"\nSpearman, measured against summed: drift {rho['drift']}, "
        f"paired MSE {rho['mse']}.\n")


if __name__ == "__main__":
    main()
