"""ARM cost of one whole UNet call, ours at W2A4 beside an int8 peer, counted the same way: executed guest
instructions under qemu-aarch64 with our TCG plugin (runtime/tools/insn_count.c), 1 thread, (a run with three
calls minus a run with one) / 2, on the Raspberry Pi 4 (-cpu cortex-a72, no dot product) and Pi 5 (cortex-a76).

Engines (the default model, batch 1):
- mpqdm-W2A4: `mpqdm-run model.mpq --unet-step 0 --count N --threads 1` (statically linked) of the W2A4 PTQ
  export of runtime_host.py (OMQ's 10% split), built by `mpqdm compile/build` for rpi4 and rpi5, each
  quantized group on the kernel path with the fewest instructions in the board's latency table
  (boards/<board>/latency.json, `mpqdm profile --count-instructions`; the rule's path where it has none).
- mpqdm-W2A4-rule: the same built with `--kernels rule` (every group on the best family the CPU has).
- mpqdm-W2A4-sc8: the same with the shortcut and downsample convs at W8A8 instead of floating point
  (the "shortcuts-w8a8" layer policy, as the peer runs them; its quality cost: benchmarks/shortcut_fd.py).
- ort-int8: ONNX Runtime 1.32.0's aarch64 wheel on the int8 QDQ export of runtime_host.py (per-channel S8
  weights, U8 activations; Conv, Gemm and weight MatMuls quantized), in Debian 12's aarch64 python
  (scripts/arm_sysroot.sh), intra- and inter-op threads 1, no spinning; N calls of session.run.
kernel_path: which kernels ran, read off the count of executed SDOT/UDOT instructions (the plugin's "dots"):
zero on the A72 (which has none; qemu would fault), and for the peer on the A76 where MLAS takes its
dot-product kernels. Counts are a cost proxy (both cores are out of order), exact and repeatable.
Ours is also split by call kind (the plugin's per-block counts charged to the binary's symbols: the
kernels mpq_<kind>_<n>_compute_, the rest as "runtime"): where the instructions go.

Run: .venv/bin/python benchmarks/runtime_arm.py [--report]
Writes benchmarks/results/runtime_arm.json and runtime_arm.md (notes: benchmarks/runtime_arm_notes.json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from mpqdm.boards.registry import load_board
from mpqdm.core.resources import DEFAULT_MODEL
from mpqdm.frontend.onnx_int8 import export_fp32, feed, quantize_int8
from mpqdm.testing import emulated, harness
from mpqdm.testing.bench import load_rows, markdown_table, ptq_w2a4_export, save_rows

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "out" / "runtime_arm"
NOTES_FILE = ROOT / "benchmarks" / "runtime_arm_notes.json"
CPUS = {"cortex-a72": "rpi4", "cortex-a76": "rpi5"}
TARGETS = {"cortex-a72": 0.6, "cortex-a76": 0.8}    # ours / the peer's instructions, at most

# the peer's guest program: N calls of one session (argv: model, feed .npz, N)
ORT_CALLS = """import sys, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
o.add_session_config_entry("session.intra_op.allow_spinning", "0")
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
f = dict(np.load(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    s.run(None, f)
"""


# our engines: name -> (layer policy, what it runs); the second keeps the MPQ-DM authors' W2A4 plan but
# runs the shortcut and downsample convs at W8A8, as the int8 peer does (its FD: shortcut_fd.md)
OURS = {"mpqdm-W2A4": ("default", "W2A4 PTQ, OMQ 10% split", "measured"),
        "mpqdm-W2A4-rule": ("default", "W2A4 PTQ, OMQ 10% split, every group on the board's rule path", "rule"),
        "mpqdm-W2A4-sc8": ("shortcuts-w8a8", "W2A4 PTQ, OMQ 10% split, shortcut and downsample convs at W8A8",
                           "measured")}


def ours(work: Path) -> dict[tuple[str, str], Path]:
    """mpqdm-run for each of our engines and each Pi, compiled from its W2A4 export."""
    from mpqdm.backend_tvm.build import build
    from mpqdm.backend_tvm.compile import compile_export

    bins = {}
    for engine, (policy, _, kernels) in OURS.items():
        export = ptq_w2a4_export(DEFAULT_MODEL, OUT / ("default-W2A4" + ("-sc8" if policy != "default" else "")),
                                 "omq", policy)
        for cpu, board in CPUS.items():
            d = work / f"{engine}-{board}"
            print(f"== compiling {engine} for {board}", flush=True)
            compile_export(export, board, d, kernels=kernels)
            build(d, board)
            bins[engine, cpu] = d / "mpqdm-run"
    return bins


def peer(work: Path) -> tuple[Path, Path, str]:
    """The int8 QDQ model, its input feed and the note of what it quantizes."""
    fp32, int8 = work / "default-fp32.onnx", work / "default-int8.onnx"
    print("== exporting the default model to ONNX and quantizing it (int8 QDQ)", flush=True)
    export_fp32(DEFAULT_MODEL, fp32)
    note = quantize_int8(DEFAULT_MODEL, fp32, int8)
    np.savez(work / "feed.npz", **feed(DEFAULT_MODEL, seed=0))
    return int8, work / "feed.npz", note


CALLS = (1, 3)      # one call = (a run of 3 calls - a run of 1) / 2: start-up and the first call's set-up cancel


def one_call(commands, plugin: Path, binary: Path | None = None) -> dict:
    """commands(calls) -> the qemu command line; the counts of one steady call (CALLS), and for a
    static `binary` its instructions by call kind ("split")."""
    blocks = {n: binary.parent / f"blocks{n}.txt" if binary else None for n in CALLS}
    lo, hi = (harness.counted(commands(n), plugin, timeout=3600, blocks=blocks[n]) for n in CALLS)
    out = {k: (hi[k] - lo[k]) // (CALLS[1] - CALLS[0]) for k in lo}
    if binary:
        lo_s, hi_s = (by_kind(harness.by_symbol(blocks[n], binary)) for n in CALLS)
        out["split"] = {k: (v - lo_s.get(k, 0)) // (CALLS[1] - CALLS[0]) for k, v in hi_s.items()}
    return out


def by_kind(symbols: dict[str, int]) -> dict[str, int]:
    """Instructions per call kind: kernel symbols mpq_<kind>_<n>_compute_ (and their helpers) by kind, the
    rest (the runtime, libc) as "runtime"."""
    out: dict[str, int] = {}
    for name, n in symbols.items():
        m = re.match(r"mpq_([a-z_0-9]+?)_\d+", name)
        kind = m.group(1) if m and not name.startswith("mpq_run") else "runtime"
        out[kind] = out.get(kind, 0) + n
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def kernel_path(engine: str, cpu: str, dots: int) -> str:
    if dots:
        return f"dot product: {dots} SDOT/UDOT executed"
    if engine == "ort-int8":
        return "MLAS NEON kernels without the dot product (no SDOT/UDOT executed)"
    return "no dot product (no SDOT/UDOT executed)"


def measure() -> list[dict]:
    sysroot = emulated.build_sysroot()
    rows = []
    with tempfile.TemporaryDirectory(dir=OUT.parent) as tmp:
        work = Path(tmp)
        plugin = harness.insn_plugin(work)
        bins = ours(work)
        model, feed_file, note = peer(work)
        (work / "ort_calls.py").write_text(ORT_CALLS)
        for cpu, board_name in CPUS.items():
            board = load_board(board_name)
            print(f"== counting on {cpu}", flush=True)

            def run_ours(n, binary, board=board):
                return [*board.qemu_command(binary), str(binary.parent / "model.mpq"), "--unet-step", "0",
                        "--count", str(n), "--seed", "0", "--threads", "1", "--out", str(work / "eps")]

            def run_peer(n, cpu=cpu):
                return [*emulated.emulated_python(sysroot, cpu), str(work / "ort_calls.py"), str(model),
                        str(feed_file), str(n)]

            engines = [(e, partial(run_ours, binary=bins[e, cpu]), cfg, bins[e, cpu])
                       for e, (_, cfg, _) in OURS.items()]
            for engine, commands, config, binary in [*engines, ("ort-int8", run_peer, note, None)]:
                c = one_call(commands, plugin, binary)
                rows.append({"cpu": cpu, "engine": engine, "model": "default", "config": config,
                             "instructions": c["insns"], "dot_instructions": c.get("dots", 0),
                             "kernel_path": kernel_path(engine, cpu, c.get("dots", 0)),
                             **({"split": c["split"]} if "split" in c else {})})
                print(f"   {engine}: {c['insns'] / 1e6:.1f} M instructions", flush=True)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for (cpu, target), engine in itertools.product(TARGETS.items(), OURS):
        by = {r["engine"]: r["instructions"] for r in rows if r["cpu"] == cpu}
        if {engine, "ort-int8"} <= set(by):
            ratio = by[engine] / by["ort-int8"]
            out.append({"cpu": cpu, "engine": engine, "ours_minstr": round(by[engine] / 1e6, 1),
                        "int8_minstr": round(by["ort-int8"] / 1e6, 1), "ours_over_int8": round(ratio, 3),
                        "target": f"<= {target}", "met": "yes" if ratio <= target else "no"})
    return out


def split_table(rows: list[dict]) -> list[dict]:
    """Ours by call kind, a column per CPU."""
    ours_rows = {r["cpu"]: r["split"] for r in rows if r["engine"] == "mpqdm-W2A4" and "split" in r}
    kinds = sorted({k for s in ours_rows.values() for k in s},
                   key=lambda k: -max(s.get(k, 0) for s in ours_rows.values()))
    return [{"kind": k, **{f"{cpu}_minstr": round(s.get(k, 0) / 1e6, 2) for cpu, s in ours_rows.items()}}
            for k in kinds if max(s.get(k, 0) for s in ours_rows.values()) >= 5000]


def write(rows: list[dict], out: Path) -> None:
    notes = json.loads(NOTES_FILE.read_text()) if NOTES_FILE.is_file() else {}
    head = summary(rows)
    save_rows(out.with_suffix(".json"), rows, summary=head, threads=1, notes=notes,
              note="executed guest instructions of one UNet call under qemu-aarch64 ((3 calls - 1 call) / 2)")
    md = ["# One default-model UNet call on ARM: ours (W2A4) beside ONNX Runtime int8 (qemu-aarch64, 1 thread)",
          "", "Command: `.venv/bin/python benchmarks/runtime_arm.py` (executed guest instructions of one call: "
          "3 calls minus 1, halved)",
          "", markdown_table(head, list(head[0])) if head else "", "",
          markdown_table(rows, ["cpu", "engine", "instructions", "kernel_path"]), ""]
    md += [f"- {r['engine']}: {r['config']}" for r in rows if r["cpu"] == "cortex-a76"]
    split = split_table(rows)
    if split:
        md += ["", "Ours by call kind (millions of instructions of one call; `runtime`: our C runtime and libc):",
               "", markdown_table(split, list(split[0]))]
    md += ["", *[f"- {k}: {v}" for k, v in notes.items()]]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md[4:6]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", action="store_true", help="rewrite the tables from the JSON rows (notes edited)")
    args = ap.parse_args()
    out = RESULTS / "runtime_arm"
    if args.report:
        return write(load_rows(out.with_suffix(".json")), out)
    write(measure(), out)


if __name__ == "__main__":
    main()
