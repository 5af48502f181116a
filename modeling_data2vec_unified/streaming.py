"""`--streaming`: pretraining examples read as a `datasets` `IterableDataset` (a Hub id or local files: json / jsonl,
csv, parquet, text, webdataset .tar), shuffled with a buffer, split across processes (`split_dataset_by_node`) and
DataLoader workers (datasets gives each worker its own shards), prepared a row at a time in the worker that reads it:
text tokenized into blocks, images decoded and processed, audio clips decoded with soundfile (file bytes / paths, or
arrays; never torchcodec: `datasets.Audio` columns are read as plain {"bytes", "path"} structs), averaged to mono,
resampled to the model's rate and normalised; clips shorter than --min_audio_seconds (or the receptive field) are
dropped and counted, as map-style.

The stream position is exact and part of the checkpoint. Each (process, worker) stream is a pure function of (seed,
epoch): `datasets` shuffles the shard order and the buffer from the seed and `set_epoch`. A worker's position is
(epoch, rows read in the epoch, examples of the current row already emitted, batches emitted, rows seen, rows
skipped as bad); a resume replays the epoch's raw rows up to that position without preparing (decoding /
tokenizing) them, so it costs one read of at most one epoch of the worker's shards. `datasets`'
`IterableDataset.state_dict()` is not used: it does not keep the shuffle buffer's contents, so a resume from it does
not see the batches the uninterrupted run would have seen (measured: docs/training.md, Streaming).

Batches come from the DataLoader's workers round robin (worker i serves the micro-batches g = i mod W of a process);
a resumed run starts at worker `start mod W` by reordering each round of W batches. Masks stay a pure function of
(seed, micro-batch, rank) (`SeededBatch`).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node

from .data import (
    COLUMN_NAMES,
    DECODE_ERRORS,
    LOADERS,
    BadExampleError,
    BadExamples,
    PretrainingData,
    _check_image_shapes,
    _check_processor_rate,
    _image_mode,
    _image_processor,
    _normalize_clip,
    _plausible_hub_id,
    _process_images,
    _read_clip,
    _resample,
    _shortest_clip,
    _special_ids,
    _to_pil,
    default_feature_extractor,
    train_bpe_tokenizer,
)
from .masking import SeededBatch

logger = logging.getLogger(__name__)

STREAM_LOADERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text",
                  ".tar": "webdataset"}
STREAM_SEED_TAG = 10**6 + 1  # SeededBatch seeds (seed, tag, micro-batch, rank): apart from map-style's (seed, epoch, ..)
MIN_ROWS_FOR_FRACTION = 100  # --skip_bad_examples: the fraction counts over at least this many rows
IMAGE_STATS_ROWS = 256  # images: the default processor normalises with the statistics of the stream's first images
AUDIO_STRUCT = datasets.Features({"bytes": datasets.Value("binary"), "path": datasets.Value("string")})


@dataclass
class StreamPosition:
    """Where one worker's stream stands, after its last emitted batch."""

    epoch: int = 0
    rows: int = 0  # rows of the epoch read (the last one maybe partly emitted)
    emitted: int = 0  # examples of row `rows - 1` emitted (text: a row gives several blocks); 0: none pending
    batches: int = 0  # batches this worker emitted over the run
    seen: int = 0  # rows prepared over the run
    bad: int = 0  # rows skipped as undecodable over the run
    short: int = 0  # audio: clips dropped as too short over the run (not bad: logged, never stop the run)


def _source_files(dataset: str, split: str, modality: str | None = None) -> tuple[str, list[str]] | None:
    """(datasets builder, files) of a local file or folder; None for a Hub id. In a folder of image or audio shards,
    .txt files (notes, READMEs), which cannot hold images or audio, are left out with a warning naming them."""
    path = Path(dataset).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in STREAM_LOADERS
                       and not any(p.startswith(".") for p in f.relative_to(path).parts))
        if split != "train":
            files = [f for f in files if f.name.startswith(split) or split in f.relative_to(path).parts[:-1]]
    elif _plausible_hub_id(dataset):
        return None
    else:
        raise FileNotFoundError(f"--streaming: dataset {dataset!r} does not exist: give an existing folder or file "
                                "of json / jsonl / csv / parquet / txt shards, or a datasets Hub id")
    if not files:
        raise ValueError(
            f"--streaming: {dataset} holds no data files" + (f" of split {split!r}" if split != "train" else "")
            + f": looked for {' '.join(STREAM_LOADERS)} shards (a folder of image / audio files streams once its files "
            "are in parquet shards as a {'bytes', 'path'} column, or in webdataset .tar shards), or drop --streaming "
            "to read it map-style")
    kinds = sorted({STREAM_LOADERS.get(f.suffix.lower(), f.suffix) for f in files})
    stray = [f for f in files if STREAM_LOADERS.get(f.suffix.lower()) == "text"]
    if len(kinds) > 1 and modality in ("vision", "audio") and 0 < len(stray) < len(files):
        logger.warning("--streaming: left out %d .txt file(s) of %s, which cannot hold %s shards: %s", len(stray),
                       dataset, "image" if modality == "vision" else "audio",
                       ", ".join(str(f.relative_to(path)) for f in stray[:5]) + (" ..." if len(stray) > 5 else ""))
        files = [f for f in files if f not in stray]
        kinds = sorted({STREAM_LOADERS.get(f.suffix.lower(), f.suffix) for f in files})
    if len(kinds) > 1 or kinds[0] not in STREAM_LOADERS.values():
        if any(LOADERS.get(f.suffix.lower()) in ("imagefolder", "audio") for f in files):
            raise ValueError(f"--streaming: {dataset} holds image / audio files, not shards: put the files' bytes in "
                             "parquet shards (a column of {'bytes', 'path'}) or in webdataset .tar shards, or drop "
                             "--streaming")
        raise ValueError(f"--streaming: {dataset} mixes {' / '.join(kinds)} files: point --dataset at shards of one "
                         "format")
    return kinds[0], [str(f) for f in files]


def _check_shards(loader: str, files: list[str], skip: float | None) -> list[str]:
    """Local parquet shards whose footer cannot be read are refused (naming the file) or, with --skip_bad_examples,
    dropped with a counted warning; other formats fail when read (naming the file)."""
    if loader != "parquet":
        return files
    import pyarrow.parquet as pq

    good = []
    for file in files:
        try:
            pq.read_metadata(file)
            good.append(file)
        except Exception as error:  # noqa: BLE001: any unreadable footer
            if skip is None:
                raise BadExampleError(f"shard {file} cannot be read ({type(error).__name__}: {error}). Fix or remove "
                                      "it, or pass --skip_bad_examples 0.01 to skip bad shards and examples") from error
            bad = len(files) - len(good) - (len(files) - files.index(file) - 1)  # the bad ones so far
            logger.warning("--skip_bad_examples: skipped shard %s (%s: %s): %d bad shard(s) so far", file,
                           type(error).__name__, error, bad)
    if len(files) - len(good) > (skip or 0) * len(files):
        raise BadExampleError(f"{len(files) - len(good)} of {len(files)} shards cannot be read, more than "
                              f"--skip_bad_examples {skip:g} allows: check the data")
    return good


def open_stream(dataset: str, config_name: str | None, split: str, cache_dir: str | None,
                skip: float | None = None, modality: str | None = None) -> tuple[datasets.IterableDataset, str]:
    """The unshuffled stream and a short name for messages."""
    found = _source_files(dataset, split, modality)
    try:
        if found is None:
            stream = datasets.load_dataset(dataset, config_name, split=split, cache_dir=cache_dir, streaming=True)
            source = f"Hub dataset {dataset} [{split}] (streamed)"
        else:
            loader, files = found
            files = _check_shards(loader, files, skip)
            stream = datasets.load_dataset(loader, data_files=files, split="train", cache_dir=cache_dir,
                                           streaming=True)
            source = f"{dataset} ({len(files)} {loader} shard{'s' * (len(files) > 1)}, streamed)"
    except (ValueError, FileNotFoundError, BadExampleError):
        raise
    except Exception as error:  # offline, unknown id, an empty or malformed shard: say what was tried
        if found is not None:
            names = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            raise ValueError(f"--streaming: datasets' {found[0]!r} builder could not open {names} "
                             f"({type(error).__name__}: {error}): check that the shards are not empty or "
                             "malformed") from error
        raise FileNotFoundError(f"--streaming: load_dataset({dataset!r}, {config_name!r}, split={split!r}, "
                                f"streaming=True) failed: {type(error).__name__}: {error}. Give local shards or a "
                                "reachable Hub dataset") from error
    return stream, source


def _find_column(stream: datasets.IterableDataset, first: dict, modality: str, column: str | None,
                 source: str) -> str:
    names = list(first)
    if column is not None:
        if column not in names:
            raise ValueError(f"column {column!r} is not a column of {source}; its columns: {names}")
        return column
    found = [c for c in COLUMN_NAMES[modality] if c in names]
    if modality == "vision":
        found += [c for c in names if isinstance(first[c], dict) and "bytes" in first[c]]
    elif modality == "audio":  # file structs (webdataset: a column per extension, "wav" / "flac"), or arrays
        found += [c for c in names if isinstance(first[c], dict) and ({"bytes", "array"} & set(first[c]))]
    elif modality == "text":
        found += [c for c in names if isinstance(first[c], str)]
    if not found:
        raise ValueError(f"{source} has no {modality} column (looked for {' / '.join(COLUMN_NAMES[modality])}); its "
                         f"columns: {names}. Pass --column")
    return found[0]


class AudioRateError(ValueError):
    """A clip at another rate than the model's with --no_resample_audio: the run stops (it is not a bad example)."""


class ShortClip(Exception):
    """A clip shorter than the shortest kept: dropped and counted, not a bad example (it decodes)."""


class _Prepare:
    """One raw row -> its examples (text: blocks of `max_seq_length` tokens, no joining across rows; images, audio:
    one; a clip too short raises ShortClip)."""

    def __init__(self, modality, column, processor, max_seq_length=128, mode="RGB", config=None, resample=True,
                 min_seconds=None):
        self.modality, self.column, self.processor = modality, column, processor
        self.max_seq_length, self.mode = max_seq_length, mode
        if modality == "text":
            ids = _special_ids(processor)
            self.bos, self.eos = ids["bos_token_id"], ids["eos_token_id"]
        if modality == "audio":
            self.sampling_rate, self.resample = config.sampling_rate, resample
            self.least, self.shortest = _shortest_clip(config, min_seconds)
            self.rates = set()  # other rates met by this worker (logged once each)

    def __call__(self, row: dict) -> list[dict]:
        value = row[self.column]
        if self.modality == "text":
            if not value:
                return []
            ids = self.processor(value, add_special_tokens=False)["input_ids"]
            block = self.max_seq_length - 2
            return [{"input_ids": torch.tensor([self.bos, *ids[i : i + block], self.eos])}
                    for i in range(0, len(ids), block)]
        if self.modality == "audio":
            return [{"input_values": self._clip(value)}]
        if isinstance(value, dict) and "bytes" in value and not isinstance(value["bytes"], (bytes, type(None))):
            value = {**value, "bytes": bytes(value["bytes"])}
        image = _to_pil(value)
        image.load()  # a truncated file fails here
        return [{"pixel_values": p} for p in _process_images(self.processor, [image.convert(self.mode)])]

    def _clip(self, value) -> np.ndarray:
        """As map-style `_Audio`: decoded (data.py's `_read_clip`: soundfile or arrays), mono, resampled, normalised."""
        wave, rate = _read_clip(value, self.sampling_rate)
        sr = self.sampling_rate
        if rate != sr and not self.resample:
            raise AudioRateError(f"{_value_name(value) or 'a clip'} is audio at {rate} Hz but the model expects "
                                 f"{sr} Hz (config.sampling_rate): resample the audio, or drop --no_resample_audio "
                                 "(--resample_audio)")
        if rate != sr and rate not in self.rates:
            self.rates.add(rate)
            logger.warning("--streaming: resampling audio at %d Hz (first: %s) to %d Hz (config.sampling_rate)", rate,
                           _value_name(value) or "no path", sr)
        if math.ceil(len(wave) * sr / rate) < self.least:  # before resampling: a dropped clip costs no resampling
            raise ShortClip
        return _normalize_clip(self.processor, _resample(wave, rate, sr), sr)


def _value_name(value) -> str | None:
    return str(value["path"]) if isinstance(value, dict) and value.get("path") else None


def _row_name(row: dict, column: str, index: int, epoch: int) -> str:
    return _value_name(row.get(column)) or f"row {index} of epoch {epoch} of this worker's stream"


class StreamingExamples(torch.utils.data.IterableDataset):
    """This process's micro-batches, forever: `(SeededBatch of examples, worker id, StreamPosition after it)`.

    `start(positions, first)` sets where each worker resumes (`positions[worker]`) and the process's micro-batch
    count (`first`); an unset worker starts at the beginning."""

    def __init__(self, stream: datasets.IterableDataset, prepare: _Prepare, batch_size: int, seed: int,
                 buffer_size: int, skip: float | None, source: str, rank: int = 0, world_size: int = 1):
        self.batch_size, self.seed, self.prepare, self.skip, self.source = batch_size, seed, prepare, skip, source
        self.rank, self.world_size = rank, world_size
        stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
        self.stream = split_dataset_by_node(stream, rank, world_size) if world_size > 1 else stream
        self.positions: dict[int, StreamPosition] = {}
        self.first_batch = None  # set by load_streaming_data: checked there, collated by the trainer's check
        self.num_workers = 1

    @property
    def n_shards(self) -> int:
        return self.stream.n_shards

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        pos = StreamPosition(**vars(self.positions.get(worker, StreamPosition())))
        # This iterator's own copy of the stream: datasets keeps an IterableDataset's epoch in a torch tensor in shared
        # memory (so that set_epoch in the main process reaches persistent workers), which forked DataLoader workers
        # (and the main process) share. Each worker here sets its own epoch as it goes: on the shared tensor, a worker
        # reaching an epoch's end could set the other's epoch between that one's set_epoch and its read of it, which
        # then read its epoch's shards in another epoch's shuffle (runs with workers not reproducible, now and then;
        # resumes not equal to the uninterrupted run). A deep copy has a tensor of its own.
        stream = copy.deepcopy(self.stream)
        while True:
            stream.set_epoch(pos.epoch)
            rows, index, pending = self._rows(stream), 0, []
            if pos.rows or pos.emitted:  # resume: replay the epoch's raw rows (not prepared) up to the position
                index = sum(1 for _ in itertools.islice(rows, pos.rows))
                row = next(rows, None) if pos.emitted else {}
                if index != pos.rows or row is None:
                    raise ValueError(f"{self.source}: the stream is shorter than the checkpoint's position (epoch "
                                     f"{pos.epoch}, row {pos.rows + bool(pos.emitted)}): the shards changed since "
                                     "the checkpoint was saved")
                if pos.emitted:  # a text row whose first blocks were emitted: the rest come first
                    index += 1
                    made = self._examples(row, pos, index, count=False)
                    pending = [(e, index, j + 1, len(made)) for j, e in enumerate(made)][pos.emitted :]
            any_row, whole, examples, short, bad = index > 0, index == 0, 0, pos.short, pos.bad
            for row in rows:
                index, any_row = index + 1, True
                made = self._examples(row, pos, index)
                examples += len(made)
                pending += [(e, index, j + 1, len(made)) for j, e in enumerate(made)]
                while len(pending) >= self.batch_size:
                    batch, pending = pending[: self.batch_size], pending[self.batch_size :]
                    _, last, j, total = batch[-1]  # rows done, and examples of the next row already emitted
                    pos.rows, pos.emitted = (last - 1, j) if j < total else (last, 0)
                    g = worker + workers * pos.batches  # the process's micro-batch number
                    pos.batches += 1
                    yield (SeededBatch([e for e, *_ in batch], (self.seed, STREAM_SEED_TAG, g, self.rank)),
                           worker, StreamPosition(**vars(pos)))
            if not any_row:
                raise ValueError(
                    f"{self.source}: process {self.rank} DataLoader worker {worker} got no rows (the stream has "
                    f"{self.n_shards} shard(s) for {self.world_size} process(es) x {workers} worker(s)): use at most "
                    f"{max(self.n_shards // max(self.world_size, 1), 1)} --dataloader_num_workers, or more shards")
            if whole and examples < self.batch_size:  # else the next epochs would give no batch either: forever
                raise ValueError(
                    f"{self.source}: an epoch of process {self.rank} DataLoader worker {worker}'s stream ({index} rows"
                    f"; {pos.short - short} clip(s) too short, {pos.bad - bad} bad) gave {examples} example(s), fewer "
                    f"than a batch of {self.batch_size}: give more data, a smaller --per_device_train_batch_size"
                    + (", or a smaller --min_audio_seconds" if pos.short > short else ""))
            pos.epoch, pos.rows, pos.emitted = pos.epoch + 1, 0, 0  # the epoch's last partial batch is dropped

    def _rows(self, stream=None):
        return _checked_rows(self.stream if stream is None else stream, self.source)

    def _examples(self, row: dict, pos: StreamPosition, index: int = 0, count: bool = True) -> list[dict]:
        if count:
            pos.seen += 1
        try:
            return self.prepare(row)
        except AudioRateError:  # a ValueError, but not a bad example: the run stops, naming the fix
            raise
        except ShortClip:
            if count:
                pos.short += 1
                if pos.short & (pos.short - 1) == 0:  # the 1st, 2nd, 4th, 8th, ...: a few lines however long the run
                    logger.warning("--streaming: dropped %d of %d clips seen by this worker shorter than %s (the "
                                   "last: %s)", pos.short, pos.seen, self.prepare.shortest,  # strings: a log
                                   # record holding the exception would keep its frames and the stream open
                                   _row_name(row, self.prepare.column, index, pos.epoch))
            return []
        except DECODE_ERRORS as error:
            if not count:
                return []
            name = _row_name(row, self.prepare.column, index, pos.epoch)
            reason = f"{type(error).__name__}: {error}"
            if self.skip is None:
                raise BadExampleError(
                    f"{self.source}: {name} cannot be decoded ({reason}). Fix or remove it, or pass "
                    "--skip_bad_examples 0.01 to skip such examples (counted and logged; the run stops if more than "
                    "that fraction of the rows seen is bad)") from error
            pos.bad += 1
            logger.warning("skipped %s (%s): %d bad example(s) of %d seen by this worker", name, reason, pos.bad,
                           pos.seen)
            if pos.bad > self.skip * max(pos.seen, MIN_ROWS_FOR_FRACTION):
                raise BadExampleError(
                    f"{self.source}: {pos.bad} of the {pos.seen} rows seen cannot be decoded, more than "
                    f"--skip_bad_examples {self.skip:g} allows (the last: {name}; {reason}): check the data") from error
            return []


def _checked_rows(stream, source: str):
    """The stream's rows; a shard `datasets` cannot read (malformed json / csv, a truncated parquet) stops the run with
    an error naming the fix (the stream cannot continue past it: --skip_bad_examples skips only parquet shards whose
    footer is unreadable, at start-up, and undecodable images). datasets logs the file's name as it fails."""
    rows = iter(stream)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001: pyarrow / datasets errors of a bad shard
            raise BadExampleError(
                f"{source}: a shard cannot be read ({type(error).__name__}: {error}; the log above names the file). "
                "Fix or remove the malformed file (a bad shard cannot be skipped once the stream reads it)") from error
        yield row


class _CollateStream:
    """DataLoader collate_fn (in the worker): (SeededBatch, worker, position) -> (batch tensors, worker, position)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, item):
        examples, worker, position = item
        return self.collator(examples), worker, position


def stream_batches(examples: StreamingExamples, collator, num_workers: int, start: int, positions: dict,
                   generator_seed: int, pin_memory: bool = False):
    """This process's collated micro-batches from micro-batch `start`, each as (batch, worker, position); workers'
    batches reordered so that micro-batch g comes from worker g mod W, as in the uninterrupted run."""
    examples.positions = {int(k): StreamPosition(**v) if isinstance(v, dict) else v for k, v in positions.items()}
    workers = max(num_workers, 1)
    loader = torch.utils.data.DataLoader(
        examples, batch_size=None, collate_fn=_CollateStream(collator), num_workers=num_workers,
        pin_memory=pin_memory, persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(generator_seed))
    items = iter(loader)
    first = start % workers
    while True:
        round_ = [next(items) for _ in range(workers)]
        yield from round_[first:] + round_[:first]


def load_streaming_data(config, dataset: str, *, dataset_config_name=None, split="train", processor=None,
                        column=None, max_seq_length=128, tokenizer_vocab_size=2048, tokenizer_examples=10_000,
                        cache_dir=None, skip_bad_examples=None, batch_size=8, seed=0, buffer_size=1000,
                        rank=0, world_size=1, resample_audio=True, min_audio_seconds=None) -> PretrainingData:
    """`PretrainingData` whose `train` is a `StreamingExamples` (no length; no probe: streaming has no labelled
    held-out set). Audio: `resample_audio` and `min_audio_seconds` as `load_pretraining_data`'s, applied per row."""
    modality = config.modality
    BadExamples(skip_bad_examples)  # the same range check as map-style data
    if buffer_size < 1:
        raise ValueError(f"--shuffle_buffer_size must be >= 1; got {buffer_size}")
    if isinstance(processor, str):  # a path or Hub id, as map-style
        from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

        auto = {"text": AutoTokenizer, "vision": AutoImageProcessor, "audio": AutoFeatureExtractor}[modality]
        processor = auto.from_pretrained(processor, cache_dir=cache_dir)
    stream, source = open_stream(dataset, dataset_config_name, split, cache_dir, skip_bad_examples, modality)
    for name, feature in (stream.features or {}).items():  # images / audio decoded by us, per row: errors name the file
        if isinstance(feature, datasets.Image) and feature.decode:
            stream = stream.cast_column(name, datasets.Image(decode=False))
        elif isinstance(feature, datasets.Audio):  # even Audio(decode=False) wants torchcodec (to encode webdataset's
            stream = stream.cast_column(name, AUDIO_STRUCT)  # members) in datasets 4-5: read as a plain struct
    # one read of the stream's head (in file order) for the column, the tokenizer / image statistics: every pass over
    # parquet shards that ends early costs datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN (5 s) in datasets 5.2
    wanted = {"vision": IMAGE_STATS_ROWS, "text": tokenizer_examples if processor is None else 1}.get(modality, 1)
    head = list(itertools.islice(_checked_rows(stream, source), wanted))
    if not head:
        raise ValueError(f"{source} holds no rows: give shards with data, or another --dataset_split")
    column = _find_column(stream, head[0], modality, column, source)
    stream = stream.select_columns([column])
    updates = {}
    if modality == "text":
        if processor is None:
            texts = [r[column] for r in head if r[column]]
            logger.warning("--streaming: no --processor given: training a BPE tokenizer of %d tokens on the first %d "
                           "texts of the stream (in file order), not on all the data; pass --processor for a tokenizer "
                           "of your own", tokenizer_vocab_size, len(texts))
            processor = train_bpe_tokenizer([texts[i : i + 1000] for i in range(0, len(texts), 1000)],
                                            tokenizer_vocab_size)
        ids = _special_ids(processor)
        updates = {"vocab_size": len(processor), **ids,
                   "max_position_embeddings": max_seq_length + ids["pad_token_id"] + 1}
        prepare = _Prepare("text", column, processor, max_seq_length)
        what = f"blocks of <= {max_seq_length} tokens, vocabulary {len(processor)}"
    elif modality == "audio":
        sr = config.sampling_rate
        processor = processor if processor is not None else default_feature_extractor(sr)
        _check_processor_rate(processor, sr)
        prepare = _Prepare("audio", column, processor, config=config, resample=resample_audio,
                           min_seconds=min_audio_seconds)
        what = (f"clips at {sr} Hz ({'resampled' if resample_audio else 'other rates refused'}; shorter than "
                f"{prepare.shortest} dropped)")
    else:
        mode = _image_mode(config)
        if processor is None:  # normalise with the statistics of the stream's first images
            plain = _Prepare("vision", column, _image_processor(config), mode=mode)
            pixels = []
            for row in head:
                try:
                    pixels += [e["pixel_values"] for e in plain(row)]
                except DECODE_ERRORS:
                    continue
            if not pixels:
                raise ValueError(f"{source}: none of the first {IMAGE_STATS_ROWS} images can be decoded: check the "
                                 "data")
            processor = _image_processor(config, torch.stack(pixels))
        prepare = _Prepare("vision", column, processor, mode=mode)
        what = f"images -> {config.num_channels}x{config.image_size}x{config.image_size}"
    train = StreamingExamples(stream, prepare, batch_size, seed, buffer_size, skip_bad_examples, source, rank,
                              world_size)
    train.first_batch = next(iter(train))[0]  # the trainer's first-batch check collates it
    if modality == "vision":
        _check_image_shapes(config, [e["pixel_values"] for e in train.first_batch], source)
    return PretrainingData(train=train, processor=processor, config_updates=updates, probe=None,
                           description=f"{source}: {what}; shuffle buffer {buffer_size}")


__all__ = ["StreamPosition", "StreamingExamples", "load_streaming_data", "stream_batches"]
