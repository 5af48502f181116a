"""The per-modality preparation both loaders share: raw cells (a text, an image file, an audio file or array) -> the
examples `DataCollatorForData2VecPretraining` takes, and the one column finder that says which column holds them.

`PREPARATIONS[modality](config, processor, options)` is the modality's preparation. Map-style data
(`mapstyle.py`), the built-in sets (`builtin.py`) and streams (`streaming.py`) all call it; they differ only in where
the rows come from (`sources.py`) and in what they keep (in memory, per batch, per row). Each preparation:

- takes `processor` as an object, a local path / Hub id (loaded with the modality's Auto class) or None (the
  package's default); `fit(values, source)` fits a default to the data's first `fit_rows` values (None: all of them):
  text trains a byte-level BPE tokenizer, images normalise with their own statistics;
- prepares one cell: `examples(value)` (text: blocks of `max_seq_length` tokens; images: decoded, converted to the
  config's channels and processed; audio: decoded with soundfile, averaged to mono, resampled to the model's rate and
  normalised, refusing other rates without `resample_audio` and dropping clips shorter than the shortest kept);
- checks what it made (`check`: images come out at the config's size), and says which config fields the data decides
  (`config_updates`: text's vocabulary and special ids) and what its examples are (`describe`).

Example formats: text `{"input_ids": 1-D LongTensor}` wrapped `<s> ... </s>`; vision `{"pixel_values": (C, H, W)}`;
audio `{"input_values": (samples,)}` float32, mono, at `config.sampling_rate`, normalised per clip.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import datasets
import numpy as np
import PIL.Image
import pyarrow as pa
import scipy.signal
import soundfile
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Wav2Vec2FeatureExtractor,
)

from ..configuration_data2vec import MODALITIES, Data2VecConfig
from .errors import DECODE_ERRORS, example_name, modality_error

logger = logging.getLogger(__name__)

try:  # transformers >= 5.x: the Pillow backend; `ViTImageProcessor` wants torchvision and warns without it
    from transformers import ViTImageProcessorPil as ImageProcessor
except ImportError:
    from transformers import ViTImageProcessor as ImageProcessor

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0-3 as in RoBERTa; <mask> is added last
IMAGE_STATS_ROWS = 256  # images: the default processor normalises with the statistics of the data's first images
TOKENIZER_BATCH = 1000  # texts per batch given to the BPE trainer


@dataclass(frozen=True)
class PreparationOptions:
    """The loaders' settings that preparation reads; each modality reads its own."""

    max_seq_length: int = 128  # text: tokens per example, <s> and </s> included
    tokenizer_vocab_size: int = 2048  # text without a processor: the BPE tokenizer trained on the data
    resample_audio: bool = True  # audio at another rate is resampled to config.sampling_rate (else refused)
    min_audio_seconds: float | None = None  # shorter clips are dropped (always: those shorter than the receptive field)


class Preparation(ABC):
    """What each modality's preparation offers (one subclass per modality, in PREPARATIONS, each built as
    `(config, processor=None, options=PreparationOptions(), cache_dir=None)`).

    Class attributes: `auto_processor` loads a processor given as a path or Hub id; `column_names` are the usual names
    of a column holding the modality's data; `names_first`: a column of the usual name wins over one found by its
    type (text: ids and titles are strings too); `struct_fields`: a struct column with one of these fields may hold
    the modality's data (file bytes, arrays) when no column is found by type or name."""

    auto_processor: type
    column_names: tuple[str, ...]
    names_first = False
    struct_fields: frozenset[str] = frozenset()

    def __init__(self, config: Data2VecConfig, processor=None, cache_dir: str | None = None):
        self.config = config
        if isinstance(processor, str):
            processor = self.auto_processor.from_pretrained(processor, cache_dir=cache_dir)
        self.processor = processor

    @staticmethod
    @abstractmethod
    def holds(feature) -> bool:
        """Whether a column of this `datasets` feature type holds the modality's data."""

    @property
    def fit_rows(self) -> int | None:
        """How many of the data's first values `fit` reads (None: all of them)."""
        return 0

    def fit(self, values: Iterable, source: str) -> None:
        """Fits the default processor to `values` (the data's first `fit_rows` cells); nothing to fit by default."""

    @abstractmethod
    def examples(self, value) -> list[dict]:
        """One raw cell's examples."""

    def check(self, examples: list[dict], source: str) -> None:
        """Refuses examples the model cannot take (by default it takes any)."""

    def config_updates(self) -> dict:
        """The config fields the data decides (apply them before building the model); none by default."""
        return {}

    @abstractmethod
    def describe(self, streamed: bool = False) -> str:
        """What the examples are (`streamed`: made per row of a stream), for the one-line description of the data."""


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


def special_ids(tokenizer) -> dict[str, int]:
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


def _in_batches(values: Iterable, size: int) -> Iterator[list]:
    values = iter(values)
    while batch := list(itertools.islice(values, size)):
        yield batch


class TextPreparation(Preparation):
    """Text -> blocks of `max_seq_length` token ids wrapped `<s> ... </s>`: map-style data is concatenated across
    texts and cut into whole blocks (`blocks`, run_mlm's grouping); a stream's row is cut on its own (`examples`, its
    last block shorter). Without a processor a byte-level BPE tokenizer of `tokenizer_vocab_size` is trained on the
    data's texts (`fit`)."""

    auto_processor = AutoTokenizer
    column_names = ("text", "content", "sentence")
    names_first = True

    def __init__(self, config, processor=None, options: PreparationOptions = PreparationOptions(), cache_dir=None):
        if options.max_seq_length < 3:
            raise ValueError(f"max_seq_length must be at least 3 (<s>, one token, </s>); got {options.max_seq_length}")
        smallest = 256 + len(SPECIAL_TOKENS) + 1
        if processor is None and options.tokenizer_vocab_size < smallest:
            raise ValueError(
                f"tokenizer_vocab_size must be at least {smallest} (256 byte tokens and {len(SPECIAL_TOKENS) + 1} "
                f"special tokens); got {options.tokenizer_vocab_size}"
            )
        super().__init__(config, processor, cache_dir)
        self.max_seq_length, self.vocab_size = options.max_seq_length, options.tokenizer_vocab_size

    @staticmethod
    def holds(feature) -> bool:
        return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")

    @property
    def fit_rows(self) -> int | None:
        return None if self.processor is None else 0

    def fit(self, values: Iterable[str | None], source: str) -> None:
        """Trains the BPE tokenizer on the non-empty `values` when no processor was given; then reads the special
        ids (refusing a tokenizer without them)."""
        if self.processor is None:
            self.processor = train_bpe_tokenizer(_in_batches((v for v in values if v), TOKENIZER_BATCH),
                                                 self.vocab_size)
        self.ids = special_ids(self.processor)

    def blocks(self, rows: datasets.Dataset, column: str, source: str) -> datasets.Dataset:
        """`rows[column]` tokenized, concatenated (each text followed by </s>) and cut into blocks of `max_seq_length`
        tokens, the remainder of each batch of 1000 rows dropped: a dataset of one "input_ids" column."""
        blocks = rows.map(
            _group_texts, batched=True, remove_columns=rows.column_names, desc="tokenizing",
            fn_kwargs=dict(tokenizer=self.processor, column=column, block=self.max_seq_length - 2,
                           bos=self.ids["bos_token_id"], eos=self.ids["eos_token_id"]),
        )
        if len(blocks) == 0:
            raise ValueError(
                f"{source} holds fewer than max_seq_length - 2 = {self.max_seq_length - 2} tokens (per batch of 1000 "
                "rows): use more text or a smaller max_seq_length"
            )
        return blocks

    def examples(self, value: str | None) -> list[dict]:
        if not value:
            return []
        ids = self.processor(value, add_special_tokens=False)["input_ids"]
        block, bos, eos = self.max_seq_length - 2, self.ids["bos_token_id"], self.ids["eos_token_id"]
        return [{"input_ids": torch.tensor([bos, *ids[i : i + block], eos])} for i in range(0, len(ids), block)]

    def whole(self, texts: Iterable[str | None]) -> list[dict]:
        """Each text tokenized whole, truncated to `max_seq_length` (the probe's examples)."""
        encoded = self.processor([t or "" for t in texts], truncation=True, max_length=self.max_seq_length)
        return [{"input_ids": torch.tensor(x)} for x in encoded["input_ids"]]

    def config_updates(self) -> dict:
        # RoBERTa positions run from pad_token_id + 1 (Data2VecTextEmbeddings)
        return {"vocab_size": len(self.processor), **self.ids,
                "max_position_embeddings": self.max_seq_length + self.ids["pad_token_id"] + 1}

    def describe(self, streamed: bool = False) -> str:
        return f"blocks of {'<= ' if streamed else ''}{self.max_seq_length} tokens, vocabulary {len(self.processor)}"


# ---- vision ----------------------------------------------------------------------------------------------------


def image_mode(config: Data2VecConfig) -> str:
    """The PIL mode images are converted to: "L" for 1 channel, "RGB" for 3."""
    modes = {1: "L", 3: "RGB"}
    if config.num_channels not in modes:
        raise ValueError(f"images are prepared as 1 (grayscale) or 3 (RGB) channels; config.num_channels is "
                         f"{config.num_channels}")
    return modes[config.num_channels]


def to_pil(value) -> PIL.Image.Image:
    """A PIL image from a decoded image, an {"bytes", "path"} struct, or a (H, W[, C]) uint8 array."""
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, dict):
        return PIL.Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
    return PIL.Image.fromarray(np.asarray(value))


def process_images(processor, images: list[PIL.Image.Image]) -> list[torch.Tensor]:
    return [torch.as_tensor(pixels, dtype=torch.float32) for pixels in processor(images)["pixel_values"]]


def image_processor(config: Data2VecConfig, pixels: torch.Tensor | None = None):
    """The default image processor: resize to config.image_size (bilinear) and rescale to [0, 1]; then, given
    `pixels` (N, C, H, W) it prepared so, normalise with their per-channel mean / std (standardised inputs)."""
    size = {"height": config.image_size, "width": config.image_size}
    if pixels is None:
        return ImageProcessor(size=size, resample=PIL.Image.BILINEAR, do_normalize=False)
    mean, std = pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return ImageProcessor(size=size, resample=PIL.Image.BILINEAR, image_mean=mean.tolist(), image_std=std.tolist())


def check_image_shapes(config: Data2VecConfig, pixels: Iterable[torch.Tensor], source: str) -> None:
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


class ImagePreparation(Preparation):
    """Images -> `pixel_values` (C, H, W): decoded, converted to `image_mode(config)`, then processed by the
    processor; the default resizes to config.image_size and normalises with the statistics of the data's first
    IMAGE_STATS_ROWS images (`fit`)."""

    auto_processor = AutoImageProcessor
    column_names = ("image", "img", "pixel_values")
    struct_fields = frozenset({"bytes"})

    def __init__(self, config, processor=None, options: PreparationOptions = PreparationOptions(), cache_dir=None):
        self.mode = image_mode(config)  # fails early on an unsupported number of channels
        super().__init__(config, processor, cache_dir)

    @staticmethod
    def holds(feature) -> bool:
        return isinstance(feature, datasets.Image)

    @property
    def fit_rows(self) -> int | None:
        return IMAGE_STATS_ROWS if self.processor is None else 0

    def fit(self, values: Iterable, source: str) -> None:
        """No processor given: the default one, normalising with the per-channel mean / std of the `values` that
        decode (those that do not are left to the run's own pass, which names them)."""
        if self.processor is not None:
            return
        plain, pixels, size = ImagePreparation(self.config, image_processor(self.config)), [], None
        for value in values:
            try:
                image = plain.decode(value)
                pixels += plain.process([image])
            except DECODE_ERRORS:
                continue
            size = size or image.size
        if not pixels:
            raise ValueError(f"{source}: none of the first {IMAGE_STATS_ROWS} images can be decoded: check the data")
        _log_image_size(self.config, size, source)
        self.processor = image_processor(self.config, torch.stack(pixels))

    def decode(self, value) -> PIL.Image.Image:
        """An image cell (a struct of file bytes or path, a decoded image or an array) as a PIL image of `mode`."""
        if isinstance(value, dict) and "bytes" in value and not isinstance(value["bytes"], (bytes, type(None))):
            value = {**value, "bytes": bytes(value["bytes"])}  # a stream may give a memoryview
        image = to_pil(value)
        image.load()  # a truncated file fails here, not later inside a batch
        return image.convert(self.mode)

    def process(self, images: list[PIL.Image.Image]) -> list[torch.Tensor]:
        return process_images(self.processor, images)

    def examples(self, value) -> list[dict]:
        return [{"pixel_values": pixels} for pixels in self.process([self.decode(value)])]

    def check(self, examples: list[dict], source: str) -> None:
        check_image_shapes(self.config, (e["pixel_values"] for e in examples), source)

    def describe(self, streamed: bool = False) -> str:
        return f"images -> {self.config.num_channels}x{self.config.image_size}x{self.config.image_size}"


# ---- audio -----------------------------------------------------------------------------------------------------


class AudioRateError(ValueError):
    """A clip at another rate than the model's with --no_resample_audio: the run stops (it is not a bad example)."""


class ShortClip(Exception):
    """A clip shorter than the shortest kept: dropped and counted, not a bad example (it decodes). Its message says
    what the shortest kept is."""


def default_feature_extractor(sampling_rate: int) -> Wav2Vec2FeatureExtractor:
    """Per-clip zero-mean unit-variance normalisation at `sampling_rate` (wav2vec 2.0 / data2vec audio)."""
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sampling_rate, padding_value=0.0, do_normalize=True,
                                    return_attention_mask=True)


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


class AudioPreparation(Preparation):
    """Audio -> `input_values` (samples,) float32: decoded with soundfile (file bytes / paths) or read from arrays
    (never torchcodec), averaged to mono, resampled to config.sampling_rate (refused with `resample_audio=False`) and
    normalised per clip by the processor (default: `default_feature_extractor`). Clips shorter than
    `min_audio_seconds` or the conv feature encoder's receptive field (`least` samples) are dropped, so that one short
    clip does not crop a whole batch to its length."""

    auto_processor = AutoFeatureExtractor
    column_names = ("audio", "input_values", "speech")
    struct_fields = frozenset({"bytes", "array"})  # file structs (webdataset: a column per extension), or arrays

    def __init__(self, config, processor=None, options: PreparationOptions = PreparationOptions(), cache_dir=None):
        super().__init__(config, processor, cache_dir)
        self.sampling_rate = sr = config.sampling_rate
        if self.processor is None:
            self.processor = default_feature_extractor(sr)
        rate = getattr(self.processor, "sampling_rate", sr)
        if rate != sr:
            raise ValueError(f"the feature extractor works at {rate} Hz but config.sampling_rate is {sr} Hz: use one "
                             "at the model's rate, or processor=None")
        self.resample = options.resample_audio
        # clips shorter than this are dropped (not bad examples: they decode, but would crop a batch to a few frames)
        field, seconds = config.receptive_field, options.min_audio_seconds
        self.least = max(field, math.ceil((seconds or 0.0) * sr))
        self.shortest = (f"{seconds:g} s (min_audio_seconds, --min_audio_seconds)" if self.least > field else
                         f"the receptive field of the conv feature encoder ({field} samples at {sr} Hz)")
        self.rates: set[int] = set()  # other rates met by `examples` (logged once each)

    @staticmethod
    def holds(feature) -> bool:
        return isinstance(feature, datasets.Audio)

    def info(self, value) -> tuple[int, int]:
        """(samples, sampling rate) of an audio cell, from the file's header or the array's shape."""
        source, rate = _audio_source(value)
        if isinstance(source, np.ndarray):
            return source.shape[-1], rate or self.sampling_rate
        info = soundfile.info(source)
        return info.frames, info.samplerate

    def read(self, value) -> tuple[np.ndarray, int]:
        """A mono float32 waveform and its sampling rate; channels are averaged."""
        source, rate = _audio_source(value)
        if isinstance(source, np.ndarray):
            if source.ndim not in (1, 2) or not source.size:
                raise ValueError(f"an audio array is (samples,) or (channels, samples); got shape {source.shape}")
            wave = source.mean(axis=0) if source.ndim == 2 else source
            return wave.astype(np.float32), rate or self.sampling_rate
        wave, rate = soundfile.read(source, dtype="float32", always_2d=True)
        return wave.mean(axis=1), rate

    def normalize(self, wave: np.ndarray, rate: int) -> np.ndarray:
        """A waveform at `rate` resampled to the model's rate and normalised."""
        sr = self.sampling_rate
        wave = _resample(wave, rate, sr)
        return np.asarray(self.processor(wave, sampling_rate=sr)["input_values"][0], dtype=np.float32)

    def clip(self, value) -> np.ndarray:
        """An audio cell read, resampled and normalised (its rate and length checked beforehand)."""
        return self.normalize(*self.read(value))

    def resampled_length(self, samples, rate):
        """The samples of clips of `samples` at `rate` (numbers or arrays) once resampled to the model's rate: those
        under `least` are dropped."""
        return np.ceil(samples * self.sampling_rate / rate)

    def refuse_other_rates(self, what: str, rates: Iterable[int]) -> None:
        """Without resampling, audio at other rates than the model's stops the run, naming `what` ("X has audio")."""
        rates = sorted(rates)
        if rates and not self.resample:
            raise AudioRateError(
                f"{what} at {', '.join(map(str, rates))} Hz but the model expects {self.sampling_rate} Hz "
                "(config.sampling_rate): resample the audio, or pass resample_audio=True (drop --no_resample_audio)")

    def examples(self, value) -> list[dict]:
        """One clip checked as it is read: its rate (refused, or logged once per rate) and its length (ShortClip
        before resampling: a dropped clip costs no resampling)."""
        wave, rate = self.read(value)
        if rate != self.sampling_rate:
            self.refuse_other_rates(f"{example_name(value) or 'a clip'} is audio", [rate])
            if rate not in self.rates:
                self.rates.add(rate)
                logger.warning("resampling audio at %d Hz (first: %s) to %d Hz (config.sampling_rate)", rate,
                               example_name(value) or "no path", self.sampling_rate)
        if self.resampled_length(len(wave), rate) < self.least:
            raise ShortClip(self.shortest)
        return [{"input_values": self.normalize(wave, rate)}]

    def describe(self, streamed: bool = False) -> str:
        checks = f" ({'resampled' if self.resample else 'other rates refused'}; shorter than {self.shortest} dropped)"
        return f"clips at {self.sampling_rate} Hz" + (checks if streamed else "")


PREPARATIONS: dict[str, type[Preparation]] = {
    "text": TextPreparation, "vision": ImagePreparation, "audio": AudioPreparation,
}
COLUMN_NAMES = {modality: preparation.column_names for modality, preparation in PREPARATIONS.items()}


# ---- the column finder -----------------------------------------------------------------------------------------


def find_column(features: datasets.Features, modality: str, column: str | None, source: str) -> str:
    """`column` if given (it must exist), else the first column holding `modality`'s data: found by feature type
    (Image / Audio / a string) and by the usual names (COLUMN_NAMES; text: names first), then, for images and audio,
    a struct column of file bytes (audio: or arrays) not named for another modality. Data of another modality only is
    refused, naming the modality to use. `features`: a map-style dataset's, or a stream's (its first row's where it
    declares none)."""
    names = list(features)
    if column is not None:
        if column not in names:
            raise ValueError(f"column {column!r} is not a column of {source}; its columns: {names}")
        return column
    found = {m: _typed_or_named(features, m) for m in MODALITIES}
    others = {c for m in MODALITIES if m != modality for c in COLUMN_NAMES[m]}
    structs = [c for c, f in features.items()
               if isinstance(f, dict) and PREPARATIONS[modality].struct_fields & set(f) and c not in others]
    if found[modality] or structs:
        return (found[modality] + structs)[0]
    other = next((m for m in MODALITIES if found[m]), None)
    if other is not None:
        raise modality_error(source, other, f"column {found[other][0]!r}; pass column=... to pick another", modality)
    raise ValueError(
        f"{source} has no {modality} column (looked for {' / '.join(COLUMN_NAMES[modality])} or a column of that "
        f"type); its columns: {names}. Pass column=... (--column)"
    )


def _typed_or_named(features: datasets.Features, modality: str) -> list[str]:
    preparation = PREPARATIONS[modality]
    typed = [c for c, f in features.items() if preparation.holds(f)]
    named = [c for c in preparation.column_names if c in features]
    return list(dict.fromkeys(named + typed if preparation.names_first else typed + named))
