"""Fine-tune a data2vec audio model to classify sounds with `Data2VecTrainer` (a transformers `Trainer`), the conv
feature encoder frozen as data2vec fine-tunes, then score it on held-out clips.

    python examples/finetune_audio_classification.py                  # built-in sounds, fresh tiny model, ~2 CPU min
    python examples/pretrain_audio.py && python examples/finetune_audio_classification.py \
        --model_name_or_path runs/example-audio
    python examples/finetune_audio_classification.py --model_name_or_path facebook/data2vec-audio-base \
        --dataset ./my_clips --num_train_epochs 5 --learning_rate 3e-5 --per_device_train_batch_size 8

`--dataset` takes `builtin` (8 classes of synthesised sounds, 800 train / 200 held out, as `data2vec-pretrain
--modality audio` draws them), a folder of audio files with one subfolder per class (`audiofolder`'s layout), a csv /
json file or a `datasets` Hub id, with `--audio_column` / `--label_column`. The audio column may hold decoded arrays
(a list of samples, or {"array", "sampling_rate"}), file paths, or `datasets.Audio` entries: those are NOT decoded
by `datasets` (its decoder needs torchcodec, which this package does not use) but read from their bytes / path with
soundfile (wav, flac, ogg), as `modeling_data2vec_unified.data` does. Clips are averaged to mono, resampled to the
model's rate, cut to `--max_audio_seconds` and normalised by the checkpoint's feature extractor (a fresh model: zero
mean, unit variance); batches are padded, with an attention mask. The held-out set is `--eval_split`, else the
dataset's validation or test split, else `--eval_fraction` of the training rows (a fixed seed).

A fresh model (no `--model_name_or_path`) is the tiny `data2vec-pretrain` audio architecture at random init. Every
`TrainingArguments` flag works. The model and its feature extractor are saved to `--output_dir` and load with
`AutoModelForAudioClassification` / `AutoFeatureExtractor`.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import scipy.signal
import soundfile
import torch
from transformers import AutoFeatureExtractor, HfArgumentParser, TrainingArguments, set_seed

from modeling_data2vec_unified import Data2VecConfig, Data2VecForAudioClassification, load_pretraining_data, metrics
from modeling_data2vec_unified.data import SOUND_CLASSES, default_feature_extractor
from modeling_data2vec_unified.finetuning import (
    Data2VecTrainer,
    checkpoint_config,
    class_names,
    label_ids,
    load_labelled_splits,
)
from modeling_data2vec_unified.trainer import MODEL_SIZES, TINY_RECIPES, parse_overrides

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")  # what soundfile reads


@dataclass
class FinetuningArguments:
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "our pretraining output (runs/example-audio) or a transformers Data2Vec audio checkpoint; default: "
                "a fresh tiny model (random init)"})
    config_overrides: str | None = field(default=None, metadata={"help": "fresh model only: config fields, e.g. "
                                                                         "'num_hidden_layers=2,sampling_rate=8000'"})
    dataset: str = field(default="builtin", metadata={"help": "'builtin' (synthesised sounds), an audio folder, a "
                                                              "csv / json file or a datasets Hub id"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "the Hub dataset's configuration"})
    audio_column: str = field(default="audio", metadata={"help": "arrays, {array, sampling_rate}, file paths or "
                                                                 "datasets.Audio entries"})
    label_column: str = field(default="label", metadata={"help": "class ids (a ClassLabel) or class names"})
    train_split: str = field(default="train")
    eval_split: str | None = field(default=None, metadata={"help": "default: validation or test, if present"})
    eval_fraction: float = field(default=0.2, metadata={"help": "held out of the training rows when the dataset "
                                                                "has no eval split"})
    max_audio_seconds: float = field(default=10.0, metadata={"help": "longer clips keep their first seconds"})
    max_train_examples: int | None = field(default=None, metadata={"help": "use only the first N training examples"})
    max_eval_examples: int | None = field(default=None, metadata={"help": "score only the first N held-out examples"})
    layer_decay: float = field(default=1.0, metadata={"help": "layer-wise lr decay (1: none, as data2vec fine-tunes "
                                                               "speech; vision uses 0.65)"})


def read_audio(value, default_rate: int) -> tuple[np.ndarray, int]:
    """A mono float32 waveform and its sampling rate from an array, an {"array", "sampling_rate"} dict, a file path
    or an undecoded datasets.Audio entry {"bytes", "path"} (read with soundfile)."""
    if isinstance(value, dict) and value.get("array") is not None:
        wave, rate = np.asarray(value["array"], dtype=np.float32), value.get("sampling_rate") or default_rate
        return (wave.mean(0) if wave.ndim == 2 else wave), rate  # (channels, samples) -> (samples,)
    if isinstance(value, (dict, str)):
        source = value if isinstance(value, str) else (io.BytesIO(value["bytes"]) if value.get("bytes")
                                                        else value["path"])
        wave, rate = soundfile.read(source, dtype="float32", always_2d=True)  # (samples, channels)
        return wave.mean(1), rate
    wave = np.asarray(value, dtype=np.float32)
    return (wave.mean(0) if wave.ndim == 2 else wave), default_rate


class AudioExamples(torch.utils.data.Dataset):
    """Rows of a `datasets.Dataset` as the model reads them, {"input_values": (samples,) float32, "labels": int}:
    each clip read, resampled to `feature_extractor.sampling_rate`, cut to `max_samples` and normalised when read."""

    def __init__(self, rows: datasets.Dataset, audio_column: str, label_ids: list[int], feature_extractor,
                 max_samples: int):
        if isinstance(rows.features[audio_column], datasets.Audio):  # bytes / path, not datasets' torchcodec decoder
            rows = rows.cast_column(audio_column, datasets.Audio(decode=False))
        self.rows, self.audio_column, self.label_ids = rows.select_columns([audio_column]), audio_column, label_ids
        self.feature_extractor, self.max_samples = feature_extractor, max_samples

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        rate = self.feature_extractor.sampling_rate
        wave, source_rate = read_audio(self.rows[i][self.audio_column], rate)
        if source_rate != rate:
            g = math.gcd(int(source_rate), rate)
            wave = scipy.signal.resample_poly(wave, rate // g, int(source_rate) // g).astype(np.float32)
        wave = self.feature_extractor(wave[: self.max_samples], sampling_rate=rate)["input_values"][0]
        return {"input_values": np.asarray(wave, dtype=np.float32), "labels": self.label_ids[i]}


@dataclass
class AudioClassificationCollator:
    """Pads a batch's clips to the longest with zeros, with an attention mask (1: a real sample)."""

    feature_extractor: object

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.feature_extractor.pad([{"input_values": e["input_values"]} for e in examples], padding=True,
                                           return_attention_mask=True, return_tensors="pt")  # (B, samples) each
        batch["labels"] = torch.tensor([int(e["labels"]) for e in examples])
        return dict(batch)


def audio_folder(root: Path) -> datasets.DatasetDict:
    """The rows {"audio": file path, "label": the file's folder} of a folder laid out as `audiofolder` wants it
    (root/[train|validation|test/]class/clip.wav); built here because datasets' `audiofolder` builder encodes the
    clips with torchcodec."""
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file())
    if not files or any(f.parent == root for f in files):
        raise ValueError(f"{root} must hold audio files ({' '.join(AUDIO_EXTENSIONS)}) in one subfolder per class, "
                         f"e.g. {root}/dog/1.wav, {root}/cat/2.wav (optionally under train/ and test/ subfolders)")
    names = sorted({f.parent.name for f in files})
    features = datasets.Features({"audio": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    splits = defaultdict(lambda: {"audio": [], "label": []})
    for f in files:
        parts = f.relative_to(root).parts
        split = parts[0] if len(parts) > 2 and parts[0] in ("train", "validation", "test") else "train"
        splits[split]["audio"].append(str(f))
        splits[split]["label"].append(names.index(f.parent.name))
    return datasets.DatasetDict({k: datasets.Dataset.from_dict(v, features=features) for k, v in splits.items()})


def feature_extractor_for(args: FinetuningArguments, config):
    """The checkpoint's feature extractor, else per-clip normalisation at the model's rate (data2vec audio)."""
    if args.model_name_or_path is not None:
        try:
            return AutoFeatureExtractor.from_pretrained(args.model_name_or_path)
        except (OSError, ValueError):
            pass
    return default_feature_extractor(config.sampling_rate)


def as_dataset(examples: list[dict]) -> datasets.Dataset:
    """Prepared {"input_values", "labels"} examples as a `datasets.Dataset` that reads back as numpy arrays."""
    return datasets.Dataset.from_dict({"input_values": [e["input_values"] for e in examples],
                                       "labels": [e["labels"] for e in examples]}).with_format("numpy")


def prepare_data(args: FinetuningArguments, config, feature_extractor) -> tuple[object, object, list[str]]:
    """(train set, held-out set, class names); each example {"input_values", "labels"}."""
    if args.dataset == "builtin":  # the clips and split data2vec-pretrain --modality audio uses
        probe = load_pretraining_data(config, "builtin", processor=feature_extractor).probe
        return as_dataset(probe.train), as_dataset(probe.test), list(SOUND_CLASSES)
    train_rows, eval_rows = load_labelled_splits(
        args.dataset, {"--audio_column": args.audio_column, "--label_column": args.label_column},
        dataset_config_name=args.dataset_config_name, train_split=args.train_split, eval_split=args.eval_split,
        eval_fraction=args.eval_fraction, folder_loader=audio_folder)
    names = class_names(train_rows, args.label_column)
    max_samples = int(args.max_audio_seconds * feature_extractor.sampling_rate)
    sets = [AudioExamples(rows, args.audio_column, label_ids(rows, args.label_column, names),
                          feature_extractor, max_samples) for rows in (train_rows, eval_rows)]
    return sets[0], sets[1], names


def first(examples, n: int | None):
    if n is None or n >= len(examples):
        return examples
    return examples.select(range(n)) if isinstance(examples, datasets.Dataset) else torch.utils.data.Subset(
        examples, range(n))


def main(argv=None) -> dict:
    parser = HfArgumentParser((FinetuningArguments, TrainingArguments))
    parser.set_defaults(output_dir="runs/finetune-audio", num_train_epochs=4, learning_rate=1e-3,
                        per_device_train_batch_size=16, per_device_eval_batch_size=32, weight_decay=0.01,
                        warmup_steps=0.1, lr_scheduler_type="linear", eval_strategy="epoch", save_strategy="no",
                        logging_strategy="epoch", report_to="none", seed=0,
                        dataloader_pin_memory=torch.cuda.is_available())
    args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if args.config_overrides and args.model_name_or_path:
        raise ValueError("--config_overrides sets up a fresh model; a --model_name_or_path checkpoint keeps its own "
                         "config (leave out one of the two)")

    if args.model_name_or_path is not None:  # ours, or transformers' Data2Vec config converted to ours
        config = checkpoint_config(args.model_name_or_path)
    else:  # data2vec-pretrain's tiny audio architecture
        fields = {**MODEL_SIZES["tiny"], **TINY_RECIPES["audio"]}
        config = Data2VecConfig(modality="audio", **{**fields, **parse_overrides(args.config_overrides)})
    feature_extractor = feature_extractor_for(args, config)
    train, test, names = prepare_data(args, config, feature_extractor)
    train, test = first(train, args.max_train_examples), first(test, args.max_eval_examples)

    set_seed(training_args.seed)  # the head's (and a fresh model's) initial weights
    labels = dict(num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    if args.model_name_or_path is None:
        config.update(labels)
        model = Data2VecForAudioClassification(config)
    else:  # ours or transformers' Data2Vec audio checkpoints; a fine-tuned head of another size is replaced
        model = Data2VecForAudioClassification.from_pretrained(args.model_name_or_path, ignore_mismatched_sizes=True,
                                                               **labels)
    model.freeze_feature_encoder()  # the conv front end keeps its (pretrained) weights, as in data2vec

    trainer = Data2VecTrainer(model=model, args=training_args, layer_decay=args.layer_decay, train_dataset=train,
                              eval_dataset=test, processing_class=feature_extractor,
                              data_collator=AudioClassificationCollator(feature_extractor),
                              compute_metrics=metrics.accuracy)
    trainer.train()
    result = trainer.evaluate()
    trainer.save_model()  # the model and its feature extractor, for AutoModelForAudioClassification / pipeline()
    print(f"eval accuracy {result['eval_accuracy']:.4f} ({len(test)} examples)")
    if training_args.push_to_hub:
        local = args.dataset == "builtin" or Path(args.dataset).expanduser().exists()
        trainer.push_to_hub(finetuned_from=args.model_name_or_path, tasks="audio-classification",
                            dataset="synthesised sounds (built in)" if args.dataset == "builtin" else args.dataset,
                            dataset_tags=None if local else args.dataset)  # the card links Hub datasets only
    return result


if __name__ == "__main__":
    main()
