"""Pretraining data for data2vec: built-in offline sets, local folders / files and `datasets` Hub datasets, prepared
into the examples `DataCollatorForData2VecPretraining` takes.

`load_pretraining_data(config, dataset)` returns a `PretrainingData`: a map-style `train` set, the processor that
prepared it, the config fields the data decides (text: the vocabulary and special ids) and, when the data has
labels, a `ProbeData` for a linear probe.

- `"builtin"` (no network): vision: scikit-learn's 8x8 digits; text: the Python help topics (`pydoc_data`) and the
  standard library's docstrings (`stdlib_docstrings`, labelled by the area of the library: the probe) with a
  byte-level BPE tokenizer trained on them; audio: 10 two-syllable words (5 anagram pairs) said by synthetic voices, one
  voice per clip, synthesised from `seed` (`synthetic_voices`). Prepared once, in memory.
- a local folder or file: images (`imagefolder`: subfolders are labels), audio files (.wav .flac .ogg, read with
  soundfile), text files (.txt, and tables: .json .jsonl .csv .parquet, which may hold any modality).
- anything else: a `datasets` Hub id.

Example formats: text `{"input_ids": 1-D LongTensor}` wrapped `<s> ... </s>`; vision `{"pixel_values": (C, H, W)}`;
audio `{"input_values": (samples,)}` float32, mono, at `config.sampling_rate`, normalised per clip. Text is tokenized
up front. Local and Hub images and audio are decoded and processed once, up front, into memory when the prepared
examples take at most MAX_IN_MEMORY_BYTES (per batch it slowed a tiny model's steps by 3-9% on 2 CPU cores:
docs/benchmarks.md, the data pipeline); larger data is decoded and processed per batch in `__getitems__` (DataLoader
workers parallelise it).
"""

from __future__ import annotations

import dataclasses

import importlib
import inspect
import io
import logging
import math
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pyarrow as pa
import scipy.signal
import soundfile
import torch
from pydoc_data.topics import topics
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Wav2Vec2FeatureExtractor,
)

from .configuration_data2vec import MODALITIES, Data2VecConfig
from .synthetic_voices import SPOKEN_WORD_CLASSES, synthesize_spoken_words

logger = logging.getLogger(__name__)

try:  # transformers >= 5.x: the Pillow backend; `ViTImageProcessor` wants torchvision and warns without it
    from transformers import ViTImageProcessorPil as ImageProcessor
except ImportError:
    from transformers import ViTImageProcessor as ImageProcessor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
TEXT_EXTENSIONS = (".txt", ".json", ".jsonl", ".csv", ".parquet")
# file extension -> how it is loaded: "imagefolder", "audio" (soundfile) or a `datasets` builder
LOADERS = {
    **dict.fromkeys(IMAGE_EXTENSIONS, "imagefolder"),
    **dict.fromkeys(AUDIO_EXTENSIONS, "audio"),
    ".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet",
}
TABLE_LOADERS = ("json", "csv", "parquet")  # tables may hold any modality: their columns decide
LOADER_MODALITY = {"imagefolder": "vision", "audio": "audio", "text": "text"}
COLUMN_NAMES = {"vision": ("image", "img", "pixel_values"), "audio": ("audio", "input_values", "speech"),
                "text": ("text", "content", "sentence")}
SOUND_CLASSES = ("sine", "sawtooth", "square", "whistle", "noise bursts", "rising chirp", "falling chirp", "clicks")
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0-3 as in RoBERTa; <mask> is added last
PROBE_SIZE = 2000  # labelled examples kept for a linear probe (80% train, 20% test)
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
NUM_CHECKED = 16  # examples prepared before returning, so broken data fails before training
# images / audio whose prepared examples (float32) take at most this are decoded and processed once, up front, and held
# in memory (the probe's examples are the same tensors); larger data per batch. 1 GiB: 1780 RGB images at 224 px, 4.6 h
# of audio at 16 kHz
MAX_IN_MEMORY_BYTES = 2**30


@dataclass
class ProbeData:
    """Labelled examples for a linear probe: each one an example in the collator's format plus `"labels": int`."""

    train: list[dict]
    test: list[dict]


@dataclass
class PretrainingData:
    """What `load_pretraining_data` returns: the pretraining examples, the processor that prepared them, the config
    fields the data decides (apply them before building the model), a probe set when labels exist, and a one-line
    description."""

    train: torch.utils.data.Dataset
    processor: object
    config_updates: dict
    probe: ProbeData | None
    description: str


def load_pretraining_data(
    config: Data2VecConfig,
    dataset: str = "builtin",
    *,
    dataset_config_name: str | None = None,
    split: str = "train",
    processor=None,
    column: str | None = None,
    label_column: str | None = None,
    max_seq_length: int = 128,
    max_examples: int | None = None,
    resample_audio: bool = True,
    min_audio_seconds: float | None = None,
    tokenizer_vocab_size: int = 2048,
    seed: int = 0,
    cache_dir: str | None = None,
    probe: bool = True,
    skip_bad_examples: float | None = None,
) -> PretrainingData:
    """Pretraining examples of `config.modality` from `dataset`, fitted to `config`.

    `dataset`: "builtin", a local folder / file, or a `datasets` Hub id (loaded with `dataset_config_name`, `split`
    and `cache_dir`; `split` also picks an image folder's split subfolder). `processor`: None (the package's default,
    configured from the config; text: a byte-level BPE tokenizer of `tokenizer_vocab_size` trained on the data), a
    local path or Hub id, or a processor object. `column` / `label_column`: the input / label columns (found by type
    and name when None; a "label" column, e.g. from image subfolders, gives a probe). `max_seq_length`: text tokens
    per example, `<s>` and `</s>` included. `max_examples`: keep the first N rows (builtin: pretraining examples).
    `resample_audio`: resample audio at another rate to `config.sampling_rate` (else refuse it). `min_audio_seconds`:
    clips shorter than this are dropped, counted in a warning (always: clips shorter than the conv feature encoder's
    receptive field), so that one short clip does not crop a whole batch to its length. `seed`: the builtin
    sounds and the probe split. `probe=False`: no probe examples are prepared (a run without a probe decodes none).
    `skip_bad_examples`: None stops at the first image or clip that cannot be decoded, naming it (`BadExampleError`);
    a fraction skips such examples (logged) up to that share of the data.

    Raises FileNotFoundError / ValueError naming the fix for a missing path, empty data, data of another modality,
    audio at another sampling rate (with `resample_audio=False`) or images that do not come out at the config's size.
    """
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be a positive number of examples or None; got {max_examples}")
    modality = config.modality
    if modality == "text":
        if max_seq_length < 3:
            raise ValueError(f"max_seq_length must be at least 3 (<s>, one token, </s>); got {max_seq_length}")
        if processor is None and tokenizer_vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
            raise ValueError(
                f"tokenizer_vocab_size must be at least {256 + len(SPECIAL_TOKENS) + 1} (256 byte tokens and "
                f"{len(SPECIAL_TOKENS) + 1} special tokens); got {tokenizer_vocab_size}"
            )
    if modality == "vision":
        _image_mode(config)  # fails early on an unsupported number of channels
    if isinstance(processor, str):
        loader = {"text": AutoTokenizer, "vision": AutoImageProcessor, "audio": AutoFeatureExtractor}[modality]
        processor = loader.from_pretrained(processor, cache_dir=cache_dir)

    if dataset == "builtin":  # in memory, made together with the probe: dropped afterwards when not wanted
        if modality == "vision":
            data = _builtin_digits(config, processor, max_examples)
        elif modality == "audio":
            data = _builtin_spoken_words(config, processor, max_examples, seed)
        else:
            data = _builtin_text(config, processor, max_seq_length, tokenizer_vocab_size, seed, max_examples)
        return data if probe else dataclasses.replace(data, probe=None)

    rows, source = _load_rows(config, dataset, dataset_config_name, split, cache_dir, skip_bad_examples)
    if max_examples is not None:
        rows = rows.select(range(min(max_examples, len(rows))))
    column = _find_column(rows, modality, column, source)
    if label_column is not None and label_column not in rows.column_names:
        raise ValueError(
            f"label_column {label_column!r} is not a column of {source}; its columns: {rows.column_names}"
        )
    if label_column is None and "label" in rows.column_names and column != "label":
        label_column = "label"
    if not probe:
        label_column = None  # no probe: none of its examples is decoded
    bad = BadExamples(skip_bad_examples, len(rows))
    if modality == "text":
        return _prepare_text(config, rows, column, label_column, processor, max_seq_length, tokenizer_vocab_size, seed,
                             source)
    if modality == "vision":
        return _prepare_images(config, rows, column, label_column, processor, seed, source, bad)
    return _prepare_audio(config, rows, column, label_column, processor, resample_audio, seed, source, bad,
                          min_audio_seconds)


# ---- example datasets ------------------------------------------------------------------------------------------


class BadExampleError(ValueError):
    """An example's file cannot be decoded (a corrupt image or clip), named by its path."""


class BadExamples:
    """What happens to examples whose file cannot be decoded: stop at the first, naming it (`skip=None`, the default),
    or skip them, counted and logged, stopping once more than the fraction `skip` of the examples are bad."""

    def __init__(self, skip: float | None = None, total: int = 0, quiet: bool = False):
        if skip is not None and not 0.0 <= skip < 1.0:
            raise ValueError(f"--skip_bad_examples is the largest fraction of bad examples to skip, in [0, 1); got {skip}")
        self.skip, self.total, self.skipped, self.quiet = skip, total, {}, quiet  # quiet: a look ahead, not the run

    def handle(self, where: str, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"
        if self.skip is None:
            raise BadExampleError(
                f"{where} cannot be decoded ({reason}). Fix or remove the file, or pass --skip_bad_examples 0.01 to "
                f"skip such files (counted and logged; the run stops if more than that fraction is bad)"
            ) from error
        if where in self.skipped:  # decoded per batch: met again every epoch, counted once
            return
        self.skipped[where] = reason
        if not self.quiet:
            logger.warning("skipped %s (%s): %d bad example(s) so far", where, reason, len(self.skipped))
        if len(self.skipped) > self.skip * max(self.total, 1):
            raise BadExampleError(
                f"{len(self.skipped)} of {self.total} examples cannot be decoded, more than --skip_bad_examples "
                f"{self.skip:g} allows (the last: {where}; {reason}): check the data"
            ) from error


def _cell_name(value, index: int) -> str:
    """A data cell's file path where it has one (image / audio structs), else its row."""
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    if isinstance(value, pa.Scalar) and pa.types.is_struct(value.type) and "path" in {f.name for f in value.type}:
        if value["path"].as_py():
            return str(value["path"].as_py())
    return f"example {index}"


DECODE_ERRORS = (OSError, ValueError, RuntimeError, SyntaxError, PIL.UnidentifiedImageError)  # soundfile: RuntimeError


class _Examples(torch.utils.data.Dataset):
    """A map-style dataset whose subclasses build examples a batch at a time in `__getitems__` (what a DataLoader
    calls); `__getitem__` goes through the same path."""

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} examples")
        return self.__getitems__([index % len(self)])[0]


class _InMemory(_Examples):
    """Prepared inputs held in memory: a tensor (N, ...) or a list, one example each, under `key`."""

    def __init__(self, key: str, values: torch.Tensor | list):
        self.key, self.values = key, values

    def __len__(self) -> int:
        return len(self.values)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        return [{self.key: self.values[i]} for i in indices]


class _TokenBlocks(_Examples):
    """Token blocks of one length in a `datasets.Dataset` column "input_ids" (memory-mapped when loaded from disk)."""

    def __init__(self, blocks: datasets.Dataset):
        self.blocks = blocks.with_format("torch")

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        return [{"input_ids": ids} for ids in self.blocks[list(indices)]["input_ids"]]  # rows of a (B, T) LongTensor


class _Images(_Examples):
    """Images decoded and processed per batch: each converted to `mode` ("L" or "RGB"), then `processor`."""

    def __init__(self, rows: datasets.Dataset, column: str, processor, mode: str, bad: BadExamples | None = None):
        rows = rows.select_columns([column])
        if isinstance(rows.features[column], datasets.Image) and rows.features[column].decode:
            rows = rows.cast_column(column, datasets.Image(decode=False))  # decoded here, where errors name the file
        self.rows, self.column, self.processor, self.mode = rows, column, processor, mode
        self.bad = bad or BadExamples(total=len(rows))
        self.bad_indices: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        images = []
        for index, value in zip(indices, self.rows[list(indices)][self.column]):
            try:
                image = _to_pil(value)
                image.load()  # a truncated file fails here, not later inside a batch
                images.append(image.convert(self.mode))
            except DECODE_ERRORS as error:
                self.bad.handle(_cell_name(value, index), error)
                self.bad_indices.append(int(index))
        return [{"pixel_values": pixels} for pixels in _process_images(self.processor, images)]


class _Audio(_Examples):
    """Audio clips decoded per batch from the arrow storage (file bytes / paths read with soundfile, or arrays; no
    torchcodec), averaged to mono, resampled to `sampling_rate` if needed, then normalised by `processor`."""

    def __init__(self, rows: datasets.Dataset, column: str, processor, sampling_rate: int,
                 bad: BadExamples | None = None):
        self.rows = rows.select_columns([column]).with_format("arrow")
        self.column, self.processor, self.sampling_rate = column, processor, sampling_rate
        self.bad = bad or BadExamples(total=len(rows))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        out = []
        for index, value in zip(indices, self.rows[list(indices)].column(self.column)):
            try:
                out.append({"input_values": self._prepare(value)})
            except DECODE_ERRORS as error:
                self.bad.handle(_cell_name(value, index), error)
        return out

    def _prepare(self, value: pa.Scalar) -> np.ndarray:
        wave, rate = _read_clip(value, self.sampling_rate)
        wave = _resample(wave, rate, self.sampling_rate)
        return _normalize_clip(self.processor, wave, self.sampling_rate)


def _all_examples(dataset: _Examples, indices: Sequence[int] | None = None, chunk: int = 32) -> list[dict]:
    """Examples `indices` (None: all) of a dataset, prepared `chunk` at a time (few large images decoded at once)."""
    indices = range(len(dataset)) if indices is None else indices
    return [e for start in range(0, len(indices), chunk) for e in dataset.__getitems__(indices[start : start + chunk])]


def _fits_in_memory(num_bytes: float, source: str) -> bool:
    """Whether examples that take `num_bytes` once prepared (estimated before decoding) are prepared up front and held
    in memory (at most MAX_IN_MEMORY_BYTES); else they are prepared per batch, which the log says."""
    if num_bytes <= MAX_IN_MEMORY_BYTES:
        return True
    logger.info("%s: the prepared examples would take %.1f GiB, more than MAX_IN_MEMORY_BYTES: they are decoded per "
                "batch (--dataloader_num_workers runs that beside the model)", source, num_bytes / 2**30)
    return False


# ---- loading rows ----------------------------------------------------------------------------------------------


def _load_rows(
    config: Data2VecConfig, dataset: str, config_name: str | None, split: str, cache_dir: str | None,
    skip_bad_examples: float | None = None,
) -> tuple[datasets.Dataset, str]:
    """The dataset's rows and a short name for messages: a local folder / file by its files' kinds, else the Hub."""
    path = Path(dataset).expanduser()
    if path.is_dir():
        in_split = _split_files(path, split)
        rows = _load_folder(config.modality, path, split, in_split, cache_dir, skip_bad_examples)
        source = f"folder {dataset}" + ("" if in_split is None else f" [{split}]")
    elif path.is_file():
        if split != "train":
            raise ValueError(f"file {dataset} is one split (train); split {split!r} needs a folder whose files or "
                             "subfolders are named by split (train* / validation* / test*), or a Hub dataset")
        loader = LOADERS.get(path.suffix.lower())
        if loader is None:
            raise ValueError(f"{dataset} is not a supported data file: {_looked_for()}")
        if LOADER_MODALITY.get(loader, config.modality) != config.modality:  # tables: their columns decide
            raise _modality_error(f"file {dataset}", LOADER_MODALITY[loader], "a " + path.suffix.lower() + " file",
                                  config.modality)
        rows, source = _load_files(loader, [path], path.parent, split, cache_dir, skip_bad_examples), f"file {dataset}"
    elif not _plausible_hub_id(dataset):
        raise FileNotFoundError(
            f"dataset {dataset!r} does not exist: give an existing folder or file, 'builtin', or a datasets Hub id "
            "(name or owner/name)"
        )
    else:
        try:
            rows = datasets.load_dataset(dataset, config_name, split=split, cache_dir=cache_dir)
        except Exception as error:  # offline, unknown id, config or split: say what was tried
            raise FileNotFoundError(
                f"{dataset!r} is not a local path, and loading it from the Hub as load_dataset({dataset!r}, "
                f"{config_name!r}, split={split!r}) failed: {type(error).__name__}: {error}. Give an existing folder "
                "or file, 'builtin', or a reachable Hub dataset."
            ) from error
        source = f"Hub dataset {dataset}" + (f" ({config_name})" if config_name else "") + f" [{split}]"
    if len(rows) == 0:
        raise ValueError(f"{source} holds no examples: {_looked_for()}")
    return rows, source


def _plausible_hub_id(name: str) -> bool:
    """'name' or 'owner/name', not a path-like string (./x, /x, ~/x, a/b/c) nor a data file name (x.csv)."""
    return (re.fullmatch(r"[\w][\w.-]*(/[\w][\w.-]*)?", name) is not None
            and Path(name).suffix.lower() not in LOADERS)


def _looked_for() -> str:
    return ("looked for images (" + " ".join(IMAGE_EXTENSIONS) + "), audio (" + " ".join(AUDIO_EXTENSIONS)
            + ") and text (" + " ".join(TEXT_EXTENSIONS) + ")")


def _load_folder(modality: str, root: Path, split: str, in_split: set[Path] | None,
                 cache_dir: str | None, skip_bad_examples: float | None = None) -> datasets.Dataset:
    """A folder's rows: the files of the modality's own kind if any (images, audio, .txt), else its one kind of
    table; files under hidden folders are skipped; `in_split`: the split's files, where the folder is split by name."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for file in sorted(root.rglob("*")):
        loader = LOADERS.get(file.suffix.lower())
        if (loader and file.is_file() and not any(p.startswith(".") for p in file.relative_to(root).parts)
                and (in_split is None or file.resolve() in in_split)):
            groups[loader].append(file)
    if not groups:
        raise ValueError(f"folder {root} has no usable files: {_looked_for()}")
    own = next(loader for loader, m in LOADER_MODALITY.items() if m == modality)
    tables = [loader for loader in TABLE_LOADERS if loader in groups]
    if own in groups:
        loader = own
    elif len(tables) == 1:
        loader = tables[0]
    elif tables:
        raise ValueError(f"folder {root} mixes {' / '.join(tables)} files: point dataset at one file, or a folder "
                         "of one format")
    else:
        loader = next(iter(groups))
        extensions = " ".join(sorted({f.suffix.lower() for f in groups[loader]}))
        raise _modality_error(f"folder {root}", LOADER_MODALITY[loader], f"{extensions} files", modality)
    return _load_files(loader, groups[loader], root, split, cache_dir, skip_bad_examples)


def _split_files(root: Path, split: str) -> set[Path] | None:
    """The files of `split` in a folder split by file or subfolder names as `datasets` splits a data folder
    (train* / validation*, valid*, dev*, val* / test*, e.g. LibriSpeech's train-clean-100/ dev-clean/ test-clean/);
    None for a folder without split names (all of it is the train split). Raises ValueError for a split it lacks."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(str(root))
    except Exception:  # no files datasets would read: the caller's checks name what is missing
        patterns = {"train": ["**"]}
    if {str(k): v for k, v in patterns.items()} == {"train": ["**"]}:  # not split by names
        if split != "train":
            raise ValueError(f"folder {root} has no split {split!r}: its files are not named by split (train* / "
                             "validation* / test* files or subfolders, as datasets names them); use split 'train'")
        return None
    files = {str(k): v for k, v in DataFilesDict.from_patterns(patterns, base_path=str(root)).items()}
    if split not in files:
        have = ", ".join(f"{k} ({len(v)} files)" for k, v in files.items())
        raise ValueError(f"folder {root} has no split {split!r}; its files are split by name into: {have}. Pass that "
                         "split's name (--dataset_split / --validation_split), or rename the files")
    return {Path(f).resolve() for f in files[split]}


def _modality_error(source: str, held: str, what: str, modality: str) -> ValueError:
    return ValueError(
        f"{source} holds {held} data ({what}), not {modality}: use --modality {held} (a config with "
        f"modality={held!r}), or give {modality} data"
    )


def _load_files(loader: str, files: list[Path], root: Path, split: str, cache_dir: str | None,
                skip_bad_examples: float | None = None) -> datasets.Dataset:
    if loader == "audio":
        return _audio_file_rows(files, root)
    if loader == "text":
        bad = _lines_not_utf8(files)
        if bad:
            return _utf8_text_rows(files, bad, skip_bad_examples)
    try:
        if loader == "imagefolder" and len(files) > 1:  # data_dir: subfolders give labels (and splits, if named so)
            return datasets.load_dataset("imagefolder", data_dir=str(root), split=split, cache_dir=cache_dir)
        return datasets.load_dataset(loader, data_files=[str(f) for f in files], split="train", cache_dir=cache_dir)
    except Exception as error:  # datasets' messages for an empty or malformed file do not say which file
        names = ", ".join(str(f) for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise ValueError(
            f"datasets' {loader!r} builder could not read {names} ({type(error).__name__}: {error}): check that "
            f"the files are not empty or malformed ({_looked_for()})"
        ) from error


def _lines_not_utf8(files: list[Path]) -> dict[Path, list[tuple[int, int, int]]]:
    """The lines of .txt `files` that are not UTF-8, which datasets' 'text' builder fails on without naming the file
    or the line: {file: [(line number, column, byte)]}, read a line at a time."""
    bad = {}
    for path in files:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    bad.setdefault(path, []).append((number, error.start + 1, line[error.start]))
    return bad


def _utf8_text_rows(files: list[Path], bad: dict, skip: float | None) -> datasets.Dataset:
    """Text rows (one per line, as datasets' 'text' builder makes them) without the lines that are not UTF-8, when
    --skip_bad_examples allows that many; else a `BadExampleError` naming the file, the line and the fix."""
    path, ((number, column, byte), *_) = next(iter(bad.items()))
    where = f"line {number} of {path} (byte 0x{byte:02x} at column {column})"
    count = sum(len(v) for v in bad.values())
    if skip is None:
        raise BadExampleError(
            f"{where} is not UTF-8, the encoding text files are read in ({count} such line(s) in all): convert the "
            f"file (e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}`), or pass "
            "--skip_bad_examples 0.01 to skip such lines (counted and logged)"
        )
    lines = []
    for f in files:
        skipped = {n for n, _, _ in bad.get(f, [])}
        with open(f, "rb") as handle:
            lines += [line.rstrip(b"\r\n").decode("utf-8") for n, line in enumerate(handle, 1) if n not in skipped]
    if count > skip * max(len(lines) + count, 1):
        raise BadExampleError(f"{count} of {len(lines) + count} lines are not UTF-8, more than --skip_bad_examples "
                              f"{skip:g} allows (the first: {where}): convert the files to UTF-8")
    logger.warning("skipped %d line(s) that are not UTF-8 (--skip_bad_examples), the first: %s", count, where)
    return datasets.Dataset.from_dict({"text": lines})


def _audio_file_rows(files: list[Path], root: Path) -> datasets.Dataset:
    """Rows of {"bytes": None, "path"} structs (read lazily) and, when every file sits in a subfolder and there are
    several, a "label" ClassLabel named by the file's folder (as `imagefolder` does)."""
    columns = {"audio": [{"bytes": None, "path": str(f)} for f in files]}
    features = {"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}}
    names = sorted({f.parent.name for f in files})
    if all(f.parent != root for f in files) and len(names) > 1:
        columns["label"] = [names.index(f.parent.name) for f in files]
        features["label"] = datasets.ClassLabel(names=names)
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _find_column(rows: datasets.Dataset, modality: str, column: str | None, source: str) -> str:
    """`column`, else the first column holding the modality's data (by feature type, then by name); data of another
    modality only is refused, naming the modality to use."""
    if column is not None:
        if column not in rows.column_names:
            raise ValueError(f"column {column!r} is not a column of {source}; its columns: {rows.column_names}")
        return column
    found = {m: _columns_of(rows.features, m) for m in MODALITIES}
    if found[modality]:
        return found[modality][0]
    other = next((m for m in MODALITIES if found[m]), None)
    if other is not None:
        raise _modality_error(source, other, f"column {found[other][0]!r}; pass column=... to pick another", modality)
    raise ValueError(
        f"{source} has no {modality} column (looked for {' / '.join(COLUMN_NAMES[modality])} or a column of that "
        f"type); its columns: {rows.column_names}. Pass column=..."
    )


def _columns_of(features: datasets.Features, modality: str) -> list[str]:
    if modality == "text":
        typed = [c for c, f in features.items()
                 if isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")]
    else:
        kind = datasets.Image if modality == "vision" else datasets.Audio
        typed = [c for c, f in features.items() if isinstance(f, kind)]
    named = [c for c in COLUMN_NAMES[modality] if c in features]
    return list(dict.fromkeys(named + typed if modality == "text" else typed + named))


def _probe(rows: datasets.Dataset, label_column: str | None, prepare, seed: int) -> ProbeData | None:
    """Up to PROBE_SIZE labelled rows drawn with `seed` (the order of `rows.shuffle(seed=seed)`), prepared by
    `prepare(indices) -> list[dict]` (indices into `rows`), split 80/20. Labels that are not integers (class names)
    are numbered in sorted order."""
    if label_column is None:
        return None
    indices = np.random.default_rng(seed).permutation(len(rows))[:PROBE_SIZE].tolist()
    labels = list(rows.select(indices)[label_column])
    if not all(isinstance(y, (int, np.integer)) for y in labels):
        names = sorted({str(y) for y in labels})
        labels = [names.index(str(y)) for y in labels]
    examples = [{**example, "labels": int(y)} for example, y in zip(prepare(indices), labels)]
    cut = int(0.8 * len(examples))
    return ProbeData(train=examples[:cut], test=examples[cut:])


# ---- vision ----------------------------------------------------------------------------------------------------


def _image_mode(config: Data2VecConfig) -> str:
    modes = {1: "L", 3: "RGB"}
    if config.num_channels not in modes:
        raise ValueError(f"images are prepared as 1 (grayscale) or 3 (RGB) channels; config.num_channels is "
                         f"{config.num_channels}")
    return modes[config.num_channels]


def _to_pil(value) -> PIL.Image.Image:
    """A PIL image from a decoded image, an {"bytes", "path"} struct, or a (H, W[, C]) uint8 array."""
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, dict):
        return PIL.Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    return PIL.Image.fromarray(np.asarray(value))


def _process_images(processor, images: list[PIL.Image.Image]) -> list[torch.Tensor]:
    return [torch.as_tensor(pixels, dtype=torch.float32) for pixels in processor(images)["pixel_values"]]


def _image_processor(config: Data2VecConfig, pixels: torch.Tensor | None = None):
    """The default image processor: resize to config.image_size (bilinear) and rescale to [0, 1]; then, given
    `pixels` (N, C, H, W) it prepared so, normalise with their per-channel mean / std (standardised inputs)."""
    size = {"height": config.image_size, "width": config.image_size}
    if pixels is None:
        return ImageProcessor(size=size, resample=PIL.Image.BILINEAR, do_normalize=False)
    mean, std = pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return ImageProcessor(size=size, resample=PIL.Image.BILINEAR, image_mean=mean.tolist(), image_std=std.tolist())


def _check_image_shapes(config: Data2VecConfig, pixels: Iterable[torch.Tensor], source: str) -> None:
    expected = (config.num_channels, config.image_size, config.image_size)
    shapes = sorted({tuple(p.shape) for p in pixels})
    if shapes != [expected]:
        raise ValueError(
            f"{source}: the processor gives pixel_values of shape(s) {shapes}; the model takes {expected} "
            f"(config num_channels, image_size). Use a processor that resizes to {config.image_size}x"
            f"{config.image_size} (do_resize=True, or processor=None), or set image_size to the images' size"
        )


def _log_image_size(config: Data2VecConfig, size: tuple[int, int], source: str) -> None:
    """Says what size the default processor resizes the images to, and why; small images resized up to a much
    larger model size cost time for nothing: say how to train at their own size."""
    width, height = size
    side = config.image_size
    logger.info("%s: images (the first is %dx%d) are resized to %dx%d, the model's config.image_size (patches of "
                "%d: a %dx%d grid)", source, width, height, side, side, config.patch_size, *config.patch_grid)
    if max(width, height) * 2 <= side:
        # a 4x4 grid or finer: the largest power-of-two patch up to the model's that fits the image 4 times
        patch = max(p for p in (1, 2, 4, 8, 16, 32) if p <= config.patch_size and 4 * p <= max(max(width, height), 4))
        logger.warning(
            "%s: the images (%dx%d) are much smaller than image_size %d: every step computes on %dx%d upsampled "
            "pixels. To train at about their own size pass e.g. --config_overrides image_size=%d,patch_size=%d",
            source, width, height, side, side, side, -(-max(width, height) // patch) * patch, patch)


def _builtin_digits(config: Data2VecConfig, processor, max_examples: int | None) -> PretrainingData:
    """scikit-learn's 1797 digits as 'L' images, in a fixed shuffled order: the first 1500 for pretraining (and the
    probe's training set), the other 297 held out; prepared once into a (N, C, H, W) tensor. (The file's own order
    puts a few writers at its end: a tail split measures a shift between writers, not what the features hold.)"""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))  # fixed: every run has the same split
    digits.images, digits.target = digits.images[order], digits.target[order]
    images = [PIL.Image.fromarray(np.round(x * 255 / 16).astype(np.uint8), "L") for x in digits.images]
    if processor is None:  # grayscale digits: process one channel, then repeat it (a view) for RGB models
        processor = _image_processor(config, torch.stack(_process_images(_image_processor(config), images[:1500])))
        pixels = torch.stack(_process_images(processor, images)).expand(-1, config.num_channels, -1, -1)
        processor.image_mean, processor.image_std = (list(v) * config.num_channels
                                                     for v in (processor.image_mean, processor.image_std))
    else:
        mode = _image_mode(config)
        pixels = torch.stack(_process_images(processor, [image.convert(mode) for image in images]))
    _check_image_shapes(config, pixels[:NUM_CHECKED], "builtin digits")
    labeled = [{"pixel_values": p, "labels": int(y)} for p, y in zip(pixels, digits.target)]
    n = 1500 if max_examples is None else min(1500, max_examples)
    return PretrainingData(
        train=_InMemory("pixel_values", pixels[:n]),
        processor=processor,
        config_updates={},
        probe=ProbeData(train=labeled[:1500], test=labeled[1500:]),
        description=f"builtin digits: {n} images -> {'x'.join(map(str, pixels.shape[1:]))}",
    )


def _prepare_images(config, rows, column, label_column, processor, seed, source, bad) -> PretrainingData:
    mode = _image_mode(config)
    bad.total = len(rows)
    if processor is None:  # normalise with the data's own statistics, from its first images
        first = _Images(rows.select(range(min(256, len(rows)))), column, _image_processor(config), mode,
                        BadExamples(0.999999, min(256, len(rows)), quiet=True))  # the bad ones: handled below
        stats = torch.stack([e["pixel_values"] for e in _all_examples(first)])
        good = sorted(set(range(len(first))) - set(first.bad_indices))
        _log_image_size(config, _to_pil(rows[good[0]][column]).size, source)
        processor = _image_processor(config, stats)
    train = _Images(rows, column, processor, mode, bad)
    if _fits_in_memory(4 * len(train) * config.num_channels * config.image_size**2, source):  # float32 pixels
        pixels = [e["pixel_values"] for e in _all_examples(train)]
        if train.bad_indices:  # skipped: out of the rows too, so that the probe's indices stay right
            rows = rows.select(sorted(set(range(len(rows))) - set(train.bad_indices)))
        _check_image_shapes(config, pixels, source)
        train = _InMemory("pixel_values", torch.stack(pixels))  # decoded once; the probe's examples are views of it
    else:
        checked = train.__getitems__(range(min(NUM_CHECKED, len(train))))
        _check_image_shapes(config, [e["pixel_values"] for e in checked], source)
    return PretrainingData(
        train=train,
        processor=processor,
        config_updates={},
        probe=_probe(rows, label_column, lambda indices: _all_examples(train, indices), seed),
        description=f"{source}: {len(train)} images -> {config.num_channels}x{config.image_size}x{config.image_size}",
    )


# ---- text ------------------------------------------------------------------------------------------------------


def train_bpe_tokenizer(texts: Iterable, vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (strings or batches of strings) with RoBERTa's special tokens:
    <s>=0, <pad>=1, </s>=2, <unk>=3 and <mask> the last id; it wraps each text as `<s> ... </s>`. Deterministic."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    bpe.add_special_tokens(["<mask>"])
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>",
    )


def _special_ids(tokenizer) -> dict[str, int]:
    """The ids the model needs: <s> / </s> (or CLS / SEP), padding and mask."""
    ids = {
        "bos_token_id": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id,
        "eos_token_id": tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "mask_token_id": tokenizer.mask_token_id,
    }
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ValueError(
            f"the tokenizer has no {', '.join(m.removesuffix('_token_id') for m in missing)} token: use one with "
            "begin / end, padding and mask tokens (e.g. a RoBERTa or BERT tokenizer), or processor=None to train a "
            "BPE tokenizer on the data"
        )
    return ids


def _group_texts(batch: dict, tokenizer, column: str, block: int, bos: int, eos: int) -> dict:
    """run_mlm's group_texts: tokenize, concatenate (each text followed by </s>), cut into blocks of `block` tokens
    wrapped <s> ... </s>, and drop the remainder."""
    ids = tokenizer([t for t in batch[column] if t], add_special_tokens=False)["input_ids"]
    stream = [token for text in ids for token in (*text, eos)]
    return {"input_ids": [[bos, *stream[i : i + block], eos] for i in range(0, len(stream) - block + 1, block)]}


def _prepare_text(
    config, rows, column, label_column, tokenizer, max_seq_length, vocab_size, seed, source, max_blocks=None,
    probe_rows=None,
) -> PretrainingData:
    """Tokenizes `rows[column]` into blocks of `max_seq_length` tokens (training a BPE tokenizer on them when
    `tokenizer` is None); `max_blocks` keeps the first blocks only. The probe: `probe_rows` (train, held-out) with a
    "label" column if given, else up to PROBE_SIZE rows with a `label_column`; each text tokenized whole, truncated to
    `max_seq_length`."""
    if tokenizer is None:
        tokenizer = train_bpe_tokenizer((batch[column] for batch in rows.select_columns([column]).iter(1000)),
                                        vocab_size)
    ids = _special_ids(tokenizer)
    blocks = rows.map(
        _group_texts, batched=True, remove_columns=rows.column_names, desc="tokenizing",
        fn_kwargs=dict(tokenizer=tokenizer, column=column, block=max_seq_length - 2, bos=ids["bos_token_id"],
                       eos=ids["eos_token_id"]),
    )
    if len(blocks) == 0:
        raise ValueError(
            f"{source} holds fewer than max_seq_length - 2 = {max_seq_length - 2} tokens (per batch of 1000 rows): "
            "use more text or a smaller max_seq_length"
        )
    if max_blocks is not None:
        blocks = blocks.select(range(min(max_blocks, len(blocks))))

    def tokenize(labelled):
        encoded = tokenizer([t or "" for t in labelled[column]], truncation=True, max_length=max_seq_length)
        return [{"input_ids": torch.tensor(x)} for x in encoded["input_ids"]]

    if probe_rows is None:
        probe = _probe(rows, label_column, lambda indices: tokenize(rows.select(indices)), seed)
    else:
        probe = ProbeData(*([{**e, "labels": int(y)} for e, y in zip(tokenize(part), part["label"])]
                            for part in probe_rows))
    # RoBERTa positions run from pad_token_id + 1 (Data2VecTextEmbeddings)
    updates = {"vocab_size": len(tokenizer), **ids, "max_position_embeddings": max_seq_length + ids["pad_token_id"] + 1}
    return PretrainingData(
        train=_TokenBlocks(blocks),
        processor=tokenizer,
        config_updates=updates,
        probe=probe,
        description=f"{source}: {len(blocks)} blocks of {max_seq_length} tokens, vocabulary {len(tokenizer)}",
    )


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


def _builtin_text(config, tokenizer, max_seq_length, vocab_size, seed, max_blocks) -> PretrainingData:
    """The Python help topics followed by the training docstrings of `stdlib_docstring_splits`, cut into blocks (the
    tokenizer is trained on them); the probe: which area a docstring comes from, its held-out docstrings never in the
    pretraining text nor the tokenizer's."""
    train, test = stdlib_docstring_splits()
    rows = datasets.Dataset.from_dict({"text": [topics[key] for key in sorted(topics)] + list(train["text"])})
    source = f"builtin Python help topics + {len(train)} stdlib docstrings"
    return _prepare_text(config, rows, "text", None, tokenizer, max_seq_length, vocab_size, seed, source,
                         max_blocks=max_blocks, probe_rows=(train, test))


# ---- audio -----------------------------------------------------------------------------------------------------


def default_feature_extractor(sampling_rate: int) -> Wav2Vec2FeatureExtractor:
    """Per-clip zero-mean unit-variance normalisation at `sampling_rate` (wav2vec 2.0 / data2vec audio)."""
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sampling_rate, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=True)


def _normalize_clip(processor, wave: np.ndarray, sampling_rate: int) -> np.ndarray:
    return np.asarray(processor(wave, sampling_rate=sampling_rate)["input_values"][0], dtype=np.float32)


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave
    g = math.gcd(rate, target)
    return scipy.signal.resample_poly(wave, target // g, rate // g).astype(np.float32)


def _audio_source(value) -> tuple[np.ndarray | io.BytesIO | str, int | None]:
    """An audio cell as (array, sampling rate or None) or (a file's bytes / path for soundfile, None). The cell is a
    pyarrow scalar (map-style: arrays are read zero-copy) or a stream row's python value: an {"bytes", "path"} or
    {"array", "sampling_rate"} struct, or a list of samples (a list of channels' lists: several channels)."""
    if isinstance(value, pa.Scalar) and pa.types.is_struct(value.type):
        value = {field.name: value[field.name] for field in value.type}  # the fields stay scalars, read below
    if isinstance(value, dict):
        if "array" in value:
            return _numpy(value["array"]), _as_py(value.get("sampling_rate"))
        data, path = _as_py(value.get("bytes")), _as_py(value.get("path"))
        if not data and not path:
            raise ValueError("the audio cell has neither bytes nor a path")
        return (io.BytesIO(bytes(data)) if data else path), None  # bytes(): a stream may give a memoryview
    return _numpy(value), None


def _as_py(value):
    return value.as_py() if isinstance(value, pa.Scalar) else value


def _numpy(value) -> np.ndarray:
    if value is None or (isinstance(value, pa.Scalar) and not value.is_valid):
        raise ValueError("the audio cell is empty")
    if not isinstance(value, pa.Scalar):  # a python list (a stream's row), or an array
        return np.asarray(value, dtype=np.float32)  # ragged channels fail here (ValueError): a bad example
    array = value.values.to_numpy(zero_copy_only=False)
    return np.stack(array) if array.dtype == object else array  # list<list<float>>: (channels, samples)


def _clip_info(value: pa.Scalar, default_rate: int) -> tuple[int, int]:
    """(samples, sampling rate) of an audio cell, from the file's header or the array's shape."""
    source, rate = _audio_source(value)
    if isinstance(source, np.ndarray):
        return source.shape[-1], rate or default_rate
    info = soundfile.info(source)
    return info.frames, info.samplerate


def _read_clip(value: pa.Scalar, default_rate: int) -> tuple[np.ndarray, int]:
    """A mono float32 waveform and its sampling rate; channels are averaged."""
    source, rate = _audio_source(value)
    if isinstance(source, np.ndarray):
        if source.ndim not in (1, 2) or not source.size:
            raise ValueError(f"an audio array is (samples,) or (channels, samples); got shape {source.shape}")
        wave = source.mean(axis=0) if source.ndim == 2 else source
        return wave.astype(np.float32), rate or default_rate
    wave, rate = soundfile.read(source, dtype="float32", always_2d=True)
    return wave.mean(axis=1), rate


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


def _builtin_spoken_words(config: Data2VecConfig, processor, max_examples: int | None, seed: int) -> PretrainingData:
    """1000 clips of two-syllable words said by synthetic voices (`synthetic_voices`, one voice per clip) at
    config.sampling_rate, normalised once: the first 800 for pretraining (and the probe's training set), the last 200
    (other voices) held out."""
    sr = config.sampling_rate
    processor = processor if processor is not None else default_feature_extractor(sr)
    _check_processor_rate(processor, sr)
    clips, labels = synthesize_spoken_words(1000, sr, seed)
    waves = [_normalize_clip(processor, clip, sr) for clip in clips]
    labeled = [{"input_values": w, "labels": int(y)} for w, y in zip(waves, labels)]
    n = 800 if max_examples is None else min(800, max_examples)
    return PretrainingData(
        train=_InMemory("input_values", waves[:n]),
        processor=processor,
        config_updates={},
        probe=ProbeData(train=labeled[:800], test=labeled[800:]),
        description=f"builtin spoken words: {n} clips of 0.5-1.1 s at {sr} Hz, {len(SPOKEN_WORD_CLASSES)} words "
        "(anagram pairs), one synthetic voice per clip",
    )


def _check_processor_rate(processor, sampling_rate: int) -> None:
    rate = getattr(processor, "sampling_rate", sampling_rate)
    if rate != sampling_rate:
        raise ValueError(f"the feature extractor works at {rate} Hz but config.sampling_rate is {sampling_rate} Hz: "
                         "use one at the model's rate, or processor=None")


def _shortest_clip(config, min_seconds: float | None) -> tuple[int, str]:
    """(samples, its description): clips shorter than `min_seconds` or the conv feature encoder's receptive field are
    dropped (not bad examples: they decode, but would crop a whole batch to a few frames, or to none)."""
    sr, field = config.sampling_rate, config.receptive_field
    least = max(field, math.ceil((min_seconds or 0.0) * sr))
    return least, (f"{min_seconds:g} s (min_audio_seconds, --min_audio_seconds)" if least > field else
                   f"the receptive field of the conv feature encoder ({field} samples at {sr} Hz)")


def _prepare_audio(config, rows, column, label_column, processor, resample, seed, source, bad,
                   min_seconds: float | None = None) -> PretrainingData:
    """Scans the clips' lengths and rates (file headers only), refuses or resamples other rates, drops clips shorter
    than `min_seconds` or the conv feature encoder's receptive field, and decodes the rest: once, up front, when small
    (`_in_memory_if_small`), else per batch."""
    sr, field = config.sampling_rate, config.receptive_field
    least, shortest = _shortest_clip(config, min_seconds)
    processor = processor if processor is not None else default_feature_extractor(sr)
    _check_processor_rate(processor, sr)
    table = rows.select_columns([column]).with_format("arrow")
    bad.total = len(rows)
    infos, unreadable = [], 0
    for start in range(0, len(rows), 1000):
        for index, value in enumerate(table[start : start + 1000].column(column), start):
            try:
                infos.append(_clip_info(value, sr))
            except DECODE_ERRORS as error:  # an unreadable header: the clip is dropped (or the run stops) here
                bad.handle(_cell_name(value, index), error)
                infos.append((0, sr))
                unreadable += 1
    infos = np.array(infos).reshape(-1, 2)
    rates = sorted({int(r) for r in infos[:, 1]} - {sr})
    if rates and not resample:
        raise ValueError(
            f"{source} has audio at {', '.join(map(str, rates))} Hz but the model expects {sr} Hz "
            "(config.sampling_rate): resample the audio, or pass resample_audio=True (--resample_audio)"
        )
    if rates:
        warnings.warn(f"{source}: resampling audio from {', '.join(map(str, rates))} Hz to {sr} Hz "
                      "(config.sampling_rate)", stacklevel=3)
    samples = np.ceil(infos[:, 0] * sr / infos[:, 1])
    keep = np.flatnonzero(samples >= least)
    if len(keep) == 0:
        raise ValueError(f"every clip of {source} is shorter than {shortest}: use longer clips"
                         + (", or a smaller --min_audio_seconds" if least > field else ""))
    if len(keep) < len(rows) - unreadable:
        warnings.warn(f"{source}: dropped {len(rows) - unreadable - len(keep)} of {len(rows)} clips shorter than "
                      f"{shortest}", stacklevel=3)
    if len(keep) < len(rows):
        rows = rows.select(keep)
    train = _Audio(rows, column, processor, sr, bad)
    if _fits_in_memory(4 * samples[keep].sum(), source):  # float32 samples at sr: decoded once, the probe's too
        train = _InMemory("input_values", [e["input_values"] for e in _all_examples(train)])
    else:
        train.__getitems__(range(min(NUM_CHECKED, len(train))))  # unreadable files fail here, not in training
    return PretrainingData(
        train=train,
        processor=processor,
        config_updates={},
        probe=_probe(rows, label_column, lambda indices: _all_examples(train, indices), seed),
        description=f"{source}: {len(train)} clips at {sr} Hz",
    )


__all__ = [
    "PretrainingData",
    "ProbeData",
    "SOUND_CLASSES",
    "SPOKEN_LETTERS",
    "SPOKEN_WORDS",
    "STDLIB_AREAS",
    "default_feature_extractor",
    "load_pretraining_data",
    "stdlib_docstring_names",
    "stdlib_docstring_splits",
    "stdlib_docstrings",
    "synthesize_sounds",
    "synthesize_speech",
    "train_bpe_tokenizer",
]
