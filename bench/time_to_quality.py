"""Time to quality: the linear probe's held-out accuracy against training wall-clock for data2vec 1.0's default run
and data2vec 2.0's default run on the built-in data, in one process (issue 12, item 6b).

    OMP_NUM_THREADS=1 python bench/time_to_quality.py                        # vision: 1680 1.0 steps, 800 2.0 steps
    OMP_NUM_THREADS=1 python bench/time_to_quality.py --modalities vision,text,audio --seed 0
    OMP_NUM_THREADS=1 python bench/time_to_quality.py --extra "--max_steps 40" --probe_steps 10 \
        --plot /tmp/ttq-{modality}.png                                     # a quick check of the script

For each modality and algorithm (1.0 first, then 2.0) this runs

    data2vec-pretrain --modality M --algorithm A --output_dir <tmp> --probe_steps K --report_to none --disable_tqdm
        --seed S --save_steps 1000000000 <--extra>

through `modeling_data2vec_unified.trainer.cli`, with `training.evaluation.PERIODIC_PROBE_EXAMPLES` set to (10**9, 10**9): every
periodic probe then fits on all the probe's training examples and scores all its held-out ones, as the final probe
does. The periodic probe and the final one (probe.json "pretrained") compute the same features (`probe.linear_probe`,
the mean of the top 2 layers pooled as the modality's `probe.POOLING`; run_probe asks for top 2 and 1 and reports top
2), so the curve and the final number are one measure; where a run's last step is probed, the script checks that the
two agree. `--save_steps` is raised so that no checkpoint is written inside the timed span (the end's save comes after
the last logged time); `--extra` may set it back.

Time is the trainer's `elapsed_seconds`: training wall-clock from the loop's start, the periodic probes not counted
(data preparation, model building and the final save and probe are outside it). The points are (0 s, the probe of
the run's initial weights = probe/random_init), the periodic probes (curves.json), and the final probe at the last
logged step's time if that step was not probed. Reported per modality: each run's points; 1.0's final accuracy and
training seconds; the first measured time after step 0 that 2.0's probe is >= 1.0's final accuracy ("not reached":
2.0's best after step 0), and
its ratio to 1.0's training seconds (a measured point: at most a probe interval later than the true crossing). The
plot (accuracy vs seconds, both curves, 1.0's final accuracy dashed, each run's random init and the raw inputs as
references) goes to `--plot` ({modality} is replaced) and the table and raw points to the same path with .json.
The two runs are sequential, not interleaved: load on the machine during one of them shifts its times.

Default --probe_steps: vision 1.0 every 210 of its 1680 steps, 2.0 every 100 of its 800; text and audio (300 steps
each) every 50. `--probe_steps N` sets both algorithms, `N1,N2` 1.0 and 2.0 apart.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import tempfile
import textwrap
import time
from pathlib import Path

from modeling_data2vec_unified import trainer
from modeling_data2vec_unified.training import evaluation

ALGORITHMS = ("data2vec", "data2vec2")
LABEL = {"data2vec": "data2vec 1.0", "data2vec2": "data2vec 2.0"}
PROBE_STEPS = {"vision": {"data2vec": 210, "data2vec2": 100}, "text": {"data2vec": 50, "data2vec2": 50},
               "audio": {"data2vec": 50, "data2vec2": 50}}


def run(modality: str, algorithm: str, probe_steps: int, extra: list[str], seed: int, output_dir: Path) -> dict:
    """One default run with periodic probes on all the probe data; its points and references."""
    argv = ["--modality", modality, "--algorithm", algorithm, "--output_dir", str(output_dir),
            "--probe_steps", str(probe_steps), "--report_to", "none", "--disable_tqdm", "--seed", str(seed),
            "--save_steps", "1000000000", *extra]
    print(f"\n== {modality} {LABEL[algorithm]}: data2vec-pretrain {shlex.join(argv)}", flush=True)
    began = time.perf_counter()
    trainer.cli(argv)
    wall = time.perf_counter() - began
    curves = json.loads((output_dir / "curves.json").read_text())
    final = json.loads((output_dir / "probe.json").read_text())
    probes = curves["probe"] or {"step": [], "elapsed_seconds": [], "pretrained": [], "random_init": None,
                                 "raw_inputs": None, "train_examples": None, "test_examples": None}
    if probes["train_examples"] is not None and (probes["train_examples"], probes["test_examples"]) != (
            final["train_examples"], final["test_examples"]):
        raise RuntimeError(f"the periodic probes used {probes['train_examples']} / {probes['test_examples']} "
                           f"examples, the final probe {final['train_examples']} / {final['test_examples']}: "
                           f"evaluation.PERIODIC_PROBE_EXAMPLES was not applied")
    last_step, last_seconds = curves["step"][-1], curves["elapsed_seconds"][-1]
    random_init = probes["random_init"] if probes["random_init"] is not None else final["random_init"]
    points = [{"step": 0, "seconds": 0.0, "accuracy": random_init, "source": "initial weights (probe/random_init)"}]
    points += [{"step": s, "seconds": t, "accuracy": a, "source": "periodic probe"}
               for s, t, a in zip(probes["step"], probes["elapsed_seconds"], probes["pretrained"])]
    agree = None
    if probes["step"] and probes["step"][-1] == final["steps"]:
        agree = math.isclose(probes["pretrained"][-1], final["pretrained"], abs_tol=1e-9)
    else:
        points.append({"step": final["steps"], "seconds": last_seconds, "accuracy": final["pretrained"],
                       "source": "final probe (probe.json)"})
    return {
        "algorithm": algorithm, "argv": argv, "steps": final["steps"], "last_logged_step": last_step,
        "training_seconds": last_seconds, "run_wall_seconds": wall, "points": points,
        "final_accuracy": final["pretrained"], "random_init": final["random_init"],
        "random_init_periodic": probes["random_init"], "raw_inputs": final["raw_inputs"],
        "probe_train_examples": final["train_examples"], "probe_test_examples": final["test_examples"],
        "final_equals_last_periodic": agree, "features": final.get("features"), "dataset": final.get("dataset"),
    }


def summarize(runs: dict) -> dict:
    one, two = runs["data2vec"], runs["data2vec2"]
    target = one["final_accuracy"]
    trained = [p for p in two["points"] if p["step"] > 0 and p["accuracy"] is not None]  # not the initial weights
    reached = next((p for p in trained if p["accuracy"] >= target), None)
    best = max(trained, key=lambda p: p["accuracy"])
    return {
        "v1_final_accuracy": target, "v1_training_seconds": one["training_seconds"], "v1_steps": one["steps"],
        "v2_final_accuracy": two["final_accuracy"], "v2_training_seconds": two["training_seconds"],
        "v2_steps": two["steps"],
        "v2_reaches_v1_final": reached is not None,
        "v2_seconds_to_v1_final": reached["seconds"] if reached else None,
        "v2_step_to_v1_final": reached["step"] if reached else None,
        "ratio_to_v1_training_seconds": reached["seconds"] / one["training_seconds"] if reached else None,
        "v2_best_accuracy": best["accuracy"], "v2_best_seconds": best["seconds"], "v2_best_step": best["step"],
    }


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def report(modality: str, runs: dict, summary: dict) -> str:
    lines = [f"### {modality}", "", "| algorithm | step | training s | probe (held out) | point |", "|---|---|---|---|---|"]
    for a in ALGORITHMS:
        for p in runs[a]["points"]:
            lines.append(f"| {LABEL[a]} | {p['step']} | {p['seconds']:.1f} | {pct(p['accuracy'])} | {p['source']} |")
    one, two = runs["data2vec"], runs["data2vec2"]
    lines += ["", "| | data2vec 1.0 | data2vec 2.0 |", "|---|---|---|"]
    lines.append(f"| steps | {one['steps']} | {two['steps']} |")
    lines.append(f"| training s (probes not counted) | {one['training_seconds']:.1f} | "
                 f"{two['training_seconds']:.1f} |")
    lines.append(f"| run wall s (with data, probes, save) | {one['run_wall_seconds']:.1f} | "
                 f"{two['run_wall_seconds']:.1f} |")
    lines.append(f"| final probe | {pct(one['final_accuracy'])} | {pct(two['final_accuracy'])} |")
    lines.append(f"| random init | {pct(one['random_init'])} | {pct(two['random_init'])} |")
    lines.append(f"| raw inputs | {pct(one['raw_inputs'])} | {pct(two['raw_inputs'])} |")
    lines.append(f"| probe examples (train / held out) | {one['probe_train_examples']} / "
                 f"{one['probe_test_examples']} | {two['probe_train_examples']} / {two['probe_test_examples']} |")
    lines.append("")
    if summary["v2_reaches_v1_final"]:
        lines.append(f"data2vec 2.0 first reaches 1.0's final {pct(summary['v1_final_accuracy'])} at "
                     f"{summary['v2_seconds_to_v1_final']:.1f} s (step {summary['v2_step_to_v1_final']}): "
                     f"{summary['ratio_to_v1_training_seconds']:.2f}x 1.0's {summary['v1_training_seconds']:.1f} s.")
    else:
        lines.append(f"data2vec 2.0 does not reach 1.0's final {pct(summary['v1_final_accuracy'])} (not reached); "
                     f"its best: {pct(summary['v2_best_accuracy'])} at {summary['v2_best_seconds']:.1f} s (step "
                     f"{summary['v2_best_step']}).")
    for a in ALGORITHMS:
        agree = runs[a]["final_equals_last_periodic"]
        if agree is False:
            lines.append(f"WARNING: {LABEL[a]}'s periodic probe at the last step differs from its final probe.")
    return "\n".join(lines)


def plot(modality: str, runs: dict, summary: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    colors = {"data2vec": "C0", "data2vec2": "C3"}
    for a in ALGORITHMS:
        pts = [p for p in runs[a]["points"] if p["accuracy"] is not None]
        ax.plot([p["seconds"] for p in pts], [100 * p["accuracy"] for p in pts], "o-", color=colors[a],
                label=f"{LABEL[a]} ({runs[a]['steps']} steps, final {pct(runs[a]['final_accuracy'])})")
        if runs[a]["random_init"] is not None:
            ax.axhline(100 * runs[a]["random_init"], linestyle=":", color=colors[a], alpha=0.7,
                       label=f"{LABEL[a]} random init ({pct(runs[a]['random_init'])})")
    ax.axhline(100 * summary["v1_final_accuracy"], linestyle="--", color="0.3",
               label=f"1.0's final ({pct(summary['v1_final_accuracy'])})")
    raw = runs["data2vec"]["raw_inputs"]
    if raw is not None:
        ax.axhline(100 * raw, linestyle="-.", color="0.6", label=f"raw inputs ({pct(raw)})")
    if summary["v2_reaches_v1_final"]:
        ax.axvline(summary["v2_seconds_to_v1_final"], linestyle=":", color=colors["data2vec2"], alpha=0.5)
    ax.set_xlabel("training wall-clock, s (periodic probes not counted)")
    ax.set_ylabel(f"linear probe, held out ({runs['data2vec']['probe_test_examples']} examples), %")
    title = f"time to quality, {modality}: {runs['data2vec']['dataset'] or 'built-in data'}"
    ax.set_title(textwrap.fill(title, 100), fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def plot_path(template: str, modality: str, several: bool) -> Path:
    if "{modality}" in template:
        return Path(template.format(modality=modality))
    path = Path(template)
    return path.with_name(f"{path.stem}-{modality}{path.suffix}") if several else path


def parse_probe_steps(text: str | None, modality: str) -> dict[str, int]:
    if text is None:
        return PROBE_STEPS[modality]
    values = [int(v) for v in text.split(",")]
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise SystemExit("--probe_steps takes N (both algorithms) or N1,N2 (1.0, 2.0), each >= 1")
    return dict(zip(ALGORITHMS, values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modalities", default="vision", help="comma-separated: vision,text,audio")
    parser.add_argument("--probe_steps", default=None,
                        help="N or N1,N2 (1.0, 2.0); default: vision 210,100, text and audio 50,50")
    parser.add_argument("--extra", default="", help="more data2vec-pretrain flags for both runs, one string")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="docs/images/time-to-quality-{modality}.png",
                        help="the PNG per modality ({modality} is replaced); the JSON goes next to it")
    parser.add_argument("--runs_dir", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    extra = shlex.split(args.extra)
    evaluation.PERIODIC_PROBE_EXAMPLES = (10**9, 10**9)  # every periodic probe on all the probe data, as the final one

    with tempfile.TemporaryDirectory(prefix="time-to-quality-") as tmp:
        root = Path(args.runs_dir or tmp)
        reports = []
        for modality in modalities:
            steps = parse_probe_steps(args.probe_steps, modality)
            runs = {a: run(modality, a, steps[a], extra, args.seed, root / f"{modality}-{a}") for a in ALGORITHMS}
            summary = summarize(runs)
            text = report(modality, runs, summary)
            reports.append(text)
            png = plot_path(args.plot, modality, len(modalities) > 1)
            plot(modality, runs, summary, png)
            png.with_suffix(".json").write_text(json.dumps({
                "modality": modality, "seed": args.seed, "extra": extra, "probe_steps": steps,
                "summary": summary, "runs": runs, "table": text,
            }, indent=1))
            print(f"\n{text}\n\n-> {png}, {png.with_suffix('.json')}", flush=True)
    print("\n\n".join(["", "## Time to quality (all modalities)", *reports]))


if __name__ == "__main__":
    main()
