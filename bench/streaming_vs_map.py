"""--streaming vs map-style on the same local shards, in one run: the data pipeline's samples/s (the trainer's own
DataLoader: per-batch preparation, collation, masks; no model) and the process's RSS over a long stream.

    python bench/streaming_vs_map.py --write_data /tmp/d2v-shards            # 32 parquet shards of PNGs + 32 json
    python bench/streaming_vs_map.py --data /tmp/d2v-shards --batches 400 --dataloader_num_workers 0

For each modality (vision: parquet shards of 32x32 PNG bytes; text: json shards of Python's help topics; audio:
parquet shards of 16 kHz WAV bytes, 1-2 s sounds from `data.synthesize_sounds`), a
`Data2VecPretrainer` is built map-style (the data decoded / tokenized up front, in memory: `setup s` counts that) and
with --streaming (--processor: the map-style run's tokenizer, so both tokenize alike); `--batches` micro-batches of the
trainer's `dataloader(0)` are then drawn from each, alternately in `--repeats` rounds, after `--warmup` batches.
Vision also runs map-style decoded per batch (`data.MAX_IN_MEMORY_BYTES = 0`: what images over 1 GiB get), and each
streaming draw is repeated with datasets' 5 s end-of-pass sleep set to 0 (`stream_no_sleep`), to separate the costs.
RSS (VmRSS of this process, plus its DataLoader workers') is sampled every 50 batches of the streaming run, which
passes over the shards several times; the figure is the growth from the first sample to the last. Prints a table;
--json writes it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path


def write_data(root: Path, shards: int = 32, rows: int = 100) -> None:
    import numpy as np
    import PIL.Image
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pydoc_data.topics import topics

    import soundfile

    from modeling_data2vec_unified.data import synthesize_sounds

    rng = np.random.default_rng(0)
    for name in ("images", "text", "audio"):
        (root / name).mkdir(parents=True, exist_ok=True)
    clips, _ = synthesize_sounds(rows, 16_000, seed=0)
    texts = [topics[k] for k in sorted(topics)]
    for s in range(shards):
        cells = []
        for i in range(rows):
            buffer = io.BytesIO()
            PIL.Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "RGB").save(buffer, "PNG")
            cells.append({"bytes": buffer.getvalue(), "path": f"img-{s}-{i}.png"})
        pq.write_table(pa.table({"image": cells}), root / "images" / f"shard-{s:03d}.parquet")
        waves = []
        for i, clip in enumerate(clips[: rows // 4]):  # a quarter of the rows: audio is the slowest to prepare
            buffer = io.BytesIO()
            soundfile.write(buffer, np.roll(clip, 97 * s), 16_000, format="WAV")
            waves.append({"bytes": buffer.getvalue(), "path": f"clip-{s}-{i}.wav"})
        pq.write_table(pa.table({"audio": waves}), root / "audio" / f"shard-{s:03d}.parquet")
        with open(root / "text" / f"shard-{s:03d}.jsonl", "w") as f:
            for i in range(rows):
                f.write(json.dumps({"text": texts[(s * rows + i) % len(texts)][:2000]}) + "\n")


def rss_mb() -> float:
    """VmRSS of this process and its children (DataLoader workers), in MB."""
    import psutil

    me = psutil.Process()
    return sum(p.memory_info().rss for p in [me, *me.children(recursive=True)]) / 1e6


def trainer_for(modality: str, data: Path, streaming: bool, workers: int, processor: str | None, out: str,
                per_batch: bool = False):
    import modeling_data2vec_unified as d2v
    from modeling_data2vec_unified import data as data_module

    data_module.MAX_IN_MEMORY_BYTES = 0 if per_batch else 2**30
    flags = dict(modality=modality, dataset=str(data), streaming=streaming, dataloader_num_workers=workers,
                 max_steps=10**6, report_to="none", disable_tqdm=True, probe=False, output_dir=out,
                 overwrite_output_dir=True)
    if modality == "vision":
        flags["config_overrides"] = "image_size=32,patch_size=4"
    elif modality == "text":
        flags.update(max_seq_length=128, tokenizer_vocab_size=2048, processor=processor)
    began = time.perf_counter()
    trainer = d2v.Data2VecPretrainer(d2v.PretrainingArguments(**flags))
    return trainer, time.perf_counter() - began


def draw(trainer, batches: int, warmup: int, rss: list | None = None, sleep: float | None = None) -> float:
    """samples/s over `batches` micro-batches after `warmup`; `sleep`: datasets' SLEEP_TIME_ON_THREADS_SHUTDOWN for
    this draw (None: as it is, 5 s)."""
    import datasets.config

    from modeling_data2vec_unified.masking import MODALITY_INPUT

    saved = datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = saved if sleep is None else sleep
    name = MODALITY_INPUT[trainer.config.modality]
    it = iter(trainer.dataloader(0))
    for _ in range(warmup):
        trainer._next_batch(it)
    began, samples = time.perf_counter(), 0
    for i in range(batches):
        samples += len(trainer._next_batch(it)[name])
        if rss is not None and i % 50 == 0:
            rss.append(rss_mb())
    seconds = time.perf_counter() - began
    del it
    datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = saved
    return samples / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write_data", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--modality", action="append", choices=("vision", "text", "audio"))
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--long_batches", type=int, default=2000, help="streaming batches for the RSS figure")
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.write_data:
        write_data(args.write_data)
        print(f"wrote {args.write_data}/images, text and audio")
        return
    import logging
    import tempfile

    logging.getLogger("modeling_data2vec_unified").setLevel(logging.WARNING)
    rows = []
    for modality in args.modality or ["vision", "text", "audio"]:
        data = args.data / {"vision": "images", "text": "text", "audio": "audio"}[modality]
        with tempfile.TemporaryDirectory() as tmp:
            mapped, map_setup = trainer_for(modality, data, False, args.dataloader_num_workers, None, f"{tmp}/map")
            processor = None
            if modality == "text":
                mapped.data.processor.save_pretrained(f"{tmp}/tok")
                processor = f"{tmp}/tok"
            streamed, stream_setup = trainer_for(modality, data, True, args.dataloader_num_workers, processor,
                                                 f"{tmp}/stream")
            rates = {"map": [], "stream": [], "stream_no_sleep": []}
            per_batch = None
            if modality == "vision":  # map-style decoding per batch, as for images larger than MAX_IN_MEMORY_BYTES
                per_batch, _ = trainer_for(modality, data, False, args.dataloader_num_workers, None,
                                           f"{tmp}/per_batch", per_batch=True)
                rates["map_per_batch"] = []
            for _ in range(args.repeats):
                rates["map"].append(draw(mapped, args.batches, args.warmup))
                if per_batch is not None:
                    rates["map_per_batch"].append(draw(per_batch, args.batches, args.warmup))
                rates["stream"].append(draw(streamed, args.batches, args.warmup))
                rates["stream_no_sleep"].append(draw(streamed, args.batches, args.warmup, sleep=0))
            rss: list[float] = []
            batch = streamed.args.per_device_train_batch_size
            long_rate = draw(streamed, args.long_batches, args.warmup, rss)
        best = {k: max(v) for k, v in rates.items()}
        rows.append({
            "modality": modality, "workers": args.dataloader_num_workers, "batch": batch,
            "map_setup_s": map_setup, "stream_setup_s": stream_setup,
            "map_samples_per_s": best["map"], "stream_samples_per_s": best["stream"],
            "stream_over_map": best["stream"] / best["map"], "all_rates": rates, "best": best,
            "long_stream_examples": args.long_batches * batch, "long_stream_samples_per_s": long_rate,
            "rss_first_mb": rss[0], "rss_last_mb": rss[-1], "rss_max_mb": max(rss),
        })
        r = rows[-1]
        print(f"{modality}: setup map {map_setup:.1f} s, stream {stream_setup:.1f} s; samples/s (best of "
              f"{args.repeats}) " + ", ".join(f"{k} {v:.0f}" for k, v in best.items())
              + f"; stream / map {r['stream_over_map']:.3f}"
              + (f", stream / map_per_batch {best['stream'] / best['map_per_batch']:.2f}" if per_batch else "")
              + f", stream_no_sleep / map {best['stream_no_sleep'] / best['map']:.3f}; "
              f"RSS over {r['long_stream_examples']} streamed examples: {rss[0]:.0f} -> {rss[-1]:.0f} MB "
              f"(max {max(rss):.0f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
