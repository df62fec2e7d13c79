"""The QAT loss curve as a PNG."""

from __future__ import annotations

from pathlib import Path


def plot_losses(losses: list[dict], path: Path) -> None:
    if not losses:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in losses]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(it, [r["out"] for r in losses], label="output distillation (per step)")
    if any(r["trd"] for r in losses):
        ax.plot(it, [r["trd"] for r in losses], label="TRD KL (per window, unweighted)")
    ax.set_yscale("log")
    ax.set_xlabel("iteration (one trajectory)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
