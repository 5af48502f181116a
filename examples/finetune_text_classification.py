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
from pathlib import Path

import datasets
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, HfArgumentParser, TrainingArguments, set_seed

from modeling_data2vec_unified import Data2VecConfig, Data2VecForSequenceClassification, metrics
from modeling_data2vec_unified.conversion import read_config_dict
from modeling_data2vec_unified.data import HELD_OUT_FRACTION, stdlib_docstrings, train_bpe_tokenizer
from modeling_data2vec_unified.finetuning import Data2VecTrainer, class_names, label_ids, load_labelled_splits
from modeling_data2vec_unified.trainer import MODEL_SIZES, TINY_RECIPES, parse_overrides


@dataclass
class FinetuningArguments:
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "our pretraining output (runs/example-text) or a transformers Data2Vec text checkpoint; default: a "
                "fresh tiny model (random init) with a BPE tokenizer trained on the training texts"})
    config_overrides: str | None = field(default=None, metadata={"help": "fresh model only: config fields, e.g. "
                                                                         "'num_hidden_layers=2,hidden_dropout_prob=0'"})
    tokenizer_vocab_size: int = field(default=2048, metadata={"help": "fresh model only: the BPE vocabulary"})
    dataset: str = field(default="builtin", metadata={"help": "'builtin' (stdlib docstrings), a csv / json file or a "
                                                              "datasets Hub id"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "the Hub dataset's configuration"})
    text_column: str = field(default="text")
    label_column: str = field(default="label", metadata={"help": "class ids (a ClassLabel) or class names"})
    train_split: str = field(default="train")
    eval_split: str | None = field(default=None, metadata={"help": "default: validation or test, if present"})
    eval_fraction: float = field(default=HELD_OUT_FRACTION, metadata={
        "help": "held out of the training rows when the dataset has no eval split"})
    max_seq_length: int = field(default=128, metadata={"help": "tokens per text, special tokens included"})
    max_train_examples: int | None = field(default=None, metadata={"help": "use only the first N training examples"})
    max_eval_examples: int | None = field(default=None, metadata={"help": "score only the first N held-out examples"})
    layer_decay: float = field(default=1.0, metadata={"help": "layer-wise lr decay (1: none, as data2vec / RoBERTa "
                                                               "fine-tune text; vision uses 0.65)"})


def tokenize(rows: datasets.Dataset, args: FinetuningArguments, tokenizer, names: list[str]) -> datasets.Dataset:
    """Rows as the model reads them: {"input_ids", "attention_mask", "labels"} (the other columns dropped)."""
    rows = rows.add_column("__label_id", label_ids(rows, args.label_column, names))

    def encode(batch: dict) -> dict:
        encoded = tokenizer([t or "" for t in batch[args.text_column]], truncation=True,
                            max_length=args.max_seq_length)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                "labels": batch["__label_id"]}

    return rows.map(encode, batched=True, remove_columns=rows.column_names, desc="tokenizing")


def fresh_config(args: FinetuningArguments, tokenizer, **labels) -> Data2VecConfig:
    """data2vec-pretrain's tiny text architecture, sized to the tokenizer (RoBERTa positions from pad_token_id + 1)."""
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, mask_token_id=tokenizer.mask_token_id,
               max_position_embeddings=args.max_seq_length + tokenizer.pad_token_id + 1)
    fields = {**MODEL_SIZES["tiny"], **TINY_RECIPES["text"], **ids}
    return Data2VecConfig(modality="text", **{**fields, **parse_overrides(args.config_overrides)}, **labels)


def check_length(args: FinetuningArguments) -> None:
    """--max_seq_length must fit the checkpoint's position table (RoBERTa positions start at pad_token_id + 1)."""
    if args.model_name_or_path is None:
        return
    config = read_config_dict(args.model_name_or_path)
    limit = config["max_position_embeddings"] - (config.get("pad_token_id") or 0) - 1
    if args.max_seq_length > limit:
        raise ValueError(f"--max_seq_length {args.max_seq_length} is longer than {args.model_name_or_path} takes "
                         f"({limit} tokens, from its max_position_embeddings): pass --max_seq_length {limit} or less")


def first(rows: datasets.Dataset, n: int | None) -> datasets.Dataset:
    return rows if n is None or n >= len(rows) else rows.select(range(n))


def main(argv=None) -> dict:
    parser = HfArgumentParser((FinetuningArguments, TrainingArguments))
    parser.set_defaults(output_dir="runs/finetune-text", num_train_epochs=10, learning_rate=1e-3,
                        per_device_train_batch_size=32, per_device_eval_batch_size=64, weight_decay=0.01,
                        warmup_steps=0.06, lr_scheduler_type="linear", eval_strategy="epoch", save_strategy="no",
                        logging_strategy="epoch", report_to="none", seed=0,
                        dataloader_pin_memory=torch.cuda.is_available())
    args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if args.config_overrides and args.model_name_or_path:
        raise ValueError("--config_overrides sets up a fresh model; a --model_name_or_path checkpoint keeps its own "
                         "config (leave out one of the two)")
    check_length(args)

    source = datasets.DatasetDict(train=stdlib_docstrings()) if args.dataset == "builtin" else args.dataset
    train_rows, eval_rows = load_labelled_splits(
        source, {"--text_column": args.text_column, "--label_column": args.label_column},
        dataset_config_name=args.dataset_config_name, train_split=args.train_split, eval_split=args.eval_split,
        eval_fraction=args.eval_fraction)
    train_rows, eval_rows = first(train_rows, args.max_train_examples), first(eval_rows, args.max_eval_examples)
    names = class_names(train_rows, args.label_column)
    if args.model_name_or_path is not None:
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    else:  # trained on the training texts only: the held-out texts stay unseen
        tokenizer = train_bpe_tokenizer(train_rows[args.text_column], args.tokenizer_vocab_size)
    train, test = (tokenize(rows, args, tokenizer, names) for rows in (train_rows, eval_rows))

    set_seed(training_args.seed)  # the head's (and a fresh model's) initial weights
    labels = dict(num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    if args.model_name_or_path is None:
        model = Data2VecForSequenceClassification(fresh_config(args, tokenizer, **labels))
    else:  # ours or transformers' Data2Vec text checkpoints; a fine-tuned head of another size is replaced
        model = Data2VecForSequenceClassification.from_pretrained(args.model_name_or_path,
                                                                  ignore_mismatched_sizes=True, **labels)

    trainer = Data2VecTrainer(model=model, args=training_args, layer_decay=args.layer_decay, train_dataset=train,
                              eval_dataset=test, processing_class=tokenizer,
                              data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=metrics.accuracy)
    trainer.train()
    result = trainer.evaluate()
    trainer.save_model()  # the model and its tokenizer, for AutoModelForSequenceClassification / pipeline()
    print(f"eval accuracy {result['eval_accuracy']:.4f} ({len(test)} examples)")
    if training_args.push_to_hub:
        local = args.dataset == "builtin" or Path(args.dataset).expanduser().exists()
        trainer.push_to_hub(finetuned_from=args.model_name_or_path, tasks="text-classification",
                            dataset="stdlib docstrings (built in)" if args.dataset == "builtin" else args.dataset,
                            dataset_tags=None if local else args.dataset)  # the card links Hub datasets only
    return result


if __name__ == "__main__":
    main()
