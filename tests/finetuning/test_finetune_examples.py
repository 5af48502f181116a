"""The fine-tuning examples run offline for a few steps on their built-in data (and on small local files), print the
eval line, and save a model that reloads with its Auto class and gives the logits of the model that was evaluated.

The speech recognition (CTC), token classification and question answering examples run offline for a few steps on
their built-in data and on small local files; the printed scores equal ones recomputed here from the trainer's
predictions, and the saved model reloads with its Auto class and gives the evaluated model's outputs."""

import collections
import json
import re
import string
import sys
import wave
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from modeling_data2vec_unified.data import synthesize_speech
from transformers import (
    AutoImageProcessor,
    AutoModelForCTC,
    AutoModelForImageClassification,
    AutoModelForQuestionAnswering,
    AutoModelForTokenClassification,
    AutoProcessor,
    AutoTokenizer,
    EvalPrediction,
)

from run_helpers import EXAMPLES, FEW_STEPS, SMALL, check_reload, run_example


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_finetuning_example_builtin(name, tmp_path, monkeypatch, capsys, offline):
    auto_model, auto_processor, flags = EXAMPLES[name]
    result, (accuracy, count), trainer = run_example(name, ["--output_dir", str(tmp_path), *FEW_STEPS, *flags],
                                                     monkeypatch, capsys)
    assert int(count) == 16 and accuracy == f"{result['eval_accuracy']:.4f}"
    assert trainer.state.global_step == 3
    # the reported accuracy, recomputed from the model's predictions on the evaluation set
    prediction = trainer.predict(trainer.eval_dataset)
    assert len(prediction.label_ids) == 16
    assert result["eval_accuracy"] == pytest.approx((prediction.predictions.argmax(-1) == prediction.label_ids).mean())
    assert trainer.args.report_to in ("none", [], ["none"]) and trainer.args.remove_unused_columns
    check_reload(trainer, auto_model, auto_processor, tmp_path)


def _local_dataset(name: str, root: Path) -> list[str]:
    """A small local dataset of two classes and the flags that point the example at it."""
    rng = np.random.default_rng(0)
    if name == "image":  # an image folder: one subfolder per class
        for label, value in (("dark", 40), ("light", 200)):
            (root / label).mkdir(parents=True)
            for i in range(10):
                pixels = np.clip(value + rng.normal(0, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
                PIL.Image.fromarray(pixels).save(root / label / f"{i}.png")
        return ["--dataset", str(root), "--config_overrides", f"{SMALL},num_channels=3"]
    if name == "text":  # a csv file with class names as labels
        rows = [f'"the {w} number {i} is large",numbers' for i, w in enumerate(["first", "next"] * 8)]
        rows += [f'"open the file {i} and read its {w}",files' for i, w in enumerate(["lines", "bytes"] * 8)]
        (root / "texts.csv").parent.mkdir(parents=True)
        (root / "texts.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
        return ["--dataset", str(root / "texts.csv"), "--config_overrides", SMALL, "--tokenizer_vocab_size", "300"]
    for label, freq in (("low", 220), ("high", 1760)):  # an audio folder of 8 kHz wav files (resampled to 16 kHz)
        (root / label).mkdir(parents=True)
        for i in range(10):
            t = np.arange(int(8000 * rng.uniform(0.5, 1.0))) / 8000
            samples = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
            with wave.open(str(root / label / f"{i}.wav"), "wb") as f:
                f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000), f.writeframes(samples.tobytes())
    return ["--dataset", str(root), "--config_overrides", SMALL + ",conv_dim=[32,32,32,32,32,32]"]


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_finetuning_example_local_data(name, tmp_path, monkeypatch, capsys, caplog, offline):
    flags = _local_dataset(name, tmp_path / "data")
    argv = ["--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--per_device_train_batch_size", "4",
            "--disable_tqdm", "true", *flags]
    result, (_, count), trainer = run_example(name, argv, monkeypatch, capsys)
    if name == "image":  # 12x12 images into the fresh model's 16x16: said, with the flag that keeps them
        assert "the images (12x12 colour, the first) are changed to what the model takes: 16x16 colour" in caplog.text
        assert "--config_overrides image_size=12,num_channels=3" in caplog.text
    assert int(count) == len(trainer.eval_dataset) > 0
    assert trainer.model.config.num_labels == 2
    check_reload(trainer, *EXAMPLES[name][:2], tmp_path / "out")


def test_image_example_from_transformers_checkpoint(tmp_path, monkeypatch, capsys, offline):
    """A transformers Data2VecVision checkpoint (another geometry, a 4-class head) fine-tunes on the digits: its config
    is converted, the digits are resized to its 32x32 RGB input and the head is replaced by a 10-class one."""
    from conftest import tiny_transformers_model

    tiny_transformers_model("vision", "Data2VecVisionForImageClassification", num_labels=4).save_pretrained(
        tmp_path / "theirs")
    argv = ["--model_name_or_path", str(tmp_path / "theirs"), "--output_dir", str(tmp_path / "out"), *FEW_STEPS]
    _, (_, count), trainer = run_example("image", argv, monkeypatch, capsys)
    assert int(count) == 16 and trainer.model.config.num_labels == 10 and trainer.model.config.image_size == 32
    check_reload(trainer, AutoModelForImageClassification, AutoImageProcessor, tmp_path / "out")


AUDIO_SMALL = SMALL + ",conv_dim=[32,32,32,32,32,32]"


SPEECH_LINE = re.compile(r"^eval wer (\d+\.\d{4}) cer (\d+\.\d{4}) \((\d+) examples\)$", re.MULTILINE)


TAGS_LINE = re.compile(r"^eval f1 (\d\.\d{4}) accuracy (\d\.\d{4}) \((\d+) examples\)$", re.MULTILINE)


QA_LINE = re.compile(r"^eval exact_match (\d\.\d{4}) f1 (\d\.\d{4}) \((\d+) examples\)$", re.MULTILINE)


def edit_distance(a: list, b: list) -> int:
    """Levenshtein distance between two sequences, by the full table."""
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    table[:, 0], table[0, :] = range(len(a) + 1), range(len(b) + 1)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i, j] = min(table[i - 1, j] + 1, table[i, j - 1] + 1, table[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
    return int(table[-1, -1])


def error_rates(hypotheses: list[str], references: list[str]) -> tuple[float, float]:
    """(corpus WER, corpus CER with each gap between words one character)."""
    words = sum(edit_distance(h.split(), r.split()) for h, r in zip(hypotheses, references))
    chars = sum(edit_distance(list(" ".join(h.split())), list(" ".join(r.split())))
                for h, r in zip(hypotheses, references))
    return (words / sum(len(r.split()) for r in references),
            chars / sum(len(" ".join(r.split())) for r in references))


def test_speech_recognition_example_builtin(tmp_path, monkeypatch, capsys, offline):
    argv = ["--output_dir", str(tmp_path), *FEW_STEPS, "--max_train_examples", "64", "--config_overrides",
            AUDIO_SMALL]
    result, (wer, cer, count), trainer = run_example("speech_recognition", argv, monkeypatch, capsys,
                                                     eval_line=SPEECH_LINE)
    assert int(count) == 16 and wer == f"{result['eval_wer']:.4f}" and cer == f"{result['eval_cer']:.4f}"
    assert trainer.state.global_step == 3
    assert not any(p.requires_grad for p in trainer.model.data2vec.embeddings.feature_extractor.parameters())
    # the references: the built-in held-out clips' transcripts, drawn here again
    example = sys.modules["finetune_speech_recognition"]  # loaded by run_example
    _, references = synthesize_speech(16, 16000, seed=1, max_words=example.BUILTIN_MAX_WORDS)
    processor = trainer.processing_class
    pad = processor.tokenizer.pad_token_id
    prediction = trainer.predict(trainer.eval_dataset)
    labels = np.where(prediction.label_ids == -100, pad, prediction.label_ids)
    assert processor.batch_decode(labels, group_tokens=False) == references
    # each clip's frames, the conv arithmetic written out; frames past them are a shorter clip's padding
    config = trainer.model.config
    frames = []
    for example in trainer.eval_dataset:
        n = len(example["input_values"])
        for kernel, stride in zip(config.conv_kernel, config.conv_stride):
            n = (n - kernel) // stride + 1
        frames.append(n)
    assert len(set(frames)) > 1  # clips of several lengths: padding within batches
    # WER / CER recomputed from the greedy transcripts of the model's logits over each clip's own frames
    ids = prediction.predictions.argmax(-1)
    for i, n in enumerate(frames):
        ids[i, n:] = pad
    hypotheses = processor.batch_decode(ids)
    assert (result["eval_wer"], result["eval_cer"]) == pytest.approx(error_rates(hypotheses, references))
    # the example's compute_metrics on transcripts that are partly right (one letter off, one word missing, one
    # word added, the rest right), each said one character a frame with a blank between, and letters in the frames
    # past each clip's end, which are not read
    vocab = processor.tokenizer.get_vocab()
    said = list(references)
    said[0] = ("c" if said[0][0] != "c" else "d") + said[0][1:]
    said[1] = said[1].rsplit(" ", 1)[0] if " " in said[1] else ""
    said[2] = "bad " + said[2]
    logits = np.zeros((16, max(frames) + 8, len(vocab)))
    for i, text in enumerate(said):
        chosen = np.full(logits.shape[1], vocab["<pad>"])
        chosen[1 : 2 * len(text) + 1 : 2] = [vocab["|" if c == " " else c] for c in text]
        assert 2 * len(text) + 1 <= frames[i]
        chosen[frames[i] :] = vocab["h"]
        logits[i, np.arange(logits.shape[1]), chosen] = 1.0
    got = trainer.compute_metrics(EvalPrediction(predictions=logits, label_ids=prediction.label_ids))
    assert (got["wer"], got["cer"]) == pytest.approx(error_rates(said, references))
    assert 0 < got["wer"] < 1

    batch, expected, reloaded = check_reload(trainer, AutoModelForCTC, AutoProcessor, tmp_path)
    width = trainer.model.config.num_audio_frames(batch["input_values"].shape[1])
    assert expected.logits.shape == (len(batch["input_values"]), width, len(vocab))
    assert reloaded.tokenizer.get_vocab() == vocab
    assert reloaded.batch_decode(ids) == hypotheses


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())


def test_speech_recognition_example_local_folder(tmp_path, monkeypatch, capsys, offline):
    """A folder of 8 kHz wav files (resampled to 16 kHz) with a metadata.csv naming them and their transcripts, in
    upper case (the vocabulary is built lower-cased)."""
    root = tmp_path / "data"
    root.mkdir()
    clips, texts = synthesize_speech(12, 8000, seed=3, max_words=2)
    rows = ["file_name,sentence"]
    for i, (clip, text) in enumerate(zip(clips, texts)):
        _write_wav(root / f"{i}.wav", clip, 8000)
        rows.append(f"{i}.wav,{text.upper()}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    argv = ["--output_dir", str(tmp_path / "out"), "--dataset", str(root), "--text_column", "sentence",
            "--eval_fraction", "0.25", "--max_steps", "2", "--per_device_train_batch_size", "4", "--disable_tqdm",
            "true", "--config_overrides", AUDIO_SMALL]
    result, (_, _, count), trainer = run_example("speech_recognition", argv, monkeypatch, capsys,
                                                 eval_line=SPEECH_LINE)
    assert int(count) == len(trainer.eval_dataset) == 3 and np.isfinite(result["eval_loss"])
    vocab = trainer.processing_class.tokenizer.get_vocab()  # lower-cased characters of the transcripts
    assert set(vocab) - {"<pad>", "<unk>", "|"} <= set("".join(texts).replace(" ", ""))
    assert trainer.model.config.vocab_size == len(vocab)
    check_reload(trainer, AutoModelForCTC, AutoProcessor, tmp_path / "out")


def macro_f1(predicted: np.ndarray, true: np.ndarray) -> float:
    """Macro F1 over the classes found in either, written out per class."""
    scores = []
    for c in sorted(set(predicted.tolist()) | set(true.tolist())):
        tp = np.sum((predicted == c) & (true == c))
        fp, fn = np.sum((predicted == c) & (true != c)), np.sum((predicted != c) & (true == c))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def test_token_classification_example_builtin(tmp_path, monkeypatch, capsys, offline):
    argv = ["--output_dir", str(tmp_path), *FEW_STEPS, "--config_overrides", SMALL, "--tokenizer_vocab_size", "300"]
    result, (f1, accuracy, count), trainer = run_example("token_classification", argv, monkeypatch, capsys,
                                                         eval_line=TAGS_LINE)
    assert int(count) == 16 and f1 == f"{result['eval_f1']:.4f}" and accuracy == f"{result['eval_accuracy']:.4f}"
    assert trainer.state.global_step == 3
    assert trainer.model.config.id2label == {0: "O", 1: "KEYWORD", 2: "BUILTIN", 3: "NUMBER", 4: "NAME"}
    # labels: each word's tag on its first token only (a token that starts a word begins with a space, "Ġ", or is
    # the first after <s>), -100 elsewhere; the tags follow the rules in the docstring
    tokenizer = trainer.processing_class
    rules = {"None": "KEYWORD", "for": "KEYWORD", "list": "BUILTIN", "ValueError": "BUILTIN", "0.75": "NUMBER",
             "-1": "NUMBER", "os.path": "NAME", "follow_symlinks": "NAME", "TarInfo": "NAME", "the": "O", "Return": "O"}
    example = trainer.model.config.label2id
    labelled_words = 0
    for row in trainer.eval_dataset:
        tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
        labels = np.asarray(row["labels"])
        starts = [i for i, t in enumerate(tokens) if i == 1 or t.startswith("Ġ")]
        assert np.flatnonzero(labels != -100).tolist() == starts
        labelled_words += len(starts)
        for i in starts:  # the word that starts here, up to the next start or </s>
            end = next((j for j in starts if j > i), len(tokens) - 1)
            word = tokenizer.convert_tokens_to_string(tokens[i:end]).strip()
            if word in rules:
                assert labels[i] == example[rules[word]], word
    # the reported scores, recomputed from the model's predictions on the labelled tokens
    prediction = trainer.predict(trainer.eval_dataset)
    keep = prediction.label_ids != -100
    assert keep.sum() == labelled_words
    predicted, true = prediction.predictions.argmax(-1)[keep], prediction.label_ids[keep]
    assert result["eval_f1"] == pytest.approx(macro_f1(predicted, true))
    assert result["eval_accuracy"] == pytest.approx(np.mean(predicted == true))

    batch, expected, _ = check_reload(trainer, AutoModelForTokenClassification, AutoTokenizer, tmp_path)
    assert expected.logits.shape == (*batch["input_ids"].shape, 5)


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_token_classification_example_local_data(suffix, tmp_path, monkeypatch, capsys, offline):
    """Words and tag names: lists in json lines, space-separated strings in a csv."""
    rng = np.random.default_rng(0)
    animals, verbs = ["cat", "dog", "owl", "fox"], ["runs", "sleeps", "eats"]
    rows = []
    for _ in range(24):
        words = ["the", str(rng.choice(animals)), str(rng.choice(verbs)), "at", str(rng.integers(1, 12))]
        rows.append((words, ["O", "ANIMAL", "VERB", "O", "NUMBER"]))
    path = tmp_path / f"tags.{suffix}"
    if suffix == "jsonl":
        path.write_text("".join(json.dumps({"words": w, "labels": t}) + "\n" for w, t in rows))
    else:
        path.write_text("words,labels\n" + "".join(f"{' '.join(w)},{' '.join(t)}\n" for w, t in rows))
    argv = ["--output_dir", str(tmp_path / "out"), "--dataset", str(path), "--tokens_column", "words",
            "--tags_column", "labels", "--max_steps", "2", "--per_device_train_batch_size", "4", "--disable_tqdm",
            "true", "--config_overrides", SMALL, "--tokenizer_vocab_size", "300"]
    _, (_, _, count), trainer = run_example("token_classification", argv, monkeypatch, capsys, eval_line=TAGS_LINE)
    assert int(count) == len(trainer.eval_dataset) > 0
    assert trainer.model.config.id2label == {0: "ANIMAL", 1: "NUMBER", 2: "O", 3: "VERB"}
    for row in trainer.eval_dataset:  # 5 words, 5 labelled tokens: O ANIMAL VERB O NUMBER
        assert [y for y in row["labels"] if y != -100] == [2, 0, 3, 2, 1]
    check_reload(trainer, AutoModelForTokenClassification, AutoTokenizer, tmp_path / "out")


def squad(prediction: str, answers: list[str]) -> tuple[float, float]:
    """SQuAD's exact match and F1 of one answer, written out."""

    def normal(text):
        text = "".join(c for c in text.lower() if c not in string.punctuation)
        return [w for w in text.split() if w not in ("a", "an", "the")]

    exact = max(float(normal(prediction) == normal(a)) for a in answers)
    best = 0.0
    for a in answers:
        common = sum((collections.Counter(normal(prediction)) & collections.Counter(normal(a))).values())
        if common:
            p, r = common / len(normal(prediction)), common / len(normal(a))
            best = max(best, 2 * p * r / (p + r))
    return exact, best


def test_question_answering_example_builtin(tmp_path, monkeypatch, capsys, offline):
    argv = ["--output_dir", str(tmp_path), *FEW_STEPS, "--config_overrides", SMALL, "--max_seq_length", "512",
            "--n_best_size", "1000", "--max_answer_length", "40"]
    result, (exact, f1, count), trainer = run_example("question_answering", argv, monkeypatch, capsys,
                                                      eval_line=QA_LINE)
    assert int(count) == 16 and exact == f"{result['eval_exact_match']:.4f}" and f1 == f"{result['eval_f1']:.4f}"
    assert trainer.state.global_step == 3
    # the held-out rows, rebuilt: each fits one window
    rows = sys.modules["finetune_question_answering"].builtin_qa()["test"].select(range(16))
    assert len(trainer.eval_dataset) == 16
    tokenizer = trainer.processing_class
    prediction = trainer.predict(trainer.eval_dataset)
    start_logits, end_logits = prediction.predictions[:2]
    scores = []
    for i, row in enumerate(rows):
        question, context, answers = row["question"], row["context"], row["answers"]["text"]
        # the question asks about a name on one line of the context, whose docstring holds the answer
        name = re.fullmatch(r"(?:What does|How is) (\S+) (?:return|described)\?", question).group(1)
        line = next(line for line in context.split("\n") if line.startswith(name + ": "))
        assert answers[0] in line and context[row["answers"]["answer_start"][0]:].startswith(answers[0])
        # the best span by brute force: start <= end, at most 40 tokens, inside the context
        encoded = tokenizer(question, context, return_offsets_mapping=True)
        inside = [j for j, s in enumerate(encoded.sequence_ids()) if s == 1]
        assert encoded["input_ids"] == [t for t in trainer.eval_dataset[i]["input_ids"]]
        best = max((start_logits[i, s] + end_logits[i, e], s, e) for s in inside for e in inside if 0 <= e - s < 40)
        text = context[encoded["offset_mapping"][best[1]][0] : encoded["offset_mapping"][best[2]][1]]
        scores.append(squad(text, answers))
    assert (result["eval_exact_match"], result["eval_f1"]) == pytest.approx(tuple(np.mean(scores, axis=0)))

    batch, expected, _ = check_reload(trainer, AutoModelForQuestionAnswering, AutoTokenizer, tmp_path,
                                      outputs=("start_logits", "end_logits"))
    assert expected.start_logits.shape == expected.end_logits.shape == batch["input_ids"].shape


def test_question_answering_example_local_json_with_long_contexts(tmp_path, monkeypatch, capsys, offline):
    """SQuAD-style json lines whose contexts need several windows: each window's start / end positions cover the
    answer's tokens, or point at <s> where the answer is not inside."""
    rng = np.random.default_rng(0)
    fillers = ["the river runs north", "a bird sings at dawn", "old maps fade in the sun", "rain falls on the hill"]
    rows = []
    for i in range(12):
        city = ["Paris", "Lima", "Oslo", "Cairo"][i % 4]
        before = ". ".join(fillers[j] for j in rng.integers(0, 4, 6))
        context = f"{before}. The parcel {i} was sent to {city} by boat. " + ". ".join(fillers[::-1]) + "."
        start = context.index(city)
        rows.append({"id": str(i), "q": f"Where was parcel {i} sent?", "ctx": context,
                     "answers": {"text": [city], "answer_start": [start]}})
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["--output_dir", str(tmp_path / "out"), "--dataset", str(path), "--question_column", "q",
            "--context_column", "ctx", "--max_seq_length", "64", "--doc_stride", "16", "--eval_fraction", "0.25",
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--disable_tqdm", "true", "--config_overrides",
            SMALL, "--tokenizer_vocab_size", "300"]
    result, (_, _, count), trainer = run_example("question_answering", argv, monkeypatch, capsys, eval_line=QA_LINE)
    assert int(count) == 3 and len(trainer.eval_dataset) > 3  # windows
    tokenizer = trainer.processing_class
    found = 0
    for window in trainer.train_dataset:
        s, e = window["start_positions"], window["end_positions"]
        if s == e == 0:
            continue
        found += 1
        assert tokenizer.decode(window["input_ids"][s : e + 1]).strip() in ("Paris", "Lima", "Oslo", "Cairo")
    assert found >= 9  # every training row's answer is inside at least one of its windows
    assert 0.0 <= result["eval_f1"] <= 1.0
    check_reload(trainer, AutoModelForQuestionAnswering, AutoTokenizer, tmp_path / "out",
                 outputs=("start_logits", "end_logits"))
    # windows too short for the question and the stride are refused, naming the flags (not a tokenizers panic)
    argv[argv.index("--max_seq_length") + 1] = "24"
    with pytest.raises(ValueError, match=r"leaves -?\d+ context tokens per window of --max_seq_length 24"):
        sys.modules["finetune_question_answering"].main(argv)
