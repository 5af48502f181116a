"""`--streaming`: pretraining examples read as a `datasets` `IterableDataset` (a Hub id or local shards: json / jsonl,
csv, parquet, text, webdataset .tar; `sources.open_stream`), shuffled with a buffer, split across processes
(`split_dataset_by_node`) and DataLoader workers (datasets gives each worker its own shards), and prepared a row at a
time, in the worker that reads it, by the modality's preparation, map-style's (`preparation.py`): text cut into blocks
(no joining across rows), images decoded and processed, audio clips decoded with soundfile, averaged to mono,
resampled to the model's rate and normalised; clips shorter than --min_audio_seconds (or the receptive field) are
dropped and counted. The default processor is fitted to the stream's first rows (a stream cannot be read whole).

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
from dataclasses import dataclass

import datasets
import torch
from datasets.distributed import split_dataset_by_node

from ..masking import SeededBatch
from .errors import DECODE_ERRORS, BadExampleError, BadExamples, example_name
from .examples import PretrainingData
from .preparation import PREPARATIONS, AudioRateError, Preparation, PreparationOptions, ShortClip, find_column
from .sources import checked_rows, open_stream, stream_features, undecoded_stream

logger = logging.getLogger(__name__)

STREAM_SEED_TAG = 10**6 + 1  # SeededBatch seeds (seed, tag, micro-batch, rank): apart from map-style's (seed, epoch, ..)
MIN_ROWS_FOR_FRACTION = 100  # --skip_bad_examples: the fraction counts over at least this many rows


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



class PrepareRow:
    """One stream row -> its examples: the modality's preparation applied to the row's `column` (text: blocks of
    `max_seq_length` tokens, no joining across rows; images, audio: one; a clip too short raises ShortClip)."""

    def __init__(self, preparation: Preparation, column: str):
        self.preparation, self.column = preparation, column

    def __call__(self, row: dict) -> list[dict]:
        return self.preparation.examples(row[self.column])


def _row_name(row: dict, column: str, index: int, epoch: int) -> str:
    return example_name(row.get(column)) or f"row {index} of epoch {epoch} of this worker's stream"


class StreamingExamples(torch.utils.data.IterableDataset):
    """This process's micro-batches, forever: `(SeededBatch of examples, worker id, StreamPosition after it)`.

    `positions[worker]` (set by `stream_batches`) is where each worker resumes; an unset worker starts at the
    beginning."""

    def __init__(self, stream: datasets.IterableDataset, prepare: PrepareRow, batch_size: int, seed: int,
                 buffer_size: int, skip: float | None, source: str, rank: int = 0, world_size: int = 1):
        self.batch_size, self.seed, self.prepare, self.skip, self.source = batch_size, seed, prepare, skip, source
        self.rank, self.world_size = rank, world_size
        stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
        self.stream = split_dataset_by_node(stream, rank, world_size) if world_size > 1 else stream
        self.positions: dict[int, StreamPosition] = {}
        self.first_batch = None  # set by load_streaming_data: checked there, collated by the trainer's check

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
        return checked_rows(self.stream if stream is None else stream, self.source)

    def _examples(self, row: dict, pos: StreamPosition, index: int = 0, count: bool = True) -> list[dict]:
        if count:
            pos.seen += 1
        try:
            return self.prepare(row)
        except AudioRateError:  # a ValueError, but not a bad example: the run stops, naming the fix
            raise
        except ShortClip as short:
            if count:
                pos.short += 1
                if pos.short & (pos.short - 1) == 0:  # the 1st, 2nd, 4th, 8th, ...: a few lines however long the run
                    logger.warning("--streaming: dropped %d of %d clips seen by this worker shorter than %s (the "
                                   "last: %s)", pos.short, pos.seen, str(short),  # strings: a log record holding
                                   # the exception would keep its frames and the stream open
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
    held-out set). The settings are `load_pretraining_data`'s, applied per row; the default processor is fitted to
    the stream's first rows (text: its first `tokenizer_examples` rows)."""
    modality = config.modality
    BadExamples(skip_bad_examples)  # the same range check as map-style data
    if buffer_size < 1:
        raise ValueError(f"--shuffle_buffer_size must be >= 1; got {buffer_size}")
    options = PreparationOptions(max_seq_length, tokenizer_vocab_size, resample_audio, min_audio_seconds)
    preparation = PREPARATIONS[modality](config, processor, options, cache_dir)
    stream, source = open_stream(dataset, dataset_config_name, split, cache_dir, skip_bad_examples, modality)
    stream = undecoded_stream(stream)
    # one read of the stream's head (in file order) for the column and the processor's fit: every pass over parquet
    # shards that ends early costs datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN (5 s) in datasets 5.2
    fit_rows = tokenizer_examples if preparation.fit_rows is None else preparation.fit_rows
    head = list(itertools.islice(checked_rows(stream, source), max(fit_rows, 1)))
    if not head:
        raise ValueError(f"{source} holds no rows: give shards with data, or another --dataset_split")
    column = find_column(stream_features(stream, head[0]), modality, column, source)
    stream = stream.select_columns([column])
    if preparation.fit_rows is None:  # map-style fits to all the data; a stream to its head
        logger.warning("--streaming: no --processor given: the default processor is fitted to the first %d rows of "
                       "the stream (in file order; --streaming_tokenizer_examples), not to all the data; pass "
                       "--processor for one of your own", len(head))
    preparation.fit([row[column] for row in head], source)
    train = StreamingExamples(stream, PrepareRow(preparation, column), batch_size, seed, buffer_size,
                              skip_bad_examples, source, rank, world_size)
    train.first_batch = next(iter(train))[0]  # the trainer's first-batch check collates it
    preparation.check(train.first_batch, source)
    return PretrainingData(train=train, processor=preparation.processor, config_updates=preparation.config_updates(),
                           probe=None, description=f"{source}: {preparation.describe(streamed=True)}; shuffle buffer "
                           f"{buffer_size}")


__all__ = ["StreamPosition", "StreamingExamples", "load_streaming_data", "open_stream", "stream_batches"]
