"""Conversion of the data2vec 1.0 checkpoints (fairseq data2vec_audio, its CTC fine-tunes, data2vec_text, and
data2vec_vision's BEiT checkpoint-799.pth): fake checkpoints with fairseq's exact key layout and cfg
(tests/fairseq_reference.py) are saved, converted by `convert_fairseq_checkpoint`, built, and compared with the
independent reference forward written from the fairseq / BEiT module definitions (fp32, eval, max |diff| <= 1e-4)."""

import copy

import modeling_data2vec_unified.conversion_fairseq_v1  # noqa: F401  (registers the 1.0 converters)
import pytest
import torch
from modeling_data2vec_unified.conversion_fairseq import convert_fairseq_checkpoint
from modeling_data2vec_unified.modeling_data2vec import FrontEndOutput

import fairseq_reference as R

KINDS = ("d2v1_audio", "d2v1_audio_ctc", "d2v1_text", "beit_vision")


TOL = 1e-4


BATCH = 3  # audio: 400, 363, 326 samples (two padded); text: 10, 7, 4 tokens (two padded)


def _convert(ckpt, tmp_path, name="ckpt.pt"):
    path = tmp_path / name
    torch.save(ckpt, path)
    return convert_fairseq_checkpoint(path)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """kind -> (fake checkpoint, converted, built model)"""
    out = {}
    for kind in KINDS:
        ckpt = R.fake_checkpoint(kind)
        conv = _convert(ckpt, tmp_path_factory.mktemp(kind))
        out[kind] = (ckpt, conv, conv.build())
    return out


def _real(kind, inputs, num_positions):
    """(B, T) bool: the positions that carry data (audio frames / text tokens), all for vision."""
    B = len(next(iter(v for v in inputs.values() if torch.is_tensor(v))))
    if "audio" in kind:
        frames = R.conv_output_lengths(inputs["lengths"], R.AUDIO_SPEC)
        return torch.arange(num_positions)[None] < frames[:, None]
    if "text" in kind:
        return inputs["attention_mask"].bool()
    return torch.ones(B, num_positions, dtype=torch.bool)


def _diff(ours, ref, real=None):
    if real is not None:
        ours, ref = ours[real], ref[real]
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float((ours - ref).abs().max())


@torch.no_grad()
def _student_outputs(kind, model, inputs):
    """Our (last_hidden_state as the reference defines it, hidden_states, logits or None)."""
    if kind == "d2v1_audio_ctc":
        out = model(inputs["input_values"], attention_mask=inputs["attention_mask"], output_hidden_states=True)
        return out.hidden_states[-1], out.hidden_states, out.logits
    base = model.data2vec
    if kind == "d2v1_audio":
        out = base(inputs["input_values"], attention_mask=inputs["attention_mask"], output_hidden_states=True)
        return out.last_hidden_state, out.hidden_states, None
    if kind == "d2v1_text":
        out = base(inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True)
        return out.last_hidden_state, out.hidden_states, None
    out = base(inputs["pixel_values"], output_hidden_states=True)
    return model.final_norm(out.last_hidden_state), out.hidden_states, None  # BEiT's `norm` is our final_norm


def _max_student_diff(kind, model, ckpt_for_reference, inputs):
    ref = R.reference_forward(ckpt_for_reference, inputs)
    last, hidden, logits = _student_outputs(kind, model, inputs)
    real = _real(kind, inputs, last.shape[1])
    # text: padded positions are meaningless (fairseq zeroes them, they are never attended to): real tokens only;
    # audio: fairseq computes padded frames exactly as ours (zeroed before the positional conv), all frames compared
    where = real if kind == "d2v1_text" else None
    assert len(hidden) == len(ref["hidden_states"])
    diffs = {"last_hidden_state": _diff(last, ref["last_hidden_state"], where)}
    diffs.update({f"hidden_states[{i}]": _diff(a, b, where)
                  for i, (a, b) in enumerate(zip(hidden, ref["hidden_states"]))})
    if logits is not None:
        diffs["logits (real frames)"] = _diff(logits, ref["logits"], real)
    return diffs


@pytest.mark.parametrize("kind", KINDS)
def test_student_matches_reference(kind, converted):
    ckpt, conv, model = converted[kind]
    assert conv.kind == kind
    assert type(model).__name__ == ("Data2VecForCTC" if kind == "d2v1_audio_ctc" else "Data2VecForPreTraining")
    diffs = _max_student_diff(kind, model, ckpt, R.example_inputs(kind, batch=BATCH))
    print(kind, "student max |diff|", f"{max(diffs.values()):.3g}", diffs)
    assert max(diffs.values()) <= TOL, diffs


@torch.no_grad()
def _teacher_outputs(kind, model, inputs):
    """Our teacher's (hidden_states, ffn_outputs, targets), as Data2VecForPreTraining runs it on unmasked input."""
    name = {"d2v1_audio": "input_values", "d2v1_text": "input_ids", "beit_vision": "pixel_values"}[kind]
    batch = {name: inputs[name]}
    if "attention_mask" in inputs:
        batch["attention_mask"] = inputs["attention_mask"]
    m, teacher = model.data2vec, model.teacher
    tokens = m.embed(batch)
    kw = dict(output_hidden_states=True, output_ffn_outputs=True)
    if kind == "d2v1_audio":  # scope model_except_feature_encoder: the student's features, the teacher's rest
        front = teacher.model.contextualize(FrontEndOutput(tokens.hidden_states, tokens.attention_mask))
        out = teacher.model.encode(front, **kw)
    elif kind == "d2v1_text":  # scope encoder: the student's embeddings, the teacher's layers
        front = m.contextualize(tokens)
        out = teacher(front.hidden_states, front.attention_mask, **kw)
    else:  # scope model
        out = teacher.model(inputs["pixel_values"], **kw)
        # BEiT's fc_feature is gamma_2 * mlp(...); our ffn_outputs are before the layer scale
        scales = [layer.layer_scale_2 for layer in teacher.model.encoder.layers]
        return out.hidden_states, [f * g for f, g in zip(out.ffn_outputs, scales)], model.forward_teacher(batch, tokens)
    return out.hidden_states, out.ffn_outputs, model.forward_teacher(batch, tokens)


@pytest.mark.parametrize("kind", ["d2v1_audio", "d2v1_text", "beit_vision"])
def test_teacher_matches_reference_ema(kind, converted):
    ckpt, conv, model = converted[kind]
    assert conv.teacher is not None
    inputs = R.example_inputs(kind, batch=BATCH)
    ref = R.reference_forward(ckpt, inputs, weights="ema")
    hidden, ffn, targets = _teacher_outputs(kind, model, inputs)
    real = _real(kind, inputs, hidden[0].shape[1])
    where = real if kind == "d2v1_text" else None
    diffs = {f"hidden_states[{i}]": _diff(a, b, where) for i, (a, b) in enumerate(zip(hidden, ref["hidden_states"]))}
    diffs.update({f"ffn[{i}]": _diff(a, b, where) for i, (a, b) in enumerate(zip(ffn, ref["ffn_results"]))})
    if kind == "d2v1_audio":
        # fairseq instance-norms the target layers over the whole padded length, ours over the real frames only:
        # the targets agree on the unpadded sample
        diffs["targets (unpadded sample)"] = _diff(targets[:1], ref["targets"][:1])
    elif kind == "d2v1_text":
        diffs["targets (real tokens)"] = _diff(targets, ref["targets"], real)
    else:
        diffs["targets"] = _diff(targets, ref["targets"])
    print(kind, "teacher max |diff|", f"{max(diffs.values()):.3g}", diffs)
    assert len(hidden) == len(ref["hidden_states"]) and max(diffs.values()) <= TOL, diffs


def _ema_of(ckpt, kind):
    """The teacher's state dict inside a checkpoint of `kind`."""
    if kind == "beit_vision":
        return ckpt["model_ema"]
    return ckpt["model"]["_ema" if kind == "d2v1_audio" else "encoder._ema"]


def _qkv_part(w, part):
    D = w.shape[0] // 3
    return w[part * D:(part + 1) * D]


def test_tensors_outputs_cannot_see(converted):
    """What no output shows (a key bias is softmax-invariant; a head is not run by the reference): compared as
    tensors."""
    ckpt, conv, _ = converted["d2v1_audio"]
    sd, ema = ckpt["model"], ckpt["model"]["_ema"]
    for i in range(2):
        assert torch.equal(_qkv_part(conv.state_dict[f"data2vec.encoder.layers.{i}.attention.qkv.bias"], 1),
                           sd[f"encoder.layers.{i}.self_attn.k_proj.bias"].float())
        assert torch.equal(_qkv_part(conv.teacher[f"encoder.layers.{i}.attention.qkv.bias"], 1),
                           ema[f"layers.{i}.self_attn.k_proj.bias"])
    assert torch.equal(conv.state_dict["regression_head.proj.weight"], sd["final_proj.0.weight"].float())
    assert torch.equal(conv.state_dict["data2vec.embeddings.mask_embedding"], sd["mask_emb"].float())
    assert torch.equal(conv.teacher["embeddings.layer_norm.weight"], ema["layer_norm.weight"])  # the EMA's own
    assert torch.equal(conv.teacher["embeddings.pos_conv.1.conv.weight"], ema["pos_conv.1.0.weight"])

    ckpt, conv, _ = converted["d2v1_audio_ctc"]
    assert torch.equal(conv.state_dict["lm_head.bias"], ckpt["model"]["w2v_encoder.proj.bias"].float())
    assert conv.config.pad_token_id == 0 and conv.config.vocab_size == R.LTR_VOCAB
    assert conv.config.ctc_zero_infinity is True

    ckpt, conv, _ = converted["d2v1_text"]
    sd, ema = ckpt["model"], ckpt["model"]["encoder._ema"]
    p = "encoder.sentence_encoder.layers.1.self_attn."
    assert torch.equal(_qkv_part(conv.state_dict["data2vec.encoder.layers.1.attention.qkv.bias"], 1),
                       sd[p + "k_proj.bias"].float())
    assert torch.equal(_qkv_part(conv.teacher["layers.1.attention.qkv.bias"], 1), ema["layers.1.self_attn.k_proj.bias"])
    assert torch.equal(conv.state_dict["regression_head.dense.weight"], sd["encoder.regression_head.0.weight"].float())
    assert torch.equal(conv.state_dict["regression_head.proj.bias"], sd["encoder.regression_head.2.bias"].float())
    # fairseq has no token-type embedding, and neither has the converted model (a zero row would train and move)
    assert conv.config.type_vocab_size == 0 and not any("token_type" in k for k in conv.state_dict)
    assert conv.config.vocab_size == R.TEXT_VOCAB and conv.config.mask_token_id == R.TEXT_MASK

    ckpt, conv, _ = converted["beit_vision"]
    sd, ema = ckpt["model"], ckpt["model_ema"]
    bias = conv.state_dict["data2vec.encoder.layers.1.attention.qkv.bias"]
    assert torch.equal(bias, torch.cat([sd["blocks.1.attn.q_bias"], torch.zeros(R.D), sd["blocks.1.attn.v_bias"]]))
    assert torch.equal(conv.teacher["encoder.layers.0.attention.qkv.bias"],
                       torch.cat([ema["blocks.0.attn.q_bias"], torch.zeros(R.D), ema["blocks.0.attn.v_bias"]]))
    assert torch.equal(conv.state_dict["regression_head.proj.weight"], sd["lm_head.weight"])
    assert torch.equal(conv.state_dict["data2vec.embeddings.mask_token"], sd["mask_token"])
    assert torch.equal(conv.teacher["embeddings.mask_token"], ema["mask_token"])
    assert conv.config.num_attention_heads == R.HEADS and conv.config.num_hidden_layers == 2


def test_configs_come_from_the_checkpoint(converted):
    """Architecture and pretraining fields are read from the stored cfg / args, not the package's base defaults."""
    c = converted["d2v1_audio"][1].config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (R.D, 2, R.HEADS, R.FFN)
    assert (c.conv_dim, c.conv_kernel, c.conv_stride) == ([32, 32, 32], [10, 3, 3], [5, 2, 2])
    assert (c.num_conv_pos_embeddings, c.conv_pos_kernel_size, c.num_conv_pos_embedding_groups) == (2, 6, 4)
    assert (c.average_top_k_layers, c.target_layer_norm, c.target_final_norm, c.layerdrop) == (
        2, "instance", "none", 0.05)
    assert (c.ema_decay, c.ema_end_decay, c.ema_anneal_end_step, c.mask_prob, c.mask_length) == (
        0.999, 0.9999, 30000, 0.65, 10)
    c = converted["d2v1_text"][1].config
    assert (c.max_position_embeddings, c.head_layers, c.loss_beta, c.mask_prob, c.mask_length) == (
        R.TEXT_MAX_POS + 2, 2, 4.0, 0.35, 4)
    assert (c.target_layer_norm, c.ema_anneal_end_step, c.teacher_scope) == ("layer", 300000, "encoder")
    c = converted["beit_vision"][1].config
    assert (c.image_size, c.patch_size, c.layer_norm_eps, c.relative_position_bias) == (R.IMG, R.PATCH, 1e-6, "shared")
    assert (c.average_top_k_layers, c.target_layer_output, c.target_layer_norm, c.target_final_norm) == (
        2, "block", "layer", "layer")
    assert (c.drop_path_rate, c.attention_probs_dropout_prob, c.ema_end_decay) == (0.25, 0.05, 0.9998)


# a tensor of each kind, perturbed in the fake checkpoint: the converted model must show it
PERTURB = {
    "d2v1_audio": "encoder.layers.1.fc2.weight",
    "d2v1_audio_ctc": "w2v_encoder.w2v_model.encoder.pos_conv.1.0.weight",
    "d2v1_text": "encoder.sentence_encoder.layers.0.self_attn.v_proj.weight",
    "beit_vision": "rel_pos_bias.relative_position_bias_table",
}


@pytest.mark.parametrize("kind", KINDS)
def test_a_perturbed_tensor_is_detected(kind, tmp_path):
    ckpt = R.fake_checkpoint(kind)
    bad = copy.deepcopy(ckpt)
    tensor = bad["model"][PERTURB[kind]]
    bad["model"][PERTURB[kind]] = (tensor.float() + 0.05 * torch.randn(tensor.shape)).to(tensor.dtype)
    model = _convert(bad, tmp_path).build()
    inputs = R.example_inputs(kind, batch=BATCH)
    assert max(_max_student_diff(kind, model, ckpt, inputs).values()) > TOL  # vs the unperturbed reference
    assert max(_max_student_diff(kind, model, bad, inputs).values()) <= TOL  # and it follows the perturbed one


@pytest.mark.parametrize("kind,key", [("d2v1_audio", "layers.1.fc1.weight"),
                                      ("d2v1_text", "layers.0.final_layer_norm.bias"),
                                      ("beit_vision", "blocks.1.gamma_2")])
def test_a_perturbed_teacher_tensor_is_detected(kind, key, tmp_path):
    ckpt = R.fake_checkpoint(kind)
    bad = copy.deepcopy(ckpt)
    ema = _ema_of(bad, kind)
    ema[key] = ema[key] + 0.05 * torch.randn(ema[key].shape)
    model = _convert(bad, tmp_path).build()
    inputs = R.example_inputs(kind, batch=BATCH)
    ours = _teacher_outputs(kind, model, inputs)[0][-1]
    real = _real(kind, inputs, ours.shape[1]) if kind == "d2v1_text" else None
    assert _diff(ours, R.reference_forward(ckpt, inputs, weights="ema")["hidden_states"][-1], real) > TOL
    assert _diff(ours, R.reference_forward(bad, inputs, weights="ema")["hidden_states"][-1], real) <= TOL


UNKNOWN = {
    "d2v1_audio": ("model", "encoder.layers.0.self_attn.rotary.inv_freq"),
    "d2v1_audio_ctc": ("model", "w2v_encoder.w2v_model.encoder.adapter.weight"),
    "d2v1_text": ("model", "encoder.sentence_encoder.layers.1.self_attn.k_norm.weight"),
    "beit_vision": ("model", "blocks.0.attn.relative_position_bias_table"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_key_is_an_error_naming_it(kind):
    ckpt = R.fake_checkpoint(kind)
    where, key = UNKNOWN[kind]
    ckpt[where][key] = torch.zeros(3)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        convert_fairseq_checkpoint(ckpt)


@pytest.mark.parametrize("kind,key", [("d2v1_audio", "layers.0.self_attn.extra.weight"),
                                      ("d2v1_text", "layers.0.extra.weight"),
                                      ("beit_vision", "blocks.0.extra")])
def test_an_unknown_teacher_key_is_an_error_naming_it(kind, key):
    ckpt = R.fake_checkpoint(kind)
    ema = _ema_of(ckpt, kind)
    ema[key] = torch.zeros(3)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        convert_fairseq_checkpoint(ckpt)


def test_every_drop_says_why(converted):
    expected = {
        "d2v1_audio": set(),
        "d2v1_audio_ctc": set(),
        "d2v1_text": {"encoder.sentence_encoder.version", "encoder._ema.version", "encoder._ema.embed_tokens.weight",
                      "encoder._ema.embed_positions.weight", "encoder._ema.layernorm_embedding.weight",
                      "encoder._ema.layernorm_embedding.bias"},
        "beit_vision": {"rel_pos_bias.relative_position_index", "model_ema.rel_pos_bias.relative_position_index",
                        "model_ema.norm.weight", "model_ema.norm.bias", "model_ema.lm_head.weight",
                        "model_ema.lm_head.bias"},
    }
    for kind in KINDS:
        conv = converted[kind][1]
        assert set(conv.dropped) == expected[kind], (kind, conv.dropped)
        assert all(len(why) > 20 for why in conv.dropped.values())


def test_alternative_layouts_convert():
    """The other names the 1.0 files are known under: the public `final_proj.*` (audio), `encoder.lm_head.*`
    (text, from fairseq's RoBERTa loader), and a text teacher that also averaged the embeddings."""
    ckpt = R.fake_checkpoint("d2v1_audio")
    sd = ckpt["model"]
    sd["final_proj.weight"], sd["final_proj.bias"] = sd.pop("final_proj.0.weight"), sd.pop("final_proj.0.bias")
    assert torch.equal(convert_fairseq_checkpoint(ckpt).state_dict["regression_head.proj.bias"],
                       sd["final_proj.bias"].float())

    ckpt = R.fake_checkpoint("d2v1_text")
    sd = ckpt["model"]
    for name in ("dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias", "weight", "bias"):
        sd[f"encoder.lm_head.{name}"] = torch.zeros(2)
    conv = convert_fairseq_checkpoint(ckpt)
    assert "encoder.lm_head.dense.weight" in conv.dropped
    ckpt["cfg"]["model"]["ema_transformer_layers_only"] = False
    conv = convert_fairseq_checkpoint(ckpt)
    assert conv.config.teacher_scope == "model"
    assert torch.equal(conv.teacher["embeddings.word_embeddings.weight"],
                       ckpt["model"]["encoder._ema"]["embed_tokens.weight"])
    model = conv.build()
    assert model.teacher.model.embeddings.token_type_embeddings is None


@pytest.mark.parametrize("kind,edit,what", [
    ("d2v1_audio", lambda mc: mc.update(extractor_mode="default"), "extractor_mode"),
    ("d2v1_audio", lambda mc: mc.update(pos_conv_depth=1), "pos_conv_depth 1"),
    ("d2v1_audio", lambda mc: mc.update(layer_norm_first=True), "layer_norm_first"),
    ("d2v1_audio_ctc", lambda mc: mc["w2v_args"]["model"].update(extractor_mode="default"), "extractor_mode"),
    ("d2v1_text", lambda mc: mc["transformer"]["encoder"].update(normalize_before=True), "normalize_before"),
    ("d2v1_text", lambda mc: mc["transformer"].update(no_scale_embedding=False), "no_scale_embedding"),
])
def test_unsupported_variants_are_refused(kind, edit, what):
    ckpt = R.fake_checkpoint(kind)
    edit(ckpt["cfg"]["model"])
    with pytest.raises(ValueError, match=what):
        convert_fairseq_checkpoint(ckpt)


def _fairseq_audio_ema_step(ckpt, decay, copy_pos_conv=True):
    """fairseq's EMA step of a data2vec 1.0 audio teacher, written out: data2vec_audio.py make_ema_teacher builds
    EMAModule(self.encoder, skip_keys={pos_conv.*}) (ema_layers_only) and ema_module.py _step_internal sets every
    `_ema` tensor to decay * ema + (1 - decay) * student, except the skip keys, which it copies from the student."""
    out = copy.deepcopy(ckpt)
    ema = out["model"]["_ema"]
    for key in ema:
        student = ckpt["model"]["encoder." + key].float()
        skip = copy_pos_conv and key.startswith("pos_conv.")
        ema[key] = student.clone() if skip else decay * ema[key].float() + (1 - decay) * student
    return out


def test_continued_audio_pretraining_takes_fairseqs_ema_step(converted):
    """A converted 1.0 speech checkpoint, its student moved, one update_teacher() at decay 0.5: the teacher's targets
    are those of fairseq's teacher after its step (positional conv copied), not of a teacher that averages it."""
    ckpt, conv, _ = converted["d2v1_audio"]
    assert conv.config.teacher_copies_pos_conv
    moved = copy.deepcopy(ckpt)
    gen = torch.Generator().manual_seed(5)
    for key, value in moved["model"].items():  # continued training moved the student away from the teacher
        if torch.is_tensor(value) and value.is_floating_point():
            moved["model"][key] = (value.float() + 0.1 * torch.randn(value.shape, generator=gen)).to(value.dtype)
    model = convert_fairseq_checkpoint(moved).build()
    model.teacher.decay_start = model.teacher.decay_end = 0.5
    assert model.update_teacher() == 0.5
    inputs = R.example_inputs("d2v1_audio", batch=1)  # unpadded: fairseq instance-norms over padding too
    _, _, targets = _teacher_outputs("d2v1_audio", model, inputs)
    want = R.reference_forward(_fairseq_audio_ema_step(moved, 0.5), inputs, weights="ema")["targets"]
    averaged = R.reference_forward(_fairseq_audio_ema_step(moved, 0.5, copy_pos_conv=False), inputs, weights="ema")
    assert _diff(targets, want) <= TOL
    assert _diff(targets, averaged["targets"]) > 100 * TOL  # the check can tell the two apart
    student = model.data2vec.embeddings.pos_conv.state_dict()
    assert all(torch.equal(v, student[k]) for k, v in model.teacher.model.embeddings.pos_conv.state_dict().items())


def test_converted_configs_carry_the_recipes_collapse_guard(converted):
    """fairseq data2vec_audio.py checks min_target_var / min_pred_var (0.1 / 0.01, what the recipe's cfg holds);
    data2vec_text.py and data2vec_vision's engine_for_cyclical.py have no collapse check: the converted configs never
    stop a run where the original would go on."""
    audio = converted["d2v1_audio"][1].config
    assert (audio.min_target_var, audio.min_pred_var) == (0.1, 0.01)
    for kind in ("d2v1_text", "beit_vision"):
        c = converted[kind][1].config
        assert (c.min_target_var, c.min_pred_var) == (0.0, 0.0), kind
    ckpt = copy.deepcopy(converted["d2v1_audio"][0])
    ckpt["cfg"]["model"].update(min_target_var=0.25, min_pred_var=0.0)
    c = convert_fairseq_checkpoint(ckpt).config
    assert (c.min_target_var, c.min_pred_var) == (0.25, 0.0)


def test_converted_text_has_no_token_type_embedding_to_train(converted):
    """fairseq's text models have no token types: a zero row of ours would take gradients and move after one step
    (fairseq's step leaves nothing there); the converted model has none, and takes token type 0 (or none) only."""
    _, conv, model = converted["d2v1_text"]
    assert conv.config.type_vocab_size == 0
    assert not any("token_type" in name for name, _ in model.named_parameters())
    inputs = R.example_inputs("d2v1_text", batch=2)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        plain = model.data2vec(ids, attention_mask=mask).last_hidden_state
        zeros = model.data2vec(ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    assert torch.equal(plain, zeros)
    with pytest.raises(ValueError, match="token type"):
        model.data2vec(ids, attention_mask=mask, token_type_ids=torch.ones_like(ids))
