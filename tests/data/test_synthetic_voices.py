"""The built-in speech-like audio (`synthetic_voices`): words in anagram pairs said by a new voice per clip."""

import numpy as np
import pytest
from modeling_data2vec_unified.configuration_data2vec import Data2VecConfig
from modeling_data2vec_unified.data import load_pretraining_data
from modeling_data2vec_unified.probe import probe_accuracy, spectrogram_features
from modeling_data2vec_unified.synthetic_voices import SPOKEN_WORD_CLASSES, synthesize_spoken_words


def test_words_are_anagram_pairs():
    assert len(SPOKEN_WORD_CLASSES) == 10
    for a, b in zip(SPOKEN_WORD_CLASSES[::2], SPOKEN_WORD_CLASSES[1::2]):
        assert a.split("-") == b.split("-")[::-1]


def test_clips_are_deterministic_balanced_and_voiced_differently():
    clips, labels = synthesize_spoken_words(40, 16000, seed=3)
    again, labels_again = synthesize_spoken_words(40, 16000, seed=3)
    assert np.array_equal(labels, labels_again) and all(np.array_equal(a, b) for a, b in zip(clips, again))
    other, _ = synthesize_spoken_words(40, 16000, seed=4)
    assert not np.array_equal(clips[0][:1000], other[0][:1000])
    assert np.bincount(labels, minlength=10).tolist() == [4] * 10
    seconds = np.array([len(c) for c in clips]) / 16000
    assert 0.4 < seconds.min() and seconds.max() < 1.3
    assert all(c.dtype == np.float32 and np.isfinite(c).all() and 0.2 < np.abs(c).max() <= 1.5 for c in clips)
    # two clips of the same word: different voices, so different pitch: their spectra differ
    same = [c for c, y in zip(clips, labels) if y == 0][:2]
    a, b = (spectrogram_features(c, 16000)[:201] for c in same)
    assert np.abs(a - b).mean() > 0.5


def test_a_bag_of_frames_tells_pairs_apart_but_not_the_words_of_a_pair():
    """The design: the spectrogram summarised over time (the raw-input probe) separates the 5 pairs of syllables but
    not the two orders of a pair, so learning which sound follows which has room to show."""
    clips, labels = synthesize_spoken_words(400, 8000, seed=1)
    x = np.stack([spectrogram_features((c - c.mean()) / c.std(), 8000) for c in clips])
    pairs = labels // 2
    assert probe_accuracy(x[:300], pairs[:300], x[300:], pairs[300:]) > 0.85
    order = labels % 2  # which of its pair's words: chance is 0.5
    assert probe_accuracy(x[:300], order[:300], x[300:], order[300:]) < 0.7


@pytest.mark.slow
@pytest.mark.parametrize("rate", [16000, 8000])
def test_builtin_audio_is_the_spoken_words(rate):
    data = load_pretraining_data(Data2VecConfig(modality="audio", sampling_rate=rate), "builtin", max_examples=50)
    assert len(data.train) == 50 and (len(data.probe.train), len(data.probe.test)) == (800, 200)
    assert sorted({e["labels"] for e in data.probe.test}) == list(range(10))
    wave = data.train[0]["input_values"]
    assert abs(float(np.mean(wave))) < 1e-3 and abs(float(np.std(wave)) - 1) < 1e-2  # normalised per clip
    assert "spoken words" in data.description
