"""Accuracy as an `evaluate` module: the (optionally weighted) fraction of predictions equal to their reference.

Loaded from this file by `modeling_data2vec_unified.metrics.load("accuracy")`, so nothing is fetched from the Hub.
evaluate reads this file's imports line by line: keep one import per line, and only installed packages.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Accuracy: the fraction of predictions equal to their reference,
(TP + TN) / (TP + TN + FP + FN) for binary labels; with `sample_weight`, the weighted fraction."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): true labels.
    normalize (`bool`, default True): the fraction correct; False gives the (weighted) count correct.
    sample_weight (`list` of `float`, optional): a weight per example; None weighs them equally.
Returns:
    accuracy (`float`): in [0, 1] when normalize is True, else the (weighted) number of correct predictions.
Example:
    >>> accuracy = modeling_data2vec_unified.metrics.load("accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'accuracy': 0.75}
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


class Accuracy(evaluate.Metric):
    """Accuracy over a list of integer class labels (the same numbers as `sklearn.metrics.accuracy_score`)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize: bool = True, sample_weight=None) -> dict:
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(f"predictions and references must have the same length; got {len(predictions)} "
                             f"and {len(references)}")
        weights = np.ones(len(references)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != references.shape:
            raise ValueError(f"sample_weight must hold one weight per example ({len(references)}); "
                             f"got shape {weights.shape}")
        correct = (predictions == references).astype(np.float64)
        if not normalize:
            return {"accuracy": float(np.dot(correct, weights))}
        if len(references) == 0 or weights.sum() == 0:
            raise ValueError("accuracy of no examples (or weights that sum to 0) is undefined; pass at least one "
                             "example with a positive weight")
        return {"accuracy": float(np.dot(correct, weights) / weights.sum())}
