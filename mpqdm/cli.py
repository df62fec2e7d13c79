"""The `mpqdm` command: one subcommand per stage; bad input prints a message, not a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UserError
from .paths import DEFAULT_CLASSIFIER


def _train_fp(args) -> None:
    from frontend.train_fp import TrainConfig, train_fp

    cfg = TrainConfig(iters=args.iters, batch=args.batch, lr=args.lr, seed=args.seed)
    info = train_fp(args.out, cfg, device=args.device)
    print(f"saved {args.out}: {info['iters']} iterations in {info['train_seconds']:.0f} s "
          f"on {info['train_device']}")


def _train_classifier(args) -> None:
    from frontend.classifier import train_classifier

    info = train_classifier(args.out, epochs=args.epochs, seed=args.seed)
    print(f"saved {args.out}: held-out accuracy {info['heldout_accuracy']:.4f} "
          f"on {info['heldout_images']} images")


def _eval(args) -> None:
    from frontend.evaluate import EvalConfig, evaluate

    out = args.out or str(Path("out") / "eval" / Path(args.model).resolve().name)
    cfg = EvalConfig(samples=args.samples, steps=args.steps, seed=args.seed, batch=args.batch)
    m = evaluate(args.model, out, cfg, device=args.device, classifier_dir=args.classifier)
    print(f"FD {m['fd']:.2f} (real-vs-real floor {m['fd_floor']:.2f}) over {m['samples']} samples, "
          f"{m['ddim_steps']} DDIM steps; wrote {out}/metrics.json and {out}/samples_grid.png")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mpqdm", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train-fp", help="train the default FP DDPM UNet on MNIST-5k (resumable)")
    t.add_argument("--out", default="models/mnist-default", help="diffusers folder to write")
    t.add_argument("--iters", type=int, default=3500)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.set_defaults(func=_train_fp)

    c = sub.add_parser("train-classifier", help="train the MNIST feature classifier used for FD")
    c.add_argument("--out", default=str(DEFAULT_CLASSIFIER))
    c.add_argument("--epochs", type=int, default=20)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=_train_classifier)

    e = sub.add_parser("eval", help="sample with DDIM and compute the FD against MNIST-5k (resumable)")
    e.add_argument("model", help="diffusers UNet2DModel folder")
    e.add_argument("--out", help="output folder (default out/eval/<model name>)")
    e.add_argument("--samples", type=int, default=1000)
    e.add_argument("--steps", type=int, default=20, help="DDIM steps (eta 0)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch", type=int, default=250)
    e.add_argument("--device", default="auto")
    e.add_argument("--classifier", default=str(DEFAULT_CLASSIFIER))
    e.set_defaults(func=_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        print(f"mpqdm {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mpqdm {args.cmd}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
