"""Fine-tune a data2vec text model for sequence classification with `Data2VecTrainer` (a transformers `Trainer`),
then score it on held-out texts.

    python examples/finetune_text_classification.py                   # built-in task, fresh tiny model, ~1 CPU minute
    python examples/pretrain_text.py && python examples/finetune_text_classification.py \
        --model_name_or_path runs/example-text
    python examples/finetune_text_classification.py --model_name_or_path facebook/data2vec-text-base \
        --dataset glue --dataset_config_name sst2 --text_column sentence --eval_split validation \
        --num_train_epochs 3 --learning_rate 2e-5 --per_device_train_batch_size 32

The built-in task needs nothing downloaded: which of six areas of Python's standard library (text processing,
numbers and math, files and archives, internet, concurrency, dates and times) a docstring comes from, read from the
public functions, classes and methods of the modules listed in `modeling_data2vec_unified.data.STDLIB_AREAS` of the
running Python (`stdlib_docstrings()`, which `data2vec-pretrain --modality text` also probes with: its held-out
docstrings are this script's eval set, never in that pretraining text). `--dataset` also takes a csv / json file or a
`datasets` Hub id, with `--text_column` / `--label_column`; the held-out set is `--eval_split`, else the dataset's
validation or test split, else `--eval_fraction` of the training rows (a fixed seed).

Texts are tokenised with the checkpoint's tokenizer; a fresh model (no `--model_name_or_path`) is the tiny
`data2vec-pretrain` text architecture with a byte-level BPE tokenizer trained on the training texts. Every
`TrainingArguments` flag works. The model and tokenizer are saved to `--output_dir` and load with
`AutoModelForSequenceClassification` / `AutoTokenizer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets
from transformers import DataCollatorWithPadding, set_seed

from modeling_data2vec_unified import Data2VecForSequenceClassification, Data2VecTrainer, metrics
from modeling_data2vec_unified.data import HELD_OUT_FRACTION, stdlib_docstrings

from example_utils import (  # examples/example_utils.py, next to this script
    TextExampleArguments,
    class_names,
    first,
    label_fields,
    label_ids,
    load_labelled_splits,
    parse_example_args,
    text_tokenizer,
    tiny_text_config,
    train_and_report,
)


@dataclass
class FinetuningArguments(TextExampleArguments):
    dataset: str = field(default="builtin", metadata={"help": "'builtin' (stdlib docstrings), a csv / json file or a "
                                                              "datasets Hub id"})
    text_column: str = field(default="text")
    label_column: str = field(default="label", metadata={"help": "class ids (a ClassLabel) or class names"})
    eval_fraction: float = field(default=HELD_OUT_FRACTION, metadata={
        "help": "held out of the training rows when the dataset has no eval split"})


def tokenize(rows: datasets.Dataset, args: FinetuningArguments, tokenizer, names: list[str]) -> datasets.Dataset:
    """Rows as the model reads them: {"input_ids", "attention_mask", "labels"} (the other columns dropped)."""
    rows = rows.add_column("__label_id", label_ids(rows, args.label_column, names))

    def encode(batch: dict) -> dict:
        encoded = tokenizer([t or "" for t in batch[args.text_column]], truncation=True,
                            max_length=args.max_seq_length)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                "labels": batch["__label_id"]}

    return rows.map(encode, batched=True, remove_columns=rows.column_names, desc="tokenizing")


def main(argv=None) -> dict:
    args, training_args = parse_example_args(FinetuningArguments, argv, output_dir="runs/finetune-text",
                                             num_train_epochs=10, learning_rate=1e-3, per_device_train_batch_size=32,
                                             per_device_eval_batch_size=64, warmup_steps=0.06,
                                             lr_scheduler_type="linear")

    source = datasets.DatasetDict(train=stdlib_docstrings()) if args.dataset == "builtin" else args.dataset
    train_rows, eval_rows = load_labelled_splits(
        source, {"--text_column": args.text_column, "--label_column": args.label_column},
        dataset_config_name=args.dataset_config_name, train_split=args.train_split, eval_split=args.eval_split,
        eval_fraction=args.eval_fraction)
    train_rows, eval_rows = first(train_rows, args.max_train_examples), first(eval_rows, args.max_eval_examples)
    names = class_names(train_rows, args.label_column)
    tokenizer = text_tokenizer(args.model_name_or_path, train_rows[args.text_column], args.tokenizer_vocab_size)
    train, test = (tokenize(rows, args, tokenizer, names) for rows in (train_rows, eval_rows))

    set_seed(training_args.seed)  # the head's (and a fresh model's) initial weights
    labels = label_fields(names)
    if args.model_name_or_path is None:
        model = Data2VecForSequenceClassification(tiny_text_config(tokenizer, args.max_seq_length,
                                                                   args.config_overrides, **labels))
    else:  # ours or transformers' Data2Vec text checkpoints; a fine-tuned head of another size is replaced
        model = Data2VecForSequenceClassification.from_pretrained(args.model_name_or_path,
                                                                  ignore_mismatched_sizes=True, **labels)

    trainer = Data2VecTrainer(model=model, args=training_args, layer_decay=args.layer_decay, train_dataset=train,
                              eval_dataset=test, processing_class=tokenizer,
                              data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=metrics.accuracy)
    # the model and its processor are saved for AutoModelForSequenceClassification / pipeline()
    return train_and_report(trainer, args, lambda r: f"eval accuracy {r['eval_accuracy']:.4f} ({len(test)} examples)",
                            "text-classification", "stdlib docstrings (built in)")


if __name__ == "__main__":
    main()
