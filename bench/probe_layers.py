"""Where in a pretrained encoder the probe's information sits: the linear probe of `modeling_data2vec_unified.probe` on
each layer's output alone, on the mean of the top 2 / top 3 / all layers, each pooled as "mean" and as "mean_std", for
a saved run and for the same architecture at a random initialisation (torch seed `--seed`), on the run's built-in
probe data.

    data2vec-pretrain --modality text --output_dir runs/t --no_probe
    python bench/probe_layers.py runs/t            # one line per (pooling, layers): pretrained, random init, difference

Used for the tiny-recipe sweep of docs/benchmarks.md ("Tiny recipes against random initialisation"). Only for the
built-in data (vision digits, text docstrings, audio sounds). L0 is the front end's output (the embeddings).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from transformers import AutoModel

import modeling_data2vec_unified as d2v
from modeling_data2vec_unified.masking import DataCollatorForData2VecPretraining
from modeling_data2vec_unified.probe import POOLINGS, real_positions, pool, probe_accuracy


@torch.no_grad()
def layer_features(model, examples: list[dict], batch_size: int = 64) -> dict[str, np.ndarray]:
    """{"<pooling>@<layers>": (N, D or 2D)} for single layers L0..Ln, the top 2 and top 3 layers and all of them."""
    config = model.config
    collator = DataCollatorForData2VecPretraining(config, audio_crop="pad")
    out: dict[str, list] = {}
    for start in range(0, len(examples), batch_size):
        batch = collator.collate_inputs(examples[start : start + batch_size])
        states = model(**batch, output_hidden_states=True).hidden_states
        real = real_positions(config, batch, states[-1].shape[1], "cpu")
        views = [(f"L{i}", h) for i, h in enumerate(states)]
        views += [(f"top{k}", torch.stack(states[-k:]).mean(0)) for k in (2, 3)] + [("all", torch.stack(states).mean(0))]
        for name, hidden in views:
            for pooling in POOLINGS:
                out.setdefault(f"{pooling}@{name}", []).append(pool(hidden.float(), real, pooling).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a data2vec-pretrain output_dir (built-in data)")
    parser.add_argument("--seed", type=int, default=0, help="the built-in data's seed (audio) and the random init's")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = AutoModel.from_pretrained(args.run).eval()
    config = model.config
    processor = args.run if config.modality == "text" else None  # the run's own tokenizer
    data = d2v.load_pretraining_data(config, "builtin", processor=processor, seed=args.seed)
    torch.manual_seed(args.seed)
    random_init = type(model)(config).eval()
    train, test = data.probe.train, data.probe.test
    y_train, y_test = (np.array([int(e["labels"]) for e in split]) for split in (train, test))
    scores = {}
    for name, encoder in (("pretrained", model), ("random_init", random_init)):
        a, b = layer_features(encoder, train), layer_features(encoder, test)
        scores[name] = {k: 100 * probe_accuracy(a[k], y_train, b[k], y_test) for k in a}
    print(f"{'features':16s} {'pretrained':>10s} {'random init':>11s} {'difference':>10s}")
    for k, pretrained in scores["pretrained"].items():
        rand = scores["random_init"][k]
        print(f"{k:16s} {pretrained:10.1f} {rand:11.1f} {pretrained - rand:+10.1f}")


if __name__ == "__main__":
    main()
