"""F1 as an `evaluate` module: the harmonic mean of precision and recall, per class and averaged.

The numbers match `sklearn.metrics.f1_score` (zero_division -> 0.0) without importing scikit-learn. Loaded from this
file by `modeling_data2vec_unified.metrics.load("f1")`, so nothing is fetched from the Hub. evaluate reads this file's
imports line by line: keep one import per line, and only installed packages.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """F1 = 2 * TP / (2 * TP + FP + FN), the harmonic mean of precision and recall.
A class that is neither predicted nor present scores 0.0 (scikit-learn's zero_division=0)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): true labels.
    average (`str`, default "binary"): how per-class scores are combined:
        "binary": the score of class `pos_label` only (at most two classes may occur);
        "micro": from the total TP, FP and FN over `labels`;
        "macro": the unweighted mean of the per-class scores;
        "weighted": the mean of the per-class scores weighted by each class's number of true examples.
    labels (`list` of `int`, optional): the classes to score (not with "binary"); default: every class that occurs.
    pos_label (`int`, default 1): the positive class of "binary".
    sample_weight (`list` of `float`, optional): a weight per example.
Returns:
    f1 (`float`): in [0, 1].
Example:
    >>> f1 = modeling_data2vec_unified.metrics.load("f1")
    >>> f1.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'f1': 0.6666666666666666}
"""

_CITATION = """@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and
          Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}"""

AVERAGES = ("binary", "micro", "macro", "weighted")


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, with 0.0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def _binary_labels(predictions: np.ndarray, references: np.ndarray, pos_label: int) -> list[int]:
    """The one class that average="binary" scores, after checking the data is binary."""
    present = np.union1d(predictions, references)
    if len(present) > 2:
        raise ValueError(f"average='binary' needs at most two classes; got {len(present)} ({present[:10].tolist()}"
                         f"{'...' if len(present) > 10 else ''}). Pass average='micro', 'macro' or 'weighted'")
    if len(present) == 2 and pos_label not in present:
        raise ValueError(f"pos_label={pos_label} is not one of the classes {present.tolist()}; pass pos_label= one "
                         f"of them")
    return [pos_label]


class F1(evaluate.Metric):
    """F1 over a list of integer class labels, binary or averaged over classes like `sklearn.metrics.f1_score`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None, pos_label: int = 1, average: str = "binary",
                 sample_weight=None) -> dict:
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(f"predictions and references must have the same length; got {len(predictions)} "
                             f"and {len(references)}")
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}; got {average!r}")
        weights = np.ones(len(references)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != references.shape:
            raise ValueError(f"sample_weight must hold one weight per example ({len(references)}); "
                             f"got shape {weights.shape}")
        if average == "binary":
            classes = np.asarray(_binary_labels(predictions, references, pos_label))  # sklearn ignores `labels` too
        elif labels is None:
            classes = np.union1d(predictions, references)
        else:
            classes = np.asarray(labels)

        # per-class (weighted) counts: true positives, predicted positives, actual positives
        is_pred = predictions[None, :] == classes[:, None]  # (C, N)
        is_true = references[None, :] == classes[:, None]  # (C, N)
        tp = (is_pred & is_true) @ weights  # (C,)
        pred_sum, true_sum = is_pred @ weights, is_true @ weights  # (C,), (C,)

        if average == "micro":
            return {"f1": float(_divide(2 * tp.sum(), pred_sum.sum() + true_sum.sum()))}
        per_class = _divide(2 * tp, pred_sum + true_sum)  # F1 = 2TP / (2TP + FP + FN)
        if average == "weighted":
            if true_sum.sum() == 0:
                return {"f1": 0.0}
            return {"f1": float(np.average(per_class, weights=true_sum))}
        return {"f1": float(per_class.mean()) if len(per_class) else 0.0}  # binary: the one class; macro: the mean
