"""Built-in speech-like audio: two-syllable words said by synthetic voices, one new voice per clip (issue 23).

A source-filter synthesiser, the textbook model of speech production (Fant's acoustic theory; Klatt's cascade
formant synthesiser): a glottal pulse train at the voice's pitch, or noise for fricatives and bursts, through second-
order resonators at the formant frequencies of the phoneme, scaled by the voice's vocal-tract length. Each clip draws a
voice: pitch 85-255 Hz with drift and jitter, formants scaled 0.85-1.2 (short tracts raise them), speaking rate,
loudness, breathiness and a spectral tilt, plus background noise.

The words come in anagram pairs ("sa-mi" / "mi-sa"): the two words of a pair hold the same sounds in the other order,
so a summary of the spectrogram over time (mean and std per frequency, `probe.spectrogram_features`) tells a pair's
words apart only by co-articulation, and a bag of frames cannot. The classes need what a speech model learns: which
sound follows which. The raw-spectrogram probe and a random encoder are well below 100% on them (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
import scipy.signal

# (F1, F2, F3) in Hz of an adult male voice (Peterson & Barney 1952's averages, rounded)
VOWELS = {"a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240), "e": (530, 1840, 2480),
          "o": (570, 840, 2410)}
NASALS = {"m": (250, 1000, 2200), "n": (250, 1450, 2500), "l": (360, 1300, 2800)}  # voiced, quieter: murmur
FRICATIVES = {"s": (4200, 7000), "x": (2000, 4200), "f": (1200, 6500)}  # noise bands in Hz ("x": as in "she")
STOPS = {"p": (400, 1500), "t": (3000, 6000), "k": (1500, 3000)}  # a closure, then a noise burst in this band
SYLLABLES = (("sa", "mi"), ("ko", "nu"), ("te", "fa"), ("li", "po"), ("xe", "tu"))
# the classes: each pair of syllables said in both orders
SPOKEN_WORD_CLASSES = tuple(f"{a}-{b}" for pair in SYLLABLES for a, b in (pair, pair[::-1]))


def _resonate(x: np.ndarray, frequency: float, bandwidth: float, sr: int) -> np.ndarray:
    """A second-order resonator (Klatt 1980) with unit gain at 0 Hz."""
    r = np.exp(-np.pi * bandwidth / sr)
    c, b = -r * r, 2 * r * np.cos(2 * np.pi * frequency / sr)
    return scipy.signal.lfilter([1 - b - c], [1, -b, -c], x)


def _band_noise(n: int, band: tuple[float, float], sr: int, rng: np.random.Generator) -> np.ndarray:
    high = min(band[1], 0.45 * sr)
    low = min(band[0], 0.8 * high)
    sos = scipy.signal.butter(4, [low, high], btype="bandpass", fs=sr, output="sos")
    return scipy.signal.sosfilt(sos, rng.standard_normal(n))


class _Voice:
    """One speaker: pitch, vocal-tract scale, rate, loudness, breathiness, tilt."""

    def __init__(self, rng: np.random.Generator, sr: int):
        self.rng, self.sr = rng, sr
        self.f0 = rng.uniform(85, 255)
        # higher voices tend to have shorter tracts: the scale follows the pitch, with a spread of its own
        self.tract = float(np.clip(0.85 + 0.35 * (self.f0 - 85) / 170 + rng.normal(0, 0.05), 0.85, 1.2))
        self.rate = rng.uniform(0.8, 1.25)  # > 1: faster
        self.breath = rng.uniform(0.02, 0.12)
        self.tilt = rng.uniform(0.9, 0.98)  # one-pole low-pass on the glottal source
        self.drift = rng.uniform(-0.25, 0.25)  # pitch change over the word, in octaves
        self.loud = rng.uniform(0.3, 1.0)

    def seconds(self, low: float, high: float) -> int:
        return int(self.rng.uniform(low, high) / self.rate * self.sr)

    def glottal(self, n: int, start: float) -> np.ndarray:
        """A pulse train with pitch drift and 1% jitter, low-passed, plus breath noise."""
        t = np.arange(n) / self.sr
        f0 = self.f0 * 2 ** (self.drift * (start + t)) * (1 + 0.01 * self.rng.standard_normal(n).cumsum() / np.sqrt(
            np.arange(1, n + 1)))
        phase = np.cumsum(f0) / self.sr
        pulses = np.diff(np.floor(phase), prepend=np.floor(phase[0])).astype(float)
        source = scipy.signal.lfilter([1 - self.tilt], [1, -self.tilt], pulses) * 20
        return source + self.breath * self.rng.standard_normal(n)

    def formants(self, x: np.ndarray, freqs: tuple[float, ...]) -> np.ndarray:
        for k, f in enumerate(freqs):
            f = f * self.tract
            if f < 0.45 * self.sr:
                x = _resonate(x, f, 60 + 40 * k, self.sr)
        return x

    def phoneme(self, p: str, start: float) -> np.ndarray:
        if p in VOWELS:
            n = self.seconds(0.13, 0.2)
            return self.formants(self.glottal(n, start), VOWELS[p])
        if p in NASALS:
            n = self.seconds(0.06, 0.09)
            return 0.4 * self.formants(self.glottal(n, start), NASALS[p])
        if p in FRICATIVES:
            n = self.seconds(0.08, 0.12)
            return (0.25 if p == "f" else 0.6) * _band_noise(n, tuple(f * self.tract for f in FRICATIVES[p]),
                                                              self.sr, self.rng)
        closure = np.zeros(self.seconds(0.03, 0.06))
        burst = _band_noise(self.seconds(0.012, 0.025), tuple(f * self.tract for f in STOPS[p]), self.sr, self.rng)
        return np.concatenate([closure, burst * np.exp(-np.linspace(0, 4, len(burst)))])


def _say(voice: _Voice, phonemes: str) -> np.ndarray:
    """Overlap-adds the phonemes with 10 ms raised-cosine cross-fades, each at unit peak before the voice's gain."""
    sr = voice.sr
    ramp = int(0.01 * sr)
    out, position = np.zeros(0), 0
    for p in phonemes:
        seg = voice.phoneme(p, position / sr)
        seg = seg / (np.abs(seg).max() + 1e-9) * (1.0 if p in VOWELS else 0.7)
        fade = min(ramp, len(seg) // 2)
        window = np.ones(len(seg))
        window[:fade] = window[len(seg) - fade :][::-1] = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        seg = seg * window
        start = max(position - fade, 0)
        out = np.pad(out, (0, max(start + len(seg) - len(out), 0)))
        out[start : start + len(seg)] += seg
        position = start + len(seg)
    return out


def synthesize_spoken_words(num_clips: int, sampling_rate: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """`num_clips` float32 clips (about 0.6-1.2 s) of the SPOKEN_WORD_CLASSES words, balanced and shuffled, each said by
    a new random voice with 50-250 ms of silence around it and background noise (SNR about 20-40 dB), and their
    labels (indices into SPOKEN_WORD_CLASSES). Deterministic given the arguments."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_clips) % len(SPOKEN_WORD_CLASSES))
    clips = []
    for y in labels:
        voice = _Voice(rng, sampling_rate)
        word = _say(voice, SPOKEN_WORD_CLASSES[y].replace("-", ""))
        word = voice.loud * word / (np.abs(word).max() + 1e-9)
        before, after = (np.zeros(int(rng.uniform(0.05, 0.25) * sampling_rate)) for _ in range(2))
        clip = np.concatenate([before, word, after])
        clip += 10 ** -rng.uniform(1, 2) * voice.loud * rng.standard_normal(len(clip))
        clips.append(clip.astype(np.float32))
    return clips, labels


__all__ = ["SPOKEN_WORD_CLASSES", "synthesize_spoken_words"]
