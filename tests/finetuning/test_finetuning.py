"""Fine-tuning with transformers' Trainer: layer-wise learning-rate decay (closed form), and Trainer end to end for
each modality: unused columns dropped, gradient checkpointing, bf16, eval loss and the shipped metrics."""

import datasets
import modeling_data2vec_unified as d2v
import numpy as np
import pytest
import torch
from modeling_data2vec_unified import metrics
from modeling_data2vec_unified.optimization import layer_id
from transformers import Trainer, TrainingArguments

from conftest import tiny_config


def _args(tmp_path, **overrides) -> TrainingArguments:
    defaults = dict(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8,
                    per_device_eval_batch_size=8, learning_rate=1e-3, report_to="none", use_cpu=True,
                    save_strategy="no", disable_tqdm=True, seed=0)
    return TrainingArguments(**{**defaults, **overrides})


def test_layer_decay_rates_follow_the_closed_form(tmp_path):
    model = d2v.Data2VecForImageClassification(tiny_config("vision", num_labels=3))  # 3 layers, shared rel. bias
    optimizer = d2v.layer_decay_optimizer(model, _args(tmp_path, weight_decay=0.05), layer_decay=0.5)
    rate = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(rate) == len(named)  # every parameter exactly once
    expected = {
        "data2vec.embeddings.patch_embedding.weight": (1e-3 * 0.5 ** 4, 0.05),  # front end: decay^(L+1)
        "data2vec.embeddings.cls_token": (1e-3 * 0.5 ** 4, 0.0),
        "data2vec.encoder.layers.0.fc1.weight": (1e-3 * 0.5 ** 3, 0.05),  # layer i: decay^(L-i)
        "data2vec.encoder.layers.0.norm1.weight": (1e-3 * 0.5 ** 3, 0.0),
        "data2vec.encoder.layers.2.attention.qkv.weight": (1e-3 * 0.5, 0.05),
        "data2vec.encoder.relative_position_bias.table": (1e-3, 0.0),  # shared bias: as BEiT, the top
        "data2vec.pooler.layernorm.weight": (1e-3, 0.0),
        "classifier.weight": (1e-3, 0.05),
        "classifier.bias": (1e-3, 0.0),
    }
    for name, (lr, wd) in expected.items():
        assert rate[id(named[name])] == pytest.approx((lr, wd)), name
    assert layer_id("data2vec.encoder.layers.11.fc2.weight", 12) == 12
    # transformers' schedulers keep the per-layer ratios
    trainer = Trainer(model=model, args=_args(tmp_path, warmup_steps=2), optimizers=(optimizer, None))
    trainer.create_scheduler(num_training_steps=10, optimizer=optimizer)
    optimizer.step()
    trainer.lr_scheduler.step()
    lrs = [g["lr"] for g in optimizer.param_groups]
    initial = [g["initial_lr"] for g in optimizer.param_groups]
    assert lrs[0] > 0 and np.allclose(np.array(lrs) / np.array(initial), lrs[0] / initial[0])
    with pytest.raises(ValueError, match="layer_decay must be in"):
        d2v.layer_decay_optimizer(model, _args(tmp_path), layer_decay=1.5)


def test_data2vec_trainer_builds_the_layer_decay_optimizer(tmp_path):
    model = d2v.Data2VecForImageClassification(tiny_config("vision", num_labels=3))
    trainer = d2v.Data2VecTrainer(model=model, args=_args(tmp_path), layer_decay=0.65)
    optimizer = trainer.create_optimizer()
    top = model.config.num_hidden_layers + 1
    assert sorted({g["layer"] for g in optimizer.param_groups}) == list(range(top + 1))
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * 0.65 ** (top - group["layer"]))
    plain = d2v.Data2VecTrainer(model=model, args=_args(tmp_path)).create_optimizer()
    assert {g["lr"] for g in plain.param_groups} == {1e-3}


def _image_rows(n: int, seed: int) -> datasets.Dataset:
    g = np.random.default_rng(seed)
    labels = g.integers(0, 3, n)
    pixels = g.normal(size=(n, 3, 32, 32)).astype(np.float32) + labels[:, None, None, None]  # learnable
    rows = datasets.Dataset.from_dict({"pixel_values": list(pixels), "labels": labels.tolist(),
                                       "file_name": [f"img{i}.png" for i in range(n)]})  # a column to drop
    return rows.with_format("torch")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trainer_image_classification_end_to_end(tmp_path, precision):
    torch.manual_seed(0)
    model = d2v.Data2VecForImageClassification(tiny_config("vision", num_labels=3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = _args(tmp_path, max_steps=12, activation_checkpointing=True, bf16=precision == "bf16",
                 eval_strategy="no")
    trainer = d2v.Data2VecTrainer(model=model, args=args, train_dataset=_image_rows(64, 0),
                                  eval_dataset=_image_rows(32, 1), compute_metrics=metrics.accuracy,
                                  layer_decay=0.65)
    first = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert model.is_activation_checkpointing
    assert {"eval_loss", "eval_accuracy"} <= set(after)
    assert np.isfinite(after["eval_loss"]) and after["eval_loss"] < first["eval_loss"]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_trainer_text_classification_and_token_classification(tmp_path):
    g = np.random.default_rng(0)
    ids = g.integers(3, 99, (48, 12))
    labels = (ids[:, 1] > 50).astype(int)  # the first word decides the class
    ids[:, 0], ids[:, -1] = 0, 2
    rows = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist(),
                                       "labels": labels.tolist(), "text": ["raw"] * 48}).with_format("torch")
    model = d2v.Data2VecForSequenceClassification(tiny_config("text", num_labels=2))
    trainer = Trainer(model=model, args=_args(tmp_path, max_steps=3), train_dataset=rows, eval_dataset=rows,
                      compute_metrics=metrics.f1)
    trainer.train()
    result = trainer.evaluate()
    assert {"eval_loss", "eval_f1", "eval_accuracy"} <= set(result)

    token_labels = np.where(ids > 50, 1, 0)
    token_labels[:, 0] = token_labels[:, -1] = -100  # special tokens ignored
    rows = rows.remove_columns("labels").add_column("labels", token_labels.tolist()).with_format("torch")
    model = d2v.Data2VecForTokenClassification(tiny_config("text", num_labels=2))
    trainer = Trainer(model=model, args=_args(tmp_path, max_steps=3), train_dataset=rows, eval_dataset=rows,
                      compute_metrics=metrics.token_accuracy)
    trainer.train()
    result = trainer.evaluate()
    # the metric, recomputed independently from the model's own predictions: labelled tokens only
    predicted = trainer.predict(rows).predictions.argmax(-1)
    labelled = token_labels != -100
    assert result["eval_accuracy"] == pytest.approx((predicted == token_labels)[labelled].mean())
    assert np.isfinite(result["eval_loss"])


def test_trainer_ctc_with_a_wav2vec2_tokenizer_and_wer(tmp_path):
    words = ["ab", "cab", "dee", "bad"]
    processor = d2v.ctc_processor([w.upper() for w in words], tmp_path / "vocab")
    tokenizer = processor.tokenizer
    assert tokenizer.get_vocab() == {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4, "c": 5, "d": 6, "e": 7}
    assert tokenizer.decode(tokenizer("cab dee").input_ids, group_tokens=False) == "cab dee"
    assert tokenizer.decode([5, 5, 0, 3, 3, 4, 0, 2, 6, 7, 0, 7]) == "cab dee"  # CTC: repeats merge, blanks drop
    g = np.random.default_rng(0)
    rows = []
    for i in range(16):
        n = int(g.integers(3000, 4000))
        rows.append({"input_values": g.normal(size=n).astype(np.float32), "text": words[i % 4]})

    def collate(examples):
        width = max(len(e["input_values"]) for e in examples)
        values = torch.zeros(len(examples), width)
        mask = torch.zeros(len(examples), width, dtype=torch.long)
        for i, e in enumerate(examples):
            values[i, : len(e["input_values"])] = torch.as_tensor(e["input_values"])
            mask[i, : len(e["input_values"])] = 1
        labels = tokenizer([e["text"] for e in examples], padding=True, return_tensors="pt")
        return {"input_values": values, "attention_mask": mask,
                "labels": labels.input_ids.masked_fill(labels.attention_mask == 0, -100)}

    model = d2v.Data2VecForCTC(tiny_config("audio", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                           ctc_loss_reduction="mean", layerdrop=0.0))
    model.freeze_feature_encoder()
    trainer = Trainer(model=model, args=_args(tmp_path, max_steps=2, per_device_train_batch_size=4,
                                              per_device_eval_batch_size=4, remove_unused_columns=False),
                      train_dataset=rows, eval_dataset=rows[:8], data_collator=collate,
                      compute_metrics=metrics.wer(tokenizer))
    trainer.train()
    result = trainer.evaluate()
    assert np.isfinite(result["eval_loss"])
    # WER recomputed independently: greedy CTC decoding of the model's logits, word edit distance written out
    logits = trainer.predict(rows[:8]).predictions
    hypotheses = tokenizer.batch_decode(logits.argmax(-1))
    references = [words[i % 4] for i in range(8)]

    def edit_distance(a, b):
        row = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            row, prev = [i], row
            for j, y in enumerate(b, 1):
                row.append(min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (x != y)))
        return row[-1]

    errors = sum(edit_distance(h.split(), r.split()) for h, r in zip(hypotheses, references))
    assert result["eval_wer"] == pytest.approx(errors / sum(len(r.split()) for r in references))
