"""Forward+backward time of our Data2VecText/Vision/AudioModel against transformers' classes of the same name.

For each modality: a random transformers model is saved and loaded into ours with our `from_pretrained`, so both
hold the same weights; both run in train mode with every dropout, layerdrop, drop path and SpecAugment switched off,
so they do the same work. After checking that their `last_hidden_state`s agree (max |diff| <= 1e-4), the script
times forward + backward of `last_hidden_state.square().mean()` on the same batch, alternating ours and theirs
after warm-up iterations, and reports the median of each and ratio = ours / theirs (< 1: ours is faster).

    python bench/encoder_vs_transformers.py --size small
    python bench/encoder_vs_transformers.py --size base --modality vision --iters 5 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, installed or not
import modeling_data2vec_unified as d2v  # noqa: E402

ENCODERS = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
# front-end fields of transformers' configs; "base" is data2vec's base models (text: RoBERTa's vocabulary,
# vision: BEiT-B/16 with a shared relative position bias, audio: wav2vec 2.0's conv feature encoder)
FRONT_ENDS = {
    "tiny": {
        "text": dict(vocab_size=100, max_position_embeddings=40, type_vocab_size=1),
        "vision": dict(image_size=32, patch_size=8),
        "audio": dict(conv_dim=(16, 16, 16), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=2,
                      conv_pos_kernel_size=5, num_conv_pos_embedding_groups=4),
    },
    "small": {
        "text": dict(vocab_size=8192, max_position_embeddings=514, type_vocab_size=1),
        "vision": dict(image_size=224, patch_size=16),
        "audio": dict(conv_dim=(256,) * 7, num_conv_pos_embeddings=2, num_conv_pos_embedding_groups=16),
    },
    "base": {
        "text": dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1),
        "vision": dict(image_size=224, patch_size=16),
        "audio": dict(),
    },
}
COMMON = {
    "text": dict(layer_norm_eps=1e-5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    "vision": dict(layer_norm_eps=1e-6, use_shared_relative_position_bias=True, hidden_dropout_prob=0.0,
                   attention_probs_dropout_prob=0.0, drop_path_rate=0.0),
    "audio": dict(layer_norm_eps=1e-5, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                  feat_proj_dropout=0.0, layerdrop=0.0, apply_spec_augment=False),
}
# batch per size: text (batch, tokens), vision batch, audio (batch, samples at 16 kHz)
BATCHES = {
    "tiny": dict(text=(2, 16), vision=2, audio=(2, 1600)),
    "small": dict(text=(8, 128), vision=8, audio=(4, 32000)),
    "base": dict(text=(8, 128), vision=8, audio=(4, 32000)),
}
DEFAULT_ITERS = {"tiny": (50, 5), "small": (20, 3), "base": (5, 1)}  # (timed, warm-up) iterations per model
TRANSFORMERS_CLASSES = {"text": "Data2VecTextModel", "vision": "Data2VecVisionModel", "audio": "Data2VecAudioModel"}
CONFIG_CLASSES = {"text": "Data2VecTextConfig", "vision": "Data2VecVisionConfig", "audio": "Data2VecAudioConfig"}
ATOL = 1e-4


def build_models(modality: str, size: str, folder: str):
    """(ours, theirs) with the same weights, in train mode."""
    fields = {**ENCODERS[size], **FRONT_ENDS[size][modality], **COMMON[modality]}
    config = getattr(transformers, CONFIG_CLASSES[modality])(**fields)
    torch.manual_seed(0)
    cls = getattr(transformers, TRANSFORMERS_CLASSES[modality])
    theirs = cls(config, add_pooling_layer=False) if modality == "vision" else cls(config)  # ours has no pooler
    if modality == "vision":  # transformers initialises the table to zeros: make the bias count in the check
        torch.nn.init.normal_(theirs.encoder.relative_position_bias.relative_position_bias_table, std=0.5)
    theirs.save_pretrained(folder)
    ours = d2v.MODEL_CLASSES[modality].from_pretrained(folder)
    c = ours.config
    rates = (c.hidden_dropout_prob, c.attention_probs_dropout_prob, c.activation_dropout, c.layerdrop, c.drop_path_rate)
    if any(rates):
        raise RuntimeError(f"{modality}: our config keeps a dropout on (the work would differ): {rates}")
    return ours.train(), theirs.train()


def make_batch(modality: str, size: str, config) -> dict:
    """The same batch for both models, with padding in the last example where the modality pads."""
    g = torch.Generator().manual_seed(0)
    if modality == "text":
        B, T = BATCHES[size]["text"]
        ids = torch.randint(3, config.vocab_size, (B, T), generator=g)
        mask = torch.ones(B, T, dtype=torch.long)
        ids[-1, T - T // 4 :], mask[-1, T - T // 4 :] = config.pad_token_id, 0
        ids[:, 0] = config.bos_token_id
        return {"input_ids": ids, "attention_mask": mask}
    if modality == "vision":
        B, S = BATCHES[size]["vision"], config.image_size
        return {"pixel_values": torch.randn(B, config.num_channels, S, S, generator=g)}
    B, S = BATCHES[size]["audio"]
    mask = torch.ones(B, S, dtype=torch.long)
    mask[-1, S - S // 3 :] = 0
    return {"input_values": torch.randn(B, S, generator=g) * mask, "attention_mask": mask}


def step(model, batch: dict) -> float:
    """Seconds for one forward + backward (gradients cleared outside the timed region)."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    model(**batch).last_hidden_state.square().mean().backward()
    return time.perf_counter() - start


def bench(modality: str, size: str, iters: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        ours, theirs = build_models(modality, size, folder)
    batch = make_batch(modality, size, ours.config)
    with torch.no_grad():
        out = ours(**batch).last_hidden_state
        diff = float((out - theirs(**batch).last_hidden_state).abs().max())
    if not diff <= ATOL:
        raise RuntimeError(f"{modality}: outputs differ by {diff:.2e} > {ATOL}: the timings would not be comparable")
    times = {"ours": [], "theirs": []}
    for i in range(warmup + iters):
        for name, model in (("ours", ours), ("theirs", theirs)):
            t = step(model, batch)
            if i >= warmup:
                times[name].append(t)
    ours_s, theirs_s = statistics.median(times["ours"]), statistics.median(times["theirs"])
    shape = "x".join(str(n) for n in next(iter(batch.values())).shape)
    return dict(modality=modality, batch=shape, tokens=out.shape[1], diff=diff,
                ours=ours_s, theirs=theirs_s, ratio=ours_s / theirs_s, attn=theirs.config._attn_implementation)


def load_average() -> str:
    """1, 5 and 15 min load averages: other processes on the machine make the timings noisy."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(ENCODERS), default="small")
    parser.add_argument("--modality", choices=["all", *TRANSFORMERS_CLASSES], default="all")
    parser.add_argument("--iters", type=int, help="timed iterations per model (default: by size)")
    parser.add_argument("--warmup", type=int, help="untimed iterations per model first (default: by size)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch.set_num_threads")
    args = parser.parse_args(argv)
    iters, warmup = DEFAULT_ITERS[args.size]
    iters = iters if args.iters is None else args.iters
    warmup = warmup if args.warmup is None else args.warmup
    if iters < 1 or warmup < 0:
        parser.error("--iters must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    modalities = list(TRANSFORMERS_CLASSES) if args.modality == "all" else [args.modality]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads, "
          f"size={args.size}, {iters} timed + {warmup} warm-up iterations per model, alternating; "
          f"load average: {load_average()}")
    print(f"{'modality':<8} {'input':>14} {'tokens':>6} {'max|diff|':>9} {'ours ms':>9} {'theirs ms':>9} {'ratio':>6}")
    results = []
    for modality in modalities:
        r = bench(modality, args.size, iters, warmup)
        results.append(r)
        print(f"{r['modality']:<8} {r['batch']:>14} {r['tokens']:>6} {r['diff']:>9.1e} {r['ours'] * 1e3:>9.1f} "
              f"{r['theirs'] * 1e3:>9.1f} {r['ratio']:>6.3f}", flush=True)
    for r in results:
        print(f"{r['modality']}: ours={r['ours'] * 1e3:.1f}ms theirs={r['theirs'] * 1e3:.1f}ms "
              f"(transformers attn={r['attn']}) ratio={r['ratio']:.3f}")
    print(f"load average at the end: {load_average()}")
    print(f"max_ratio={max(r['ratio'] for r in results):.3f}")


if __name__ == "__main__":
    main()
