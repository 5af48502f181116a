"""What the loaders return (`PretrainingData`, `ProbeData`) and the map-style datasets that hold or make the examples:
in memory (`InMemoryExamples`, `TokenBlocks`), or decoded and processed a batch at a time by the modality's
preparation (`ImageExamples`, `AudioExamples`: DataLoader workers parallelise it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import torch

from .errors import DECODE_ERRORS, BadExamples, example_name
from .preparation import AudioPreparation, ImagePreparation

NUM_CHECKED = 16  # examples prepared before returning, so broken data fails before training


@dataclass
class ProbeData:
    """Labelled examples for a linear probe: each one an example in the collator's format plus `"labels": int`."""

    train: list[dict]
    test: list[dict]


@dataclass
class PretrainingData:
    """What `load_pretraining_data` and `load_streaming_data` return: the pretraining examples, the processor that
    prepared them, the config fields the data decides (apply them before building the model), a probe set when labels
    exist, and a one-line description."""

    train: torch.utils.data.Dataset
    processor: object
    config_updates: dict
    probe: ProbeData | None
    description: str


class Examples(torch.utils.data.Dataset):
    """A map-style dataset whose subclasses build examples a batch at a time in `__getitems__` (what a DataLoader
    calls); `__getitem__` goes through the same path."""

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} examples")
        return self.__getitems__([index % len(self)])[0]


class InMemoryExamples(Examples):
    """Prepared inputs held in memory: a tensor (N, ...) or a list, one example each, under `key`."""

    def __init__(self, key: str, values: torch.Tensor | list):
        self.key, self.values = key, values

    def __len__(self) -> int:
        return len(self.values)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        return [{self.key: self.values[i]} for i in indices]


class TokenBlocks(Examples):
    """Token blocks of one length in a `datasets.Dataset` column "input_ids" (memory-mapped when loaded from disk)."""

    def __init__(self, blocks: datasets.Dataset):
        self.blocks = blocks.with_format("torch")

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        return [{"input_ids": ids} for ids in self.blocks[list(indices)]["input_ids"]]  # rows of a (B, T) LongTensor


def undecoded(rows: datasets.Dataset, column: str) -> datasets.Dataset:
    """`rows`' `column` alone, images left as {"bytes", "path"} structs: decoded by the preparation, whose errors
    name the file."""
    rows = rows.select_columns([column])
    if isinstance(rows.features[column], datasets.Image) and rows.features[column].decode:
        rows = rows.cast_column(column, datasets.Image(decode=False))
    return rows


class ImageExamples(Examples):
    """Images decoded and processed per batch by `preparation`; those that cannot be decoded go to `bad` (their
    indices kept in `bad_indices`)."""

    def __init__(self, rows: datasets.Dataset, column: str, preparation: ImagePreparation,
                 bad: BadExamples | None = None):
        self.rows, self.column, self.preparation = undecoded(rows, column), column, preparation
        self.bad = bad or BadExamples(total=len(rows))
        self.bad_indices: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        images = []
        for index, value in zip(indices, self.rows[list(indices)][self.column]):
            try:
                images.append(self.preparation.decode(value))
            except DECODE_ERRORS as error:
                self.bad.handle(example_name(value) or f"example {index}", error)
                self.bad_indices.append(int(index))
        return [{"pixel_values": pixels} for pixels in self.preparation.process(images)]


class AudioExamples(Examples):
    """Audio clips read per batch from the arrow storage and prepared by `preparation` (read, resampled,
    normalised); those that cannot be decoded go to `bad`."""

    def __init__(self, rows: datasets.Dataset, column: str, preparation: AudioPreparation,
                 bad: BadExamples | None = None):
        self.rows = rows.select_columns([column]).with_format("arrow")
        self.column, self.preparation = column, preparation
        self.bad = bad or BadExamples(total=len(rows))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        out = []
        for index, value in zip(indices, self.rows[list(indices)].column(self.column)):
            try:
                out.append({"input_values": self.preparation.clip(value)})
            except DECODE_ERRORS as error:
                self.bad.handle(example_name(value) or f"example {index}", error)
        return out


def all_examples(dataset: Examples, indices: Sequence[int] | None = None, chunk: int = 32) -> list[dict]:
    """Examples `indices` (None: all) of a dataset, prepared `chunk` at a time (few large images decoded at once)."""
    indices = range(len(dataset)) if indices is None else indices
    return [e for start in range(0, len(indices), chunk) for e in dataset.__getitems__(indices[start : start + chunk])]
