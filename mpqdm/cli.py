"""The `mpqdm` command: one subcommand per stage; bad input prints a message, not a traceback."""

from __future__ import annotations

import argparse
import sys

from .errors import UserError


def _train_fp(args) -> None:
    from frontend.train_fp import TrainConfig, train_fp

    cfg = TrainConfig(iters=args.iters, batch=args.batch, lr=args.lr, seed=args.seed)
    info = train_fp(args.out, cfg, device=args.device)
    print(f"saved {args.out}: {info['iters']} iterations in {info['train_seconds']:.0f} s "
          f"on {info['train_device']}")


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
