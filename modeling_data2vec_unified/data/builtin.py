"""The built-in sets (`load_pretraining_data(config, "builtin")`, no network), prepared once, in memory, each with a
fixed held-out probe:

- vision: scikit-learn's 8x8 digits;
- text: the Python help topics (`pydoc_data`) and the standard library's docstrings (`stdlib_docstrings`, labelled by
  the area of the library: the probe), with a byte-level BPE tokenizer trained on them;
- audio: 10 two-syllable words (5 anagram pairs) said by synthetic voices, one voice per clip, synthesised from `seed`
  (`synthetic_voices`).

Also here, for the examples and tests: synthetic sounds of SOUND_CLASSES (`synthesize_sounds`) and "speech" spelled
with them (`synthesize_speech`).
"""

from __future__ import annotations

import importlib
import inspect
from collections import defaultdict
from collections.abc import Callable, Sequence
from pydoc_data.topics import topics

import datasets
import numpy as np
import PIL.Image
import torch

from ..synthetic_voices import SPOKEN_WORD_CLASSES, synthesize_spoken_words
from .examples import NUM_CHECKED, InMemoryExamples, PretrainingData, ProbeData, TokenBlocks
from .preparation import (
    AudioPreparation,
    ImagePreparation,
    Preparation,
    TextPreparation,
    check_image_shapes,
    image_processor,
    process_images,
)

SOUND_CLASSES = ("sine", "sawtooth", "square", "whistle", "noise bursts", "rising chirp", "falling chirp", "clicks")
# the built-in text probe's classes and the standard-library modules whose docstrings they hold
STDLIB_AREAS = {
    "text processing": ("string", "re", "difflib", "textwrap", "unicodedata", "stringprep"),
    "numbers and math": ("numbers", "math", "cmath", "decimal", "fractions", "random", "statistics"),
    "files and archives": ("pathlib", "os.path", "stat", "filecmp", "tempfile", "glob", "fnmatch", "shutil", "zlib",
                           "gzip", "bz2", "lzma", "zipfile", "tarfile"),
    "internet": ("socket", "ssl", "select", "selectors", "urllib.request", "urllib.parse", "http.client",
                 "http.server", "http.cookies", "ftplib", "smtplib", "imaplib", "poplib", "socketserver"),
    "concurrency": ("threading", "multiprocessing", "concurrent.futures", "subprocess", "sched", "queue", "asyncio"),
    "dates and times": ("datetime", "time", "calendar", "zoneinfo"),
}
MAX_PER_AREA = 200  # balances the classes (internet alone has ~600 docstrings)
MIN_WORDS = 5  # "Return self==value." says nothing about its module
HELD_OUT_FRACTION = 0.2  # the built-in docstrings held out of pretraining for the probe (seed 0, per area)


def builtin_digits(preparation: ImagePreparation, max_examples: int | None, seed: int) -> PretrainingData:
    """scikit-learn's 1797 digits as 'L' images, in a fixed shuffled order (not drawn from `seed`): the first 1500
    for pretraining (and the probe's training set), the other 297 held out; prepared once into a (N, C, H, W) tensor.
    (The file's own order puts a few writers at its end: a tail split measures a shift between writers, not what the
    features hold.)"""
    from sklearn.datasets import load_digits

    config = preparation.config
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))  # fixed: every run has the same split
    digits.images, digits.target = digits.images[order], digits.target[order]
    images = [PIL.Image.fromarray(np.round(x * 255 / 16).astype(np.uint8), "L") for x in digits.images]
    if preparation.processor is None:  # grayscale digits: process one channel, then repeat it (a view) for RGB models
        processor = image_processor(config, torch.stack(process_images(image_processor(config), images[:1500])))
        pixels = torch.stack(process_images(processor, images)).expand(-1, config.num_channels, -1, -1)
        processor.image_mean, processor.image_std = (list(v) * config.num_channels
                                                     for v in (processor.image_mean, processor.image_std))
    else:
        processor = preparation.processor
        pixels = torch.stack(preparation.process([image.convert(preparation.mode) for image in images]))
    check_image_shapes(config, pixels[:NUM_CHECKED], "builtin digits")
    labeled = [{"pixel_values": p, "labels": int(y)} for p, y in zip(pixels, digits.target)]
    n = 1500 if max_examples is None else min(1500, max_examples)
    return PretrainingData(
        train=InMemoryExamples("pixel_values", pixels[:n]),
        processor=processor,
        config_updates={},
        probe=ProbeData(train=labeled[:1500], test=labeled[1500:]),
        description=f"builtin digits: {n} images -> {'x'.join(map(str, pixels.shape[1:]))}",
    )


# ---- text ------------------------------------------------------------------------------------------------------


def stdlib_docstrings() -> datasets.Dataset:
    """Labelled text that ships with Python: rows {"text", "label"}, the docstrings of the public functions, classes
    and methods of each STDLIB_AREAS area's modules (those this Python has), labelled by area (a ClassLabel). A
    docstring found in two areas, or of fewer than MIN_WORDS words, is left out; each area keeps at most
    MAX_PER_AREA, drawn with a fixed seed."""
    areas: dict[str, set[str]] = defaultdict(set)  # docstring -> the areas it occurs in
    for area, modules in STDLIB_AREAS.items():
        for name in modules:
            try:
                module = importlib.import_module(name)
            except ImportError:  # an optional module this Python was built without (lzma, ssl, ...)
                continue
            for doc in _docstrings(module):
                areas[doc].add(area)
    names = list(STDLIB_AREAS)
    rows = {"text": [], "label": []}
    for doc, found in sorted(areas.items()):
        if len(found) == 1 and len(doc.split()) >= MIN_WORDS:
            rows["text"].append(doc)
            rows["label"].append(names.index(found.pop()))
    table = datasets.Dataset.from_dict(rows, features=datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)}))
    keep = []
    for label in range(len(names)):
        ids = [i for i, y in enumerate(rows["label"]) if y == label]
        keep += [ids[j] for j in torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))[:MAX_PER_AREA]]
    return table.select(sorted(keep))


def _docstrings(module) -> list[str]:
    return [doc for _, doc in _named_docstrings(module)]


def _named_docstrings(module) -> list[tuple[str, str]]:
    """(qualified name, docstring) of a module's public functions and classes and of their public methods."""
    docs = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or inspect.ismodule(obj) or not callable(obj):
            continue
        docs.append((f"{module.__name__}.{name}", inspect.getdoc(obj)))
        if inspect.isclass(obj):
            docs += [(f"{module.__name__}.{name}.{key}", inspect.getdoc(member))
                     for key, member in sorted(vars(obj).items())
                     if not key.startswith("_") and (callable(member) or isinstance(member, property))]
    return [(name, doc) for name, doc in docs if doc]


def stdlib_docstring_names() -> dict[str, str]:
    """Each docstring of the STDLIB_AREAS modules -> the first qualified name (in the modules' order, names sorted)
    that carries it, e.g. "math.floor" or "decimal.Decimal.sqrt": who `stdlib_docstrings()`'s texts document."""
    names: dict[str, str] = {}
    for modules in STDLIB_AREAS.values():
        for module_name in modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for name, doc in _named_docstrings(module):
                names.setdefault(doc, name)
    return names


def stdlib_docstring_splits() -> tuple[datasets.Dataset, datasets.Dataset]:
    """`stdlib_docstrings()` split into (train, held-out): HELD_OUT_FRACTION of each area held out, seed 0; the
    split that examples/finetune_text_classification.py fine-tunes and scores on."""
    parts = stdlib_docstrings().train_test_split(test_size=HELD_OUT_FRACTION, seed=0, stratify_by_column="label")
    return parts["train"], parts["test"]


def builtin_text(preparation: TextPreparation, max_examples: int | None, seed: int) -> PretrainingData:
    """The Python help topics followed by the training docstrings of `stdlib_docstring_splits`, cut into blocks (the
    tokenizer is trained on them; `max_examples`: the first blocks); the probe (fixed, not drawn from `seed`): which
    area a docstring comes from, its held-out docstrings never in the pretraining text nor the tokenizer's, each
    tokenized whole."""
    train, test = stdlib_docstring_splits()
    rows = datasets.Dataset.from_dict({"text": [topics[key] for key in sorted(topics)] + list(train["text"])})
    source = f"builtin Python help topics + {len(train)} stdlib docstrings"
    preparation.fit(rows["text"], source)
    blocks = preparation.blocks(rows, "text", source)
    if max_examples is not None:
        blocks = blocks.select(range(min(max_examples, len(blocks))))
    probe = ProbeData(*([{**e, "labels": int(y)} for e, y in zip(preparation.whole(part["text"]), part["label"])]
                        for part in (train, test)))
    return PretrainingData(
        train=TokenBlocks(blocks),
        processor=preparation.processor,
        config_updates=preparation.config_updates(),
        probe=probe,
        description=f"{source}: {len(blocks)} {preparation.describe()}",
    )


# ---- audio -----------------------------------------------------------------------------------------------------


def synthesize_sounds(num_clips: int, sampling_rate: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """`num_clips` float32 clips of 1-2 s, balanced over the SOUND_CLASSES (shuffled), and their labels: random
    pitch, an attack / decay envelope and a little noise. Deterministic given `seed`."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_clips) % len(SOUND_CLASSES))
    return [_synthesize(int(y), sampling_rate, rng) for y in labels], labels


def _synthesize(kind: int, sr: int, rng: np.random.Generator, seconds: tuple[float, float] = (1.0, 2.0)) -> np.ndarray:
    n = int(rng.uniform(*seconds) * sr)
    t = np.arange(n) / sr
    if kind <= 2:  # low tones: a sine; all harmonics at 1/k (sawtooth); odd harmonics at 1/k (square)
        f0 = rng.uniform(110, 330)
        k = np.arange(1, 16 if kind else 2, 2 if kind == 2 else 1)
        k = k[k * f0 < sr / 2][:, None]
        wave = (np.sin(2 * np.pi * f0 * k * t) / k).sum(0)
    elif kind == 3:  # high whistle with vibrato
        f = rng.uniform(1000, min(3000, 0.4 * sr)) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 7) * t))
        wave = np.sin(2 * np.pi * np.cumsum(f) / sr)
    elif kind == 4:  # 2-4 noise bursts decaying in 50 ms
        onsets = rng.uniform(0, t[-1], rng.integers(2, 5))
        wave = rng.standard_normal(n) * sum(np.exp(-(t - o) / 0.05) * (t >= o) for o in onsets)
    elif kind <= 6:  # exponential chirp over two octaves, up or down
        f0, ratio = rng.uniform(200, 500), 4.0 if kind == 5 else 0.25
        wave = np.sin(2 * np.pi * f0 * t[-1] / np.log(ratio) * (ratio ** (t / t[-1]) - 1))
    else:  # clicks: 1.5 kHz pings decaying in 5 ms, 4-12 per second
        rate = rng.uniform(4, 12)
        wave = np.sin(2 * np.pi * min(1500, 0.4 * sr) * t) * np.exp(-((t * rate) % 1.0) / rate / 0.005)
    envelope = np.minimum(t / rng.uniform(0.005, 0.1), 1) * np.exp(-t * rng.uniform(0, 2))
    envelope *= np.minimum((t[-1] - t) / 0.02, 1)  # 20 ms fade out
    wave = rng.uniform(0.3, 1.0) * envelope * wave / np.abs(wave).max()
    return (wave + 0.01 * rng.standard_normal(n)).astype(np.float32)


# built-in "speech" (examples/finetune_speech_recognition.py): letter i is said as a short sound of SOUND_CLASSES[i]
SPOKEN_LETTERS = "abcdefgh"
SPOKEN_WORDS = ("add", "bad", "bag", "bead", "bed", "cab", "cafe", "cage", "dad", "deaf", "each", "egg", "face",
                "fade", "feed", "gab", "hedge", "head", "beach", "chef", "ache", "bee", "age")


def synthesize_speech(num_clips: int, sampling_rate: int, seed: int = 0, words: Sequence[str] = SPOKEN_WORDS,
                      max_words: int = 2, letter_seconds: tuple[float, float] = (0.06, 0.12)
                      ) -> tuple[list[np.ndarray], list[str]]:
    """`num_clips` float32 clips of "speech" and their transcripts: 1 to `max_words` words drawn from `words`, each
    letter said as a sound of its class lasting `letter_seconds` (SPOKEN_LETTERS[i] -> SOUND_CLASSES[i], random pitch
    and envelope as `synthesize_sounds` draws them), 15-30 ms of silence between letters, 80-120 ms between words and
    40-80 ms before and after, a little noise throughout. Deterministic given the arguments."""
    unknown = sorted({c for word in words for c in word} - set(SPOKEN_LETTERS))
    if unknown:
        raise ValueError(f"words may only use the letters {SPOKEN_LETTERS!r}; got {unknown}")
    rng = np.random.default_rng(seed)

    def silence(low: float, high: float) -> np.ndarray:
        return np.zeros(int(rng.uniform(low, high) * sampling_rate), np.float32)

    clips, transcripts = [], []
    for _ in range(num_clips):
        said = [words[i] for i in rng.integers(0, len(words), rng.integers(1, max_words + 1))]
        parts = [silence(0.04, 0.08)]
        for w, word in enumerate(said):
            for c, letter in enumerate(word):
                if c:
                    parts.append(silence(0.015, 0.03))
                parts.append(_synthesize(SPOKEN_LETTERS.index(letter), sampling_rate, rng, seconds=letter_seconds))
            parts.append(silence(0.08, 0.12) if w < len(said) - 1 else silence(0.04, 0.08))
        clip = np.concatenate(parts)
        clips.append((clip + 0.01 * rng.standard_normal(len(clip))).astype(np.float32))
        transcripts.append(" ".join(said))
    return clips, transcripts



def builtin_spoken_words(preparation: AudioPreparation, max_examples: int | None, seed: int) -> PretrainingData:
    """1000 clips of two-syllable words said by synthetic voices (`synthetic_voices`, one voice per clip, drawn from
    `seed`) at config.sampling_rate, normalised once: the first 800 for pretraining (and the probe's training set),
    the last 200 (other voices) held out."""
    sr = preparation.sampling_rate
    clips, labels = synthesize_spoken_words(1000, sr, seed)
    waves = [preparation.normalize(clip, sr) for clip in clips]
    labeled = [{"input_values": w, "labels": int(y)} for w, y in zip(waves, labels)]
    n = 800 if max_examples is None else min(800, max_examples)
    return PretrainingData(
        train=InMemoryExamples("input_values", waves[:n]),
        processor=preparation.processor,
        config_updates={},
        probe=ProbeData(train=labeled[:800], test=labeled[800:]),
        description=f"builtin spoken words: {n} clips of 0.5-1.1 s at {sr} Hz, {len(SPOKEN_WORD_CLASSES)} words "
        "(anagram pairs), one synthetic voice per clip",
    )


# modality -> its built-in set: (preparation, max_examples, seed) -> PretrainingData
BUILTIN_SETS: dict[str, Callable[[Preparation, int | None, int], PretrainingData]] = {
    "vision": builtin_digits, "text": builtin_text, "audio": builtin_spoken_words}
