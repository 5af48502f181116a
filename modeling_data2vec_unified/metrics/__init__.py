"""Offline metrics for fine-tuning: `evaluate` modules shipped with the package, and ready `compute_metrics`.

`evaluate.load("accuracy")` fetches a script from the Hub; `load("accuracy")` here loads the copy in this folder
(accuracy, f1, wer), so evaluation works with HF_HUB_OFFLINE=1. The `compute_metrics` functions take what
`transformers.Trainer` passes (an `EvalPrediction`, or a (predictions, label_ids) tuple):

    trainer = Trainer(..., compute_metrics=metrics.accuracy)              # sequence classification
    trainer = Trainer(..., compute_metrics=metrics.token_accuracy)        # token classification (-100 ignored)
    trainer = Trainer(..., compute_metrics=metrics.wer(processor))        # CTC speech recognition
    trainer = Trainer(..., compute_metrics=metrics.wer(processor, cer=True))   # ... and the character error rate

Label convention: -100 marks a position without a label (transformers' ignore index); it is left out of every score.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

METRICS = ("accuracy", "f1", "wer")
IGNORE_INDEX = -100  # transformers' label for "no label here" (padding, special tokens, non-first sub-words)


def metric_path(name: str) -> str:
    """The path of the shipped `evaluate` module file for metric `name`."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; the metrics shipped with modeling_data2vec_unified are {METRICS} "
                         f"(for others, evaluate.load a local script path)")
    return str(Path(__file__).with_name(f"{name}.py"))


def load(name: str, **kwargs):
    """`evaluate.load` of the shipped module for metric `name` ("accuracy", "f1" or "wer"); nothing is downloaded.
    `kwargs` go to `evaluate.load` (e.g. `keep_in_memory=True`, `experiment_id=...`)."""
    import evaluate  # imports transformers' pipelines: only when a metric is used

    return evaluate.load(metric_path(name), **kwargs)


@functools.cache
def _cached(name: str):
    """One in-memory module per metric and process, for the `compute_metrics` functions (in memory: no cache files
    for distributed ranks to contend over)."""
    return load(name, keep_in_memory=True)


def _unpack(eval_pred) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, label_ids) as arrays, from an `EvalPrediction` or a tuple; of a tuple of model outputs (logits
    plus hidden states, ...) or of label arrays, the first."""
    if hasattr(eval_pred, "predictions"):
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
    else:
        predictions, labels = eval_pred[0], eval_pred[1]
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    if isinstance(labels, (tuple, list)):
        labels = labels[0]
    if labels is None:
        raise ValueError("compute_metrics needs labels; the eval dataset has none (give it a `labels` column, or set "
                         "TrainingArguments(label_names=[...]))")
    return np.asarray(predictions), np.asarray(labels)


def _class_ids(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Predicted class ids: the argmax over the last axis of logits, or `predictions` itself when it already holds ids
    (a `preprocess_logits_for_metrics` that took the argmax)."""
    pred_ids = predictions.argmax(-1) if predictions.ndim == labels.ndim + 1 else predictions
    if pred_ids.shape != labels.shape:
        raise ValueError(f"predictions must be logits (labels' shape + (num_labels,)) or class ids (labels' shape); "
                         f"got predictions {predictions.shape} and labels {labels.shape}")
    return pred_ids


def _labelled(eval_pred) -> tuple[np.ndarray, np.ndarray]:
    """Flat (predicted ids, labels) of the positions that have a label (label != -100)."""
    predictions, labels = _unpack(eval_pred)
    pred_ids = _class_ids(predictions, labels)
    keep = labels != IGNORE_INDEX
    return pred_ids[keep].reshape(-1), labels[keep].reshape(-1)


def accuracy(eval_pred) -> dict[str, float]:
    """`compute_metrics` for classification: {"accuracy"} of the argmax of the logits."""
    pred_ids, labels = _labelled(eval_pred)
    return _cached("accuracy").compute(predictions=pred_ids, references=labels)


def f1(eval_pred) -> dict[str, float]:
    """`compute_metrics` for classification: {"f1": macro-F1 over the classes that occur, "accuracy"}."""
    pred_ids, labels = _labelled(eval_pred)
    return {**_cached("f1").compute(predictions=pred_ids, references=labels, average="macro"),
            **_cached("accuracy").compute(predictions=pred_ids, references=labels)}


def token_accuracy(eval_pred) -> dict[str, float]:
    """`compute_metrics` for token classification: {"accuracy"} over the tokens whose label is not -100 (logits
    (batch, seq, num_labels), labels (batch, seq))."""
    return accuracy(eval_pred)


def multi_label(eval_pred, threshold: float = 0.0) -> dict[str, float]:
    """`compute_metrics` for multi-label classification (logits and 0/1 labels, both (batch, num_labels)): a label
    is predicted where its logit exceeds `threshold` (0.0: a sigmoid probability above 0.5). Returns {"f1": micro-F1
    over every (example, label) entry, "accuracy": the fraction of examples with every label right (exact match)}.
    For another threshold: `functools.partial(multi_label, threshold=...)`."""
    logits, labels = _unpack(eval_pred)
    if logits.shape != labels.shape:
        raise ValueError(f"multi-label logits and labels must both be (batch, num_labels); got {logits.shape} and "
                         f"{labels.shape}")
    predicted = (logits > threshold).astype(np.int64)
    labels = (labels > 0.5).astype(np.int64)  # float 0./1. targets, as BCEWithLogitsLoss takes them
    # micro-F1 over the label matrix = binary F1 of its flattened entries (TP, FP, FN summed over labels)
    scores = _cached("f1").compute(predictions=predicted.reshape(-1), references=labels.reshape(-1), average="binary")
    exact = (predicted == labels).reshape(len(labels), -1).all(-1)
    return {**scores, "accuracy": float(exact.mean())}


def _batch_decode(processor, ids: np.ndarray, **kwargs) -> list[str]:
    """`processor.batch_decode(ids, **kwargs)`, retried without `kwargs` for a processor that does not take them."""
    try:
        return processor.batch_decode(ids, **kwargs)
    except TypeError:
        if not kwargs:
            raise
        return processor.batch_decode(ids)


def characters(text: str) -> str:
    """`text` as space-separated characters, each run of white space one "␣" character: scored with the WER module
    this gives the character error rate (CER), the gaps between words counted as characters, as jiwer counts them."""
    return " ".join("␣".join(text.split()))


def wer(processor, cer: bool = False, frames=None) -> Callable[[object], dict[str, float]]:
    """A `compute_metrics` for CTC speech recognition that returns {"wer"} (and {"cer"}, the character error rate,
    with `cer=True`): greedy (argmax) ids of the logits, decoded by `processor` (a `Wav2Vec2Processor` or
    `Wav2Vec2CTCTokenizer`), against the labels with -100 read as padding. References are decoded with
    `group_tokens=False`, so that a doubled letter ("ll") in a label is not merged as CTC repeats are.

    Frames that are padding are read as blanks (the pad token): those Trainer pads between batches (logits all -100)
    and, given `frames` (each eval example's real number of output frames, in order, e.g.
    `config.num_audio_frames(num_samples)`), those past a shorter clip's end within a batch, where the model's
    output is not trained and would otherwise be decoded as characters."""
    tokenizer = getattr(processor, "tokenizer", processor)
    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        raise ValueError("the processor's tokenizer has no pad_token_id, which stands in for -100 in the labels; "
                         "give it a pad token (the CTC blank, e.g. '<pad>')")

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits, label_ids = _unpack(eval_pred)
        pred_ids = logits.argmax(-1) if logits.ndim == 3 else logits  # (batch, frames)
        padding = (logits == IGNORE_INDEX).all(-1) if logits.ndim == 3 else logits == IGNORE_INDEX
        if frames is not None:
            if len(frames) != len(pred_ids):
                raise ValueError(f"frames gives {len(frames)} lengths for {len(pred_ids)} predictions: give one per "
                                 f"eval example, in order")
            padding |= np.arange(pred_ids.shape[1])[None, :] >= np.asarray(frames)[:, None]
        pred_ids = np.where(padding, pad_token_id, pred_ids)
        label_ids = np.where(label_ids == IGNORE_INDEX, pad_token_id, label_ids)  # (batch, label length)
        predictions = _batch_decode(processor, pred_ids)
        references = _batch_decode(processor, label_ids, group_tokens=False)
        scores = _cached("wer").compute(predictions=predictions, references=references)
        if cer:
            scores["cer"] = _cached("wer").compute(predictions=[characters(p) for p in predictions],
                                                   references=[characters(r) for r in references])["wer"]
        return scores

    return compute_metrics


__all__ = ["METRICS", "accuracy", "characters", "f1", "load", "metric_path", "multi_label", "token_accuracy", "wer"]
