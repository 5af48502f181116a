"""--torch_compile against eager, in one run: the trainer's step time (forward, backward, AdamW, EMA) after warm-up,
the time the first steps take (compiling), and the graphs compiled.

    python bench/compile_vs_eager.py                              # small vision 2.0 + small audio 1.0, inductor
    python bench/compile_vs_eager.py --cases vision:data2vec2:tiny --steps 20 --backend inductor

Each case runs the trainer in this process on built-in data twice, eager and compiled, with the same length buckets
(`--bucket_lengths true`, so both see the same batches: the logged losses are compared), batch 8, fp32, no probe, on
the device it finds (CPU here). Step time is the median over the steps after --warmup of the logged elapsed time
(logging every step); "first steps" is the elapsed time at step --warmup (the compiled run compiles then: one graph
per region, mode and shape). The two runs of a case alternate --repeats times; the ratio is eager / compiled
(> 1: compiled is faster). Inductor draws dropout masks and the 2.0 decoder's noise with its own RNG unless
`torch._inductor.config.fallback_random` is set, which this script sets (--inductor_random: not), so that the two runs'
losses are comparable (the max relative difference over the steps is printed). Prints a table; --json writes it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile


def run(case: str, compiled: bool, steps: int, backend: str, mode: str | None, out: str) -> dict:
    import torch._dynamo
    from torch._dynamo.utils import counters

    from modeling_data2vec_unified.trainer import Data2VecPretrainer, PretrainingArguments

    modality, algorithm, size = case.split(":")
    torch._dynamo.reset()
    counters.clear()
    args = PretrainingArguments(
        modality=modality, algorithm=algorithm, model_size=size, output_dir=out, max_steps=steps,
        per_device_train_batch_size=8, logging_steps=1, save_steps=10**6, report_to="none", disable_tqdm=True,
        probe=False, max_examples=256, collapse_check_after=10**6, bucket_lengths=True, torch_compile=compiled,
        torch_compile_backend=backend, torch_compile_mode=mode)
    trainer = Data2VecPretrainer(args)
    trainer.finish = lambda: {}  # no final save / probe: only the steps are timed
    trainer.train()
    history = [h for h in trainer.log_history if "loss" in h]
    return {"elapsed": [h["elapsed_seconds"] for h in history], "losses": [h["loss"] for h in history],
            "graphs": history[-1].get("compiled_graphs", 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="vision:data2vec2:small,audio:data2vec:small",
                        help="modality:algorithm:model_size, comma separated")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--mode", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--inductor_random", action="store_true", help="inductor's own RNG (losses not comparable)")
    args = parser.parse_args()
    if not args.inductor_random:
        import torch._inductor.config

        torch._inductor.config.fallback_random = True
    rows = []
    for case in args.cases.split(","):
        runs = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            for name in runs:
                with tempfile.TemporaryDirectory() as out:
                    runs[name].append(run(case, name == "compiled", args.steps, args.backend, args.mode, out))

        def step(r):
            times = r["elapsed"]
            return statistics.median(b - a for a, b in zip(times[args.warmup - 1 :], times[args.warmup :]))

        eager = statistics.median(step(r) for r in runs["eager"])
        comp = statistics.median(step(r) for r in runs["compiled"])
        first = [r["elapsed"][args.warmup - 1] for r in runs["compiled"]]
        first_eager = [r["elapsed"][args.warmup - 1] for r in runs["eager"]]
        diff = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(runs["eager"][0]["losses"],
                                                                    runs["compiled"][0]["losses"]))
        rows.append({"case": case, "backend": args.backend, "eager_step_s": eager, "compiled_step_s": comp,
                     "speedup": eager / comp, "first_steps_eager_s": statistics.median(first_eager),
                     "first_steps_compiled_s": statistics.median(first),
                     "graphs": runs["compiled"][0]["graphs"], "max_rel_loss_diff": diff})
    header = "| case | eager s/step | compiled s/step | eager / compiled | first {w} steps eager / compiled (s) | " \
             "graphs | max rel. loss diff |".format(w=args.warmup)
    print(header)
    print("|" + "---|" * 7)
    for r in rows:
        print(f"| {r['case']} ({r['backend']}) | {r['eager_step_s']:.3f} | {r['compiled_step_s']:.3f} | "
              f"{r['speedup']:.2f}x | {r['first_steps_eager_s']:.1f} / {r['first_steps_compiled_s']:.1f} | "
              f"{r['graphs']:.0f} | {r['max_rel_loss_diff']:.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
