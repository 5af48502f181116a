"""Is the data ever the bottleneck? One short default `Data2VecPretrainer` run per dataset, split into its phases:

- prep: `load_pretraining_data` (load, decode / resample / tokenize what is prepared up front, the probe's examples);
- data: per optimizer step, fetching the step's batch from the trainer's DataLoader (per-batch decode / resample /
  image processing, collation, masks);
- model: per optimizer step, `_train_step` (forward, backward, clip, AdamW, EMA teacher);
- probe: the linear probe at the end (`run_probe`);
- other: the rest of the wall-clock (model build, first-batch check, checkpoints, saving the result).

    D=/tmp/d2v-data; python bench/data_pipeline.py --write_data $D   # the folders docs/benchmarks.md measured
    python bench/data_pipeline.py --audio $D/audio --images $D/images --text $D/text --builtin --threads 1
    python bench/data_pipeline.py --audio DIR --dataloader_num_workers 1 --dataloader_num_workers 0
    python bench/data_pipeline.py --audio DIR --images DIR --per_batch --repeats 2   # before / after, alternating

Each run uses the trainer's defaults (tiny model, the modality's batch size) apart from --max_steps and the flags
given; every `--dataloader_num_workers` value is run in turn for each dataset. `--per_batch` also runs each audio and
image folder with `data.MAX_IN_MEMORY_BYTES = 0`, i.e. decoded and processed per batch, as every local image and audio
set was before small ones were prepared once (the "before" of docs/benchmarks.md), alternating with the default. Data
and model time exclude the first step (DataLoader start, worker start-up, first-call warm-up: counted under other).
samples/s is the training throughput: samples over (data + model) time of the steps after the first. `datasets`
caches go to a fresh folder (--cache_dir) unless --warm_cache, so prep is what a first run pays. Prints a table and,
with --json, writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def write_data(root: Path) -> None:
    """root/audio: 320 clips of 1-3 s (tones, chirps, noise, clicks: 4 label folders) at 16 / 22.05 / 44.1 kHz;
    root/images: 400 64x64 RGB PNGs of the letters A-D (4 label folders) on random colours; root/text: 4 .txt files,
    ~3.7 MB of Python's docstrings and help topics. Seeded."""
    import importlib
    import inspect

    import numpy as np
    import soundfile
    from PIL import Image, ImageDraw, ImageFont
    from pydoc_data.topics import topics

    rng = np.random.default_rng(0)
    for kind in ("tone", "chirp", "noise", "clicks"):
        (root / "audio" / kind).mkdir(parents=True, exist_ok=True)
        for i in range(80):
            rate = (16000, 22050, 44100)[i % 3]
            t = np.arange(int(rng.uniform(1, 3) * rate)) / rate
            wave = {"tone": lambda: np.sin(2 * np.pi * rng.uniform(200, 800) * t),
                    "chirp": lambda: np.sin(2 * np.pi * rng.uniform(200, 400) * t * (1 + t)),
                    "noise": lambda: rng.standard_normal(len(t)) * np.exp(-3 * t),
                    "clicks": lambda: np.sin(2 * np.pi * 1500 * t) * np.exp(-((8 * t) % 1) / 0.04)}[kind]()
            soundfile.write(root / "audio" / kind / f"{i:03d}.wav", (0.5 * wave / np.abs(wave).max()).astype("float32"),
                            rate)
    for letter in "ABCD":
        (root / "images" / letter).mkdir(parents=True, exist_ok=True)
        for i in range(100):
            image = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 256, 3)))
            draw = ImageDraw.Draw(image)
            draw.text(tuple(int(v) for v in rng.integers(4, 40, 2)), letter, fill=tuple(int(v) for v in
                      rng.integers(0, 256, 3)), font=ImageFont.load_default(size=int(rng.integers(14, 28))))
            draw.ellipse([int(v) for v in sorted(rng.integers(0, 64, 2))] * 2, outline=(0, 0, 0))
            image.save(root / "images" / letter / f"{i:03d}.png")
    docs = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"):
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # not built into this Python, or no display
            continue
        docs += [inspect.getdoc(v) for k, v in sorted(vars(module).items()) if not k.startswith("_")]
    text = "\n\n".join([d for d in docs if d] + [topics[k] for k in sorted(topics)])
    while len(text) < 3_000_000:
        text += "\n\n" + text
    (root / "text").mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (root / "text" / f"part{i}.txt").write_text(text[i * len(text) // 4 : (i + 1) * len(text) // 4])


def run_one(modality: str, dataset: str, max_steps: int, workers: int, extra: list[str], per_batch: bool = False
            ) -> dict:
    import torch

    import modeling_data2vec_unified.data as data_module
    from transformers import HfArgumentParser

    from modeling_data2vec_unified.trainer import Data2VecPretrainer, PretrainingArguments

    timings: dict[str, float | list] = {"data": [], "model": []}
    load = data_module.load_pretraining_data

    def timed_load(*args, **kwargs):
        began = time.perf_counter()
        try:
            return load(*args, **kwargs)
        finally:
            timings["prep"] = time.perf_counter() - began

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory(prefix="d2v-data-bench-") as out:
        argv = ["--modality", modality, "--dataset", dataset, "--max_steps", str(max_steps), "--output_dir", out,
                "--report_to", "none", "--disable_tqdm", "--logging_steps", str(max_steps), "--save_steps",
                str(10**9), "--dataloader_num_workers", str(workers), *extra]
        (args,) = HfArgumentParser(PretrainingArguments).parse_args_into_dataclasses(args=argv)
        began = time.perf_counter()
        in_memory = getattr(data_module, "MAX_IN_MEMORY_BYTES", None)  # None: a version that always decodes per batch
        data_module.load_pretraining_data = timed_load
        if per_batch:
            data_module.MAX_IN_MEMORY_BYTES = 0
        try:
            trainer = Data2VecPretrainer(args)
        finally:
            data_module.load_pretraining_data = load
            if per_batch:
                data_module.MAX_IN_MEMORY_BYTES = in_memory

        make_loader, train_step, run_probe = trainer.dataloader, trainer._train_step, trainer.run_probe

        def dataloader(start):
            loader = make_loader(start)

            class Timed:
                def __iter__(self):
                    batches = iter(loader)
                    while True:
                        t = time.perf_counter()
                        batch = next(batches)
                        timings["data"].append(time.perf_counter() - t)
                        yield batch

            return Timed()

        def step(*a, **k):
            t = time.perf_counter()
            decay = train_step(*a, **k)
            sync()
            timings["model"].append(time.perf_counter() - t)
            return decay

        def probe():
            t = time.perf_counter()
            results = run_probe()
            timings["probe"] = time.perf_counter() - t
            return results

        trainer.dataloader, trainer._train_step, trainer.run_probe = dataloader, step, probe
        trainer.train()
        wall = time.perf_counter() - began
    data, model = timings["data"][1:], timings["model"][1:]  # after the first step
    batch = trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
    steady = sum(data) + sum(model)
    decoded = ("-" if modality == "text" or dataset == "builtin" else "per batch" if per_batch or in_memory is None
               else "default")
    return {
        "modality": modality, "dataset": dataset, "decoded": decoded, "workers": workers, "batch": batch,
        "steps": max_steps,
        "description": trainer.data.description, "wall_s": wall, "prep_s": timings.get("prep", 0.0),
        "data_ms": 1000 * statistics.fmean(data), "model_ms": 1000 * statistics.fmean(model),
        "data_median_ms": 1000 * statistics.median(data), "model_median_ms": 1000 * statistics.median(model),
        "first_step_s": timings["data"][0] + timings["model"][0],
        "probe_s": timings.get("probe", 0.0), "data_share": sum(data) / steady,
        "samples_per_s": batch * len(model) / steady,
    }


def print_table(rows: list[dict]) -> None:
    print("| dataset | decoded | workers | batch | prep (s) | data / step (ms) | model / step (ms) | data share of "
          "step | probe (s) | wall (s) | prep / train / probe / other of wall | samples/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        train = (r["steps"] - 1) * (r["data_ms"] + r["model_ms"]) / 1000
        other = r["wall_s"] - r["prep_s"] - train - r["probe_s"]
        shares = " / ".join(f"{100 * x / r['wall_s']:.0f}%" for x in (r["prep_s"], train, r["probe_s"], other))
        print(f"| {r['modality']} {r['dataset']} | {r['decoded']} | {r['workers']} | {r['batch']} | "
              f"{r['prep_s']:.1f} | {r['data_ms']:.1f} | {r['model_ms']:.1f} | {100 * r['data_share']:.1f}% | "
              f"{r['probe_s']:.1f} | {r['wall_s']:.1f} | {shares} | {r['samples_per_s']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", help="an audio folder")
    parser.add_argument("--images", help="an image folder")
    parser.add_argument("--text", help="a text file or folder")
    parser.add_argument("--builtin", action="store_true", help="also the three built-in datasets")
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--dataloader_num_workers", type=int, action="append",
                        help="repeatable: each value is run in turn (default: the trainer's default)")
    parser.add_argument("--per_batch", action="store_true", help="also run audio and image folders decoded per "
                        "batch (data.MAX_IN_MEMORY_BYTES = 0), alternating with the default")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting (alternating)")
    parser.add_argument("--extra", default="", help="more data2vec-pretrain flags for every run, e.g. "
                                                    "'--config_overrides image_size=64,patch_size=16'")
    parser.add_argument("--cache_dir", default=None, help="datasets' cache (default: a fresh temporary folder)")
    parser.add_argument("--warm_cache", action="store_true", help="run each dataset once first (not reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's); 1 keeps "
                        "timings stable when another process shares the cores")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--write_data", help="write the audio / image / text folders measured into this folder, "
                        "and stop")
    a = parser.parse_args()
    if a.write_data:
        write_data(Path(a.write_data))
        return
    os.environ["HF_DATASETS_CACHE"] = a.cache_dir or tempfile.mkdtemp(prefix="d2v-data-bench-cache-")
    import datasets  # after HF_DATASETS_CACHE: it reads it on import

    datasets.disable_progress_bars()
    import torch

    import modeling_data2vec_unified

    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"package: {Path(modeling_data2vec_unified.__file__).parent}; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.2f}",
          file=sys.stderr)
    from modeling_data2vec_unified.trainer import PretrainingArguments

    cases = [("audio", a.audio), ("vision", a.images), ("text", a.text)]
    cases = [(m, d) for m, d in cases if d] + ([(m, "builtin") for m in ("audio", "vision", "text")] if a.builtin
                                               else [])
    workers = a.dataloader_num_workers or [PretrainingArguments.dataloader_num_workers]
    rows = []
    for modality, dataset in cases:
        if a.warm_cache:
            run_one(modality, dataset, 2, workers[0], a.extra.split())
        modes = [True, False] if a.per_batch and modality != "text" and dataset != "builtin" else [False]
        for _ in range(a.repeats):
            for w in workers:
                for per_batch in modes:
                    rows.append(run_one(modality, dataset, a.max_steps, w, a.extra.split(), per_batch))
                    print(json.dumps(rows[-1]), file=sys.stderr)
    print_table(rows)
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
