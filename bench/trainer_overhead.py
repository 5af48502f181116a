"""What the trainer adds over a bare data2vec loop: time per optimizer step of `Data2VecPretrainer` (DataLoader with
seeded batches, device-side NaN skipping, interval logging) against a hand-written loop (collator + model + fused
AdamW + EMA step) on the same model, data and batch size, in one process, alternating, best of `--repeats`.

    python bench/trainer_overhead.py [--steps 100] [--repeats 3] [--modality vision] [--batch 128]

Prints both times and `trainer_overhead_ratio=` (trainer / bare; 1.0 = no overhead).
"""

import argparse
import time

import torch

import modeling_data2vec_unified as d2v
from modeling_data2vec_unified.trainer import Data2VecPretrainer, PretrainingArguments, build_config


def bare_loop(config, data, steps: int, batch: int, lr: float) -> float:
    torch.manual_seed(0)
    model = d2v.Data2VecForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)
    collator = d2v.DataCollatorForData2VecPretraining(config, seed=0)
    examples = [data.train[i] for i in range(len(data.train))]
    model(**collator(examples[:batch]))  # warm-up, as the trainer's first-batch check
    start = time.perf_counter()
    for step in range(steps):
        first = (step * batch) % (len(examples) - batch)
        out = model(**collator(examples[first : first + batch]), check_inputs=False)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.update_teacher()
    return (time.perf_counter() - start) / steps


def trainer_loop(args: PretrainingArguments, data, steps: int) -> float:
    """(time of a run stopped after 1 + steps) - (time of one stopped after 1): setup and first step cancel out."""
    times = []
    for stop in (1, 1 + steps):
        trainer = Data2VecPretrainer(args, data=data)
        start = time.perf_counter()
        trainer.train(stop_at_step=stop)
        times.append(time.perf_counter() - start)
    return (times[1] - times[0]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", default="vision")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--output_dir", default="/tmp/d2v-trainer-bench")
    a = parser.parse_args()
    args = PretrainingArguments(modality=a.modality, output_dir=a.output_dir, max_steps=10**6, report_to="none",
                                disable_tqdm=True, logging_steps=50, save_steps=10**9, probe=False,
                                per_device_train_batch_size=a.batch).resolve()
    config = build_config(args)
    data = d2v.load_pretraining_data(config)
    config.update(data.config_updates)
    bare, ours = [], []
    for _ in range(a.repeats):
        bare.append(bare_loop(config, data, a.steps, args.per_device_train_batch_size, args.learning_rate))
        ours.append(trainer_loop(args, data, a.steps))
    b, t = min(bare), min(ours)
    print(f"{a.modality}, batch {args.per_device_train_batch_size}, {a.steps} steps x {a.repeats}: "
          f"bare loop {b * 1000:.1f} ms/step, Data2VecPretrainer {t * 1000:.1f} ms/step")
    print(f"trainer_overhead_ratio={t / b:.3f}")


if __name__ == "__main__":
    main()
