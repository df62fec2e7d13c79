"""Bad input, tried as a new user would: malformed option values, missing, malformed and truncated
files, destructive output paths, models the backend cannot lower. Each case runs `mpqdm.cli.main`
in-process in a sandbox folder and is judged by what a user sees: exit code 2, one error line that
names the problem, no traceback, and every file the user had still there, unchanged.

Shared by tests/test_bad_inputs.py and benchmarks/bad_inputs.py (the results file).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .fixtures import hand_table, tiny_export, tiny_unet


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]        # {model}, {export}, {stats}, {table}, {compiled}, {precious}, {file}, {bad_X}
    expect: str = ""             # a substring of the error line


def _case(name: str, cmd: str, expect: str = "") -> Case:
    return Case(name, tuple(shlex.split(cmd)), expect)


CASES = [
    _case("no command", "", "required"),
    _case("unknown command", "frobnicate", "invalid choice"),
    # train-fp, train-classifier (refused before any training)
    _case("train-fp zero iterations", "train-fp --iters 0 --out new", "--iters"),
    _case("train-fp NaN learning rate", "train-fp --lr nan --out new", "--lr"),
    _case("train-fp negative learning rate", "train-fp --lr -0.1 --out new", "--lr"),
    _case("train-fp batch not a number", "train-fp --batch x --out new", "--batch"),
    _case("train-fp into a folder of user files", "train-fp --out {precious}", "files mpqdm did not write"),
    _case("train-fp into a file", "train-fp --out {file}", "is a file"),
    _case("train-fp into the current folder", "train-fp --out .", "current folder"),
    _case("train-fp unknown device", "train-fp --device tpu --out new", "tpu"),
    _case("train-classifier zero epochs", "train-classifier --epochs 0 --out new", "--epochs"),
    _case("train-classifier into a file", "train-classifier --out {file}", "not writable"),
    # eval
    _case("eval missing model", "eval {tmp}/missing", "does not exist"),
    _case("eval one sample", "eval {model} --samples 1 --out ev", "--samples must be at least 2"),
    _case("eval zero steps", "eval {model} --steps 0 --out ev", "--steps"),
    _case("eval negative batch", "eval {model} --batch -3 --out ev", "--batch"),
    _case("eval a file as the model", "eval {file} --out ev", ""),
    _case("eval malformed config.json", "eval {bad_config} --out ev", "config.json.* not valid JSON"),
    _case("eval truncated weights", "eval {bad_weights} --out ev", "could not load"),
    _case("eval missing classifier", "eval {model} --classifier {tmp}/nothing --samples 4 --out ev", "classifier"),
    _case("eval truncated export parameters", "eval {bad_export_params} --samples 4 --out ev",
          "quant_params.safetensors"),
    # quantize (refused before calibration)
    _case("quantize 9-bit weights", "quantize {model} --wbits 9 --out q", "--wbits"),
    _case("quantize 6-bit activations", "quantize {model} --abits 6 --out q", "--abits"),
    _case("quantize 3-bit activations", "quantize {model} --abits 3 --out q", "--abits"),
    _case("quantize unknown plan", "quantize {model} --plan nonsense --out q", "unknown plan"),
    _case("quantize missing plan file", "quantize {model} --plan {tmp}/none.json --out q", "cannot read"),
    _case("quantize malformed plan file", "quantize {model} --plan {bad_json} --out q", "not valid JSON"),
    _case("quantize binary plan file", "quantize {model} --plan {bad_binary_json} --out q", "not a text file"),
    _case("quantize plan of another model", "quantize {model} --plan {bad_plan_other} --out q", "plan is for model"),
    _case("quantize unknown method", "quantize {model} --method foo --out q", "unknown method"),
    _case("quantize OMQ fraction list with a bad entry", "quantize {model} --omq-fractions 0.1,x --out q",
          "--omq-fractions"),
    _case("quantize OMQ fraction out of range", "quantize {model} --omq-fractions 0.9 --out q", "--omq-fractions"),
    _case("quantize OMQ group 0", "quantize {model} --group 0 --out q", "--group"),
    _case("quantize zero calibration samples", "quantize {model} --calib-samples 0 --out q", "--calib-samples"),
    _case("quantize zero calibration steps", "quantize {model} --calib-steps 0 --out q", "sampling step"),
    _case("quantize into a folder of user files", "quantize {model} --out {precious}", "files mpqdm did not write"),
    _case("quantize into its own model", "quantize {model} --out {model}", "reads"),
    _case("quantize into a file", "quantize {model} --out {file}", "is a file"),
    _case("quantize into the current folder", "quantize {model} --out .", "current folder"),
    _case("quantize a model with GELU", "quantize {bad_gelu} --out q", "act_fn"),
    _case("quantize a model with scale-shift time embedding", "quantize {bad_scale_shift} --out q",
          "resnet_time_scale_shift"),
    _case("quantize a model with resnet-sampling blocks", "quantize {bad_resnet_blocks} --out q", "block type"),
    _case("quantize unknown device", "quantize {model} --device cuda:7 --out q", "cuda"),
    # qat
    _case("qat zero iterations", "qat {model} --iterations 0 --out q", "--iterations"),
    _case("qat negative TRD weight", "qat {model} --trd-weight -1 --out q", "--trd-weight"),
    _case("qat zero weight lr scale", "qat {model} --weight-lr-scale 0 --out q", "--weight-lr-scale"),
    _case("qat infinite weight lr scale", "qat {model} --weight-lr-scale inf --out q", "--weight-lr-scale"),
    _case("qat negative LoRA rank", "qat {model} --lora-rank -1 --out q", "--lora-rank"),
    _case("qat zero window", "qat {model} --window 0 --out q", "--window"),
    _case("qat resume with nothing to resume", "qat {model} --resume --out fresh", "no QAT run to resume"),
    _case("qat into its own model", "qat {model} --out {model}", "reads"),
    _case("qat into a folder of user files", "qat {model} --out {precious}", "files mpqdm did not write"),
    _case("qat 5-bit activations", "qat {model} --abits 5 --out q", "--abits"),
    # profile
    _case("profile a board without RPC", "profile {model} --board rpi5", "RPC"),
    _case("profile unknown board", "profile {model} --board nosuch", "unknown board"),
    _case("profile more threads than CPUs", "profile {model} --threads 100000", "--threads"),
    _case("profile weight list with a bad entry", "profile {model} --wbits 1,x", "--wbits"),
    _case("profile 6-bit activations", "profile {model} --abits 6", "--abits"),
    _case("profile zero repeats", "profile {model} --repeats 0", "--repeats"),
    _case("count instructions on the host", "profile {model} --count-instructions", "under qemu-user"),
    _case("profile into a malformed table", "profile {model} --table {bad_json}", "not valid JSON"),
    _case("profile through a tracker that is not HOST:PORT", "profile {model} --tracker nowhere", "HOST:PORT"),
    _case("profile through a tracker nobody runs", "profile {model} --tracker 127.0.0.1:1", "cannot reach the RPC "
          "tracker"),
    _case("profile with a negative wait", "profile {model} --tracker 127.0.0.1:1 --wait -1", "--wait"),
    # bench
    _case("bench a folder that is not compiled", "bench {precious} --board host", "no model.mpq"),
    _case("bench a host build as a Pi's", "bench {compiled} --board rpi5", "compiled for board 'host'"),
    _case("bench with zero samples", "bench {compiled} --board host --count 0", "--count"),
    _case("bench through a tracker nobody runs", "bench {compiled} --board host --tracker 127.0.0.1:1",
          "cannot reach the RPC tracker"),
    # compile
    _case("compile missing export", "compile {tmp}/none --board host -o c", "not a quantized export"),
    _case("compile an FP model", "compile {model} --board host -o c", "not a quantized export"),
    _case("compile into its own export", "compile {export} --board host -o {export}", "reads"),
    _case("compile into a folder holding the export", "compile {export} --board host -o {export_parent}", "reads"),
    _case("compile into a folder of user files", "compile {export} --board host -o {precious}",
          "files mpqdm did not write"),
    _case("compile into a file", "compile {export} --board host -o {file}", "is a file"),
    _case("compile into the current folder", "compile {export} --board host -o .", "current folder"),
    _case("compile unknown board", "compile {export} --board nosuch -o c", "unknown board"),
    _case("compile malformed board profile", "compile {export} --board {bad_board} -o c", "invalid TOML"),
    _case("compile zero steps", "compile {export} --board host -o c --steps 0", "--steps"),
    _case("compile with a latency table that is not there", "compile {export} --board host -o c --latency "
          "{tmp}/none.json", "no latency table"),
    _case("compile with a malformed latency table", "compile {export} --board host -o c --latency {bad_json}",
          "not valid JSON"),
    _case("compile truncated export parameters", "compile {bad_export_params} --board host -o c",
          "quant_params.safetensors"),
    _case("compile export of another format version", "compile {bad_export_version} --board host -o c", "v99"),
    # build
    _case("build missing folder", "build {tmp}/none --board host", "no model.mpq"),
    _case("build an export", "build {export} --board host", "no model.mpq"),
    _case("build for another board", "build {compiled} --board rpi5", "compiled for board"),
    _case("build a corrupted artifact", "build {bad_compiled_corrupt} --board host", "model.mpq"),
    # allocate
    _case("allocate missing statistics", "allocate --stats {tmp}/none.json --out p.json", "cannot read"),
    _case("allocate malformed statistics", "allocate --stats {bad_json} --out p.json", "cannot read"),
    _case("allocate statistics with short per-channel lists", "allocate --stats {bad_stats_short} --out p.json",
          "kurtosis"),
    _case("allocate statistics with a NaN cost", "allocate --stats {bad_stats_nan} --out p.json", "cost"),
    _case("allocate NaN latency budget", "allocate --stats {stats} --latency-ms nan --out p.json", "--latency-ms"),
    _case("allocate negative latency budget", "allocate --stats {stats} --latency-ms -5 --out p.json",
          "--latency-ms"),
    _case("allocate infinite memory budget", "allocate --stats {stats} --weight-memory-kb inf --out p.json",
          "--weight-memory-kb"),
    _case("allocate bit list with a bad entry", "allocate --stats {stats} --bits 1,9 --out p.json", "--bits"),
    _case("allocate group size 0", "allocate --stats {stats} --group-size 0 --out p.json", "--group-size"),
    _case("allocate group size off the kernel tile", "allocate --stats {stats} --group-size 12 --table {table} "
          "--out p.json", "multiple of 8"),
    _case("allocate missing latency table", "allocate --stats {stats} --table {tmp}/none.json --out p.json",
          "cannot read latency table"),
    _case("allocate malformed latency table", "allocate --stats {stats} --table {bad_table} --out p.json",
          "median_ms"),
    _case("allocate a latency budget on a board never profiled", "allocate --stats {stats} --board rpi5 "
          "--latency-ms 5 --out p.json", "profiled first"),
    _case("allocate into a folder", "allocate --stats {stats} --table {table} --out {precious}", "is a folder"),
    _case("allocate an impossible memory budget", "allocate --stats {stats} --table {table} --weight-memory-kb "
          "0.001 --out p.json --pareto-points 0", "cannot be met"),
    _case("allocate negative Pareto points", "allocate --stats {stats} --pareto-points -1 --out p.json",
          "--pareto-points"),
    # stats
    _case("stats missing model", "stats {tmp}/none --out s.json", "does not exist"),
    _case("stats into a folder", "stats {model} --out {precious}", "is a folder"),
    _case("stats a model with GELU", "stats {bad_gelu} --out s.json", "act_fn"),
    _case("stats zero calibration samples", "stats {model} --calib-samples 0 --out s.json", "--calib-samples"),
    # deploy (refused before any stage runs, or by the stage that meets the problem, named)
    _case("deploy without a board", "deploy {model} -o d", "--board"),
    _case("deploy unknown board", "deploy {model} --board nosuch -o d", "unknown board"),
    _case("deploy a latency budget on a board never profiled", "deploy {model} --board rpi5 --latency-ms 5 -o d",
          "profiled first"),
    _case("deploy zero memory budget", "deploy {model} --board host --weight-memory-kb 0 -o d",
          "--weight-memory-kb"),
    _case("deploy 9-bit weights", "deploy {model} --board host --wbits 9 -o d", "--wbits"),
    _case("deploy negative QAT iterations", "deploy {model} --board host --qat-iterations -1 -o d",
          "--qat-iterations"),
    _case("deploy one FD sample", "deploy {model} --board host --fd-samples 1 -o d", "--fd-samples"),
    _case("deploy missing model", "deploy {tmp}/none --board host -o d", "not a diffusers"),
    _case("deploy into a folder of user files", "deploy {model} --board host -o {precious}",
          "files mpqdm did not write"),
    _case("deploy into its own model", "deploy {model} --board host -o {model}", "reads"),
    _case("deploy into a file", "deploy {model} --board host -o {file}", "is a file"),
    _case("deploy a model with GELU", "deploy {bad_gelu} --board host -o d", "stage ptq.*act_fn"),
    _case("deploy a plan of another model", "deploy {model} --board host --plan {bad_plan_other} -o d",
          "stage ptq.*plan is for model"),
    # export-onnx
    _case("export-onnx an FP model", "export-onnx {model} -o m.onnx", "export"),
    _case("export-onnx into a folder", "export-onnx {export} -o {precious}", "folder"),
]


def _tree(path: Path) -> dict[str, str]:
    """sha256 of every file under path (or of path itself)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def make_fixtures(root: Path) -> dict[str, str]:
    """The files the cases name, under root (a few seconds, and about 20 for the compiled folder)."""
    from mpqdm.backend_tvm.build import build
    from mpqdm.backend_tvm.compile import compile_export
    from mpqdm.backend_tvm.profile import conv_jobs
    from mpqdm.boards.registry import load_board
    from mpqdm.frontend.model_io import load_unet, model_fingerprint
    from mpqdm.frontend.quant.calibrate import CalibConfig
    from mpqdm.frontend.quant.shapes import layer_specs
    from mpqdm.frontend.quant.stats import stats_of_model
    from mpqdm.frontend.quant.swap import LayerPolicy

    root.mkdir(parents=True, exist_ok=True)
    model = tiny_unet(root / "model")
    export = tiny_export(model, root / "exports" / "export")
    stats = root / "stats.json"
    stats_of_model(model, stats, CalibConfig(samples=2, steps=2, batch=2, keep_every=1), device="cpu")
    jobs = conv_jobs(layer_specs(load_unet(model)), (1, 2, 3, 4, 8), (4, 8), LayerPolicy(), load_board("host"))
    entries = [{"op": j.op, "shape": j.shape, "wbits": j.wbits, "abits": j.abits, "threads": 2, "channels": j.channels,
                "kernel": j.kernel, "median_ms": 0.001 * (j.channels + j.wbits + 1), "spread": 0.0, "repeats": 1,
                "build_id": "fixture", "measured": "2026-12-01T00:00:00Z"} for j in jobs]
    table = root / "latency.json"
    table.write_text(json.dumps(hand_table(entries, {model_fingerprint(model)[:16]: {"name": "model", "calls": []}})))
    compiled = root / "compiled"
    compile_export(export, "host", compiled, progress=False)
    build(compiled, "host")
    precious = root / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("four years of work\n")
    (root / "notes.txt").write_text("a file, not a folder\n")
    bad = root / "bad"
    bad.mkdir()
    (bad / "bad.json").write_text('{"format": "mpqdm.stats", "version": 2, "layers": {')
    (bad / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    cfg = bad / "config"
    cfg.mkdir()
    (cfg / "config.json").write_text("{not json")
    weights = bad / "weights"
    tiny_unet(weights)
    w = weights / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    for name, over in (("gelu", {"act_fn": "gelu"}), ("scale_shift", {"resnet_time_scale_shift": "scale_shift"}),
                       ("resnet_blocks", {"down_block_types": ("DownBlock2D", "ResnetDownsampleBlock2D"),
                                          "up_block_types": ("ResnetUpsampleBlock2D", "UpBlock2D")})):
        tiny_unet(bad / name, **over)
    params = bad / "export_params"
    _copy(export, params)
    t = params / "quant_params.safetensors"
    t.write_bytes(t.read_bytes()[:100])
    version = bad / "export_version"
    _copy(export, version)
    meta = json.loads((version / "quant_export.json").read_text())
    (version / "quant_export.json").write_text(json.dumps({**meta, "version": 99}))
    plan = json.loads((export / "quant_plan.json").read_text())
    plan["model"]["sha256"] = "0" * 64
    (bad / "plan_other.json").write_text(json.dumps(plan))
    board = bad / "board"
    board.mkdir()
    (board / "board.toml").write_text('format = "mpqdm.board"\nversion = 2\nname = [\n')
    s = json.loads(stats.read_text())
    short = json.loads(json.dumps(s))
    first = next(iter(short["layers"]))
    short["layers"][first]["kurtosis"] = short["layers"][first]["kurtosis"][:-1]
    (bad / "stats_short.json").write_text(json.dumps(short))
    nan = json.loads(json.dumps(s))
    nan["layers"][first]["cost"]["4"][0][0] = float("nan")
    (bad / "stats_nan.json").write_text(json.dumps(nan))
    lat = json.loads(table.read_text())
    del lat["entries"][0]["median_ms"]
    (bad / "table.json").write_text(json.dumps(lat))
    corrupt = bad / "compiled_corrupt"
    _copy(compiled, corrupt)
    art = corrupt / "model.mpq"
    art.write_bytes(art.read_bytes()[:1000])
    return {"model": str(model), "export": str(export), "export_parent": str(export.parent), "stats": str(stats),
            "table": str(table), "compiled": str(compiled), "precious": str(precious), "file": str(root / "notes.txt"),
            "bad_json": str(bad / "bad.json"), "bad_binary_json": str(bad / "binary.json"),
            **{f"bad_{p.stem}": str(p) for p in bad.iterdir() if p.name not in ("bad.json", "binary.json")}}


def _copy(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".build"))


@dataclass
class Outcome:
    exit: int
    stderr: str
    lost_files: list[str]

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if ": error:" in line]

    @property
    def message(self) -> str:
        lines = self.error_lines
        return lines[-1] if lines else (self.stderr.strip().splitlines() or [""])[-1]

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr


def run_case(case: Case, paths: dict[str, str], sandbox: Path) -> Outcome:
    """Run one case's command in `sandbox` (its working folder); the user's files are checked after."""
    from mpqdm import cli

    sandbox.mkdir(parents=True, exist_ok=True)
    argv = [a.format(tmp=sandbox, **paths) for a in case.argv]
    watched = [Path(paths[k]) for k in ("model", "export", "stats", "table", "compiled", "precious", "file")]
    before = {k: v for p in watched for k, v in _tree(p).items()}
    err, cwd = io.StringIO(), os.getcwd()
    os.chdir(sandbox)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli.main(argv)
            except SystemExit as exc:          # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(cwd)
    after = {k: v for p in watched for k, v in _tree(p).items()}
    lost = sorted(k for k, v in before.items() if after.get(k) != v)
    return Outcome(code, err.getvalue(), lost)


def command_line(case: Case) -> str:
    return "mpqdm " + " ".join(case.argv)
