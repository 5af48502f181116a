"""Data2VecForPreTraining against independent math: targets recomputed from hooks and from the transformers-checked
student, the loss from its closed form, gradients, saving / loading, and bad input."""

import math

import modeling_data2vec_unified as d2v
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForPreTraining

from conftest import tiny_config, tiny_examples, tiny_transformers_model

MODEL_INPUTS = {"text": ("input_ids", "attention_mask"), "vision": ("pixel_values",),
                "audio": ("input_values", "attention_mask")}


def setup(modality, seed=0, **overrides):
    config = tiny_config(modality, layerdrop=0.0, **overrides)
    torch.manual_seed(seed)
    model = d2v.Data2VecForPreTraining(config)
    collator = d2v.DataCollatorForData2VecPretraining(config, seed=seed, audio_crop="pad")
    return model, collator(tiny_examples(modality))


def student_inputs(batch, modality):
    return {k: batch[k] for k in MODEL_INPUTS[modality] if k in batch}


def record_layer_outputs(teacher_model, modality):
    """Forward hooks on the teacher's layers: FFN outputs (fc2) and block outputs, recorded independently of the
    model's own `ffn_outputs` / `hidden_states` plumbing."""
    layers = teacher_model.layers if hasattr(teacher_model, "layers") else teacher_model.encoder.layers
    ffn, block, first_input = [], [], []
    handles = [layers[0].register_forward_pre_hook(lambda m, args: first_input.append(args[0]))]
    for layer in layers:
        handles.append(layer.fc2.register_forward_hook(lambda m, i, o: ffn.append(o)))
        handles.append(layer.register_forward_hook(lambda m, i, o: block.append(o[0])))
    return ffn, block, first_input, handles


def expected_targets(layer_outputs, config, real):
    """data2vec's targets written out: top K, per-layer normalisation, average, final normalisation."""
    def norm(x, kind):
        if kind == "layer":
            return F.layer_norm(x, x.shape[-1:])
        if kind == "instance":  # per example, over its real positions only
            out = torch.zeros_like(x)
            for i in range(len(x)):
                n = int(real[i].sum())
                out[i, :n] = F.instance_norm(x[i : i + 1, :n].transpose(1, 2)).transpose(1, 2)[0]
            return out
        return x

    top = [norm(y.double(), config.target_layer_norm) for y in layer_outputs[-config.average_top_k_layers :]]
    return norm(sum(top) / len(top), config.target_final_norm)


def test_targets_match_teacher_layers_and_the_unmasked_student_at_step_zero(modality):
    model, batch = setup(modality)
    model.train()  # dropout on in the student; the teacher must still run in eval mode
    c = model.config
    ffn, block, first_input, handles = record_layer_outputs(model.teacher.model, modality)
    out = model(**batch)
    for h in handles:
        h.remove()
    prefix = 1 if modality == "vision" else 0
    recorded = ffn if c.target_layer_output == "ffn" else block
    assert len(recorded) == c.num_hidden_layers  # one teacher pass, every layer (no layer drop)
    real = torch.ones_like(out.mask)  # vision: no padding
    if modality == "text":
        real = batch["attention_mask"].bool()
    elif modality == "audio":
        real = model.data2vec.embeddings(batch["input_values"], batch["attention_mask"]).attention_mask
    want = expected_targets([y[:, prefix:] for y in recorded], c, real)
    torch.testing.assert_close(out.targets[real].double(), want[real], atol=1e-5, rtol=1e-5)

    # the teacher saw the whole unmasked input, embedded without dropout (text / audio: the student's front end)
    model.eval()
    if c.teacher_scope == "encoder":
        front = model.data2vec.embeddings(**student_inputs(batch, modality))
        torch.testing.assert_close(first_input[0], front.hidden_states)

    # step 0: the teacher is the student, so the targets are the unmasked student's (checked against transformers
    # in test_transformers_parity) layer outputs
    with torch.no_grad():
        mine = model.data2vec(**student_inputs(batch, modality), output_hidden_states=True, output_ffn_outputs=True)
    layers = mine.ffn_outputs if c.target_layer_output == "ffn" else mine.hidden_states[1:]
    want = expected_targets([y[:, prefix:] for y in layers], c, real)
    torch.testing.assert_close(out.targets[real].double(), want[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["default", "channel_sum", "mean"])
def test_loss_is_the_closed_form_over_masked_real_positions(modality, reduction):
    overrides = {} if reduction == "default" else {"loss_reduction": reduction}
    model, batch = setup(modality, **overrides)
    model.eval()
    out = model(**batch)
    c = model.config
    if reduction == "default":  # each modality's recipe: fairseq data2vec (text, audio), data2vec_vision (vision)
        assert c.loss_reduction == {"text": "channel_sum", "audio": "channel_sum", "vision": "mean"}[modality]
    p, y, m = out.predictions.double(), out.targets.double(), out.mask
    d = (p - y).abs()
    if c.loss_beta == 0:
        elementwise = d**2
    else:
        elementwise = torch.where(d < c.loss_beta, 0.5 * d**2 / c.loss_beta, d - 0.5 * c.loss_beta)
    assert out.num_masked == m.sum() > 0
    if c.loss_reduction == "channel_sum":
        # fairseq data2vec: loss.sum(-1) per position, x loss_scale (default 1/sqrt(D)), / number of masked positions
        scale = c.loss_scale if c.loss_scale is not None else 1 / math.sqrt(c.hidden_size)
        want = elementwise.sum(-1)[m].sum() * scale / m.sum()
    else:
        # data2vec_vision engine_for_cyclical.py: F.smooth_l1_loss(outputs, targets, beta) over the masked positions'
        # vectors, i.e. a mean over positions and channels; --loss_scale -1: no scale
        want = elementwise[m].mean() * (c.loss_scale if c.loss_scale is not None else 1.0)
        if c.loss_beta > 0:
            torch.testing.assert_close(out.loss.double(), F.smooth_l1_loss(p[m], y[m], beta=c.loss_beta))
    torch.testing.assert_close(out.loss.double(), want, atol=1e-6, rtol=1e-5)
    # changing predictions where nothing is masked does not change the loss
    moved = torch.where(m[..., None], out.predictions, out.predictions + 100.0)
    loss, _ = model.forward_loss(moved, out.targets, m)
    torch.testing.assert_close(loss, out.loss)
    # target_var / pred_var: mean over channels of the std across masked positions
    torch.testing.assert_close(out.target_var.double(), torch.sqrt(y[m].var(0) + 1e-6).mean(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.pred_var.double(), torch.sqrt(p[m].var(0) + 1e-6).mean(), atol=1e-6, rtol=1e-5)


def test_padding_is_ignored_by_loss_and_target_statistics():
    model, batch = setup("audio")
    model.eval()
    assert batch["attention_mask"].min() == 0  # the tiny examples differ in length: padded
    with torch.no_grad():
        out = model(**batch)
        # mask the padded frames too: they are dropped, the loss is unchanged
        real = model.data2vec.embeddings(batch["input_values"], batch["attention_mask"]).attention_mask
        out2 = model(**{**batch, "mask_time_indices": batch["mask_time_indices"] | ~real})
        torch.testing.assert_close(out2.loss, out.loss)
        assert out2.num_masked == out.num_masked
        # what lies in the padding never reaches the targets at real frames (the front end zeroes padded frames)
        noisy = batch["input_values"].masked_fill(batch["attention_mask"] == 0, 3.0)
        out3 = model(**{**batch, "input_values": noisy})
        torch.testing.assert_close(out3.targets[real], out.targets[real], atol=1e-5, rtol=1e-5)


def test_text_loss_covers_every_selected_position_with_bert_corruption():
    model, batch = setup("text", mask_prob=0.3, mask_length=1, mask_random_token_prob=0.1,
                         mask_leave_unmasked_prob=0.1)
    out = model(**batch)
    selected = batch["bool_masked_pos"] & batch["attention_mask"].bool()
    assert torch.equal(out.mask, selected)
    # some selected tokens are not <mask> in the student's view, and they still count
    assert (batch["masked_input_ids"][selected] != model.config.mask_token_id).any()


def test_gradients_reach_student_and_head_only(modality):
    model, batch = setup(modality)
    model.train()
    model(**batch).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
    assert model.regression_head.proj.weight.grad.abs().sum() > 0
    assert model.data2vec.encoder.layers[0].fc1.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}  # never in an optimizer built on parameters()


def test_teacher_stays_in_eval_mode_and_out_of_state_dict(modality):
    model, _ = setup(modality)
    model.train()
    assert not model.teacher.training and not any(m.training for m in model.teacher.modules())
    assert not any("teacher" in k for k in model.state_dict())


def test_mixed_precision_keeps_teacher_targets_and_loss_in_fp32():
    model, batch = setup("vision")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    assert out.loss.dtype == out.targets.dtype == out.target_var.dtype == torch.float32
    assert out.predictions.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.teacher.parameters())
    out.loss.backward()
    model.update_teacher()
    assert all(p.dtype == torch.float32 for p in model.teacher.parameters())


def test_save_pretrained_writes_the_student_and_loading_rebuilds_the_teacher(modality, tmp_path):
    model, batch = setup(modality)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):  # move away from the init, so a re-initialised teacher could not pass
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.update_teacher()
    model.save_pretrained(tmp_path)
    keys = safetensors.torch.load_file(tmp_path / "model.safetensors").keys()
    assert not any("teacher" in k for k in keys) and any(k.startswith("regression_head.") for k in keys)

    loaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(loaded) is d2v.Data2VecForPreTraining
    source = loaded.teacher_source_parameters()
    assert source.keys() == dict(loaded.teacher.model.named_parameters()).keys()
    for name, q in loaded.teacher.model.named_parameters():
        torch.testing.assert_close(q, source[name], msg=f"teacher {name} is not the loaded student")
        torch.testing.assert_close(source[name], model.teacher_source_parameters()[name])
    assert loaded.teacher.num_updates == 0

    student = AutoModel.from_pretrained(tmp_path)
    assert type(student) is d2v.MODEL_CLASSES[modality]
    model.eval()
    with torch.no_grad():
        want = model.data2vec(**student_inputs(batch, modality)).last_hidden_state
        got = student(**student_inputs(batch, modality)).last_hidden_state
    torch.testing.assert_close(got, want)


def test_continued_pretraining_from_a_transformers_checkpoint(modality, tmp_path):
    reference = tiny_transformers_model(modality)
    reference.save_pretrained(tmp_path)
    model = d2v.Data2VecForPreTraining.from_pretrained(tmp_path)
    assert model.config.modality == modality
    _, batch = setup(modality)
    inputs = student_inputs(batch, modality)
    with torch.no_grad():
        want = reference(**inputs).last_hidden_state
        got = model.data2vec(**inputs).last_hidden_state
    real = inputs["attention_mask"].bool() if modality == "text" else slice(None)
    torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=1e-4)
    source = model.teacher_source_parameters()
    assert source.keys() == dict(model.teacher.model.named_parameters()).keys()
    for name, q in model.teacher.model.named_parameters():
        assert torch.equal(source[name], q)
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss)


def test_bad_batches_fail_with_a_clear_error():
    model, batch = setup("text")
    nothing = {**batch, "bool_masked_pos": torch.zeros_like(batch["bool_masked_pos"])}
    with pytest.raises(ValueError, match="selects no position"):
        model(**nothing)
    only_padding = {**batch, "bool_masked_pos": batch["attention_mask"] == 0}
    with pytest.raises(ValueError, match="selects no position"):
        model(**only_padding)
    with pytest.raises(ValueError, match="no real tokens"):
        model(**{**batch, "attention_mask": torch.zeros_like(batch["attention_mask"])})
    with pytest.raises(ValueError, match="needs input_ids; got vision input"):
        model(pixel_values=torch.randn(2, 3, 32, 32))

    vision, vbatch = setup("vision")
    with pytest.raises(ValueError, match="hides every real position of example"):
        vision(**{**vbatch, "bool_masked_pos": torch.ones_like(vbatch["bool_masked_pos"])})
    nan = vbatch["pixel_values"].clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        vision(**{**vbatch, "pixel_values": nan})
    with pytest.raises(ValueError, match="bool_masked_pos must be"):
        vision(**{**vbatch, "bool_masked_pos": vbatch["bool_masked_pos"][:, :5]})
    with pytest.raises(ValueError, match="needs 'pixel_values'.*text input"):
        d2v.DataCollatorForData2VecPretraining(vision.config)(tiny_examples("text"))
    with pytest.raises(ValueError, match="different sizes"):
        d2v.DataCollatorForData2VecPretraining(vision.config)(
            [{"pixel_values": torch.randn(3, 32, 32)}, {"pixel_values": torch.randn(3, 16, 32)}])
    with pytest.raises(ValueError, match="empty"):
        d2v.DataCollatorForData2VecPretraining(vision.config)([])

    audio, abatch = setup("audio")
    with pytest.raises(ValueError, match="mask_time_indices must be"):
        audio(**{**abatch, "mask_time_indices": abatch["mask_time_indices"][:, 1:]})
    with pytest.raises(ValueError, match="NaN"):
        d2v.DataCollatorForData2VecPretraining(audio.config)([{"input_values": [float("nan")] * 4000}] * 2)
    with pytest.raises(ValueError, match="receptive field"):
        d2v.DataCollatorForData2VecPretraining(audio.config)([{"input_values": [0.1] * 20}])


def test_forward_draws_a_mask_when_none_is_given(modality):
    model, batch = setup(modality)
    mask_key = "mask_time_indices" if modality == "audio" else "bool_masked_pos"
    inputs = student_inputs(batch, modality)
    torch.manual_seed(5)
    a = model(**inputs)
    torch.manual_seed(5)
    b = model(**inputs)
    assert a.num_masked > 0 and torch.equal(a.mask, b.mask)
    assert mask_key not in inputs


def test_collapse_check_reads_real_outputs():
    model, batch = setup("text")
    out = model(**batch)
    model.check_collapse(out.target_var, out.pred_var * 0 + 1)  # healthy targets pass
    with torch.no_grad():  # a teacher whose top layers output one constant vector everywhere: collapsed targets
        for layer in model.teacher.model.layers:
            layer.fc2.weight.zero_()
            layer.fc2.bias.copy_(torch.linspace(-1, 1, layer.fc2.bias.numel()))
    out = model(**batch)
    assert out.target_var < model.config.min_target_var
    with pytest.raises(d2v.Data2VecCollapseError, match="target_var .* < min_target_var.*EMA decay"):
        model.check_collapse(out.target_var, out.pred_var)


def test_pretraining_starts_from_a_plain_model_checkpoint_of_ours(tmp_path):
    config = tiny_config("vision")
    torch.manual_seed(3)
    base = d2v.Data2VecVisionModel(config)
    base.save_pretrained(tmp_path)
    model = AutoModelForPreTraining.from_pretrained(tmp_path)
    for name, p in base.named_parameters():
        if not name.startswith("pooler"):
            torch.testing.assert_close(dict(model.data2vec.named_parameters())[name], p, msg=name)
    source = model.teacher_source_parameters()
    assert source.keys() == dict(model.teacher.model.named_parameters()).keys()
    for name, q in model.teacher.model.named_parameters():
        assert torch.equal(source[name], q)
    with pytest.raises(ValueError, match="audio checkpoint"):
        d2v.Data2VecVisionModel.from_pretrained(_saved_audio(tmp_path / "audio"))


def _saved_audio(path):
    d2v.Data2VecForPreTraining(tiny_config("audio")).save_pretrained(path)
    return path


def _masked_samples(batch, modality, config, mask):
    """The input positions under `mask` (B, P): what the student must not see."""
    if modality == "vision":
        p = config.patch_size
        h, w = (s // p for s in batch["pixel_values"].shape[-2:])
        grid = mask.reshape(len(mask), 1, h, w)
        return grid.repeat_interleave(p, 2).repeat_interleave(p, 3).expand_as(batch["pixel_values"])
    if modality == "text":
        return mask
    ratio = config.inputs_to_logits_ratio  # kernel == stride: frame f is made of samples [f * ratio, (f+1) * ratio)
    samples = mask.repeat_interleave(ratio, 1)
    out = torch.zeros_like(batch["input_values"], dtype=torch.bool)
    out[:, : samples.shape[1]] = samples
    return out


@pytest.mark.parametrize("modality, text_view", [("text", "collated"), ("text", "model"), ("vision", None),
                                                  ("audio", None)])
def test_the_student_is_blind_at_masked_positions(modality, text_view):
    """Changing only the masked content of the input changes the teacher's targets but not one prediction."""
    # audio: conv kernels equal to their strides, so a frame's features come from its own samples only
    overrides = dict(conv_kernel=[5, 2, 2], conv_stride=[5, 2, 2]) if modality == "audio" else {}
    model, batch = setup(modality, **overrides)
    if text_view == "model":  # no student view in the batch: the model puts <mask> at the masked tokens
        batch.pop("masked_input_ids")
    model.eval()
    key = {"text": "input_ids", "vision": "pixel_values", "audio": "input_values"}[modality]
    mask = batch["mask_time_indices" if modality == "audio" else "bool_masked_pos"].bool()
    hidden = _masked_samples(batch, modality, model.config, mask.reshape(len(mask), -1))
    g = torch.Generator().manual_seed(5)
    if modality == "text":
        other = torch.randint(3, model.config.vocab_size - 1, batch[key].shape, generator=g)
    else:
        other = torch.randn(batch[key].shape, generator=g) * 3
    changed = {**batch, key: torch.where(hidden, other, batch[key])}
    with torch.no_grad():
        out, out2 = model(**batch), model(**changed)
    m = out.mask
    assert not torch.allclose(out2.targets[m], out.targets[m], atol=1e-3)  # the change is real: the teacher saw it
    torch.testing.assert_close(out2.predictions, out.predictions, atol=1e-6, rtol=1e-6)


def test_instance_norm_is_over_time_in_both_branches():
    """Instance-normed targets: per example and channel, over the time (position) axis, with statistics from the real
    positions only where padding is given; the no-padding branch (audio crops, images) is the same formula."""
    from modeling_data2vec_unified.modeling_data2vec_pretraining import normalize_targets

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 5, generator=g) * torch.rand(1, 1, 5, generator=g) * 4 + torch.randn(3, 1, 5, generator=g)
    x = x.double()

    def over_time(v):  # written out: mean and biased variance along dim 1
        mean = v.mean(1, keepdim=True)
        return (v - mean) / torch.sqrt(((v - mean) ** 2).mean(1, keepdim=True) + 1e-5)

    torch.testing.assert_close(normalize_targets(x, "instance"), over_time(x))
    torch.testing.assert_close(normalize_targets(x, "instance", torch.ones(3, 9, dtype=torch.bool)), over_time(x))
    real = torch.arange(9)[None, :] < torch.tensor([9, 6, 4])[:, None]
    padded = normalize_targets(x, "instance", real)
    for i, n in enumerate((9, 6, 4)):
        torch.testing.assert_close(padded[i, :n], over_time(x[i : i + 1, :n])[0])
    torch.testing.assert_close(normalize_targets(x, "layer"),
                               (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True)
                                                                           + 1e-5))


def test_batch_norm_is_over_batch_and_time_and_keeps_what_sets_examples_apart():
    """"batch" (fairseq data2vec_audio's batch_norm_target_layer): torch's F.batch_norm with the batch's statistics,
    over the real positions only where padding is given. A clip whose channels are constant over time (a steady tone)
    keeps its offset from the other clips, which instance norm removes."""
    import torch.nn.functional as F
    from modeling_data2vec_unified.conversion_fairseq import _target_norms
    from modeling_data2vec_unified.modeling_data2vec_pretraining import normalize_targets

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 9, 5, generator=g) + torch.randn(3, 1, 5, generator=g) * 3).double()
    reference = F.batch_norm(x.transpose(1, 2), None, None, training=True).transpose(1, 2)  # (B, C, T) per channel
    torch.testing.assert_close(normalize_targets(x, "batch"), reference)
    real = torch.arange(9)[None, :] < torch.tensor([9, 6, 4])[:, None]
    padded = normalize_targets(x, "batch", real)
    flat = torch.cat([x[0, :9], x[1, :6], x[2, :4]])  # (19, 5): the real positions only
    expected = F.batch_norm(flat, None, None, training=True)
    torch.testing.assert_close(torch.cat([padded[0, :9], padded[1, :6], padded[2, :4]]), expected)
    steady = x.mean(1, keepdim=True).expand(3, 9, 5) + 1e-3 * x  # each clip nearly constant over time
    assert normalize_targets(steady, "batch").mean(1).std(0).mean() > 0.5  # the clips stay apart
    assert normalize_targets(steady, "instance").mean(1).abs().max() < 1e-6  # each clip's mean is gone
    assert _target_norms({"batch_norm_target_layer": True})["target_layer_norm"] == "batch"
    assert _target_norms({"batch_norm_target_layer": True, "instance_norm_target_layer": True})[
        "target_layer_norm"] == "instance"


@pytest.mark.parametrize("modality", ["vision", "audio"])
def test_instance_normed_targets_without_padding(modality):
    """The model's targets in the no-padding branch (images; audio cropped to the shortest clip) against the written
    out recipe: top K teacher layers, each instance-normed over time, averaged."""
    config = tiny_config(modality, layerdrop=0.0, target_layer_norm="instance", target_final_norm="none",
                         target_layer_output="ffn")
    torch.manual_seed(0)
    model = d2v.Data2VecForPreTraining(config).eval()
    batch = d2v.DataCollatorForData2VecPretraining(config, seed=0, audio_crop="shortest")(tiny_examples(modality))
    assert "attention_mask" not in batch
    ffn, _, _, handles = record_layer_outputs(model.teacher.model, modality)
    with torch.no_grad():
        out = model(**batch)
    for h in handles:
        h.remove()
    prefix = 1 if modality == "vision" else 0
    real = torch.ones(out.targets.shape[:2], dtype=torch.bool)
    want = expected_targets([y[:, prefix:] for y in ffn], config, real)
    torch.testing.assert_close(out.targets.double(), want, atol=1e-5, rtol=1e-5)


def test_collapse_check_reads_each_variance_against_its_own_threshold():
    model, batch = setup("vision")
    c = model.config
    assert (c.min_target_var, c.min_pred_var) == (0.1, 0.01)
    model.check_collapse(1.0, 0.05)  # predictions vary less than targets must, more than predictions must: healthy
    with pytest.raises(d2v.Data2VecCollapseError, match=r"pred_var 0\.005 < min_pred_var 0\.01") as error:
        model.check_collapse(1.0, 0.005)
    assert "target_var" not in str(error.value).split("(")[1].split(")")[0]
    with pytest.raises(d2v.Data2VecCollapseError, match=r"target_var 0\.05 < min_target_var 0\.1"):
        model.check_collapse(0.05, 1.0)
    # a real output: a regression head that maps everything to one vector collapses the predictions only
    with torch.no_grad():
        model.regression_head.proj.weight.zero_()
    out = model(**batch)
    assert out.target_var > c.min_target_var and out.pred_var < c.min_pred_var
    with pytest.raises(d2v.Data2VecCollapseError, match="pred_var .* < min_pred_var"):
        model.check_collapse(out.target_var, out.pred_var)


@pytest.mark.parametrize("algorithm", ["data2vec", "data2vec2"])
def test_a_checkpoints_own_teacher_is_loaded_and_takes_the_continued_runs_ema_schedule(tmp_path, algorithm):
    """A folder with teacher.safetensors (a converted fairseq checkpoint's `_ema`) gives a pretraining model whose
    teacher holds those weights, not a copy of the student; the teacher is built after config updates, so a continued
    run's EMA schedule applies; `reset_teacher` goes back to a copy of the student."""
    torch.manual_seed(0)
    model = d2v.Data2VecForPreTraining(tiny_config("audio", algorithm=algorithm))
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(torch.randn_like(p))
    model.teacher.num_updates = 1234  # the saved run's count: a continued run starts its own schedule at 0
    model.teacher.save(tmp_path / "teacher.safetensors")
    expected = {k: v.clone() for k, v in model.teacher.model.state_dict().items()}

    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    reloaded.config.ema_decay, reloaded.config.ema_anneal_end_step = 0.5, 7  # a continued run's schedule
    got = reloaded.teacher.model.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
    assert reloaded.teacher.num_updates == 0
    assert reloaded.teacher.decay == 0.5 and reloaded.teacher.anneal_end_step == 7
    student = dict(reloaded._ema_source().named_parameters())
    assert any(not torch.equal(student[k], v) for k, v in reloaded.teacher.model.named_parameters())
    reloaded.reset_teacher()
    assert all(torch.equal(p, student[k]) for k, p in reloaded.teacher.model.named_parameters())
    plain = tmp_path / "plain"
    model.save_pretrained(plain)  # no teacher file: the teacher is a copy of the student
    fresh = AutoModelForPreTraining.from_pretrained(plain)
    assert all(torch.equal(p, dict(fresh._ema_source().named_parameters())[k])
               for k, p in fresh.teacher.model.named_parameters())


def test_a_damaged_or_foreign_teacher_file_is_named_when_loading(tmp_path):
    """A truncated teacher.safetensors beside a model is refused by from_pretrained (not at the first forward), and
    another model's teacher at first use, each naming the file and the fix."""
    torch.manual_seed(0)
    model = d2v.Data2VecForPreTraining(tiny_config("audio"))
    model.save_pretrained(tmp_path / "run")
    model.teacher.save(tmp_path / "run" / "teacher.safetensors")
    data = (tmp_path / "run" / "teacher.safetensors").read_bytes()
    (tmp_path / "run" / "teacher.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"teacher.safetensors cannot be read .*truncated or damaged; remove it"):
        AutoModelForPreTraining.from_pretrained(tmp_path / "run")
    d2v.Data2VecForPreTraining(tiny_config("text")).teacher.save(tmp_path / "run" / "teacher.safetensors")
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path / "run")
    with pytest.raises(ValueError, match=r"teacher.safetensors is not this model's teacher"):
        loaded.teacher
