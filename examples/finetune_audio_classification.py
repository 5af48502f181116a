"""Fine-tune a data2vec audio model to classify sounds with `Data2VecTrainer` (a transformers `Trainer`), the conv
feature encoder frozen as data2vec fine-tunes, then score it on held-out clips.

    python examples/finetune_audio_classification.py                  # built-in sounds, fresh tiny model, ~2 CPU min
    python examples/pretrain_audio.py && python examples/finetune_audio_classification.py \
        --model_name_or_path runs/example-audio
    python examples/finetune_audio_classification.py --model_name_or_path facebook/data2vec-audio-base \
        --dataset ./my_clips --num_train_epochs 5 --learning_rate 3e-5 --per_device_train_batch_size 8

`--dataset` takes `builtin` (10 two-syllable words said by synthetic voices, 800 train / 200 held out, as
`data2vec-pretrain --modality audio` draws them), a folder of audio files with one subfolder per class (`audiofolder`'s layout), a csv /
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

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from transformers import set_seed

from modeling_data2vec_unified import Data2VecForAudioClassification, Data2VecTrainer, load_pretraining_data, metrics
from modeling_data2vec_unified.data import AUDIO_EXTENSIONS
from modeling_data2vec_unified.synthetic_voices import SPOKEN_WORD_CLASSES

from example_utils import (  # examples/example_utils.py, next to this script
    AudioCollator,
    AudioExampleArguments,
    AudioExamples,
    audio_feature_extractor,
    class_names,
    example_config,
    first,
    label_fields,
    label_ids,
    load_labelled_splits,
    parse_example_args,
    train_and_report,
)


@dataclass
class FinetuningArguments(AudioExampleArguments):
    dataset: str = field(default="builtin", metadata={"help": "'builtin' (words said by synthetic voices), an audio folder, a "
                                                              "csv / json file or a datasets Hub id"})
    label_column: str = field(default="label", metadata={"help": "class ids (a ClassLabel) or class names"})


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


def as_dataset(examples: list[dict]) -> datasets.Dataset:
    """Prepared {"input_values", "labels"} examples as a `datasets.Dataset` that reads back as numpy arrays."""
    return datasets.Dataset.from_dict({"input_values": [e["input_values"] for e in examples],
                                       "labels": [e["labels"] for e in examples]}).with_format("numpy")


def prepare_data(args: FinetuningArguments, config, feature_extractor) -> tuple[object, object, list[str]]:
    """(train set, held-out set, class names); each example {"input_values", "labels"}."""
    if args.dataset == "builtin":  # the clips and split data2vec-pretrain --modality audio uses
        probe = load_pretraining_data(config, "builtin", processor=feature_extractor).probe
        return as_dataset(probe.train), as_dataset(probe.test), list(SPOKEN_WORD_CLASSES)
    train_rows, eval_rows = load_labelled_splits(
        args.dataset, {"--audio_column": args.audio_column, "--label_column": args.label_column},
        dataset_config_name=args.dataset_config_name, train_split=args.train_split, eval_split=args.eval_split,
        eval_fraction=args.eval_fraction, folder_loader=audio_folder)
    names = class_names(train_rows, args.label_column)
    max_samples = int(args.max_audio_seconds * feature_extractor.sampling_rate)
    sets = [AudioExamples(rows, args.audio_column, label_ids(rows, args.label_column, names),
                          feature_extractor, max_samples) for rows in (train_rows, eval_rows)]
    return sets[0], sets[1], names


def main(argv=None) -> dict:
    args, training_args = parse_example_args(FinetuningArguments, argv, output_dir="runs/finetune-audio",
                                             num_train_epochs=4, learning_rate=1e-3, per_device_train_batch_size=16,
                                             per_device_eval_batch_size=32, warmup_steps=0.1,
                                             lr_scheduler_type="linear")

    # ours, or transformers' Data2Vec config converted; a fresh model: data2vec-pretrain's tiny audio architecture
    config = example_config(args, "audio")
    feature_extractor = audio_feature_extractor(args.model_name_or_path, config.sampling_rate)
    train, test, names = prepare_data(args, config, feature_extractor)
    train, test = first(train, args.max_train_examples), first(test, args.max_eval_examples)

    set_seed(training_args.seed)  # the head's (and a fresh model's) initial weights
    labels = label_fields(names)
    if args.model_name_or_path is None:
        config.update(labels)
        model = Data2VecForAudioClassification(config)
    else:  # ours or transformers' Data2Vec audio checkpoints; a fine-tuned head of another size is replaced
        model = Data2VecForAudioClassification.from_pretrained(args.model_name_or_path, ignore_mismatched_sizes=True,
                                                               **labels)
    model.freeze_feature_encoder()  # the conv front end keeps its (pretrained) weights, as in data2vec

    trainer = Data2VecTrainer(model=model, args=training_args, layer_decay=args.layer_decay, train_dataset=train,
                              eval_dataset=test, processing_class=feature_extractor,
                              data_collator=AudioCollator(feature_extractor),
                              compute_metrics=metrics.accuracy)
    # the model and its processor are saved for AutoModelForAudioClassification / pipeline()
    return train_and_report(trainer, args, lambda r: f"eval accuracy {r['eval_accuracy']:.4f} ({len(test)} examples)",
                            "audio-classification", "words said by synthetic voices (built in)")


if __name__ == "__main__":
    main()
