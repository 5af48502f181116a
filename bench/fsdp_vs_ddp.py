"""DDP against --fsdp (FSDP2 `fully_shard`) on 2 CPU processes (torch's launcher, gloo): per-step time, peak RSS per
process, and the bytes each process holds in parameters + gradients + AdamW state + EMA teacher; plus the computed
per-device memory of base / large / huge vision models.

    python bench/fsdp_vs_ddp.py                       # tiny and small, 2 processes, both modes in one run
    python bench/fsdp_vs_ddp.py --sizes tiny --steps 20 --table_only

Each (size, mode) is its own 2-process launch of the trainer (built-in digits, batch 8 per process, fp32, no probe);
per-step time is the median over the steps after the first 3 (warm-up), read from the trainer's logged
elapsed_seconds; peak RSS is each process's `ru_maxrss` after the last step, before the end's save (it includes
Python, torch and the data: the model's share of it is small at these sizes, which is why the held bytes are reported
too).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

WORKER = textwrap.dedent('''
    import json, resource, sys
    import torch
    from modeling_data2vec_unified.ema import local_tensor
    from modeling_data2vec_unified.trainer import Data2VecPretrainer, PretrainingArguments

    out, mode, size, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    torch.set_num_threads(1)
    args = PretrainingArguments(modality="vision", model_size=size, output_dir=out, max_steps=steps,
                                per_device_train_batch_size=8, logging_steps=1, save_steps=10**6, report_to="none",
                                disable_tqdm=True, probe=False, cpu=True, max_examples=512, fsdp=mode == "fsdp",
                                collapse_check_after=10**6)
    trainer = Data2VecPretrainer(args)
    acc, finish = trainer.accelerator, trainer.finish

    def measure_then_finish():  # before the end's gathering of the full student (rank 0 holds a whole copy then)
        nbytes = lambda ts: sum(local_tensor(t).numel() * local_tensor(t).element_size() for t in ts)
        model, opt = trainer.unwrapped, getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        held = {"parameters": nbytes(model.parameters()),
                "adam": nbytes(v for s in opt.state.values() for k, v in s.items() if k != "step"),
                "teacher": nbytes(model.teacher.parameters())}
        held["gradients"] = held["parameters"]  # one fp32 gradient per (local) parameter, freed by zero_grad
        history = [h["elapsed_seconds"] for h in trainer.log_history if "loss" in h]
        result = {"rank": acc.process_index, "held": held, "elapsed": history,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "losses": [h["loss"] for h in trainer.log_history if "loss" in h]}
        with open(f"{out}/bench_{acc.process_index}.json", "w") as f:
            json.dump(result, f)
        return finish()

    trainer.finish = measure_then_finish
    trainer.train()
''')

# vision encoders (ViT-B/L/H: data2vec's base / large / huge widths and depths)
TABLE_SIZES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(size: str, mode: str, steps: int, root: Path) -> list[dict]:
    out = root / f"{size}-{mode}"
    script = root / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(script), str(out), mode, size, str(steps)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return [json.loads((out / f"bench_{r}.json").read_text()) for r in range(2)]


def step_seconds(elapsed: list[float], warmup: int = 3) -> float:
    deltas = [b - a for a, b in zip(elapsed, elapsed[1:])][warmup:]
    return statistics.median(deltas)


def memory_table(devices=(8, 64)) -> list[dict]:
    """Per-device bytes of parameters, gradients, AdamW (2 states) and the fp32 EMA teacher, all fp32:
    DDP 4P + 4P + 8P + 4T; FSDP over N devices: (16P + 4T) / N (+ the gathered full weights of the layer being
    computed, transient, not counted)."""
    from accelerate import init_empty_weights

    import modeling_data2vec_unified as d2v

    rows = []
    for name, fields in TABLE_SIZES.items():
        config = d2v.Data2VecConfig(modality="vision", **fields)
        with init_empty_weights():  # parameters on the meta device: counted, not allocated
            model = d2v.Data2VecForPreTraining(config)
            p = sum(t.numel() for t in model.parameters())
            t = sum(x.numel() for x in model._ema_source().parameters())
        ddp = 16 * p + 4 * t
        rows.append({"size": name, "parameters": p, "teacher_parameters": t, "ddp_gib": ddp / 2**30,
                     **{f"fsdp{n}_gib": ddp / n / 2**30 for n in devices}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--table_only", action="store_true")
    args = parser.parse_args()
    for row in memory_table():
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))
    if args.table_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            runs = {mode: launch(size, mode, args.steps, Path(tmp)) for mode in ("ddp", "fsdp")}
            row = {"size": size, "steps": args.steps}
            for mode, ranks in runs.items():
                row[f"{mode}_step_s"] = round(statistics.mean(step_seconds(r["elapsed"]) for r in ranks), 4)
                row[f"{mode}_maxrss_mib"] = round(max(r["maxrss_mib"] for r in ranks), 1)
                row[f"{mode}_held_mib"] = round(max(sum(r["held"].values()) for r in ranks) / 2**20, 3)
            row["fsdp/ddp_step_time"] = round(row["fsdp_step_s"] / row["ddp_step_s"], 3)
            row["fsdp/ddp_peak_rss"] = round(row["fsdp_maxrss_mib"] / row["ddp_maxrss_mib"], 3)
            row["fsdp/ddp_held"] = round(row["fsdp_held_mib"] / row["ddp_held_mib"], 3)
            row["max_loss_rel_diff"] = max(abs(a - b) / abs(b) for a, b in zip(runs["fsdp"][0]["losses"],
                                                                                runs["ddp"][0]["losses"]))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
