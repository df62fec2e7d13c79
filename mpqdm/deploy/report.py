"""The deploy report: what was chosen, whether the budgets were met (predicted by the board's table,
measured by the binary), sizes, step time, FD against the FP model, and the sample grids, as
report.md and a self-contained report.html; the final files are copied to the folder's top."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from pathlib import Path

from mpqdm.backend_tvm.verify import threads_for
from mpqdm.core.bitplan import BitPlan, LayerPlan
from mpqdm.core.errors import UserError
from mpqdm.core.io import atomic_copy
from mpqdm.core.latency import LatencyTable, partial_width
from mpqdm.core.machine import cpu_name
from mpqdm.core.packing import layer_weight_bytes
from mpqdm.core.report import markdown_table
from mpqdm.frontend.model_io import load_unet
from mpqdm.frontend.quant.export import read_meta
from mpqdm.frontend.quant.shapes import layer_specs

from . import html


def plan_of(export: Path) -> tuple[BitPlan, dict]:
    meta = read_meta(export)
    return BitPlan.load(export / "quant_plan.json"), meta


def weights_per_channel(meta: dict) -> dict[str, int]:
    out = {}
    for name, L in meta["layers"].items():
        kh, kw = L.get("kernel", [1, 1])
        out[name] = int(L["c_in"]) * kh * kw
    return out


def predicted(export: Path, plan: BitPlan, meta: dict, board, table_path: Path, threads: int) -> dict:
    """Packed weight bytes of the quantized layers (exact) and the latency of one whole UNet call by
    the board's table, split by call kind (None when the board has no table or the table lacks a call)."""
    k = weights_per_channel(meta)
    layers = {n: p for n, p in plan.layers.items() if isinstance(p, LayerPlan)}
    nbytes = sum(layer_weight_bytes(k[n], [(g.stop - g.start, g.wbits) for g in p.groups]) for n, p in layers.items())
    out = {"weight_kb": round(nbytes / 1024, 2), "latency_ms": None, "latency_note": "", "ms_by_kind": {}}
    if not table_path.is_file():
        out["latency_note"] = f"board {board.name} has no latency table: profile it first"
        return out
    table = LatencyTable.load(table_path, board.name)
    specs = layer_specs(load_unet(export).eval())
    try:
        table.check_measured_on(board, table_path)     # a table of other kernel features predicts nothing here
        by_kind = table.step_ms(plan.model_sha256[:16], [
            (n, specs[n].shape_key(), p.c_out, partial_width(p.c_out), [(g.stop - g.start, g.wbits) for g in p.groups],
             p.abits) for n, p in layers.items()], threads)
    except UserError as exc:
        out["latency_note"] = str(exc).split(". Possible")[0]
        return out
    out["latency_ms"] = round(sum(by_kind.values()), 4)
    out["ms_by_kind"] = {op: round(ms, 4) for op, ms in sorted(by_kind.items(), key=lambda kv: -kv[1])}
    return out


def bits_chart(plan: BitPlan, path: Path) -> None:
    """Per quantized layer: the share of its output channels at each weight width, and its activation bits."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [(n, p) for n, p in plan.layers.items() if isinstance(p, LayerPlan)]
    widths = sorted({g.wbits for _, p in layers for g in p.groups})
    colors = dict(zip([1, 2, 3, 4, 8], ["#d62728", "#ff7f0e", "#bcbd22", "#2ca02c", "#1f77b4"], strict=True))
    fig, ax = plt.subplots(figsize=(max(8, 0.18 * len(layers)), 3.6))
    bottom = [0.0] * len(layers)
    for b in widths:
        share = [sum(g.stop - g.start for g in p.groups if g.wbits == b) / p.c_out for _, p in layers]
        ax.bar(range(len(layers)), share, bottom=bottom, color=colors.get(b, "#7f7f7f"), label=f"W{b}", width=0.85)
        bottom = [x + y for x, y in zip(bottom, share, strict=True)]
    for i, (_, p) in enumerate(layers):
        if p.abits != 4:
            ax.text(i, 1.02, f"A{p.abits}", ha="center", fontsize=5, rotation=90)
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("share of output channels")
    ax.set_xlabel("quantized layer, in model order (A4 unless marked)")
    ax.legend(ncol=len(widths), fontsize=8, loc="upper right", bbox_to_anchor=(1, 1.22))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def side_by_side(a: Path, b: Path, path: Path) -> None:
    from PIL import Image

    ia, ib = Image.open(a).convert("L"), Image.open(b).convert("L")
    gap = 24
    out = Image.new("L", (ia.width + gap + ib.width, max(ia.height, ib.height)), 255)
    out.paste(ia, (0, 0))
    out.paste(ib, (ia.width + gap, 0))
    out.save(path)


def kb(p: Path) -> float:
    return round(p.stat().st_size / 1024, 1)


def fp_weights_kb(model: Path) -> float:
    return round(sum(p.stat().st_size for p in model.glob("*.safetensors")) / 1024, 1)


def summary(plan: BitPlan, meta: dict, model: Path, sha: str, board, cfg, st, data: dict) -> dict:
    export, builds = data["export"], data["builds"]
    pred = predicted(export, plan, meta, board, data["table"], threads_for(board, cfg))
    bench, smp, fp, chk = data["bench"], data["samples"], data["fp"], data["check"]
    step_ms = bench.get("ms_per_step") if bench.get("measured") else None
    met = {}
    if cfg.weight_memory_kb is not None:
        met["weight_memory_kb"] = pred["weight_kb"] <= cfg.weight_memory_kb
    if cfg.latency_ms is not None:
        met["latency_ms"] = pred["latency_ms"] is not None and pred["latency_ms"] <= cfg.latency_ms
    d = builds[board.name]
    layers = [p for p in plan.layers.values() if isinstance(p, LayerPlan)]
    return {
        "model": str(model), "sha256": sha, "board": board.name, "board_description": board.description,
        "built_on": f"{cpu_name()} ({platform.machine()})", "config": asdict(cfg),
        "plan": {"kind": "ILP" if cfg.budgets else cfg.plan, "quantized_layers": len(layers),
                 "float_layers": len(plan.layers) - len(layers), "avg_wbits": round(plan.avg_wbits(
                     weights_per_channel(meta)), 3), "abits": sorted({p.abits for p in layers})},
        "budgets": {"latency_ms": cfg.latency_ms, "weight_memory_kb": cfg.weight_memory_kb},
        "predicted": pred, "measured_step_ms": step_ms, "budgets_met": all(met.values()) if met else None,
        "budgets_detail": met,
        "artifact_kb": kb(d / "model.mpq"), "binary_kb": kb(d / "mpqdm-run"), "fp_weights_kb": fp_weights_kb(model),
        "peak_rss_mb": bench.get("peak_rss_mb"), "arena_kb": data["compile"]["peak_activation_kb"],
        "ms_per_step": bench.get("ms_per_step"), "threads": bench.get("threads"),
        "ms_per_step_1_thread": bench.get("ms_per_step_1_thread"), "bench": bench,
        "fd": smp and smp["fd"], "fd_fp": fp and fp["fd"], "fd_floor": fp and fp["fd_floor"],
        "fd_samples": smp and smp["samples"], "samples_made_by": smp and smp["made_by"], "check": chk,
        "emulated": board.is_cross, "int8_peer": data["peer"],
        "stage_seconds": st.seconds, "reused_stages": st.reused,
    }


def write(out: Path, model: Path, sha: str, board, cfg, st, data: dict) -> dict:
    plan, meta = plan_of(data["export"])
    info = summary(plan, meta, model, sha, board, cfg, st, data)
    img = out / "images"
    img.mkdir(exist_ok=True)
    bits_chart(plan, img / "bits.png")
    if data["samples"]:
        side_by_side(Path(data["fp"]["grid"]), Path(data["samples"]["grid"]), img / "samples.png")
    d = data["builds"][board.name]
    atomic_copy(d / "model.mpq", out / "model.mpq")
    atomic_copy(d / "mpqdm-run", out / "mpqdm-run")
    atomic_copy(data["export"] / "quant_plan.json", out / "plan.json")
    info["files"] = ["model.mpq", "mpqdm-run", "plan.json", "report.md", "report.html", "images/bits.png"] + (
        ["images/samples.png"] if data["samples"] else [])
    md = markdown(info)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(html.page(info, md_sections(info), img))
    (out / "stages" / "summary.json").write_text(json.dumps(info, indent=2))
    return info


def fmt(v, unit: str = "", nd: int = 2) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{nd}f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def above_bound(chk: dict) -> str:
    """How many checked (step, input) pairs exceed the bound (a check written before they were counted
    says nothing)."""
    if "checked_inputs" not in chk:
        return "per-input errors not recorded"
    return (f"{chk['inputs_above_bound']} of {chk['checked_inputs']} (step, input) pairs above it: in a small "
            "model one activation code flipped by float rounding cascades through its sample; a broken binary "
            "fails every input" if chk["inputs_above_bound"]
            else f"all {chk['checked_inputs']} (step, input) pairs within it")


def md_sections(info: dict) -> list[tuple[str, list[dict] | str]]:
    """(heading, table rows or a paragraph), shared by report.md and report.html."""
    p, pred, chk, peer = info["plan"], info["predicted"], info["check"], info["int8_peer"]
    budget_rows = [
        {"budget": "weight memory (packed, quantized layers)", "limit": fmt(info["budgets"]["weight_memory_kb"], " KB"),
         "predicted": fmt(pred["weight_kb"], " KB"), "measured": fmt(pred["weight_kb"], " KB") + " (exact)",
         "met": fmt(info["budgets_detail"].get("weight_memory_kb", "no budget"))},
        {"budget": "latency per UNet call (whole call)", "limit": fmt(info["budgets"]["latency_ms"], " ms"),
         "predicted": (fmt(pred["latency_ms"], " ms", 3) + " (" + ", ".join(
             f"{op} {100 * ms / pred['latency_ms']:.0f}%" for op, ms in pred["ms_by_kind"].items()
             if ms >= 0.01 * pred["latency_ms"]) + ")") if pred["latency_ms"] else pred["latency_note"],
         "measured": fmt(info["measured_step_ms"], " ms", 3) + " per step" if info["measured_step_ms"] is not None
         else "not measured here", "met": fmt(info["budgets_detail"].get("latency_ms", "no budget"))},
    ]
    size_rows = [
        {"what": "this deployment", "weights / artifact": f"{info['artifact_kb']} KB (model.mpq)",
         "binary": f"{info['binary_kb']} KB (mpqdm-run{', static' if info['emulated'] else ''})",
         "peak memory": f"{fmt(info['peak_rss_mb'], ' MB')} RSS, arena {fmt(info['arena_kb'], ' KB')}"},
        {"what": "FP model (fp32)", "weights / artifact": f"{info['fp_weights_kb']} KB (safetensors)",
         "binary": "PyTorch", "peak memory": "n/a"},
        {"what": "ONNX Runtime int8 of the FP model", "weights / artifact": f"{peer['int8_kb']} KB (.onnx)",
         "binary": f"onnxruntime {peer.get('ort_version', '')}".strip(),
         "peak memory": fmt(peer.get("peak_rss_mb"), " MB RSS") if peer["measured"] else "not measured here"},
    ]
    step = (f"{fmt(info['ms_per_step'], ' ms')} per sampling step at {info['threads']} threads, "
            f"{fmt(info['ms_per_step_1_thread'], ' ms')} at 1 thread (mean over 4 samples x "
            f"{info['config']['steps']} steps, `mpqdm-run --bench` on {info['built_on']})"
            if info["ms_per_step"] is not None else info["bench"].get("why", "not measured"))
    if peer["measured"] and info["ms_per_step"] is not None:
        step += (f". ONNX Runtime int8 of the FP model: {peer['ms_per_call']:.2f} ms per UNet call at "
                 f"{peer['threads']} threads, {peer['ms_per_call_1_thread']:.2f} ms at 1 (ours / theirs: "
                 f"{info['ms_per_step'] / peer['ms_per_call']:.2f} and "
                 f"{info['ms_per_step_1_thread'] / peer['ms_per_call_1_thread']:.2f}; {peer['note']})")
    calls = [{"step": r["step"], "rel. error vs PyTorch fake-quant": f"{r['rel_error_vs_pytorch']:.2e}",
              "worst input": f"{max(r.get('per_input') or [r['rel_error_vs_pytorch']]):.2e}"} for r in chk["calls"]]
    for r, a in zip(calls, chk.get("host_agreement", []), strict=False):
        r["rel. error vs host build"] = f"{a['rel_error_vs_host']:.1e}" + (" (identical)" if a["identical"] else "")
    quality = ([{"model": "FP (PyTorch)", "FD": info["fd_fp"], "samples": info["fd_samples"]},
                {"model": f"deployed ({info['samples_made_by']})", "FD": info["fd"], "samples": info["fd_samples"]}]
               if info["fd"] is not None else "No FD: the bundled MNIST classifier scores 1-channel 32x32 samples "
               "only; the check above compares this model's UNet calls with PyTorch's.")
    stages = [{"stage": k, "seconds": v, "reused": k in info["reused_stages"]}
              for k, v in info["stage_seconds"].items()]
    return [
        ("Model and board", f"Model `{info['model']}` (sha256 {info['sha256'][:16]}), board **{info['board']}**: "
         f"{info['board_description']}. Plan: {p['kind']}, {p['quantized_layers']} quantized layers at "
         f"{p['avg_wbits']} average weight bits, activations A{'/A'.join(map(str, p['abits']))}, "
         f"{p['float_layers']} layers kept in floating point."),
        ("Budgets", budget_rows),
        ("Sizes", size_rows),
        ("Speed", step),
        ("Quality", quality),
        ("Check of the built binary", calls),
        ("Check summary", f"Median relative error of one UNet call on one input against PyTorch "
         f"{chk['median_rel_error']:.2e} (bound {chk['bound']:g}; {above_bound(chk)}); a 2-sample DDIM run is "
         f"{chk['sampling_psnr_db_vs_pytorch']} dB from PyTorch's. "
         + (f"The {info['board']} binary ran under `{chk['runner']}`; identical to the host build: "
            f"{chk['identical_to_host']}." if chk["emulated"] else "The board binary ran natively.")),
        ("Stages", stages),
    ]


def markdown(info: dict) -> str:
    lines = [f"# Deployment of {Path(info['model']).name} to {info['board']}", ""]
    for head, body in md_sections(info):
        lines += [f"## {head}", "", markdown_table(body, list(body[0])) if isinstance(body, list) else body, ""]
        if head == "Model and board":
            lines += ["![bits per layer](images/bits.png)", ""]
        if head == "Quality" and info["fd"] is not None:
            lines += ["FP model's samples (left) and the deployed model's (right), from the same noise:", "",
                      "![samples](images/samples.png)", ""]
    return "\n".join(lines)
