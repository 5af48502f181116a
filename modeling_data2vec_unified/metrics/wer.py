"""Word error rate as an `evaluate` module: word-level edit distance over the corpus, per reference word.

WER = (substitutions + deletions + insertions) / reference words, both summed over every pair (a corpus WER, as
jiwer computes it), not a mean of per-sentence rates. Words are whitespace-separated; no other normalisation (case,
punctuation) is applied. Loaded from this file by `modeling_data2vec_unified.metrics.load("wer")`, so nothing is
fetched from the Hub. evaluate reads this file's imports line by line: keep one import per line, and only installed
packages.
"""

import datasets
import evaluate

_DESCRIPTION = """Word error rate (WER) of speech recognition output:
(S + D + I) / N, with S, D, I the substitutions, deletions and insertions of the minimal word-level edit of each
prediction into its reference, and N the number of reference words, all summed over the corpus.
0 is perfect; it exceeds 1 when the predictions insert many words."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): transcriptions to score.
    references (`list` of `str`): the reference transcriptions; none may be empty.
Returns:
    wer (`float`): the corpus word error rate, >= 0.
Example:
    >>> wer = modeling_data2vec_unified.metrics.load("wer")
    >>> wer.compute(predictions=["the cat sat"], references=["the cat sat down"])
    {'wer': 0.25}
"""

_CITATION = """@inproceedings{morris2004,
  author = {Morris, Andrew and Maier, Viktoria and Green, Phil},
  year = {2004},
  month = {01},
  title = {From WER and RIL to MER and WIL: improved evaluation measures for connected speech recognition.},
  booktitle = {Proceedings of INTERSPEECH}
}"""


def word_edit_distance(hypothesis: list, reference: list) -> int:
    """The fewest word substitutions, deletions and insertions that turn `hypothesis` into `reference`
    (Levenshtein distance over words), by dynamic programming over one row at a time."""
    previous = list(range(len(reference) + 1))  # distance from the empty hypothesis prefix
    for i, hyp_word in enumerate(hypothesis, start=1):
        current = [i]
        for j, ref_word in enumerate(reference, start=1):
            current.append(min(previous[j] + 1,  # an extra hypothesis word (insertion)
                               current[j - 1] + 1,  # a missing reference word (deletion)
                               previous[j - 1] + (hyp_word != ref_word)))  # a match or substitution
        previous = current
    return previous[-1]


class WordErrorRate(evaluate.Metric):
    """Corpus word error rate of predicted transcriptions against references."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            reference_urls=["https://en.wikipedia.org/wiki/Word_error_rate"],
        )

    def _compute(self, predictions, references) -> dict:
        if len(predictions) != len(references):
            raise ValueError(f"predictions and references must have the same length; got {len(predictions)} "
                             f"and {len(references)}")
        errors = words = 0
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            reference_words = reference.split()
            if not reference_words:
                raise ValueError(f"reference {index} is empty: WER is errors per reference word, so it is undefined "
                                 f"without words. Filter out examples with empty transcripts before evaluating "
                                 f"(e.g. dataset.filter(lambda e: e['text'].strip()))")
            errors += word_edit_distance(prediction.split(), reference_words)
            words += len(reference_words)
        return {"wer": errors / words if words else 0.0}
