"""Linear probes: how much a frozen encoder's features say about labels it never saw.

`linear_probe` fits scikit-learn's StandardScaler + LogisticRegression on mean-pooled features of a frozen
model (train examples) and returns held-out accuracy (test examples). data2vec's trainer runs it after
pretraining, next to the same architecture at random initialisation and raw inputs, so a run shows what it learned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .masking import DataCollatorForData2VecPretraining


@torch.no_grad()
def extract_features(model, examples: Sequence[dict], top_layers: Sequence[int] = (2,),
                     batch_size: int = 64) -> dict[int, np.ndarray]:
    """(N, D) features of a frozen base model (`Data2VecTextModel` / `...VisionModel` / `...AudioModel`) for each
    k in `top_layers`: the mean of its top k hidden states, mean-pooled over real positions (vision: patches, not the
    CLS token; text and audio: skipping padding). One forward pass per batch serves every k."""
    config = model.config
    collator = DataCollatorForData2VecPretraining(config, audio_crop="pad")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    features = {k: [] for k in top_layers}
    for start in range(0, len(examples), batch_size):
        batch = collator.collate_inputs(examples[start : start + batch_size])
        batch = {k: v.to(device) for k, v in batch.items()}
        states = model(**batch, output_hidden_states=True).hidden_states
        T = states[-1].shape[1]
        if config.modality == "vision":
            real = torch.ones(len(states[-1]), T, device=device)
            real[:, 0] = 0  # not the CLS token
        elif config.modality == "audio":
            samples = batch["attention_mask"].sum(1)
            real = (torch.arange(T, device=device) < config.num_audio_frames(samples)[:, None]).float()
        else:
            real = batch["attention_mask"].float()
        for k in top_layers:
            hidden = torch.stack(states[-k:]).mean(0).float()  # (B, T, D)
            pooled = (hidden * real[..., None]).sum(1) / real.sum(1, keepdim=True)  # (B, D)
            features[k].append(pooled.cpu().numpy())
    model.train(was_training)
    return {k: np.concatenate(v) for k, v in features.items()}


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Held-out accuracy of a logistic-regression probe on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))


def linear_probe(model, train: Sequence[dict], test: Sequence[dict], top_layers: Sequence[int] = (2,)) -> dict:
    """Held-out accuracy of a linear probe on `model`'s frozen features, for each k in `top_layers` (features: the
    mean of the top k layers, mean-pooled); examples carry `labels`. Returns {k: accuracy}."""
    labels = [np.array([int(e["labels"]) for e in split]) for split in (train, test)]
    train_x, test_x = (extract_features(model, split, top_layers) for split in (train, test))
    return {k: probe_accuracy(train_x[k], labels[0], test_x[k], labels[1]) for k in top_layers}


def raw_input_probe(train: Sequence[dict], test: Sequence[dict], key: str = "pixel_values") -> float | None:
    """The probe on the flattened raw inputs, when every example has the same shape (images); else None."""
    arrays = [[np.asarray(e[key], dtype=np.float32) for e in split] for split in (train, test)]
    if len({a.shape for split in arrays for a in split}) != 1:
        return None
    flat = [np.stack([a.reshape(-1) for a in split]) for split in arrays]
    labels = [np.array([int(e["labels"]) for e in split]) for split in (train, test)]
    return probe_accuracy(flat[0], labels[0], flat[1], labels[1])


__all__ = ["extract_features", "linear_probe", "probe_accuracy", "raw_input_probe"]
