"""Linear probes: how much a frozen encoder's features say about labels it never saw.

`linear_probe` fits scikit-learn's StandardScaler + LogisticRegression on pooled features of a frozen model (train
examples) and returns held-out accuracy (test examples). data2vec's trainer runs it after pretraining (and every
`--probe_steps` during it), next to the same architecture at random initialisation and a raw-input reference
(`raw_input_probe`), so a run shows what it learned. The same code serves the three modalities; only the pooling over
positions and the raw reference depend on the modality:

- pooling (`POOLING`): vision "mean" over patches (measured on the digits: ../docs/benchmarks.md); text and audio
  "mean_std", the mean and the standard deviation over time, concatenated. Their targets are instance-normalised over
  time (audio's recipe, tiny text's): each channel's per-example mean over time is removed from what the student learns
  to predict, so a mean alone reads what the objective ignores; how each channel varies along the clip / text is what
  it predicts, and the std over time keeps it.
- raw reference (`raw_input_features`): vision the pixels, audio a log-power spectrogram's mean and std over time, text
  TF-IDF of the token ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .masking import DataCollatorForData2VecPretraining
from .modalities import MODALITY_INFO

POOLING = {name: info.pooling for name, info in MODALITY_INFO.items()}  # why: the module's docstring
POOLINGS = ("mean", "mean_std")
RAW_FEATURES = {name: info.raw_features for name, info in MODALITY_INFO.items()}
SPECTROGRAM_WINDOW, SPECTROGRAM_HOP = 0.025, 0.010  # seconds


def pool(hidden: torch.Tensor, real: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, D) hidden states over the real positions of `real` (B, T; 1 real, 0 padding or CLS) -> (B, D) for "mean",
    (B, 2D) for "mean_std": the mean, then the (biased) standard deviation over the real positions."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
    weights = real[..., None].to(hidden.dtype)  # (B, T, 1)
    count = weights.sum(1)  # (B, 1)
    mean = (hidden * weights).sum(1) / count  # (B, D)
    if pooling == "mean":
        return mean
    var = ((hidden - mean[:, None]).square() * weights).sum(1) / count  # (B, D)
    return torch.cat([mean, var.sqrt()], dim=-1)  # (B, 2D)


def real_positions(config, batch: dict, T: int, device) -> torch.Tensor:
    """(B, T) 1 where a position holds the input (vision: patches, not the CLS token; text and audio: not padding)."""
    if config.modality == "vision":
        real = torch.ones(len(batch["pixel_values"]), T, device=device)
        real[:, 0] = 0  # not the CLS token
        return real
    if config.modality == "audio":
        samples = batch["attention_mask"].sum(1)
        return (torch.arange(T, device=device) < config.num_audio_frames(samples)[:, None]).float()
    return batch["attention_mask"].float()


@torch.no_grad()
def extract_features(model, examples: Sequence[dict], top_layers: Sequence[int] = (2,), batch_size: int = 64,
                     pooling: str | None = None) -> dict[int, np.ndarray]:
    """Features of a frozen base model (`Data2VecTextModel` / `...VisionModel` / `...AudioModel`) for each k in
    `top_layers`: the mean of its top k hidden states, pooled over real positions (`pool`; vision: patches, not the
    CLS token; text and audio: skipping padding) with `pooling` (None: `POOLING` of the modality). One forward pass per
    batch serves every k. Eval mode inside, the model's mode restored after; no random number is drawn."""
    config = model.config
    pooling = pooling or POOLING[config.modality]
    collator = DataCollatorForData2VecPretraining(config, audio_crop="pad")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    features = {k: [] for k in top_layers}
    for start in range(0, len(examples), batch_size):
        batch = collator.collate_inputs(examples[start : start + batch_size])
        batch = {k: v.to(device) for k, v in batch.items()}
        states = model(**batch, output_hidden_states=True).hidden_states
        real = real_positions(config, batch, states[-1].shape[1], device)
        for k in top_layers:
            hidden = torch.stack(states[-k:]).mean(0).float()  # (B, T, D)
            features[k].append(pool(hidden, real, pooling).cpu().numpy())
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


def _labels(examples: Sequence[dict]) -> np.ndarray:
    return np.array([int(e["labels"]) for e in examples])


def linear_probe(model, train: Sequence[dict], test: Sequence[dict], top_layers: Sequence[int] = (2,),
                 pooling: str | None = None) -> dict:
    """Held-out accuracy of a linear probe on `model`'s frozen features, for each k in `top_layers` (features: the
    mean of the top k layers, pooled as `extract_features`); examples carry `labels`. Returns {k: accuracy}."""
    train_x, test_x = (extract_features(model, split, top_layers, pooling=pooling) for split in (train, test))
    return {k: probe_accuracy(train_x[k], _labels(train), test_x[k], _labels(test)) for k in top_layers}


def describe_features(modality: str, top_layers: Sequence[int] = (2, 1), pooling: str | None = None) -> str:
    """What `extract_features` pooled, in words (probe.json's "features")."""
    pooling = pooling or POOLING[modality]
    how = ("mean-pooled over patches (not the CLS token)" if modality == "vision" and pooling == "mean"
           else "mean-pooled" if pooling == "mean"
           else "pooled as the mean and the std over time (concatenated), padding excluded")
    first, *others = top_layers
    text = f"mean of the top {first} layers' outputs, {how}"
    return text + "".join("; *_last_layer: the last layer only" if k == 1 else f"; top {k} layers" for k in others)


def spectrogram_features(wave: np.ndarray, sampling_rate: int) -> np.ndarray:
    """A clip's log-power spectrogram (SPECTROGRAM_WINDOW Hann windows every SPECTROGRAM_HOP), summarised as its mean
    and std over time per frequency bin: (2 * (window // 2 + 1),)."""
    window, hop = int(SPECTROGRAM_WINDOW * sampling_rate), int(SPECTROGRAM_HOP * sampling_rate)
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    wave = np.pad(wave, (0, max(window - len(wave), 0)))
    frames = np.lib.stride_tricks.sliding_window_view(wave, window)[::hop] * np.hanning(window)  # (frames, window)
    power = np.log(np.abs(np.fft.rfft(frames, axis=-1)) ** 2 + 1e-10)  # (frames, window // 2 + 1)
    return np.concatenate([power.mean(0), power.std(0)])


def _tfidf(train_ids: list[np.ndarray], test_ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """TF-IDF (scikit-learn's TfidfTransformer) of bags of token ids, over the ids the training texts hold."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfTransformer

    vocab = np.unique(np.concatenate(train_ids))

    def counts(split):
        rows = [np.searchsorted(vocab, ids[np.isin(ids, vocab)]) for ids in split]
        row_index = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        data = np.ones(len(row_index))
        return csr_matrix((data, (row_index, np.concatenate(rows))), shape=(len(rows), len(vocab)))  # summed

    tfidf = TfidfTransformer().fit(counts(train_ids))
    return tuple(tfidf.transform(counts(split)).toarray() for split in (train_ids, test_ids))


def raw_input_features(train: Sequence[dict], test: Sequence[dict], modality: str,
                       sampling_rate: int = 16000) -> tuple[np.ndarray, np.ndarray] | None:
    """(train, test) raw-input features of `RAW_FEATURES[modality]`; None for images of several shapes."""
    if modality == "text":
        return _tfidf(*([np.asarray(e["input_ids"]).reshape(-1) for e in split] for split in (train, test)))
    if modality == "audio":
        return tuple(np.stack([spectrogram_features(e["input_values"], sampling_rate) for e in split])
                     for split in (train, test))
    arrays = [[np.asarray(e["pixel_values"], dtype=np.float32) for e in split] for split in (train, test)]
    if len({a.shape for split in arrays for a in split}) != 1:
        return None
    return tuple(np.stack([a.reshape(-1) for a in split]) for split in arrays)


def raw_input_probe(train: Sequence[dict], test: Sequence[dict], modality: str = "vision",
                    sampling_rate: int = 16000) -> float | None:
    """The probe on raw-input features (`raw_input_features`), for reference; None where there are none."""
    features = raw_input_features(train, test, modality, sampling_rate)
    if features is None:
        return None
    return probe_accuracy(features[0], _labels(train), features[1], _labels(test))


__all__ = [
    "POOLING",
    "describe_features",
    "extract_features",
    "linear_probe",
    "pool",
    "probe_accuracy",
    "raw_input_features",
    "raw_input_probe",
    "spectrogram_features",
]
