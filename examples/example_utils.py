"""What the fine-tuning examples (examples/finetune_*.py) share: their labelled data (a `DatasetDict`, a folder, a
file or a Hub id -> train / held-out rows, class names and ids), their flags and defaults (`ExampleArguments`,
`parse_example_args`), their model config (a checkpoint's, or a fresh tiny one), a text example's tokenizer, an audio
example's clips and batches (`AudioExamples`, `AudioCollator`), and their ending (`train_and_report`).

Support for the example scripts, not part of the library: a script run as `python examples/finetune_x.py` finds
this module next to it (the script's folder is first on `sys.path`); code that loads a script some other way puts
`examples/` on `sys.path` first.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoTokenizer, HfArgumentParser, Trainer, TrainingArguments

from modeling_data2vec_unified.configuration_data2vec import Data2VecConfig
from modeling_data2vec_unified.conversion import config_from_transformers, read_config_dict
from modeling_data2vec_unified.data import default_feature_extractor, train_bpe_tokenizer
from modeling_data2vec_unified.training.arguments import parse_overrides
from modeling_data2vec_unified.training.recipes import MODEL_SIZES, TINY_RECIPES

logger = logging.getLogger(__name__)


# ---- labelled data ---------------------------------------------------------------------------------------------------

FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_labelled_splits(
    source: str | datasets.DatasetDict,
    columns: dict[str, str],
    *,
    dataset_config_name: str | None = None,
    train_split: str = "train",
    eval_split: str | None = None,
    eval_fraction: float = 0.15,
    folder_loader: Callable[[Path], datasets.DatasetDict] | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train rows, held-out rows) of a `DatasetDict`, a local folder (`folder_loader`), a csv / json / parquet file,
    or a `datasets` Hub id. `columns` maps each flag to the column it names ({"--label_column": "label", ...}); the
    held-out rows are `eval_split`, else a "validation" or "test" split, else `eval_fraction` of the training rows
    (seed 0, stratified by a ClassLabel)."""
    path = Path(source).expanduser() if isinstance(source, str) else None
    if isinstance(source, datasets.DatasetDict):
        splits = source
    elif path.is_dir():
        if folder_loader is None:
            raise ValueError(f"{path} is a folder: give a csv / json / parquet file or a Hub id")
        splits = folder_loader(path)
    elif path.is_file():
        if path.suffix.lower() not in FILE_BUILDERS:
            raise ValueError(f"{path} is not a table: give a {' / '.join(sorted(set(FILE_BUILDERS.values())))} file, "
                             "a folder or a Hub id")
        splits = datasets.load_dataset(FILE_BUILDERS[path.suffix.lower()], data_files=str(path))
    else:
        splits = datasets.load_dataset(source, dataset_config_name)
    if train_split not in splits:
        raise ValueError(f"--train_split {train_split!r} is not a split of {source}: {list(splits)}")
    train = splits[train_split]
    for flag, column in columns.items():
        if column not in train.column_names:
            raise ValueError(f"{flag} {column!r} is not a column of {source}; its columns: {train.column_names}")
    eval_split = eval_split or next((s for s in ("validation", "test") if s in splits), None)
    if eval_split is not None:
        return train, splits[eval_split]
    label_column = columns.get("--label_column")
    classlabel = label_column is not None and isinstance(train.features[label_column], datasets.ClassLabel)
    parts = train.train_test_split(test_size=eval_fraction, seed=0,
                                   stratify_by_column=label_column if classlabel else None)
    return parts["train"], parts["test"]


def _class_label(feature) -> datasets.ClassLabel | None:
    """The ClassLabel of a column of labels, or of a column of label lists (token classification), if it has one."""
    if isinstance(feature, datasets.ClassLabel):
        return feature
    inner = getattr(feature, "feature", None)  # datasets.List / Sequence
    return inner if isinstance(inner, datasets.ClassLabel) else None


def _is_label_lists(rows: datasets.Dataset, label_column: str) -> bool:
    return isinstance(rows.features[label_column], (datasets.List, datasets.Sequence))


def class_names(rows: datasets.Dataset, label_column: str) -> list[str]:
    """A ClassLabel's names, else the sorted distinct labels of the (training) rows; for a column of label lists
    (token classification), those of its items."""
    feature = _class_label(rows.features[label_column])
    if feature is not None:
        return list(feature.names)
    labels = rows[label_column]
    if _is_label_lists(rows, label_column):
        labels = [y for row in labels for y in row]
    return sorted({str(y) for y in labels})


def label_ids(rows: datasets.Dataset, label_column: str, names: list[str]) -> list:
    """Class ids of `rows`: a ClassLabel's own, else each label's index in `names` (labels the training rows never
    had are refused); for a column of label lists, a list of ids per row."""
    if _class_label(rows.features[label_column]) is not None:
        return list(rows[label_column])
    index = {name: i for i, name in enumerate(names)}
    lists = _is_label_lists(rows, label_column)
    labels = rows[label_column]
    unknown = sorted({str(y) for row in (labels if lists else [labels]) for y in row} - set(index))
    if unknown:
        raise ValueError(f"held-out labels {unknown[:5]} never occur in the training split: filter them out")
    if lists:
        return [[index[str(y)] for y in row] for row in labels]
    return [index[str(y)] for y in labels]


# ---- flags, config and ending ----------------------------------------------------------------------------------------


@dataclass
class ExampleArguments:
    """The flags of every fine-tuning example (parsed with `TrainingArguments` by `parse_example_args`); each example
    subclasses it, adding its own flags and changing defaults."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "our pretraining output (data2vec-pretrain's --output_dir) or a transformers Data2Vec checkpoint of "
                "the example's modality; default: a fresh tiny model (random init)"})
    config_overrides: str | None = field(default=None, metadata={
        "help": "fresh model only: config fields, e.g. 'num_hidden_layers=2,hidden_dropout_prob=0'"})
    dataset: str = field(default="builtin", metadata={
        "help": "'builtin' (the example's built-in data), a local folder / file or a datasets Hub id"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "the Hub dataset's configuration"})
    train_split: str = field(default="train")
    eval_split: str | None = field(default=None, metadata={"help": "default: validation or test, if present"})
    eval_fraction: float = field(default=0.2, metadata={
        "help": "held out of the training rows when the dataset has no eval split"})
    max_train_examples: int | None = field(default=None, metadata={"help": "use only the first N training examples"})
    max_eval_examples: int | None = field(default=None, metadata={"help": "score only the first N held-out examples"})
    layer_decay: float = field(default=1.0, metadata={
        "help": "layer-wise lr decay (1: none, as data2vec fine-tunes text and speech; vision uses 0.65)"})


@dataclass
class TextExampleArguments(ExampleArguments):
    """`ExampleArguments` of the text examples: a fresh model's tokenizer, the sequence length."""

    tokenizer_vocab_size: int = field(default=2048, metadata={
        "help": "fresh model only: the byte-level BPE vocabulary trained on the training texts"})
    max_seq_length: int = field(default=128, metadata={"help": "tokens per example, special tokens included"})


@dataclass
class AudioExampleArguments(ExampleArguments):
    """`ExampleArguments` of the audio examples: the audio column, the longest clip."""

    audio_column: str = field(default="audio", metadata={
        "help": "arrays, {array, sampling_rate}, file paths or datasets.Audio entries"})
    max_audio_seconds: float = field(default=10.0, metadata={"help": "longer clips keep their first seconds"})


def parse_example_args(arguments_class: type, argv: list[str] | None = None, **defaults):
    """(example arguments, `TrainingArguments`) from `argv` (None: the command line), with the examples' shared
    defaults (weight decay 0.01, evaluation and logging every epoch, no checkpoints, no trackers, seed 0) and the
    example's `defaults` on top; a fresh model's --config_overrides with a checkpoint is refused, and so is a text
    example's --max_seq_length longer than the checkpoint's position table."""
    parser = HfArgumentParser((arguments_class, TrainingArguments))
    parser.set_defaults(**{**dict(weight_decay=0.01, eval_strategy="epoch", save_strategy="no",
                                  logging_strategy="epoch", report_to="none", seed=0,
                                  dataloader_pin_memory=torch.cuda.is_available()), **defaults})
    args, training_args = parser.parse_args_into_dataclasses(args=argv)
    check_model_flags(args.model_name_or_path, args.config_overrides)
    if isinstance(args, TextExampleArguments):
        check_text_length(args.model_name_or_path, args.max_seq_length)
    return args, training_args


def first(examples, n: int | None):
    """The first `n` examples of a `datasets.Dataset` or a map-style dataset (all of them for None)."""
    if n is None or n >= len(examples):
        return examples
    if isinstance(examples, datasets.Dataset):
        return examples.select(range(n))
    return torch.utils.data.Subset(examples, range(n))


def label_fields(names: list[str]) -> dict:
    """The config fields of a classification head over the classes `names`: num_labels, id2label, label2id."""
    return dict(num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


def check_model_flags(model_name_or_path: str | None, config_overrides: str | None) -> None:
    """--config_overrides sizes a fresh model; a checkpoint keeps its own config."""
    if config_overrides and model_name_or_path:
        raise ValueError("--config_overrides sets up a fresh model; a --model_name_or_path checkpoint keeps its own "
                         "config (leave out one of the two)")


def tiny_config(modality: str, config_overrides: str | None = None, **fields):
    """`data2vec-pretrain`'s tiny architecture and recipe of `modality`, with `fields` (e.g. the digits' geometry, a
    tokenizer's ids), then `config_overrides` ('name=value,...') on top."""
    merged = {**MODEL_SIZES["tiny"], **TINY_RECIPES[modality], **fields, **parse_overrides(config_overrides)}
    return Data2VecConfig(modality=modality, **merged)


def checkpoint_config(name_or_path: str):
    """The `Data2VecConfig` of a checkpoint of ours, or of transformers' Data2Vec models (converted)."""
    config_dict = read_config_dict(name_or_path)
    if config_dict.get("model_type") == Data2VecConfig.model_type:
        return Data2VecConfig.from_pretrained(name_or_path)
    return config_from_transformers(config_dict)


def example_config(args: ExampleArguments, modality: str, **fields):
    """The checkpoint's config (ours, or transformers' Data2Vec config converted), else `tiny_config(modality,
    --config_overrides, **fields)` for a fresh model."""
    if args.model_name_or_path is not None:
        return checkpoint_config(args.model_name_or_path)
    return tiny_config(modality, args.config_overrides, **fields)


def train_and_report(trainer: Trainer, args: ExampleArguments, describe: Callable[[dict], str], tasks: str,
                     builtin: str) -> dict:
    """An example's ending: train, evaluate, save the model and its processor to --output_dir (for the Auto classes),
    print the one eval line `describe(metrics)`, and with --push_to_hub push with the card's base model, task and
    dataset (`builtin` names the built-in data; only Hub datasets are linked). Returns the eval metrics."""
    trainer.train()
    result = trainer.evaluate()
    trainer.save_model()
    print(describe(result))
    if trainer.args.push_to_hub:
        dataset = args.dataset
        local = dataset == "builtin" or Path(dataset).expanduser().exists()
        trainer.push_to_hub(finetuned_from=args.model_name_or_path, tasks=tasks,
                            dataset=builtin if dataset == "builtin" else dataset,
                            dataset_tags=None if local else dataset)
    return result


# ---- text ------------------------------------------------------------------------------------------------------------


def text_tokenizer(model_name_or_path: str | None, texts, vocab_size: int):
    """The checkpoint's tokenizer, else (a fresh model) a byte-level BPE tokenizer of `vocab_size` trained on `texts`
    (the training texts only: held-out texts stay unseen)."""
    if model_name_or_path is not None:
        return AutoTokenizer.from_pretrained(model_name_or_path)
    return train_bpe_tokenizer(texts, vocab_size)


def tiny_text_config(tokenizer, max_seq_length: int, config_overrides: str | None = None, **fields):
    """`tiny_config("text")` sized to the tokenizer (RoBERTa positions run from pad_token_id + 1)."""
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, mask_token_id=tokenizer.mask_token_id,
               max_position_embeddings=max_seq_length + tokenizer.pad_token_id + 1)
    return tiny_config("text", config_overrides, **ids, **fields)


def check_text_length(model_name_or_path: str | None, max_seq_length: int) -> None:
    """--max_seq_length must fit the checkpoint's position table (RoBERTa positions start at pad_token_id + 1)."""
    if model_name_or_path is None:
        return
    config = read_config_dict(model_name_or_path)
    limit = config["max_position_embeddings"] - (config.get("pad_token_id") or 0) - 1
    if max_seq_length > limit:
        raise ValueError(f"--max_seq_length {max_seq_length} is longer than {model_name_or_path} takes ({limit} "
                         f"tokens, from its max_position_embeddings): pass --max_seq_length {limit} or less")


# ---- audio -----------------------------------------------------------------------------------------------------------


def read_audio(value, default_rate: int):
    """A mono float32 waveform and its sampling rate from an array, an {"array", "sampling_rate"} dict, a file path
    or an undecoded datasets.Audio entry {"bytes", "path"} (read with soundfile)."""
    if isinstance(value, dict) and value.get("array") is not None:
        wave, rate = np.asarray(value["array"], dtype=np.float32), value.get("sampling_rate") or default_rate
        return (wave.mean(0) if wave.ndim == 2 else wave), rate  # (channels, samples) -> (samples,)
    if isinstance(value, (dict, str)):
        import soundfile

        source = value if isinstance(value, str) else (io.BytesIO(value["bytes"]) if value.get("bytes")
                                                        else value["path"])
        wave, rate = soundfile.read(source, dtype="float32", always_2d=True)  # (samples, channels)
        return wave.mean(1), rate
    wave = np.asarray(value, dtype=np.float32)
    return (wave.mean(0) if wave.ndim == 2 else wave), default_rate


def audio_feature_extractor(model_name_or_path: str | None, sampling_rate: int):
    """The checkpoint's feature extractor, else per-clip normalisation at the model's rate (data2vec audio)."""
    if model_name_or_path is not None:
        try:
            return AutoFeatureExtractor.from_pretrained(model_name_or_path)
        except (OSError, ValueError):  # a checkpoint saved without one (e.g. a bare pretraining run): the default
            logger.info("%s has no feature extractor: normalising clips per clip at %d Hz", model_name_or_path,
                        sampling_rate)
    return default_feature_extractor(sampling_rate)


class AudioExamples(torch.utils.data.Dataset):
    """Rows of a `datasets.Dataset` as an audio model reads them, {"input_values": (samples,) float32, "labels":
    targets[i]} (a class id, or a transcript's token ids): each clip read (`read_audio`), resampled to
    `feature_extractor.sampling_rate`, cut to `max_samples` and normalised when read. A map-style dataset."""

    def __init__(self, rows: datasets.Dataset, audio_column: str, targets: list, feature_extractor, max_samples: int):
        if isinstance(rows.features[audio_column], datasets.Audio):  # bytes / path, not datasets' torchcodec decoder
            rows = rows.cast_column(audio_column, datasets.Audio(decode=False))
        self.rows, self.audio_column, self.targets = rows.select_columns([audio_column]), audio_column, targets
        self.feature_extractor, self.max_samples = feature_extractor, max_samples

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        rate = self.feature_extractor.sampling_rate
        wave, source_rate = read_audio(self.rows[i][self.audio_column], rate)
        if source_rate != rate:
            import scipy.signal

            g = math.gcd(int(source_rate), rate)
            wave = scipy.signal.resample_poly(wave, rate // g, int(source_rate) // g).astype(np.float32)
        wave = self.feature_extractor(wave[: self.max_samples], sampling_rate=rate)["input_values"][0]
        return {"input_values": np.asarray(wave, dtype=np.float32), "labels": self.targets[i]}


class AudioCollator:
    """Pads a batch's clips to the longest with zeros, with an attention mask (1: a real sample); labels are class
    ids (B,) or token id sequences padded with -100 to (B, longest)."""

    def __init__(self, feature_extractor):
        self.feature_extractor = feature_extractor

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.feature_extractor.pad([{"input_values": e["input_values"]} for e in examples], padding=True,
                                           return_attention_mask=True, return_tensors="pt")  # (B, samples) each
        labels = [e["labels"] for e in examples]
        if all(isinstance(y, int) or getattr(y, "ndim", None) == 0 for y in labels):
            batch["labels"] = torch.tensor([int(y) for y in labels])
        else:  # sequences
            longest = max(len(y) for y in labels)
            batch["labels"] = torch.tensor([[int(t) for t in y] + [-100] * (longest - len(y)) for y in labels])
        return dict(batch)
