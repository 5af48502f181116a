"""Quickstart: data2vec pretraining steps for each modality on built-in offline data, then the student saved and
reloaded with AutoModel.

    python examples/quickstart.py [--output_dir runs/quickstart] [--steps 20]

Vision uses scikit-learn's digits images, text (byte-level) English help text that ships with Python
(`pydoc_data`), audio words said by synthetic voices. For each, `DataCollatorForData2VecPretraining` draws the modality's
masks and `Data2VecForPreTraining` (student + regression head + EMA teacher) takes a few AdamW steps. The student
is saved with `save_pretrained` (safetensors) and loaded back with `transformers.AutoModel`, which returns the
right modality's class and the same outputs.
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


def examples_of(modality: str, batch: dict) -> list[dict]:
    """The built-in batch as unbatched examples, as a dataset would give them to the collator."""
    if modality == "vision":
        return [{"pixel_values": image} for image in batch["pixel_values"]]
    if modality == "text":  # <s> text </s>
        return [{"input_ids": [0, *ids.tolist(), 2]} for ids in batch["input_ids"]]
    return [{"input_values": wave[: int(n)]} for wave, n in zip(batch["input_values"], batch["attention_mask"].sum(1))]


def pretrain(config, examples: list[dict], steps: int) -> d2v.Data2VecForPreTraining:
    """A few data2vec steps: masks from the collator, loss on the masked positions, then one EMA teacher step."""
    model = d2v.Data2VecForPreTraining(config).train()
    collator = d2v.DataCollatorForData2VecPretraining(config, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(steps):
        out = model(**collator(examples))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        decay = model.update_teacher()
        if step in (0, steps - 1):
            print(f"  {config.modality:6s} step {step + 1:3d}: loss {out.loss.item():.4f}  target_var "
                  f"{out.target_var.item():.3f}  pred_var {out.pred_var.item():.3f}  masked "
                  f"{out.masked_fraction.item():.0%}  ema_decay {decay:.4f}")
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="runs/quickstart")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    configs = {
        # a 4x4 grid: blocks of >= 2 patches; short runs want a fast teacher (EMA 0.99 -> 0.999)
        "vision": (d2v.Data2VecConfig(modality="vision", image_size=16, patch_size=4, num_channels=1, mask_length=2,
                                      ema_decay=0.99, ema_end_decay=0.999, ema_anneal_end_step=1000, **TINY),
                   {"pixel_values": digits_batch()}),
        "text": (d2v.Data2VecConfig(modality="text", vocab_size=260, max_position_embeddings=130,
                                    ema_decay=0.99, ema_end_decay=0.999, ema_anneal_end_step=1000, **TINY),
                 text_batch()),
        "audio": (d2v.Data2VecConfig(modality="audio", conv_dim=[64] * 4, conv_stride=[5, 2, 2, 2],
                                     conv_kernel=[10, 3, 3, 2], num_conv_pos_embedding_groups=4, ema_decay=0.99,
                                     ema_end_decay=0.999, ema_anneal_end_step=1000, **TINY),
                  audio_batch()),
    }
    for modality, (config, batch) in configs.items():
        model = pretrain(config, examples_of(modality, batch), args.steps).data2vec
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
