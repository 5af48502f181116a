"""Quickstart: one data2vec model per modality on built-in offline data, saved and reloaded with AutoModel.

    python examples/quickstart.py [--output_dir runs/quickstart]

Vision encodes scikit-learn's digits images, text encodes (byte-level) English help text that ships with
Python (`pydoc_data`), audio encodes synthesised tones. Each model is saved with `save_pretrained` (safetensors) and loaded
back with `transformers.AutoModel`, which returns the right modality's class and the same outputs.
"""

import argparse
import math
import time

import torch
from transformers import AutoModel

import modeling_data2vec_unified as d2v

TINY = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256, average_top_k_layers=3)


def digits_batch(n: int = 32) -> torch.Tensor:
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[:n], dtype=torch.float32)[:, None] / 16.0  # (n, 1, 8, 8)
    images = torch.nn.functional.interpolate(images, size=16, mode="bilinear", align_corners=False)
    return (images - 0.5) / 0.5


def text_batch(n: int = 8, length: int = 64) -> dict:
    from pydoc_data.topics import topics  # Python's own help texts

    text = " ".join(topics[k] for k in sorted(topics)).encode("utf-8")
    ids = torch.tensor(list(text[: n * length]), dtype=torch.long).view(n, length) + 3  # ids 0..2: bos/pad/eos
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def audio_batch(n: int = 4, seconds: float = 0.5, rate: int = 16000) -> dict:
    t = torch.arange(int(seconds * rate)) / rate
    freqs = torch.linspace(220, 880, n)[:, None]
    waves = torch.sin(2 * math.pi * freqs * t) * 0.5
    mask = torch.ones_like(waves, dtype=torch.long)
    mask[-1, waves.shape[1] // 2 :] = 0  # the last clip is half padding
    return {"input_values": waves * mask, "attention_mask": mask}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/quickstart")
    args = parser.parse_args()
    torch.manual_seed(0)
    configs = {
        "vision": (d2v.Data2VecConfig(modality="vision", image_size=16, patch_size=4, num_channels=1, **TINY),
                   {"pixel_values": digits_batch()}),
        "text": (d2v.Data2VecConfig(modality="text", vocab_size=259, max_position_embeddings=130, **TINY),
                 text_batch()),
        "audio": (d2v.Data2VecConfig(modality="audio", conv_dim=[64] * 4, conv_stride=[5, 2, 2, 2],
                                     conv_kernel=[10, 3, 3, 2], num_conv_pos_embedding_groups=4, **TINY),
                  audio_batch()),
    }
    for modality, (config, batch) in configs.items():
        model = AutoModel.from_config(config).eval()
        start = time.perf_counter()
        with torch.no_grad():
            out = model(**batch, output_hidden_states=True)
        seconds = time.perf_counter() - start
        folder = f"{args.output_dir}/{modality}"
        model.save_pretrained(folder)
        reloaded = AutoModel.from_pretrained(folder).eval()
        with torch.no_grad():
            same = torch.equal(reloaded(**batch).last_hidden_state, out.last_hidden_state)
        print(
            f"{modality:6s} {type(model).__name__:20s} input {tuple(next(iter(batch.values())).shape)} -> "
            f"last_hidden_state {tuple(out.last_hidden_state.shape)}, {len(out.hidden_states)} hidden states, "
            f"{seconds * 1000:.0f} ms; saved to {folder}; AutoModel reload -> {type(reloaded).__name__}, "
            f"identical outputs: {same}"
        )
        if not same:
            raise SystemExit(f"{modality}: reloaded model gives different outputs")


if __name__ == "__main__":
    main()
