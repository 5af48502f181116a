"""Learning curves of a pretraining run: `output_dir/curves.json` (the numbers) and `curves.png` (the plot), from the
trainer's `log_history`.

The plot has one panel per quantity against the optimizer step (the top axis: training wall-clock, the probes of
`--probe_steps` not counted): the loss; target_var and pred_var (both falling: collapse); when the run checked the
health of its representations (`--monitor_steps`, on by default), each pooled spread across examples relative to
the run's start, with the collapse line, and each effective rank (`monitor`: label-free, for every run); and, when
the run probed during training, the linear probe's held-out accuracy, with the same encoder at its random
initialisation and the raw-input reference as horizontal lines. Drawn with matplotlib's object API on the Agg canvas: no pyplot, no global
backend change, no display needed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

TRAINING_KEYS = ("loss", "target_var", "pred_var")


def _number(value) -> float | None:
    """JSON has no NaN: None instead."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def curves_from_history(history: list[dict]) -> dict:
    """The plotted numbers: the logged steps' {"step", "elapsed_seconds", "loss", "target_var", "pred_var"} (lists),
    and "probe": None, or the probes' {"step", "elapsed_seconds", "pretrained"} (lists), "random_init" and
    "raw_inputs" (the references, once per run; None where there was none) and the subset's size."""
    logged = [h for h in history if "loss" in h]
    curves = {"step": [h["step"] for h in logged]}
    curves.update({key: [_number(h.get(key)) for h in logged] for key in ("elapsed_seconds", *TRAINING_KEYS)})
    checks = [h for h in history if "health/student_spread" in h]
    curves["health"] = None
    if checks:
        keys = sorted({k.removeprefix("health/") for h in checks for k in h
                       if k.startswith("health/") and not k.startswith("health/start_")})
        curves["health"] = {"step": [h["step"] for h in checks],
                            **{k: [_number(h.get(f"health/{k}")) for h in checks] for k in keys}}
        start = {k.removeprefix("health/start_"): v for k, v in checks[0].items() if k.startswith("health/start_")}
        if start:  # the run's start (the first check carries it), as the curves' first point
            curves["health"]["step"].insert(0, int(start.pop("step", 0)))
            for k in keys:
                first = 1.0 if k.endswith("_vs_start") else start.get(k)
                curves["health"][k].insert(0, _number(first))
    probes = [h for h in history if "probe/pretrained" in h]
    curves["probe"] = None
    if probes:
        reference = next((h for h in probes if "probe/random_init" in h), {})
        curves["probe"] = {
            "step": [h["step"] for h in probes],
            "elapsed_seconds": [_number(h.get("elapsed_seconds")) for h in probes],
            "pretrained": [_number(h["probe/pretrained"]) for h in probes],
            "random_init": _number(reference.get("probe/random_init")),
            "raw_inputs": _number(reference.get("probe/raw_inputs")),
            "train_examples": probes[-1].get("probe/train_examples"),
            "test_examples": probes[-1].get("probe/test_examples"),
        }
    return curves


def _array(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _interpolate(x, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp, continued past both ends along the first / last segment."""
    x = np.asarray(x, dtype=float)
    slopes = np.diff(fp)[[0, -1]] / np.diff(xp)[[0, -1]]
    y = np.interp(x, xp, fp)
    y = np.where(x < xp[0], fp[0] + (x - xp[0]) * slopes[0], y)
    return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * slopes[1], y)


def plot_curves(curves: dict, path: str | Path, title: str = "") -> None:
    """Draws `curves` (as `curves_from_history` gives them) into a PNG file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    probe, health = curves.get("probe"), curves.get("health")
    panels = 2 + bool(health) * 2 + bool(probe)
    figure = Figure(figsize=(7.5, 2.4 * panels + 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    step = _array(curves["step"])
    axes[0].plot(step, _array(curves["loss"]), color="C0")
    axes[0].set_ylabel("loss")
    axes[1].plot(step, _array(curves["target_var"]), color="C1", label="target_var")
    axes[1].plot(step, _array(curves["pred_var"]), color="C2", label="pred_var")
    axes[1].set_ylabel("std over masked positions")
    axes[1].legend(loc="best", fontsize="small")
    if health:
        from .monitor import COLLAPSE_RATIO, REPRESENTATIONS

        spread, rank = axes[2], axes[3]
        for i, name in enumerate(REPRESENTATIONS):
            color, label = f"C{4 + i}", name.replace("_", " ")
            if f"{name}_spread_vs_start" in health:
                spread.plot(health["step"], _array(health[f"{name}_spread_vs_start"]), "o-", color=color, label=label)
            if f"{name}_rank" in health:
                rank.plot(health["step"], _array(health[f"{name}_rank"]), "o-", color=color, label=label)
        spread.axhline(COLLAPSE_RATIO, linestyle="--", color="0.3", label=f"collapse ({COLLAPSE_RATIO:.0%})")
        spread.set_yscale("log")
        spread.set_ylabel("pooled spread across\nexamples / at start")
        rank.set_ylabel("effective rank of\npooled features")
        spread.legend(loc="best", fontsize="small")
        rank.legend(loc="best", fontsize="small")
    if probe:
        ax = axes[-1]
        ax.plot(probe["step"], 100 * _array(probe["pretrained"]), "o-", color="C3", label="pretrained")
        for key, style, label in (("random_init", "--", "random init"), ("raw_inputs", ":", "raw inputs")):
            if probe[key] is not None:
                ax.axhline(100 * probe[key], linestyle=style, color="0.4" if key == "random_init" else "0.1",
                           label=f"{label} ({probe[key]:.1%})")
        ax.set_ylabel(f"linear probe, held out\n({probe['test_examples']} examples), %")
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("optimizer step")
    for ax in axes:
        ax.grid(alpha=0.3)
    # wall-clock on the top axis, read off the logged steps (step 0: 0 s), extended linearly past them
    steps, seconds = np.r_[0.0, step], np.r_[0.0, _array(curves["elapsed_seconds"])]
    if step[0] > 0 and np.all(np.diff(seconds) > 0):
        top = axes[0].secondary_xaxis("top", functions=(lambda x: _interpolate(x, steps, seconds),
                                                        lambda t: _interpolate(t, seconds, steps)))
        top.set_xlabel("training wall-clock, s")
    if title:
        figure.suptitle(title, fontsize="medium")
    figure.savefig(path, dpi=100)


def write_curves(history: list[dict], output_dir: str | Path, title: str = "") -> dict:
    """Writes output_dir/curves.json and output_dir/curves.png; returns the curves."""
    curves = curves_from_history(history)
    Path(output_dir, "curves.json").write_text(json.dumps(curves, indent=1))
    plot_curves(curves, Path(output_dir, "curves.png"), title)
    return curves


__all__ = ["curves_from_history", "plot_curves", "write_curves"]
