"""Pretraining data for data2vec: sources (`sources.py`: folders, files, the Hub; map-style or streamed) -> one
per-modality preparation (`preparation.py`: decode, resample, tokenize, check; the column finder) -> examples
(`examples.py`, in memory or per batch; `streaming.py`, per row). The built-in offline sets: `builtin.py`.

`load_pretraining_data(config, dataset)` (`mapstyle.py`) and `load_streaming_data(config, dataset)`
(`streaming.py`) return a `PretrainingData`: the `train` examples, the processor that prepared them, the config
fields the data decides (text: the vocabulary and special ids) and, for map-style data with labels, a `ProbeData` for
a linear probe.
"""

from .builtin import (
    HELD_OUT_FRACTION,
    MAX_PER_AREA,
    MIN_WORDS,
    SOUND_CLASSES,
    SPOKEN_LETTERS,
    SPOKEN_WORDS,
    STDLIB_AREAS,
    stdlib_docstring_names,
    stdlib_docstring_splits,
    stdlib_docstrings,
    synthesize_sounds,
    synthesize_speech,
)
from .errors import DECODE_ERRORS, BadExampleError, BadExamples
from .examples import NUM_CHECKED, PretrainingData, ProbeData
from .mapstyle import PROBE_SIZE, load_pretraining_data
from .preparation import (
    COLUMN_NAMES,
    SPECIAL_TOKENS,
    ImageProcessor,
    default_feature_extractor,
    train_bpe_tokenizer,
)
from .sources import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    LOADER_MODALITY,
    LOADERS,
    TABLE_LOADERS,
    TEXT_EXTENSIONS,
)
from .streaming import StreamingExamples, StreamPosition, load_streaming_data, stream_batches

# images / audio whose prepared examples (float32) take at most this are decoded and processed once, up front, and held
# in memory (the probe's examples are the same tensors); larger data per batch. 1 GiB: 1780 RGB images at 224 px, 4.6 h
# of audio at 16 kHz. Read where it is used (`mapstyle._fits_in_memory`): `data.MAX_IN_MEMORY_BYTES = 0` takes effect.
MAX_IN_MEMORY_BYTES = 2**30

__all__ = [
    "AUDIO_EXTENSIONS",
    "COLUMN_NAMES",
    "DECODE_ERRORS",
    "HELD_OUT_FRACTION",
    "IMAGE_EXTENSIONS",
    "LOADERS",
    "LOADER_MODALITY",
    "MAX_IN_MEMORY_BYTES",
    "MAX_PER_AREA",
    "MIN_WORDS",
    "NUM_CHECKED",
    "PROBE_SIZE",
    "SOUND_CLASSES",
    "SPECIAL_TOKENS",
    "SPOKEN_LETTERS",
    "SPOKEN_WORDS",
    "STDLIB_AREAS",
    "TABLE_LOADERS",
    "TEXT_EXTENSIONS",
    "BadExampleError",
    "BadExamples",
    "ImageProcessor",
    "PretrainingData",
    "ProbeData",
    "StreamPosition",
    "StreamingExamples",
    "default_feature_extractor",
    "load_pretraining_data",
    "load_streaming_data",
    "stdlib_docstring_names",
    "stdlib_docstring_splits",
    "stdlib_docstrings",
    "stream_batches",
    "synthesize_sounds",
    "synthesize_speech",
    "train_bpe_tokenizer",
]
