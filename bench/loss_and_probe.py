"""The data2vec loss next to the linear probe, for runs' curves.json: the loss rising is not, by itself, a sign of
trouble (docs/training.md, "What to watch in curves.png").

    python bench/loss_and_probe.py RUN_DIR[:TITLE] ... --out docs/images/loss-and-probe.png

Each run (an output folder of `data2vec-pretrain --probe_steps N`) gets one panel: the loss (left axis) and the probe's
held-out accuracy (right axis) against the optimizer step, with the random-init probe as a dashed line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders holding curves.json, each optionally ':title'")
    parser.add_argument("--out", default="docs/images/loss-and-probe.png")
    args = parser.parse_args(argv)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2 * len(args.runs), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(args.runs), squeeze=False)[0]
    for ax, spec in zip(axes, args.runs):
        folder, _, title = spec.partition(":")
        curves = json.loads(Path(folder, "curves.json").read_text())
        probe = curves["probe"]
        if probe is None:
            raise SystemExit(f"{folder}: no probe in curves.json (run with --probe_steps N)")
        ax.plot(curves["step"], curves["loss"], color="C0")
        ax.set_ylabel("data2vec loss", color="C0")
        ax.set_xlabel("optimizer step")
        right = ax.twinx()
        right.plot(probe["step"], [100 * p for p in probe["pretrained"]], "o-", color="C3", label="probe")
        right.axhline(100 * probe["random_init"], linestyle="--", color="0.4", label="probe at random init")
        right.set_ylabel("linear probe, held out, %", color="C3")
        right.legend(loc="lower right", fontsize="small")
        ax.set_title(title or folder, fontsize="medium")
        ax.grid(alpha=0.3)
    figure.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
