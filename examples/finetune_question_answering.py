"""Fine-tune a data2vec text model for extractive question answering with `Data2VecTrainer` (a transformers
`Trainer`), then score the answers it picks out of held-out contexts (SQuAD exact match and F1).

    python examples/finetune_question_answering.py                    # built-in questions, fresh tiny model, ~1 CPU min
    python examples/pretrain_text.py && python examples/finetune_question_answering.py \
        --model_name_or_path runs/example-text
    python examples/finetune_question_answering.py --model_name_or_path facebook/data2vec-text-base \
        --dataset squad --max_seq_length 384 --doc_stride 128 --num_train_epochs 2 --learning_rate 3e-5

The built-in task needs nothing downloaded. Each context is one documented name of Python's standard library and
the start of its docstring, "name: the first paragraph's first sentences (at most three)", from the docstrings that
finetune_text_classification.py classifies (`stdlib_docstring_splits()`: 774 training questions; the 194 held-out
questions are about held-out docstrings, never seen in training nor in `data2vec-pretrain`'s text). The question names
it: "What does N return?" when its docstring starts "Return(s) ...", answered by the rest of that sentence ("True if
the path exists"); else "How is N described?", answered by its first sentence (up to 25 words). The model has to learn
where such answers lie, not to find the name: with two or three names in a context (each asked about) the tiny model
did not learn to match the name (held-out exact match after 5-6 epochs of questions asked three times each: 0.14 with
three names, 0.16 with two, 0.52 with one). `--dataset`
also takes a json / jsonl / csv / parquet file or a `datasets` Hub id with SQuAD's columns (`--question_column`,
`--context_column`, `--answer_column`: {"text": [...], "answer_start": [...]}); the held-out set is `--eval_split`,
else the dataset's validation or test split, else `--eval_fraction` of the training rows (a fixed seed).

Question and context are tokenised as a pair, as transformers' run_qa.py does: the context is cut into windows of
`--max_seq_length` tokens that overlap by `--doc_stride`; a window's start / end positions are the first / last token
of the answer, or the first token (<s>) when the answer is not inside it. An answer is picked per question from its
windows' `--n_best_size` best start and end logits (end not before start, at most `--max_answer_length` tokens,
inside the context), and mapped back to the context's characters. Scores are SQuAD's, computed here (evaluate's squad
metric needs a download): exact match and token F1 of the normalised answer (lower case, no punctuation, no
articles a / an / the), the best over the reference answers, averaged over the questions, as fractions.

A fresh model (no `--model_name_or_path`) is the tiny `data2vec-pretrain` text architecture at random init with a
byte-level BPE tokenizer trained on the training questions and contexts; a checkpoint's tokenizer must be a fast one
(offsets). Every `TrainingArguments` flag works. The model and tokenizer are saved to `--output_dir` and load with
`AutoModelForQuestionAnswering` / `AutoTokenizer`.

Measured with these defaults (2 CPUs, OMP_NUM_THREADS=1, 52 s): held-out exact match 0.505, F1 0.833; the untrained
model (`--learning_rate 0 --max_steps 1`) 0.005 / 0.293.
"""

from __future__ import annotations

import collections
import re
import string
from dataclasses import dataclass, field

import datasets
import numpy as np
from transformers import DataCollatorWithPadding, set_seed

from modeling_data2vec_unified import Data2VecForQuestionAnswering, Data2VecTrainer
from modeling_data2vec_unified.data import HELD_OUT_FRACTION, stdlib_docstring_names, stdlib_docstring_splits

from example_utils import (  # examples/example_utils.py, next to this script
    TextExampleArguments,
    first,
    load_labelled_splits,
    parse_example_args,
    text_tokenizer,
    tiny_text_config,
    train_and_report,
)

SENTENCES_PER_CONTEXT = 3  # built-in: the first sentences of a docstring's first paragraph
MAX_ANSWER_WORDS = 25  # built-in: longer first sentences are not asked about
RETURNS = re.compile(r"Returns? (.+?)\.?")


@dataclass
class FinetuningArguments(TextExampleArguments):
    dataset: str = field(default="builtin", metadata={"help": "'builtin' (questions on stdlib docstrings), a json / "
                                                              "csv file or a datasets Hub id with SQuAD's columns"})
    question_column: str = field(default="question")
    context_column: str = field(default="context")
    answer_column: str = field(default="answers", metadata={"help": "{'text': [...], 'answer_start': [...]}"})
    eval_fraction: float = field(default=HELD_OUT_FRACTION, metadata={
        "help": "held out of the training rows when the dataset has no eval split"})
    max_seq_length: int = field(default=256, metadata={"help": "tokens per window (question, context and special "
                                                               "tokens)"})
    doc_stride: int = field(default=64, metadata={"help": "tokens shared by a long context's successive windows"})
    n_best_size: int = field(default=20, metadata={"help": "start and end candidates per window"})
    max_answer_length: int = field(default=40, metadata={"help": "the longest answer picked, in tokens"})


# ---- the built-in questions ----


def first_sentences(doc: str, n: int) -> list[str]:
    """The first `n` sentences of a docstring's first paragraph, white space folded."""
    return re.split(r"(?<=[.!?])\s+", " ".join(doc.split("\n\n")[0].split()))[:n]


def question_about(name: str, doc: str) -> tuple[str, str, int] | None:
    """(the question about `name`, its answer, where the answer starts in its docstring's first sentence), or None
    when none is asked (a first sentence longer than MAX_ANSWER_WORDS)."""
    sentence = first_sentences(doc, 1)[0]
    returns = RETURNS.fullmatch(sentence)
    if returns:
        return f"What does {name} return?", returns.group(1), returns.start(1)
    answer = sentence.rstrip(".")
    if not answer or len(answer.split()) > MAX_ANSWER_WORDS:
        return None
    return f"How is {name} described?", answer, 0


def builtin_questions(docstrings: list[str], names: dict[str, str]) -> datasets.Dataset:
    """SQuAD-style rows {"question", "context", "answers"}, one per docstring that `question_about` asks about: the
    context "name: the first SENTENCES_PER_CONTEXT sentences of its docstring's first paragraph"."""
    rows = {"question": [], "context": [], "answers": []}
    for doc in docstrings:
        asked = question_about(names[doc], doc)
        if asked is not None:
            question, answer, offset = asked
            rows["question"].append(question)
            rows["context"].append(f"{names[doc]}: {' '.join(first_sentences(doc, SENTENCES_PER_CONTEXT))}")
            rows["answers"].append({"text": [answer], "answer_start": [len(names[doc]) + 2 + offset]})
    return datasets.Dataset.from_dict(rows)


def builtin_qa() -> datasets.DatasetDict:
    """Questions on the training docstrings and on the held-out ones."""
    train, test = stdlib_docstring_splits()
    names = stdlib_docstring_names()
    return datasets.DatasetDict(train=builtin_questions(train["text"], names),
                                test=builtin_questions(test["text"], names))


# ---- windows, answers and scores, as transformers' run_qa.py ----


def answer_texts(answers: dict) -> list[str]:
    """A row's reference answers (SQuAD's {"text": [...], "answer_start": [...]})."""
    return [str(text) for text in answers["text"]]


def windows(rows: datasets.Dataset, args: FinetuningArguments, tokenizer) -> tuple[datasets.Dataset, list, list]:
    """(the model's inputs, one per window: {"input_ids", "attention_mask", "start_positions", "end_positions"}; each
    window's row; each window's character offsets, None outside the context). A window without the whole answer
    (or a row without one) points both positions at the first token."""
    if not tokenizer.is_fast:
        raise ValueError("question answering maps tokens to context characters by their offsets, which needs a fast "
                         "tokenizer (tokenizer.json): this checkpoint's tokenizer is a slow one")
    questions = [q.lstrip() for q in rows[args.question_column]]  # run_qa: leading spaces waste the window
    longest = max((len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]), default=0)
    room = args.max_seq_length - tokenizer.num_special_tokens_to_add(pair=True) - longest  # context tokens a window
    if room <= args.doc_stride:
        raise ValueError(f"a question of {longest} tokens leaves {room} context tokens per window of --max_seq_length "
                         f"{args.max_seq_length}, not more than --doc_stride {args.doc_stride}: raise "
                         f"--max_seq_length, lower --doc_stride or shorten the questions")
    encoded = tokenizer(questions, list(rows[args.context_column]), truncation="only_second",
                        max_length=args.max_seq_length, stride=args.doc_stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True)
    answers = rows[args.answer_column]
    starts, ends, row_of, offsets_of = [], [], [], []
    for i, offsets in enumerate(encoded["offset_mapping"]):
        row, sequence_ids = encoded["overflow_to_sample_mapping"][i], encoded.sequence_ids(i)
        context = [j for j, s in enumerate(sequence_ids) if s == 1]
        start = end = 0  # <s>: no answer in this window
        if answers[row]["text"] and context:
            first_char = answers[row]["answer_start"][0]
            last_char = first_char + len(answers[row]["text"][0])
            if offsets[context[0]][0] <= first_char and offsets[context[-1]][1] >= last_char:
                start = next(j for j in context if offsets[j][1] > first_char)
                end = next(j for j in reversed(context) if offsets[j][0] < last_char)
        starts.append(start), ends.append(end), row_of.append(row)
        offsets_of.append([o if s == 1 else None for o, s in zip(offsets, sequence_ids)])
    inputs = datasets.Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                                         "start_positions": starts, "end_positions": ends})
    return inputs, row_of, offsets_of


def pick_answers(start_logits: np.ndarray, end_logits: np.ndarray, row_of: list[int], offsets_of: list,
                 contexts: list[str], n_best_size: int, max_answer_length: int) -> list[str]:
    """Each row's answer: of its windows' `n_best_size` best starts and ends, the pair of highest start + end logit
    with the end not before the start, at most `max_answer_length` tokens, both inside the context; the context's
    characters between them ("" when no pair is valid). Logits may be padded past a window's tokens."""
    best: dict[int, tuple[float, str]] = {}
    for window, row in enumerate(row_of):
        offsets = offsets_of[window]
        starts = np.argsort(start_logits[window][: len(offsets)])[::-1][:n_best_size]
        ends = np.argsort(end_logits[window][: len(offsets)])[::-1][:n_best_size]
        for s in starts:
            for e in ends:
                if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start_logits[window][s] + end_logits[window][e])
                if row not in best or score > best[row][0]:
                    best[row] = (score, contexts[row][offsets[s][0] : offsets[e][1]])
    return [best[row][1] if row in best else "" for row in range(len(contexts))]


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """SQuAD v1.1's exact match and F1 (token overlap of the normalised answers), each the best over a question's
    reference answers ("" when it has none), averaged over the questions, as fractions."""

    def f1(prediction: str, reference: str) -> float:
        predicted, true = normalize_answer(prediction).split(), normalize_answer(reference).split()
        if not predicted or not true:
            return float(predicted == true)
        common = sum((collections.Counter(predicted) & collections.Counter(true)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(predicted), common / len(true)
        return 2 * precision * recall / (precision + recall)

    exact = scores = 0.0
    for prediction, answers in zip(predictions, references):
        answers = answers or [""]
        exact += max(float(normalize_answer(prediction) == normalize_answer(a)) for a in answers)
        scores += max(f1(prediction, a) for a in answers)
    n = max(len(predictions), 1)
    return {"exact_match": exact / n, "f1": scores / n}


def squad_metrics(rows: datasets.Dataset, args: FinetuningArguments, row_of: list[int], offsets_of: list):
    """A `compute_metrics` for the held-out windows: answers picked from the start / end logits, scored against the
    rows' references."""
    contexts, references = list(rows[args.context_column]), [answer_texts(a) for a in rows[args.answer_column]]

    def compute_metrics(eval_pred) -> dict[str, float]:
        start_logits, end_logits = eval_pred.predictions[:2]
        predictions = pick_answers(start_logits, end_logits, row_of, offsets_of, contexts, args.n_best_size,
                                   args.max_answer_length)
        return squad_scores(predictions, references)

    return compute_metrics


def main(argv=None) -> dict:
    args, training_args = parse_example_args(FinetuningArguments, argv, output_dir="runs/finetune-qa",
                                             num_train_epochs=12, learning_rate=1e-3, per_device_train_batch_size=32,
                                             per_device_eval_batch_size=64, warmup_steps=0.06,
                                             lr_scheduler_type="linear")

    source = builtin_qa() if args.dataset == "builtin" else args.dataset
    train_rows, eval_rows = load_labelled_splits(
        source, {"--question_column": args.question_column, "--context_column": args.context_column,
                 "--answer_column": args.answer_column},
        dataset_config_name=args.dataset_config_name, train_split=args.train_split, eval_split=args.eval_split,
        eval_fraction=args.eval_fraction)
    train_rows, eval_rows = first(train_rows, args.max_train_examples), first(eval_rows, args.max_eval_examples)
    texts = [f"{q} {c}" for q, c in zip(train_rows[args.question_column], train_rows[args.context_column])]
    tokenizer = text_tokenizer(args.model_name_or_path, texts, args.tokenizer_vocab_size)
    train, _, _ = windows(train_rows, args, tokenizer)
    test, row_of, offsets_of = windows(eval_rows, args, tokenizer)

    set_seed(training_args.seed)  # the head's (and a fresh model's) initial weights
    if args.model_name_or_path is None:
        model = Data2VecForQuestionAnswering(tiny_text_config(tokenizer, args.max_seq_length, args.config_overrides))
    else:  # ours or transformers' Data2Vec text checkpoints
        model = Data2VecForQuestionAnswering.from_pretrained(args.model_name_or_path)

    trainer = Data2VecTrainer(model=model, args=training_args, layer_decay=args.layer_decay, train_dataset=train,
                              eval_dataset=test, processing_class=tokenizer,
                              data_collator=DataCollatorWithPadding(tokenizer),
                              compute_metrics=squad_metrics(eval_rows, args, row_of, offsets_of))

    def describe(r: dict) -> str:
        return f"eval exact_match {r['eval_exact_match']:.4f} f1 {r['eval_f1']:.4f} ({len(eval_rows)} examples)"

    # the model and its processor are saved for AutoModelForQuestionAnswering / AutoTokenizer
    return train_and_report(trainer, args, describe, "question-answering", "questions on stdlib docstrings (built in)")


if __name__ == "__main__":
    main()
