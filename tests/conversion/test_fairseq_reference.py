"""Checks of the independent fairseq / data2vec_vision reference (tests/fairseq_reference.py) against itself and
against transformers' own data2vec models, so that the reference the converter is compared with is itself
trustworthy.  Nothing here imports modeling_data2vec_unified."""

import io
import math
import pickle

import pytest
import torch
import transformers

import fairseq_reference as R

FAIRSEQ_PRETRAINED = ("d2v2_vision", "d2v2_audio", "d2v2_text", "d2v1_audio", "d2v1_text", "beit_vision")


# keys of each kind that no inference output depends on (pretraining-only heads, masking tokens, the teacher)
PRETRAINING_ONLY = {
    "d2v2_vision": ("_ema",),                       # decoder is covered by decoder_output
    "d2v2_audio": ("_ema",),
    "d2v2_text": ("_ema",),
    "d2v1_audio": ("_ema", "mask_emb", "final_proj.0."),
    "d2v1_audio_ctc": ("w2v_encoder.w2v_model.mask_emb",),
    "d2v1_text": ("encoder._ema", "encoder.regression_head.", "encoder.sentence_encoder.version"),
    "beit_vision": ("mask_token", "lm_head.", "rel_pos_bias.relative_position_index"),
}


@pytest.fixture(scope="module")
def ckpts():
    return {k: R.fake_checkpoint(k) for k in R.KINDS}


def _outputs(out):
    return {k: v for k, v in out.items() if torch.is_tensor(v) and v.is_floating_point()}


@pytest.mark.parametrize("kind", R.KINDS)
def test_forward_shapes_finite_and_deterministic(kind, ckpts):
    ck = ckpts[kind]
    inp = R.example_inputs(kind)
    out = R.reference_forward(ck, inp)
    for name, v in _outputs(out).items():
        assert torch.isfinite(v).all(), (kind, name)
    assert len(out["layer_results"]) == len(out["hidden_states"]) - 1 >= 2
    again = R.reference_forward(R.fake_checkpoint(kind), inp)
    assert torch.equal(again["last_hidden_state"], out["last_hidden_state"])
    other = R.reference_forward(R.fake_checkpoint(kind, seed=1), inp)
    assert not torch.allclose(other["last_hidden_state"], out["last_hidden_state"])


@pytest.mark.parametrize("kind", R.KINDS)
def test_every_weight_is_used_and_perturbations_are_detected(kind, ckpts):
    """perturbing any one tensor (except the documented pretraining-only ones) changes an output by > 1e-4; the
    pretraining-only ones change nothing"""
    ck = ckpts[kind]
    inp = R.example_inputs(kind)
    base = _outputs(R.reference_forward(ck, inp))
    sd = ck["model"]
    unused = PRETRAINING_ONLY.get(kind, ())
    for key, t in list(sd.items()):
        if not torch.is_tensor(t) or not t.is_floating_point():
            continue
        orig = t
        sd[key] = (t.float() + 0.05 * torch.randn(t.shape, generator=torch.Generator().manual_seed(1))).to(t.dtype)
        try:
            new = _outputs(R.reference_forward(ck, inp))
        finally:
            sd[key] = orig
        diff = max((new[n] - base[n]).abs().max().item() for n in base)
        if key.startswith(unused):
            assert diff == 0, (kind, key, diff)
        elif key.endswith("k_proj.bias"):
            # a key bias adds the same logit to every key of a query: softmax cancels it (numerics cannot see a
            # wrongly mapped k_proj.bias; compare the tensors themselves)
            assert diff < 1e-5, (kind, key, diff)
        else:
            assert diff > 1e-4, (kind, key, diff)


def _unsafe_pickle_globals(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return set(torch.serialization.get_unsafe_globals_in_checkpoint(buf))


@pytest.mark.parametrize("kind", R.KINDS)
def test_weights_only_round_trip_with_the_allow_list(kind, ckpts, tmp_path):
    ck = ckpts[kind]
    path = tmp_path / f"{kind}.pt"
    torch.save(ck, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location="cpu", weights_only=True)
    with torch.serialization.safe_globals(R.safe_globals_for(kind)):
        back = torch.load(path, map_location="cpu", weights_only=True)
    assert set(back) == set(ck)
    assert list(back["model"]) == list(ck["model"])
    for k, v in ck["model"].items():
        if torch.is_tensor(v):
            assert back["model"][k].dtype == v.dtype and torch.equal(back["model"][k], v), k
    # only the documented globals are needed
    needed = _unsafe_pickle_globals(ck)
    if kind == "beit_vision":
        assert needed == {"argparse.Namespace"}
    else:
        assert needed and all(n.startswith("numpy") for n in needed), needed


def test_fairseq_student_weights_are_fp16_and_ema_fp32(ckpts):
    for kind in ("d2v2_vision", "d2v2_audio", "d2v2_text", "d2v1_audio"):
        sd = ckpts[kind]["model"]
        assert all(v.dtype == torch.float16 for k, v in sd.items() if torch.is_tensor(v) and v.is_floating_point())
        assert all(v.dtype == torch.float32 for v in sd["_ema"].values())
    assert all(v.dtype == torch.float32 for v in ckpts["beit_vision"]["model"].values() if v.is_floating_point())


def test_ema_layout(ckpts):
    ema = ckpts["d2v2_vision"]["model"]["_ema"]   # ema_encoder_only=False, ema_local_encoder=True
    assert "modality_encoders.IMAGE.local_encoder.proj.weight" in ema and "blocks.0.norm1.weight" in ema
    assert not any(".decoder." in k for k in ema)
    ema = ckpts["d2v2_audio"]["model"]["_ema"]    # ema_local_encoder=False
    assert "modality_encoders.AUDIO.relative_positional_encoder.1.0.weight" in ema
    assert "modality_encoders.AUDIO.alibi_scale" in ema
    assert not any(".local_encoder." in k or ".project_features." in k or ".decoder." in k for k in ema)
    ema = ckpts["d2v2_text"]["model"]["_ema"]     # ema_encoder_only=True: the blocks ModuleList itself
    assert sorted({k.split(".")[0] for k in ema}) == ["0", "1"]
    ema = ckpts["d2v1_text"]["model"]["encoder._ema"]
    sd = ckpts["d2v1_text"]["model"]
    assert torch.equal(ema["embed_tokens.weight"], sd["encoder.sentence_encoder.embed_tokens.weight"].float())
    assert not torch.equal(ema["layers.0.fc1.weight"], sd["encoder.sentence_encoder.layers.0.fc1.weight"].float())


@pytest.mark.parametrize("kind", FAIRSEQ_PRETRAINED)
def test_teacher_forward(kind, ckpts):
    inp = R.example_inputs(kind)
    s = R.reference_forward(ckpts[kind], inp)
    t = R.reference_forward(ckpts[kind], inp, weights="ema")
    assert (s["last_hidden_state"] - t["last_hidden_state"]).abs().max() > 1e-3
    y = t["targets"]
    assert y.shape[0] == inp[next(iter(inp))].shape[0] and y.shape[-1] == R.D and torch.isfinite(y).all()


def test_fine_tunes_have_no_teacher(ckpts):
    with pytest.raises(ValueError):
        R.reference_forward(ckpts["d2v2_audio_ctc"], R.example_inputs("d2v2_audio_ctc"), weights="ema")


def _alone(inputs, i):
    n = int(inputs["lengths"][i])
    out = {}
    for k, v in inputs.items():
        if k == "lengths":
            out[k] = v[i:i + 1]
        else:
            out[k] = v[i:i + 1, :n]
    return out


def _check_padding_invariance(ck, inp, names=("last_hidden_state", "logits")):
    full = R.reference_forward(ck, inp)
    worst = 0.0
    for i in range(inp["padding_mask"].shape[0]):
        single = R.reference_forward(ck, _alone(inp, i))
        n = single["last_hidden_state"].shape[1]
        assert full["padding_mask"][i, n:].all() and not full["padding_mask"][i, :n].any()
        for name in names:
            if name in full:
                worst = max(worst, (full[name][i, :n] - single[name][0]).abs().max().item())
    return worst


@pytest.mark.parametrize("kind", ("d2v1_text", "d2v2_text"))
def test_text_padding_invariance(kind, ckpts):
    """outputs at the real tokens of a right-padded sequence equal those of the sequence run alone"""
    inp = R.example_inputs(kind, batch=3)
    assert inp["padding_mask"].any()
    assert _check_padding_invariance(ckpts[kind], inp) < 1e-5


def test_wav2vec2_style_single_conv_positions_are_padding_invariant():
    """data2vec 1.0 audio with pos_conv_depth=1 (wav2vec 2.0's weight-normed conv, weight_g / weight_v): padded
    frames are zeroed before the one positional conv, so padding changes nothing at the real frames"""
    ck = R.fake_checkpoint("d2v1_audio")
    mc = dict(ck["cfg"]["model"], pos_conv_depth=1, conv_pos=6)
    s = R._SD(5)
    R._d2v1_audio_state(s, mc)
    assert "encoder.pos_conv.0.weight_g" in s.sd and s.sd["encoder.pos_conv.0.weight_g"].shape == (1, 1, 6)
    ck = dict(ck, cfg=dict(ck["cfg"], model=mc), model=s.sd)
    assert _check_padding_invariance(ck, R.example_inputs("d2v1_audio", batch=3)) < 1e-5


@pytest.mark.parametrize("kind", ("d2v1_audio", "d2v1_audio_ctc", "d2v2_audio", "d2v2_audio_ctc"))
def test_audio_padding_reaches_the_multi_layer_conv_positions(kind, ckpts):
    """padding is *not* invisible to the released audio models: data2vec 1.0 zeroes padded frames only before
    the first of its pos_conv_depth (5) conv layers (TransformerEncoder.extract_features), so the LayerNorm +
    GELU outputs at padded frames feed the next conv layer; data2vec 2.0's AudioEncoder does not zero them at
    all.  A padded sample's outputs therefore differ from the sample run alone; the reference keeps that (and
    transformers' Data2VecAudioModel agrees for 1.0, see the cross-check with padding below)."""
    inp = R.example_inputs(kind, batch=2)
    assert _check_padding_invariance(ckpts[kind], inp) > 1e-3
    lengths = R.conv_output_lengths(inp["lengths"], R.AUDIO_SPEC)
    assert lengths.tolist() == [19, 17]


def test_sincos_positions_closed_form(ckpts):
    side, d = R.IMG // R.PATCH, R.D
    emb = torch.from_numpy(R.get_2d_sincos_pos_embed(d, side)).float()
    q = d // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float64) / q)
    for r in range(side):
        for c in range(side):
            row = emb[r * side + c].double()
            # first half encodes the column (np.meshgrid(grid_w, grid_h)), second half the row
            expect = torch.cat([torch.sin(c * omega), torch.cos(c * omega), torch.sin(r * omega), torch.cos(r * omega)])
            torch.testing.assert_close(row, expect, atol=1e-6, rtol=0)
    stored = ckpts["d2v2_vision"]["model"]["modality_encoders.IMAGE.fixed_positional_encoder.positions"]
    assert stored.shape == (1, side * side, d) and stored.dtype == torch.float16
    assert (stored[0].float() - emb).abs().max() < 1e-3   # fp16 rounding of the fp32 table
    assert not torch.equal(stored[0].float(), emb)        # ... which is not nothing: read it, do not recompute


def test_alibi_slopes_and_bias():
    bias = R.get_alibi(5, 8)
    slopes = torch.tensor([2 ** -(i + 1) for i in range(8)])   # ALiBi: 2^(-8/n * (i+1)) for n = 8
    torch.testing.assert_close(bias[:, 0, 3], -3 * slopes)
    torch.testing.assert_close(bias, bias.transpose(1, 2))
    s6 = R.get_alibi(2, 6)[:, 0, 1]    # non power of two: 4 slopes of n=4, then every other one of n=8
    torch.testing.assert_close(-s6, torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]))
    b2 = R.get_alibi(9, 1, dims=2)[0]  # 3x3 grid, manhattan
    assert math.isclose(b2[0, 8].item(), -4 * 2 ** -8) and math.isclose(b2[1, 5].item(), -2 * 2 ** -8)


def test_beit_relative_position_index_matches_transformers():
    cfg = transformers.Data2VecVisionConfig(hidden_size=R.D, num_hidden_layers=1, num_attention_heads=R.HEADS,
                                            intermediate_size=R.FFN, image_size=R.IMG, patch_size=R.PATCH,
                                            use_shared_relative_position_bias=True)
    m = transformers.Data2VecVisionModel(cfg, add_pooling_layer=False)
    rpb = m.encoder.relative_position_bias
    side = R.IMG // R.PATCH
    hf_index = rpb.generate_relative_position_index((side, side)) if hasattr(rpb, "generate_relative_position_index") \
        else rpb.relative_position_index
    assert torch.equal(hf_index.long(), R.beit_relative_position_index(side).long())


def test_cfg_structure(ckpts):
    for kind in R.KINDS:
        ck = ckpts[kind]
        if kind == "beit_vision":
            assert isinstance(ck["args"], type(R._beit_args())) and ck["epoch"] == 799
            assert set(ck) == {"model", "optimizer", "epoch", "scaler", "args", "model_ema"}
            continue
        assert set(ck) == {"args", "cfg", "model", "criterion", "optimizer_history", "task_state", "extra_state",
                           "last_optimizer_state"}
        assert ck["args"] is None
        cfg = ck["cfg"]
        assert list(cfg)[:3] == ["_name", "common", "common_eval"] and cfg["common"]["fp16"] is True

        def no_interp(d):
            for v in (d.values() if isinstance(d, dict) else d if isinstance(d, list) else []):
                assert not (isinstance(v, str) and v.startswith("${")), v
                no_interp(v)
        no_interp(cfg)
    assert ckpts["d2v2_audio"]["cfg"]["model"]["modalities"]["audio"]["model_depth"] == 2
    assert ckpts["d2v2_audio"]["cfg"]["model"]["modalities"]["audio"]["type"] == "AUDIO"
    w2v = ckpts["d2v2_audio_ctc"]["cfg"]["model"]["w2v_args"]
    assert w2v["model"]["_name"] == "data2vec_multi" and w2v["criterion"] is None and w2v["lr_scheduler"] is None
    assert ckpts["d2v2_vision_ft"]["cfg"]["model"]["pretrained_model_args"]["model"]["drop_path_rate"] == 0.1
    assert ckpts["d2v2_vision_ft"]["cfg"]["model"]["prediction_mode"] == "MEAN_POOLING"


def _f(sd):
    return {k: v.float() for k, v in sd.items() if torch.is_tensor(v)}


def _load(model, mapped):
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if "relative_position_index" not in k]
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def _split_qkv(w, b, names, dst, prefix):
    C = w.shape[1]
    for j, n in enumerate(names):
        dst[f"{prefix}.{n}.weight"] = w[j * C:(j + 1) * C]
        if b is not None:
            dst[f"{prefix}.{n}.bias"] = b[j * C:(j + 1) * C]


def _alt_to_bert(sd, src, dst, hf):
    """AltBlock (post-LN) -> Data2VecTextLayer (BERT post-LN)"""
    _split_qkv(sd[src + ".attn.qkv.weight"], sd[src + ".attn.qkv.bias"], ("query", "key", "value"), dst,
               hf + ".attention.self")
    for a, b in ((".attn.proj", ".attention.output.dense"), (".norm1", ".attention.output.LayerNorm"),
                 (".mlp.fc1", ".intermediate.dense"), (".mlp.fc2", ".output.dense"), (".norm2", ".output.LayerNorm")):
        dst[hf + b + ".weight"], dst[hf + b + ".bias"] = sd[src + a + ".weight"], sd[src + a + ".bias"]


def _alt_to_w2v(sd, src, dst, hf):
    """AltBlock (post-LN) -> Data2VecAudioEncoderLayer (post-LN)"""
    _split_qkv(sd[src + ".attn.qkv.weight"], sd[src + ".attn.qkv.bias"], ("q_proj", "k_proj", "v_proj"), dst,
               hf + ".attention")
    for a, b in ((".attn.proj", ".attention.out_proj"), (".norm1", ".layer_norm"),
                 (".mlp.fc1", ".feed_forward.intermediate_dense"), (".mlp.fc2", ".feed_forward.output_dense"),
                 (".norm2", ".final_layer_norm")):
        dst[hf + b + ".weight"], dst[hf + b + ".bias"] = sd[src + a + ".weight"], sd[src + a + ".bias"]


def _fairseq_w2v_layer_to_hf(sd, src, dst, hf):
    """fairseq TransformerSentenceEncoderLayer -> Data2VecAudioEncoderLayer (the MAPPING of transformers'
    convert_data2vec_audio_original_pytorch_checkpoint_to_pytorch.py)"""
    for a, b in (("self_attn.k_proj", "attention.k_proj"), ("self_attn.v_proj", "attention.v_proj"),
                 ("self_attn.q_proj", "attention.q_proj"), ("self_attn.out_proj", "attention.out_proj"),
                 ("self_attn_layer_norm", "layer_norm"), ("fc1", "feed_forward.intermediate_dense"),
                 ("fc2", "feed_forward.output_dense"), ("final_layer_norm", "final_layer_norm")):
        for w in ("weight", "bias"):
            dst[f"{hf}.{b}.{w}"] = sd[f"{src}.{a}.{w}"]


def _audio_front_to_hf(sd, p_conv, n_conv, dst):
    for i in range(n_conv):
        dst[f"feature_extractor.conv_layers.{i}.conv.weight"] = sd[f"{p_conv}.conv_layers.{i}.0.weight"]
        dst[f"feature_extractor.conv_layers.{i}.layer_norm.weight"] = sd[f"{p_conv}.conv_layers.{i}.2.1.weight"]
        dst[f"feature_extractor.conv_layers.{i}.layer_norm.bias"] = sd[f"{p_conv}.conv_layers.{i}.2.1.bias"]


def _hf_audio(layers, kernel, ctc_vocab=None):
    cfg = transformers.Data2VecAudioConfig(
        hidden_size=R.D, num_hidden_layers=layers, num_attention_heads=R.HEADS, intermediate_size=R.FFN,
        conv_dim=(32, 32, 32), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), conv_bias=False,
        num_conv_pos_embeddings=2, conv_pos_kernel_size=kernel, num_conv_pos_embedding_groups=4,
        layer_norm_eps=1e-5, hidden_act="gelu", feat_extract_activation="gelu", vocab_size=ctc_vocab or 32)
    return transformers.Data2VecAudioForCTC(cfg) if ctc_vocab else transformers.Data2VecAudioModel(cfg)


def _report(name, diff):
    print(f"[transformers cross-check] {name}: max |diff| = {diff:.2e}")
    assert diff < 1e-4, (name, diff)


@pytest.mark.parametrize("ctc", (False, True))
def test_d2v1_audio_matches_transformers_data2vec_audio(ctc, ckpts):
    kind = "d2v1_audio_ctc" if ctc else "d2v1_audio"
    ck = ckpts[kind]
    sd = _f(ck["model"])
    p = "w2v_encoder.w2v_model." if ctc else ""
    m = {}
    _audio_front_to_hf(sd, p + "feature_extractor", 3, m)
    m["feature_projection.layer_norm.weight"], m["feature_projection.layer_norm.bias"] = \
        sd[p + "layer_norm.weight"], sd[p + "layer_norm.bias"]
    m["feature_projection.projection.weight"], m["feature_projection.projection.bias"] = \
        sd[p + "post_extract_proj.weight"], sd[p + "post_extract_proj.bias"]
    for i in range(2):
        for w in ("weight", "bias"):
            m[f"encoder.pos_conv_embed.layers.{i}.conv.{w}"] = sd[f"{p}encoder.pos_conv.{i}.0.{w}"]
        _fairseq_w2v_layer_to_hf(sd, f"{p}encoder.layers.{i}", m, f"encoder.layers.{i}")
    m["encoder.layer_norm.weight"], m["encoder.layer_norm.bias"] = sd[p + "encoder.layer_norm.weight"], \
        sd[p + "encoder.layer_norm.bias"]
    m["masked_spec_embed"] = sd[p + "mask_emb"]
    hf = _hf_audio(2, 6, R.LTR_VOCAB if ctc else None)
    if ctc:
        m = {"data2vec_audio." + k: v for k, v in m.items()}
        m["lm_head.weight"], m["lm_head.bias"] = sd["w2v_encoder.proj.weight"], sd["w2v_encoder.proj.bias"]
    _load(hf, m)
    inp = R.example_inputs(kind, batch=3)
    ref = R.reference_forward(ck, inp)
    with torch.no_grad():
        out = hf(inp["input_values"], attention_mask=inp["attention_mask"])
    if ctc:
        _report("d2v1_audio_ctc logits vs Data2VecAudioForCTC", (out.logits - ref["logits"]).abs().max().item())
    else:
        _report("d2v1_audio vs Data2VecAudioModel", (out.last_hidden_state - ref["last_hidden_state"]).abs().max().item())


def _hf_text(layers, eps, vocab, max_pos):
    cfg = transformers.Data2VecTextConfig(hidden_size=R.D, num_hidden_layers=layers, num_attention_heads=R.HEADS,
                                          intermediate_size=R.FFN, vocab_size=vocab, max_position_embeddings=max_pos,
                                          type_vocab_size=1, layer_norm_eps=eps, hidden_act="gelu", pad_token_id=R.PAD)
    return transformers.Data2VecTextModel(cfg, add_pooling_layer=False)


def test_d2v1_text_matches_transformers_data2vec_text(ckpts):
    ck = ckpts["d2v1_text"]
    sd = _f(ck["model"])
    p = "encoder.sentence_encoder."
    m = {"embeddings.word_embeddings.weight": sd[p + "embed_tokens.weight"],
         "embeddings.position_embeddings.weight": sd[p + "embed_positions.weight"],
         "embeddings.token_type_embeddings.weight": torch.zeros(1, R.D),
         "embeddings.LayerNorm.weight": sd[p + "layernorm_embedding.weight"],
         "embeddings.LayerNorm.bias": sd[p + "layernorm_embedding.bias"]}
    for i in range(2):
        s, h = f"{p}layers.{i}", f"encoder.layer.{i}"
        for a, b in (("self_attn.q_proj", "attention.self.query"), ("self_attn.k_proj", "attention.self.key"),
                     ("self_attn.v_proj", "attention.self.value"), ("self_attn.out_proj", "attention.output.dense"),
                     ("self_attn_layer_norm", "attention.output.LayerNorm"), ("fc1", "intermediate.dense"),
                     ("fc2", "output.dense"), ("final_layer_norm", "output.LayerNorm")):
            for w in ("weight", "bias"):
                m[f"{h}.{b}.{w}"] = sd[f"{s}.{a}.{w}"]
    hf = _load(_hf_text(2, 1e-5, R.TEXT_VOCAB, R.TEXT_MAX_POS + 2), m)
    inp = R.example_inputs("d2v1_text", batch=3)
    ref = R.reference_forward(ck, inp)
    with torch.no_grad():
        out = hf(inp["input_ids"], attention_mask=inp["attention_mask"]).last_hidden_state
    real = inp["attention_mask"].bool()   # fairseq zeroes padded embeddings, transformers does not
    _report("d2v1_text vs Data2VecTextModel (real tokens)", (out - ref["last_hidden_state"])[real].abs().max().item())


def test_beit_vision_matches_transformers_data2vec_vision(ckpts):
    ck = ckpts["beit_vision"]
    sd = _f(ck["model"])
    cfg = transformers.Data2VecVisionConfig(
        hidden_size=R.D, num_hidden_layers=2, num_attention_heads=R.HEADS, intermediate_size=R.FFN, image_size=R.IMG,
        patch_size=R.PATCH, use_shared_relative_position_bias=True, use_relative_position_bias=False,
        use_absolute_position_embeddings=False, use_mask_token=True, layer_norm_eps=1e-6, layer_scale_init_value=0.1,
        use_mean_pooling=False, hidden_act="gelu")
    hf = transformers.Data2VecVisionModel(cfg, add_pooling_layer=False)
    # create_rename_keys / read_in_q_k_v of transformers' convert_data2vec_vision_original_pytorch_checkpoint_to_pytorch.py
    m = {"embeddings.cls_token": sd["cls_token"], "embeddings.mask_token": sd["mask_token"],
         "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
         "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
         "encoder.relative_position_bias.relative_position_bias_table": sd["rel_pos_bias.relative_position_bias_table"],
         "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"]}
    if "encoder.relative_position_bias.relative_position_index" in hf.state_dict():
        m["encoder.relative_position_bias.relative_position_index"] = ck["model"]["rel_pos_bias.relative_position_index"]
    for i in range(2):
        s, h = f"blocks.{i}", f"encoder.layer.{i}"
        for a, b in (("norm1", "layernorm_before"), ("attn.proj", "attention.output.dense"), ("norm2", "layernorm_after"),
                     ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")):
            for w in ("weight", "bias"):
                m[f"{h}.{b}.{w}"] = sd[f"{s}.{a}.{w}"]
        _split_qkv(sd[s + ".attn.qkv.weight"], None, ("query", "key", "value"), m, h + ".attention.attention")
        m[h + ".attention.attention.query.bias"] = sd[s + ".attn.q_bias"]
        m[h + ".attention.attention.value.bias"] = sd[s + ".attn.v_bias"]
        m[h + ".lambda_1"], m[h + ".lambda_2"] = sd[s + ".gamma_1"], sd[s + ".gamma_2"]
    _load(hf, m)
    inp = R.example_inputs("beit_vision")
    with torch.no_grad():
        out = hf(inp["pixel_values"]).last_hidden_state
    _report("beit_vision vs Data2VecVisionModel", (out - R.reference_forward(ck, inp)["last_hidden_state"]).abs().max().item())


def test_d2v2_text_matches_a_post_ln_bert(ckpts):
    """d2v2 text = token + learned positions (padding_idx offset) -> layernorm_embedding -> post-LN AltBlocks with
    key padding: the same computation as transformers' Data2VecTextModel at the real tokens"""
    ck = ckpts["d2v2_text"]
    sd = _f(ck["model"])
    p = "modality_encoders.TEXT.local_encoder."
    m = {"embeddings.word_embeddings.weight": sd[p + "embed_tokens.weight"],
         "embeddings.position_embeddings.weight": sd[p + "embed_positions.weight"],
         "embeddings.token_type_embeddings.weight": torch.zeros(1, R.D),
         "embeddings.LayerNorm.weight": sd[p + "layernorm_embedding.weight"],
         "embeddings.LayerNorm.bias": sd[p + "layernorm_embedding.bias"]}
    for i in range(2):
        _alt_to_bert(sd, f"blocks.{i}", m, f"encoder.layer.{i}")
    hf = _load(_hf_text(2, 1e-5, R.TEXT_VOCAB, R.TEXT_MAX_POS + 2), m)
    inp = R.example_inputs("d2v2_text", batch=3)
    ref = R.reference_forward(ck, inp)
    with torch.no_grad():
        out = hf(inp["input_ids"], attention_mask=inp["attention_mask"]).last_hidden_state
    real = inp["attention_mask"].bool()
    _report("d2v2_text vs Data2VecTextModel (real tokens)", (out - ref["last_hidden_state"])[real].abs().max().item())


def test_d2v2_vision_matches_a_post_ln_bert_on_patch_embeddings(ckpts):
    """[CLS; patches + sin-cos positions] -> context_encoder.norm -> prenet + main AltBlocks = Data2VecTextModel
    fed inputs_embeds (zero position / token type tables, its embedding LayerNorm = context_encoder.norm)"""
    ck = ckpts["d2v2_vision"]
    sd = _f(ck["model"])
    p = "modality_encoders.IMAGE."
    T = (R.IMG // R.PATCH) ** 2 + 1
    m = {"embeddings.word_embeddings.weight": torch.zeros(4, R.D),
         "embeddings.position_embeddings.weight": torch.zeros(T + 2, R.D),
         "embeddings.token_type_embeddings.weight": torch.zeros(1, R.D),
         "embeddings.LayerNorm.weight": sd[p + "context_encoder.norm.weight"],
         "embeddings.LayerNorm.bias": sd[p + "context_encoder.norm.bias"]}
    _alt_to_bert(sd, p + "context_encoder.blocks.0", m, "encoder.layer.0")
    for i in range(2):
        _alt_to_bert(sd, f"blocks.{i}", m, f"encoder.layer.{i + 1}")
    hf = _load(_hf_text(3, 1e-6, 4, T + 2), m)
    img = R.example_inputs("d2v2_vision")["pixel_values"]
    x = torch.nn.functional.conv2d(img, sd[p + "local_encoder.proj.weight"], sd[p + "local_encoder.proj.bias"],
                                   stride=R.PATCH).flatten(2).transpose(1, 2)
    x = x + sd[p + "fixed_positional_encoder.positions"]
    x = torch.cat([sd[p + "extra_tokens"].expand(x.shape[0], -1, -1), x], 1)
    with torch.no_grad():
        out = hf(inputs_embeds=x).last_hidden_state
    ref = R.reference_forward(ck, {"pixel_values": img})
    _report("d2v2_vision vs Data2VecTextModel(inputs_embeds)", (out - ref["last_hidden_state"]).abs().max().item())
    # and the classification fine-tune's head: mean over patch tokens, fc_norm, head
    ft = ckpts["d2v2_vision_ft"]
    r = R.reference_forward(ft, {"pixel_values": img})
    fsd = _f(ft["model"])
    pooled = torch.nn.functional.layer_norm(r["features"].mean(1), (R.D,), fsd["fc_norm.weight"], fsd["fc_norm.bias"], 1e-6)
    torch.testing.assert_close(r["logits"], pooled @ fsd["head.weight"].T + fsd["head.bias"])


def test_d2v2_audio_matches_transformers_data2vec_audio_without_alibi(ckpts):
    """with the ALiBi scales at 0 (fairseq clamps them at 0) and no padding, d2v2 audio = conv features ->
    project_features (LN + Linear) -> x + conv positions (LN without affine) -> context_encoder.norm -> prenet +
    main post-LN blocks: transformers' Data2VecAudioModel"""
    ck = ckpts["d2v2_audio"]
    sd = _f(ck["model"])
    p = "modality_encoders.AUDIO."
    sd[p + "alibi_scale"] = -sd[p + "alibi_scale"].abs()   # clamp_min(0) -> 0
    m = {}
    _audio_front_to_hf(sd, p + "local_encoder", 3, m)
    m["feature_projection.layer_norm.weight"], m["feature_projection.layer_norm.bias"] = \
        sd[p + "project_features.1.weight"], sd[p + "project_features.1.bias"]
    m["feature_projection.projection.weight"], m["feature_projection.projection.bias"] = \
        sd[p + "project_features.2.weight"], sd[p + "project_features.2.bias"]
    for i in range(2):
        for w in ("weight", "bias"):
            m[f"encoder.pos_conv_embed.layers.{i}.conv.{w}"] = sd[f"{p}relative_positional_encoder.{i + 1}.0.{w}"]
    m["encoder.layer_norm.weight"], m["encoder.layer_norm.bias"] = sd[p + "context_encoder.norm.weight"], \
        sd[p + "context_encoder.norm.bias"]
    _alt_to_w2v(sd, p + "context_encoder.blocks.0", m, "encoder.layers.0")
    for i in range(2):
        _alt_to_w2v(sd, f"blocks.{i}", m, f"encoder.layers.{i + 1}")
    m["masked_spec_embed"] = torch.zeros(R.D)
    hf = _load(_hf_audio(3, 5), m)
    wav = R.example_inputs("d2v2_audio")["input_values"][:, :]
    wav[1] = torch.randn(wav.shape[1], generator=torch.Generator().manual_seed(3))   # no padding
    ck2 = dict(ck, model={**ck["model"], p + "alibi_scale": sd[p + "alibi_scale"].half()})
    ref = R.reference_forward(ck2, {"input_values": wav})
    with torch.no_grad():
        out = hf(wav).last_hidden_state
    _report("d2v2_audio (alibi off) vs Data2VecAudioModel", (out - ref["last_hidden_state"]).abs().max().item())
    # and ALiBi does matter with the checkpoint's scales
    assert (R.reference_forward(ck, {"input_values": wav})["last_hidden_state"] - ref["last_hidden_state"]).abs().max() > 1e-3


def test_old_4d_alibi_scale_is_the_same_model(ckpts):
    """ModalitySpecificEncoder.upgrade_state_dict_named unsqueezes a 4-D alibi_scale (1, H, 1, 1) of older
    checkpoints to (1, 1, H, 1, 1)"""
    ck = ckpts["d2v2_audio"]
    key = "modality_encoders.AUDIO.alibi_scale"
    old = dict(ck, model={**ck["model"], key: ck["model"][key].squeeze(0)})
    assert old["model"][key].dim() == 4
    inp = R.example_inputs("d2v2_audio")
    assert torch.equal(R.reference_forward(old, inp)["last_hidden_state"],
                       R.reference_forward(ck, inp)["last_hidden_state"])
