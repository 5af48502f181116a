"""Map-style pretraining data: `load_pretraining_data(config, dataset)` reads the rows (`sources.load_rows`, or a
built-in set), finds the column, and has the modality's preparation (`preparation.py`) make the examples, with a probe
set when the data has labels.

Text is tokenized up front. Images and audio are decoded and processed once, up front, into memory when the prepared
examples take at most `data.MAX_IN_MEMORY_BYTES` (per batch it slowed a tiny model's steps by 3-9% on 2 CPU cores:
docs/benchmarks.md, the data pipeline); larger data is decoded and processed per batch in `__getitems__` (DataLoader
workers parallelise it).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Iterator

import datasets
import numpy as np
import torch

from ..configuration_data2vec import Data2VecConfig
from .builtin import BUILTIN_SETS
from .errors import DECODE_ERRORS, BadExamples, example_name
from .examples import (
    NUM_CHECKED,
    AudioExamples,
    ImageExamples,
    InMemoryExamples,
    PretrainingData,
    ProbeData,
    TokenBlocks,
    all_examples,
    undecoded,
)
from .preparation import (
    PREPARATIONS,
    AudioPreparation,
    ImagePreparation,
    PreparationOptions,
    TextPreparation,
    find_column,
)
from .sources import load_rows

logger = logging.getLogger(__name__)

PROBE_SIZE = 2000  # labelled examples kept for a linear probe (80% train, 20% test)


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
    options = PreparationOptions(max_seq_length, tokenizer_vocab_size, resample_audio, min_audio_seconds)
    preparation = PREPARATIONS[modality](config, processor, options, cache_dir)  # checks the settings first

    if dataset == "builtin":  # in memory, made together with the probe: dropped afterwards when not wanted
        data = BUILTIN_SETS[modality](preparation, max_examples, seed)
        return data if probe else dataclasses.replace(data, probe=None)

    rows, source = load_rows(modality, dataset, dataset_config_name, split, cache_dir, skip_bad_examples)
    if max_examples is not None:
        rows = rows.select(range(min(max_examples, len(rows))))
    column = find_column(rows.features, modality, column, source)
    if label_column is not None and label_column not in rows.column_names:
        raise ValueError(
            f"label_column {label_column!r} is not a column of {source}; its columns: {rows.column_names}"
        )
    if label_column is None and "label" in rows.column_names and column != "label":
        label_column = "label"
    if not probe:
        label_column = None  # no probe: none of its examples is decoded
    bad = BadExamples(skip_bad_examples, len(rows))
    return FROM_ROWS[modality](preparation, rows, column, label_column, seed, source, bad)


def _text(preparation: TextPreparation, rows, column, label_column, seed, source, bad) -> PretrainingData:
    """Tokenizes `rows[column]` into blocks of `max_seq_length` tokens (training a BPE tokenizer on them when no
    processor was given). The probe: up to PROBE_SIZE rows with a `label_column`, each text tokenized whole."""
    preparation.fit(_first_values(rows, column, preparation.fit_rows), source)
    blocks = preparation.blocks(rows, column, source)
    return PretrainingData(
        train=TokenBlocks(blocks),
        processor=preparation.processor,
        config_updates=preparation.config_updates(),
        probe=_probe(rows, label_column, lambda indices: preparation.whole(rows.select(indices)[column]), seed),
        description=f"{source}: {len(blocks)} {preparation.describe()}",
    )


def _images(preparation: ImagePreparation, rows, column, label_column, seed, source, bad) -> PretrainingData:
    """Images decoded and processed once, up front, when small (`_fits_in_memory`), else per batch; the default
    processor normalises with the statistics of the first images."""
    config = preparation.config
    preparation.fit(_first_values(rows, column, preparation.fit_rows), source)
    train = ImageExamples(rows, column, preparation, bad)
    if _fits_in_memory(4 * len(train) * config.num_channels * config.image_size**2, source):  # float32 pixels
        examples = all_examples(train)
        if train.bad_indices:  # skipped: out of the rows too, so that the probe's indices stay right
            rows = rows.select(sorted(set(range(len(rows))) - set(train.bad_indices)))
        preparation.check(examples, source)
        # decoded once; the probe's examples are views of it
        train = InMemoryExamples("pixel_values", torch.stack([e["pixel_values"] for e in examples]))
    else:
        preparation.check(train.__getitems__(range(min(NUM_CHECKED, len(train)))), source)
    return _prepared(preparation, train, rows, label_column, seed, source)


def _prepared(preparation, train, rows, label_column, seed, source) -> PretrainingData:
    """The prepared examples `train` of `source` (whose labels, if any, are `rows`' `label_column`) as the trainer
    takes them: with the processor, the config fields it sets, the probe's splits and a description."""
    return PretrainingData(
        train=train,
        processor=preparation.processor,
        config_updates=preparation.config_updates(),
        probe=_probe(rows, label_column, lambda indices: all_examples(train, indices), seed),
        description=f"{source}: {len(train)} {preparation.describe()}",
    )


def _audio(preparation: AudioPreparation, rows, column, label_column, seed, source, bad) -> PretrainingData:
    """Scans the clips' lengths and rates (file headers only), refuses or resamples other rates, drops clips shorter
    than the shortest kept, and decodes the rest: once, up front, when small (`_fits_in_memory`), else per batch."""
    sr, field = preparation.sampling_rate, preparation.config.receptive_field
    table = rows.select_columns([column]).with_format("arrow")
    infos, unreadable = [], 0
    for start in range(0, len(rows), 1000):
        for index, value in enumerate(table[start : start + 1000].column(column), start):
            try:
                infos.append(preparation.info(value))
            except DECODE_ERRORS as error:  # an unreadable header: the clip is dropped (or the run stops) here
                bad.handle(example_name(value) or f"example {index}", error)
                infos.append((0, sr))
                unreadable += 1
    infos = np.array(infos).reshape(-1, 2)
    rates = sorted({int(r) for r in infos[:, 1]} - {sr})
    preparation.refuse_other_rates(f"{source} has audio", rates)
    if rates:
        warnings.warn(f"{source}: resampling audio from {', '.join(map(str, rates))} Hz to {sr} Hz "
                      "(config.sampling_rate)", stacklevel=3)
    samples = preparation.resampled_length(infos[:, 0], infos[:, 1])
    keep = np.flatnonzero(samples >= preparation.least)
    if len(keep) == 0:
        raise ValueError(f"every clip of {source} is shorter than {preparation.shortest}: use longer clips"
                         + (", or a smaller --min_audio_seconds" if preparation.least > field else ""))
    if len(keep) < len(rows) - unreadable:
        warnings.warn(f"{source}: dropped {len(rows) - unreadable - len(keep)} of {len(rows)} clips shorter than "
                      f"{preparation.shortest}", stacklevel=3)
    if len(keep) < len(rows):
        rows = rows.select(keep)
    train = AudioExamples(rows, column, preparation, bad)
    if _fits_in_memory(4 * samples[keep].sum(), source):  # float32 samples at sr: decoded once, the probe's too
        train = InMemoryExamples("input_values", [e["input_values"] for e in all_examples(train)])
    else:
        preparation.check(train.__getitems__(range(min(NUM_CHECKED, len(train)))), source)  # unreadable files fail
    return _prepared(preparation, train, rows, label_column, seed, source)


# modality -> how its rows become map-style examples: (preparation, rows, column, label_column, seed, source,
# bad examples) -> PretrainingData
FROM_ROWS: dict[str, Callable[..., PretrainingData]] = {"text": _text, "vision": _images, "audio": _audio}


def _first_values(rows: datasets.Dataset, column: str, limit: int | None) -> Iterator:
    """The first `limit` (None: all) values of `column`, images undecoded, read 1000 rows at a time."""
    rows = undecoded(rows, column)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    for batch in rows.iter(1000):
        yield from batch[column]


def _fits_in_memory(num_bytes: float, source: str) -> bool:
    """Whether examples that take `num_bytes` once prepared (estimated before decoding) are prepared up front and held
    in memory (at most `data.MAX_IN_MEMORY_BYTES`); else they are prepared per batch, which the log says."""
    from . import MAX_IN_MEMORY_BYTES  # the package's setting, read when used: setting it there takes effect

    if num_bytes <= MAX_IN_MEMORY_BYTES:
        return True
    logger.info("%s: the prepared examples would take %.1f GiB, more than MAX_IN_MEMORY_BYTES: they are decoded per "
                "batch (--dataloader_num_workers runs that beside the model)", source, num_bytes / 2**30)
    return False


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
