"""Fine-tuning heads: transformers' task classes as the reference (logits and losses on the same weights), loading
from our pretraining checkpoints, Auto classes, label handling and the errors that name the fix."""

import modeling_data2vec_unified as d2v
import pytest
import torch
import torch.nn.functional as F
from modeling_data2vec_unified.conversion import example_inputs
from transformers import (
    AutoModelForAudioClassification,
    AutoModelForCTC,
    AutoModelForImageClassification,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from conftest import tiny_config, tiny_transformers_model

# (modality, transformers class, ours, transformers config overrides)
TASKS = {
    "text-seq": ("text", "Data2VecTextForSequenceClassification", d2v.Data2VecForSequenceClassification,
                 dict(num_labels=3)),
    "text-token": ("text", "Data2VecTextForTokenClassification", d2v.Data2VecForTokenClassification,
                   dict(num_labels=5)),
    "text-qa": ("text", "Data2VecTextForQuestionAnswering", d2v.Data2VecForQuestionAnswering, {}),
    "vision": ("vision", "Data2VecVisionForImageClassification", d2v.Data2VecForImageClassification,
               dict(num_labels=4, use_shared_relative_position_bias=True)),
    "audio-ctc": ("audio", "Data2VecAudioForCTC", d2v.Data2VecForCTC, dict(vocab_size=12)),
    "audio-cls": ("audio", "Data2VecAudioForSequenceClassification", d2v.Data2VecForAudioClassification,
                  dict(num_labels=3, classifier_proj_size=8)),
    "audio-cls-weighted": ("audio", "Data2VecAudioForSequenceClassification", d2v.Data2VecForAudioClassification,
                           dict(num_labels=3, classifier_proj_size=8, use_weighted_layer_sum=True)),
}


OUTPUTS = ("logits", "start_logits", "end_logits")


def _labels(task: str, model, inputs: dict, g: torch.Generator) -> dict:
    if task == "text-qa":
        return dict(start_positions=torch.tensor([1, 50]), end_positions=torch.tensor([3, 4]))  # 50: past the end
    if task == "text-token":
        labels = torch.randint(0, 5, inputs["input_ids"].shape, generator=g)
        labels[1, -3:] = -100
        return dict(labels=labels)
    if task == "audio-ctc":
        labels = torch.randint(1, 12, (2, 5), generator=g)
        labels[1, 3:] = -100
        return dict(labels=labels)
    return dict(labels=torch.randint(0, model.config.num_labels, (2,), generator=g))


def _from_transformers(task: str, tmp_path):
    modality, name, cls, overrides = TASKS[task]
    theirs = tiny_transformers_model(modality, name, **overrides)
    theirs.save_pretrained(tmp_path / "theirs")
    return cls.from_pretrained(tmp_path / "theirs"), theirs


@pytest.mark.parametrize("task", list(TASKS))
def test_logits_and_loss_equal_transformers(task, tmp_path):
    ours, theirs = _from_transformers(task, tmp_path)
    inputs = example_inputs(ours.config)  # padding in the second example (text, audio)
    labels = _labels(task, ours, inputs, torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(**inputs, **labels), theirs(**inputs, **labels)
    keys = [k for k in OUTPUTS if k in b]
    for k in keys:
        assert (a[k] - b[k]).abs().max() <= 1e-4, k
    assert torch.allclose(a.loss, b.loss, rtol=1e-5, atol=1e-5)
    # not vacuous: a perturbed head weight is seen
    head = [p for n, p in ours.named_parameters() if not n.startswith("data2vec.")][-1]
    with torch.no_grad():
        head.add_(0.5 * torch.randn_like(head))
        assert max((ours(**inputs)[k] - b[k]).abs().max() for k in keys) > 1e-3


@pytest.mark.parametrize("modality, cls, kwargs", [
    ("text", d2v.Data2VecForSequenceClassification, dict(num_labels=3)),
    ("text", d2v.Data2VecForTokenClassification, dict(num_labels=4)),
    ("text", d2v.Data2VecForQuestionAnswering, {}),
    ("vision", d2v.Data2VecForImageClassification, dict(num_labels=10)),
    ("audio", d2v.Data2VecForCTC, dict(vocab_size=20, pad_token_id=0)),
    ("audio", d2v.Data2VecForAudioClassification, dict(num_labels=2)),
])
@pytest.mark.parametrize("algorithm", ["data2vec", "data2vec2"])
def test_heads_load_our_pretraining_checkpoints(modality, cls, kwargs, algorithm, tmp_path):
    v2 = dict(clone_batch=2, decoder_dim=32, decoder_layers=1, decoder_groups=4) if algorithm == "data2vec2" else {}
    pretrained = d2v.Data2VecForPreTraining(tiny_config(modality, algorithm=algorithm, **v2))
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(0.1 * torch.randn_like(p))  # away from any initialisation
    pretrained.save_pretrained(tmp_path)
    model, info = cls.from_pretrained(tmp_path, output_loading_info=True, **kwargs)
    student = pretrained.data2vec.state_dict()
    for name, value in model.data2vec.state_dict().items():
        if name.startswith("pooler."):
            continue  # vision's pooler norm is part of the new head
        assert torch.equal(value, student[name]), name
    new = {k for k in model.state_dict() if not k.startswith("data2vec.") or k.startswith("data2vec.pooler.")}
    assert set(info["missing_keys"]) == new  # the head is reported as newly initialised, nothing else
    assert not any(k.startswith("data2vec.") and "pooler" not in k for k in info["unexpected_keys"])
    assert model.config.modality == modality and model.config.algorithm == algorithm


@pytest.mark.parametrize("auto, modality, expected", [
    (AutoModelForSequenceClassification, "text", d2v.Data2VecForSequenceClassification),
    (AutoModelForSequenceClassification, "audio", d2v.Data2VecForAudioClassification),
    (AutoModelForAudioClassification, "audio", d2v.Data2VecForAudioClassification),
    (AutoModelForTokenClassification, "text", d2v.Data2VecForTokenClassification),
    (AutoModelForQuestionAnswering, "text", d2v.Data2VecForQuestionAnswering),
    (AutoModelForImageClassification, "vision", d2v.Data2VecForImageClassification),
    (AutoModelForCTC, "audio", d2v.Data2VecForCTC),
])
def test_auto_classes(auto, modality, expected, tmp_path):
    extra = dict(vocab_size=10) if expected is d2v.Data2VecForCTC else {}
    model = auto.from_config(tiny_config(modality, **extra))
    assert type(model) is expected
    model.save_pretrained(tmp_path)
    again = auto.from_pretrained(tmp_path)
    assert type(again) is expected
    for (n, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), n


def test_sequence_classification_problem_types_match_closed_forms():
    torch.manual_seed(0)
    batch = example_inputs(tiny_config("text"))
    for num_labels, labels, reference in [
        (1, torch.randn(2), lambda z, y: ((z.squeeze(-1) - y) ** 2).mean()),
        (3, torch.tensor([2, 0]), lambda z, y: -z.log_softmax(-1)[torch.arange(2), y].mean()),
        (3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]),
         lambda z, y: -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z)).mean()),
    ]:
        model = d2v.Data2VecForSequenceClassification(tiny_config("text", num_labels=num_labels)).eval()
        with torch.no_grad():
            out = model(**batch, labels=labels)
        assert torch.allclose(out.loss, reference(out.logits, labels), atol=1e-6)
    assert model.config.problem_type == "multi_label_classification"


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = d2v.Data2VecForImageClassification(tiny_config("vision", num_labels=3, drop_path_rate=0.0,
                                                           attention_probs_dropout_prob=0.0))
    batch = dict(pixel_values=torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 2]))
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.activation_checkpointing_enable()
        model.train()(**batch).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert model.is_activation_checkpointing
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_freezing_the_audio_feature_encoder():
    model = d2v.Data2VecForCTC(tiny_config("audio", vocab_size=8))
    model.freeze_feature_encoder()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("data2vec.embeddings.feature_extractor.") for n in frozen)
    out = model(**example_inputs(model.config), labels=torch.tensor([[1, 2], [3, -100]]))
    out.loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)


@pytest.mark.parametrize("cls, modality, labels", [
    (d2v.Data2VecForSequenceClassification, "text", torch.tensor([0, 3])),
    (d2v.Data2VecForImageClassification, "vision", torch.tensor([-1, 0])),
    (d2v.Data2VecForAudioClassification, "audio", torch.tensor([5, 0])),
])
def test_labels_out_of_range_name_num_labels(cls, modality, labels):
    model = cls(tiny_config(modality, num_labels=3))
    with pytest.raises(ValueError, match=r"out of range .*num_labels=3"):
        model(**example_inputs(model.config), labels=labels)


def test_token_labels_out_of_range_and_wrong_shape():
    model = d2v.Data2VecForTokenClassification(tiny_config("text", num_labels=3))
    batch = example_inputs(model.config)
    labels = torch.full(batch["input_ids"].shape, -100)
    labels[0, 1] = 7
    with pytest.raises(ValueError, match="label 7 is out of range"):
        model(**batch, labels=labels)
    with pytest.raises(ValueError, match="one label per token"):
        model(**batch, labels=labels[:, :3])


def test_ctc_targets_longer_than_the_output_frames():
    model = d2v.Data2VecForCTC(tiny_config("audio", vocab_size=8))
    batch = example_inputs(model.config)
    frames = int(model.config.num_audio_frames(batch["attention_mask"][1].sum()))
    labels = torch.full((2, frames + 2), -100)
    labels[0, :3] = torch.tensor([1, 2, 3])
    labels[1] = torch.arange(frames + 2) % 7 + 1  # one more label than the second clip has frames
    with pytest.raises(ValueError, match=rf"example 1: .* but its audio gives only {frames} frames"):
        model(**batch, labels=labels)
    labels[1, frames - 1:] = -100  # fits now
    assert torch.isfinite(model(**batch, labels=labels).loss)
    with pytest.raises(ValueError, match="out of range for a head with num_labels=8"):
        model(**batch, labels=torch.tensor([[1, 9], [2, 3]]))
    with pytest.raises(ValueError, match="needs config.vocab_size"):
        d2v.Data2VecForCTC(tiny_config("audio"))


def test_num_labels_mismatch_with_a_loaded_head(tmp_path):
    theirs = tiny_transformers_model("vision", "Data2VecVisionForImageClassification", num_labels=4,
                                     use_shared_relative_position_bias=True)
    theirs.save_pretrained(tmp_path / "theirs")
    with pytest.raises(ValueError, match="ignore_mismatched_sizes=True"):
        d2v.Data2VecForImageClassification.from_pretrained(tmp_path / "theirs", num_labels=7)
    model = d2v.Data2VecForImageClassification.from_pretrained(tmp_path / "theirs", num_labels=7,
                                                               ignore_mismatched_sizes=True)
    assert model.classifier.out_features == 7
    # our own checkpoints, through transformers' loading
    model.save_pretrained(tmp_path / "ours")
    with pytest.raises(Exception, match="ignore_mismatched_sizes"):
        d2v.Data2VecForImageClassification.from_pretrained(tmp_path / "ours", num_labels=2)


def test_a_head_of_another_modality_is_refused(tmp_path):
    d2v.Data2VecForPreTraining(tiny_config("audio")).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="audio checkpoint; Data2VecForImageClassification is the vision model"):
        d2v.Data2VecForImageClassification.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no vision model"):
        AutoModelForSequenceClassification.from_config(tiny_config("vision"))
