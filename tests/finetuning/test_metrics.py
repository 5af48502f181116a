"""The shipped metrics against independent references: scikit-learn for accuracy and F1, a hand count and a
separately written edit distance for WER; the `compute_metrics` functions on `EvalPrediction`s; loading offline."""

import functools
import json
import socket

import evaluate
import numpy as np
import pytest
from modeling_data2vec_unified import metrics
from sklearn.metrics import accuracy_score, f1_score
from transformers import EvalPrediction, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

CHARS = "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def accuracy_metric():
    return metrics.load("accuracy", keep_in_memory=True)


@pytest.fixture(scope="module")
def f1_metric():
    return metrics.load("f1", keep_in_memory=True)


@pytest.fixture(scope="module")
def wer_metric():
    return metrics.load("wer", keep_in_memory=True)


@pytest.fixture
def tokenizer(tmp_path):
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(CHARS)}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    return Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                word_delimiter_token="|")


def test_load_offline(monkeypatch):
    """Every shipped metric loads and computes with the Hub switched off and no network at all."""
    def no_network(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    metrics._cached.cache_clear()
    for name in metrics.METRICS:
        assert isinstance(metrics.load(name), evaluate.Metric)
    assert metrics.accuracy(EvalPrediction(np.eye(3), np.array([0, 1, 1]))) == pytest.approx({"accuracy": 2 / 3})
    assert metrics._cached("accuracy") is metrics._cached("accuracy")  # loaded once per process


def test_two_loads_in_one_process():
    first, second = metrics.load("accuracy"), metrics.load("accuracy")
    assert first.compute(predictions=[1, 1], references=[1, 0])["accuracy"] == 0.5
    first.add_batch(predictions=[1, 0], references=[1, 1])
    assert second.compute(predictions=[1, 1, 1], references=[1, 1, 1])["accuracy"] == 1.0
    assert first.compute()["accuracy"] == 0.5


def test_unknown_metric():
    with pytest.raises(ValueError, match=r"unknown metric 'bleu'.*'accuracy', 'f1', 'wer'"):
        metrics.load("bleu")


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_accuracy_matches_sklearn(accuracy_metric, normalize, weighted):
    rng = np.random.default_rng(0)
    preds, refs = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    weights = rng.random(200) if weighted else None
    got = accuracy_metric.compute(predictions=preds, references=refs, normalize=normalize, sample_weight=weights)
    assert got["accuracy"] == pytest.approx(accuracy_score(refs, preds, normalize=normalize, sample_weight=weights))


@pytest.mark.parametrize("average", ["binary", "micro", "macro", "weighted"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_matches_sklearn(f1_metric, average, seed):
    rng = np.random.default_rng(seed)
    num_classes = 2 if average == "binary" else 5
    preds, refs = rng.integers(0, num_classes, 100), rng.integers(0, num_classes, 100)
    weights = rng.random(100) if seed == 2 else None
    got = f1_metric.compute(predictions=preds, references=refs, average=average, sample_weight=weights)
    want = f1_score(refs, preds, average=average, sample_weight=weights, zero_division=0)
    assert got["f1"] == pytest.approx(want)


@pytest.mark.parametrize("average", ["micro", "macro", "weighted"])
def test_f1_zero_division(f1_metric, average):
    """Class 3 is never predicted and class 4 never occurs: both score 0.0, inside the averages; class 2 is predicted
    but never true (precision 0, recall undefined)."""
    preds = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    refs = np.array([0, 1, 1, 1, 0, 3, 3, 0])
    labels = [0, 1, 2, 3, 4]
    for kwargs in ({}, {"labels": labels}, {"labels": [1, 3]}):
        got = f1_metric.compute(predictions=preds, references=refs, average=average, **kwargs)
        assert got["f1"] == pytest.approx(f1_score(refs, preds, average=average, zero_division=0, **kwargs))
    assert f1_metric.compute(predictions=[0, 1], references=[1, 0], average=average)["f1"] == 0.0


def test_f1_binary_edges(f1_metric):
    refs, preds = np.array([0, 0, 1, 1, 0]), np.array([0, 1, 1, 0, 0])
    for pos_label in (0, 1):
        got = f1_metric.compute(predictions=preds, references=refs, pos_label=pos_label)["f1"]
        assert got == pytest.approx(f1_score(refs, preds, pos_label=pos_label))
    # only the negative class occurs: no positives to find, 0.0 as scikit-learn's zero_division=0
    assert f1_metric.compute(predictions=[0, 0], references=[0, 0])["f1"] == 0.0
    with pytest.raises(ValueError, match="average='micro', 'macro' or 'weighted'"):
        f1_metric.compute(predictions=[0, 1, 2], references=[0, 1, 2])
    with pytest.raises(ValueError, match="pos_label=1 is not one of the classes"):
        f1_metric.compute(predictions=[0, 2], references=[2, 0])


def test_wer_by_hand(wer_metric):
    # a deleted word: 1 error / 4 reference words
    assert wer_metric.compute(predictions=["the cat sat"], references=["the cat sat down"])["wer"] == 0.25
    # an inserted word: 1 error / 3 reference words
    got = wer_metric.compute(predictions=["the cat sat down"], references=["the cat sat"])
    assert got["wer"] == pytest.approx(1 / 3)
    # corpus WER: (1 substitution + 0 + 2 insertions) / (2 + 1 + 1) reference words, not a mean of sentence rates
    got = wer_metric.compute(predictions=["hello word", "yes", "a b c"], references=["hello world", "yes", "b"])
    assert got["wer"] == pytest.approx(3 / 4)
    assert wer_metric.compute(predictions=["", "x  y"], references=["a b", " x y "])["wer"] == pytest.approx(2 / 4)


def _edit_distance(a: tuple, b: tuple) -> int:
    """Levenshtein distance by its recursive definition over suffixes, memoised (independent of the metric's
    row-by-row prefix table)."""
    @functools.cache
    def d(i: int, j: int) -> int:
        if i == len(a) or j == len(b):
            return len(a) - i + len(b) - j
        return min(d(i + 1, j) + 1, d(i, j + 1) + 1, d(i + 1, j + 1) + (a[i] != b[j]))

    return d(0, 0)


def test_wer_matches_brute_force(wer_metric):
    rng = np.random.default_rng(0)
    words = ["a", "b", "c", "dd"]
    predictions = [" ".join(rng.choice(words, rng.integers(0, 7))) for _ in range(40)]
    references = [" ".join(rng.choice(words, rng.integers(1, 7))) for _ in range(40)]
    errors = sum(_edit_distance(tuple(p.split()), tuple(r.split())) for p, r in zip(predictions, references))
    total = sum(len(r.split()) for r in references)
    assert wer_metric.compute(predictions=predictions, references=references)["wer"] == pytest.approx(errors / total)


def test_wer_empty_reference(wer_metric):
    with pytest.raises(ValueError, match=r"reference 1 is empty.*Filter out examples with empty transcripts"):
        wer_metric.compute(predictions=["a", "b"], references=["a", "  "])


def _logits(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Logits whose argmax is `ids`, with noise so nothing ties."""
    noise = np.random.default_rng(0).random((*ids.shape, num_classes)) * 0.5
    return noise + 2 * np.eye(num_classes)[ids]


def test_classification_compute_metrics():
    rng = np.random.default_rng(0)
    preds, refs = rng.integers(0, 4, 64), rng.integers(0, 4, 64)
    logits = _logits(preds, 4)
    want_acc, want_f1 = accuracy_score(refs, preds), f1_score(refs, preds, average="macro", zero_division=0)
    assert metrics.accuracy(EvalPrediction(logits, refs)) == pytest.approx({"accuracy": want_acc})
    assert metrics.accuracy((logits, refs)) == pytest.approx({"accuracy": want_acc})  # a plain tuple
    assert metrics.accuracy(EvalPrediction((logits, logits[:, :2]), refs)) == pytest.approx({"accuracy": want_acc})
    assert metrics.accuracy(EvalPrediction(preds, refs)) == pytest.approx({"accuracy": want_acc})  # ids already
    assert metrics.f1(EvalPrediction(logits, refs)) == pytest.approx({"f1": want_f1, "accuracy": want_acc})
    with pytest.raises(ValueError, match="predictions must be logits"):
        metrics.accuracy(EvalPrediction(logits[:10], refs))


def test_token_accuracy_ignores_minus_100():
    preds = np.array([[1, 2, 0, 0], [2, 2, 1, 0]])
    refs = np.array([[1, 0, -100, -100], [-100, 2, 1, -100]])
    # labelled positions: (1,1) right, (2,0) wrong, (2,2) right, (1,1) right -> 3 of 4
    assert metrics.token_accuracy(EvalPrediction(_logits(preds, 3), refs)) == pytest.approx({"accuracy": 0.75})


def test_multi_label():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(32, 3)), rng.integers(0, 2, (32, 3)).astype(np.float32)
    predicted = (logits > 0).astype(int)
    want = {"f1": f1_score(labels, predicted, average="micro"), "accuracy": accuracy_score(labels, predicted)}
    assert metrics.multi_label(EvalPrediction(logits, labels)) == pytest.approx(want)
    strict = (logits > 1).astype(int)
    want = {"f1": f1_score(labels, strict, average="micro"), "accuracy": accuracy_score(labels, strict)}
    assert functools.partial(metrics.multi_label, threshold=1.0)(EvalPrediction(logits, labels)) == pytest.approx(want)


def _frame_ids(tokenizer, frames: str) -> list[int]:
    """Token ids of CTC frames written one character each, "_" for the blank (the pad token)."""
    return [tokenizer.pad_token_id if c == "_" else tokenizer.convert_tokens_to_ids(c) for c in frames]


def test_wer_compute_metrics(tokenizer):
    # CTC frames: repeats merge, the blank separates a real double letter, | delimits words
    frames = [_frame_ids(tokenizer, f) for f in ("hh_ell_lloo|wworrld", "a|bb_cc____________")]
    logits = _logits(np.array(frames), tokenizer.vocab_size)  # (batch, frames, vocab)
    # labels: "hello world" (with its double l) and "ab c", padded with -100 by the collator
    refs = [tokenizer("hello world").input_ids, tokenizer("ab c").input_ids]
    labels = np.full((2, max(map(len, refs))), -100)
    for row, ids in zip(labels, refs):
        row[: len(ids)] = ids
    # predictions "hello world" and "a bc": (0 + 2 substitutions) errors over 2 + 2 reference words
    want = {"wer": 2 / 4}
    assert metrics.wer(tokenizer)(EvalPrediction(logits, labels)) == pytest.approx(want)
    processor = Wav2Vec2Processor(feature_extractor=Wav2Vec2FeatureExtractor(), tokenizer=tokenizer)
    assert metrics.wer(processor)(EvalPrediction((logits,), labels)) == pytest.approx(want)

    class PlainDecoder:
        """A processor whose batch_decode takes no group_tokens: references then decode like predictions."""
        pad_token_id = tokenizer.pad_token_id

        def batch_decode(self, ids):
            return tokenizer.batch_decode(ids)

    # without group_tokens=False the reference "hello" collapses to "helo": 1 more substitution
    assert metrics.wer(PlainDecoder())(EvalPrediction(logits, labels)) == pytest.approx({"wer": 3 / 4})
