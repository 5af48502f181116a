"""Fine-tune a data2vec audio model for speech recognition with CTC and `Data2VecTrainer` (a transformers `Trainer`),
the conv feature encoder frozen as data2vec fine-tunes, then score its greedy transcripts on held-out clips (WER, CER).

    python examples/finetune_speech_recognition.py                    # built-in "speech", fresh tiny model, ~2.5 min
    python examples/pretrain_audio.py && python examples/finetune_speech_recognition.py \
        --model_name_or_path runs/example-audio
    python examples/finetune_speech_recognition.py --model_name_or_path facebook/data2vec-audio-base \
        --dataset ./my_speech --num_train_epochs 20 --learning_rate 1e-4 --per_device_train_batch_size 8

`--dataset builtin` needs nothing downloaded: synthesised "speech"
(`modeling_data2vec_unified.data.synthesize_speech`) in which each letter a-h is said as a 60-120 ms sound of one of
the built-in sound classes (a: sine, b: sawtooth, c: square, d: whistle, e: noise bursts, f: rising chirp, g: falling
chirp, h: clicks; random pitch and envelope), letters of a word 15-30 ms apart, words 80-120 ms apart; transcripts are
1-2 words of a 23-word list ("bad cafe", "hedge"); 1000 clips to train on (seed 0) and 200 held out (seed 1).
`--dataset` also takes a csv / json file or a `datasets` Hub id with `--audio_column` (decoded arrays, {"array",
"sampling_rate"}, file paths or `datasets.Audio` entries, read with soundfile: `example_utils.read_audio`)
and `--text_column` (the transcripts), or a folder with audio files and a metadata.csv / metadata.jsonl whose
`file_name` column names them (`audiofolder`'s layout). The held-out set is `--eval_split`, else the dataset's
validation or test split, else `--eval_fraction` of the training rows (a fixed seed); rows with empty transcripts are
left out.

A fresh model (no `--model_name_or_path`), or a checkpoint without a CTC tokenizer (our pretraining output), gets a
character vocabulary built from the training transcripts, lower-cased (`ctc_processor`: <pad> is the CTC blank, `|`
the word gap); a fine-tuned CTC checkpoint keeps its own processor and vocabulary (then transcripts are encoded as
they are). Clips are averaged to mono, resampled to the model's rate, cut to `--max_audio_seconds` and normalised;
batches are padded, with an attention mask, labels padded with -100. Predictions are decoded greedily (argmax per
frame, repeats merged, blanks dropped: the processor's `batch_decode`) and scored with the package's offline WER
module; CER is the same edit distance over characters, the gaps between words counted as characters. Frames past
a clip's end (padding in its batch) are not decoded.

The fresh model is the tiny `data2vec-pretrain` audio architecture at random init. Every `TrainingArguments` flag
works. The model and its processor are saved to `--output_dir` and load with `AutoModelForCTC` / `AutoProcessor`.

Measured with these defaults (2 CPUs, OMP_NUM_THREADS=1, 2 min 30 s): held-out WER 0.515, CER 0.153; the untrained
model (`--learning_rate 0 --max_steps 1`) WER 1.0, CER 16.1 (it emits many characters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets
from transformers import AutoProcessor, set_seed

from modeling_data2vec_unified import Data2VecForCTC, Data2VecTrainer, ctc_processor, metrics
from modeling_data2vec_unified.data import AUDIO_EXTENSIONS, synthesize_speech

from example_utils import (  # examples/example_utils.py, next to this script
    AudioCollator,
    AudioExampleArguments,
    AudioExamples,
    audio_feature_extractor,
    example_config,
    first,
    load_labelled_splits,
    parse_example_args,
    train_and_report,
)

BUILTIN_TRAIN, BUILTIN_EVAL = 1000, 200  # built-in clips
BUILTIN_MAX_WORDS = 2  # words per built-in clip


@dataclass
class FinetuningArguments(AudioExampleArguments):
    dataset: str = field(default="builtin", metadata={"help": "'builtin' (synthesised speech), a folder with a "
                                                              "metadata.csv, a csv / json file or a datasets Hub id"})
    text_column: str = field(default="text", metadata={"help": "the transcripts"})
    max_audio_seconds: float = field(default=20.0, metadata={"help": "longer clips keep their first seconds (their "
                                                                     "transcripts must still fit)"})


def builtin_speech(sampling_rate: int, num_train: int | None = None, num_eval: int | None = None
                   ) -> datasets.DatasetDict:
    """The built-in clips (float32 arrays at `sampling_rate`) and transcripts: "train" (BUILTIN_TRAIN clips, seed 0)
    and "test" (BUILTIN_EVAL, seed 1) splits, or their first `num_train` / `num_eval` (the same clips: each is drawn
    after the ones before it)."""
    features = datasets.Features({"audio": datasets.Sequence(datasets.Value("float32")),
                                  "text": datasets.Value("string")})
    splits = {}
    for split, size, wanted, seed in (("train", BUILTIN_TRAIN, num_train, 0), ("test", BUILTIN_EVAL, num_eval, 1)):
        clips, texts = synthesize_speech(min(size, wanted or size), sampling_rate, seed=seed,
                                         max_words=BUILTIN_MAX_WORDS)
        splits[split] = datasets.Dataset.from_dict({"audio": clips, "text": texts}, features=features)
    return datasets.DatasetDict(splits)


def speech_folder(root: Path) -> datasets.DatasetDict:
    """The rows of `audiofolder`'s layout for speech: audio files and a metadata.csv / metadata.jsonl (next to them or
    in train/ validation/ test/ subfolders) whose `file_name` column names each file, relative to the metadata file;
    the file paths go to an "audio" column. Built here because datasets' `audiofolder` decodes with torchcodec."""
    splits = {}
    for metadata in sorted([*root.rglob("metadata.csv"), *root.rglob("metadata.jsonl")]):
        folder = metadata.parent
        split = folder.name if folder != root and folder.name in ("train", "validation", "test") else "train"
        rows = datasets.load_dataset("csv" if metadata.suffix == ".csv" else "json", data_files=str(metadata))["train"]
        if "file_name" not in rows.column_names:
            raise ValueError(f"{metadata} needs a file_name column naming each audio file; its columns: "
                             f"{rows.column_names}")
        paths = [str(folder / name) for name in rows["file_name"]]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"{metadata} names {len(missing)} missing audio file(s), e.g. {missing[0]}")
        splits[split] = rows.remove_columns("file_name").add_column("audio", paths)
    if not splits:
        raise ValueError(f"{root} has no metadata.csv / metadata.jsonl: put one next to the audio files "
                         f"({' '.join(AUDIO_EXTENSIONS)}) with a file_name and a transcript column")
    return datasets.DatasetDict(splits)


def load_processor(args: FinetuningArguments, train_texts: list[str], sampling_rate: int, folder: str):
    """(processor, lowercase): a CTC checkpoint's own processor (transcripts encoded as they are), else a character
    vocabulary built from the lower-cased training transcripts, with the checkpoint's feature extractor if any."""
    if args.model_name_or_path is not None:
        try:
            processor = AutoProcessor.from_pretrained(args.model_name_or_path)
            if hasattr(processor, "tokenizer"):
                return processor, False
        except (OSError, ValueError, TypeError):
            pass
    processor = ctc_processor(train_texts, folder, sampling_rate=sampling_rate, lowercase=True)
    if args.model_name_or_path is not None:
        processor.feature_extractor = audio_feature_extractor(args.model_name_or_path, sampling_rate)
    return processor, True


def prepare_data(args: FinetuningArguments, sampling_rate: int, output_dir: str):
    """(train set, held-out set, processor); each example {"input_values", "labels": the transcript's ids}."""
    if args.dataset == "builtin":  # only the clips that are used are synthesised
        source = builtin_speech(sampling_rate, args.max_train_examples, args.max_eval_examples)
    else:
        source = args.dataset
    train_rows, eval_rows = load_labelled_splits(
        source, {"--audio_column": args.audio_column, "--text_column": args.text_column},
        dataset_config_name=args.dataset_config_name, train_split=args.train_split, eval_split=args.eval_split,
        eval_fraction=args.eval_fraction, folder_loader=speech_folder)
    # WER is per reference word: a clip without a transcript has none
    train_rows, eval_rows = (rows.filter(lambda text: bool((text or "").strip()), input_columns=args.text_column)
                             for rows in (train_rows, eval_rows))
    train_rows, eval_rows = first(train_rows, args.max_train_examples), first(eval_rows, args.max_eval_examples)
    processor, lowercase = load_processor(args, train_rows[args.text_column], sampling_rate, output_dir)
    max_samples = int(args.max_audio_seconds * processor.feature_extractor.sampling_rate)
    sets = []
    for rows in (train_rows, eval_rows):
        texts = [" ".join(t.split()) for t in rows[args.text_column]]
        ids = processor.tokenizer([t.lower() for t in texts] if lowercase else texts)["input_ids"]
        sets.append(AudioExamples(rows, args.audio_column, ids, processor.feature_extractor, max_samples))
    return sets[0], sets[1], processor


def main(argv=None) -> dict:
    # CTC from random init needs many small steps: batches of 8; the held-out WER once, at the end (on 2 CPUs an
    # evaluation of the 200 built-in clips takes as long as ~30 steps; --eval_strategy epoch shows it every epoch)
    args, training_args = parse_example_args(FinetuningArguments, argv, output_dir="runs/finetune-speech",
                                             num_train_epochs=10, learning_rate=2e-3, per_device_train_batch_size=8,
                                             per_device_eval_batch_size=32, warmup_steps=0.1,
                                             lr_scheduler_type="linear", eval_strategy="no")

    config = example_config(args, "audio")  # ours, or transformers' Data2Vec config converted; or the tiny one
    train, test, processor = prepare_data(args, config.sampling_rate, training_args.output_dir)
    tokenizer = processor.tokenizer

    set_seed(training_args.seed)  # the head's (and a fresh model's) initial weights
    ctc = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, ctc_loss_reduction="mean")
    if args.model_name_or_path is None:
        config.update(ctc)
        model = Data2VecForCTC(config)
    else:  # ours or transformers' Data2Vec audio checkpoints; a CTC head of another vocabulary is replaced
        model = Data2VecForCTC.from_pretrained(args.model_name_or_path, ignore_mismatched_sizes=True, **ctc)
    model.freeze_feature_encoder()  # the conv front end keeps its (pretrained) weights, as in data2vec

    # each held-out clip's real frames: a shorter clip's padding in a batch is not decoded (read as blanks)
    frames = [int(model.config.num_audio_frames(len(test[i]["input_values"]))) for i in range(len(test))]
    trainer = Data2VecTrainer(model=model, args=training_args, layer_decay=args.layer_decay, train_dataset=train,
                              eval_dataset=test, processing_class=processor,
                              data_collator=AudioCollator(processor.feature_extractor),
                              compute_metrics=metrics.wer(processor, cer=True, frames=frames))

    def describe(r: dict) -> str:
        return f"eval wer {r['eval_wer']:.4f} cer {r['eval_cer']:.4f} ({len(test)} examples)"

    # the model and its processor are saved for AutoModelForCTC / AutoProcessor
    return train_and_report(trainer, args, describe, "automatic-speech-recognition", "synthesised speech (built in)")


if __name__ == "__main__":
    main()
