"""The three models on one encoder: outputs, Auto classes, save/load round trip, gradient checkpointing,
FFN outputs, and encoding a subset of positions (what data2vec 2.0's student will do)."""

import modeling_data2vec_unified as d2v
import pytest
import torch
from modeling_data2vec_unified.conversion import example_inputs
from transformers import AutoModel

from conftest import tiny_config


def _model(modality, **overrides):
    torch.manual_seed(0)
    return d2v.Data2VecModel(tiny_config(modality, **overrides)).eval()


def test_forward_shapes_and_names(modality):
    model = _model(modality)
    assert type(model) is d2v.MODEL_CLASSES[modality]
    out = model(**example_inputs(model.config), output_hidden_states=True, output_ffn_outputs=True)
    B, T, D = out.last_hidden_state.shape
    assert D == 32 and B == 2
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert len(out.ffn_outputs) == model.config.num_hidden_layers
    assert all(h.shape == (B, T, D) for h in out.hidden_states + out.ffn_outputs)
    if modality == "audio":  # 520 samples through kernels (10, 3, 3), strides (5, 2, 2): 103 -> 51 -> 25 frames
        assert T == 25
    else:
        assert T == {"text": 16, "vision": 1 + (32 // 8) ** 2}[modality]
    assert (out.pooler_output is not None) == (modality == "text")
    assert (out.extract_features is not None) == (modality == "audio")
    as_tuple = model(**example_inputs(model.config), return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.last_hidden_state)


def test_save_load_round_trip_with_auto_model(modality, tmp_path):
    model = _model(modality)
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    inputs = example_inputs(model.config)
    with torch.no_grad():
        a, b = model(**inputs, output_hidden_states=True), loaded.eval()(**inputs, output_hidden_states=True)
    for x, y in zip((a.last_hidden_state, *a.hidden_states), (b.last_hidden_state, *b.hidden_states)):
        assert torch.equal(x, y)
    # the generic class dispatches too, from a config or a folder
    assert type(AutoModel.from_config(model.config)) is type(model)
    assert type(d2v.Data2VecModel.from_pretrained(tmp_path)) is type(model)


def test_other_modality_checkpoint_is_refused(tmp_path):
    _model("vision").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is a vision checkpoint.*Data2VecVisionModel"):
        d2v.Data2VecAudioModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="config.modality is 'text'.*Data2VecTextModel"):
        d2v.Data2VecAudioModel(tiny_config("text"))


def test_gradient_checkpointing_gives_the_same_gradients(modality):
    torch.manual_seed(0)
    audio = dict(feat_proj_dropout=0.0) if modality == "audio" else {}
    model = d2v.Data2VecModel(tiny_config(modality, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                          layerdrop=0.0, drop_path_rate=0.0, **audio)).train()
    inputs = example_inputs(model.config)

    def grads():
        model.zero_grad()
        model(**inputs).last_hidden_state.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.activation_checkpointing_enable()  # transformers 5 name of gradient_checkpointing_enable
    assert all(layer.gradient_checkpointing for layer in model.encoder.layers)
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], rtol=1e-4, atol=1e-6, msg=name)


def test_ffn_outputs_are_fc2_outputs_before_residual(modality):
    """Recorded independently with forward hooks on each layer's second FFN projection."""
    model = _model(modality)
    captured = []
    hooks = [layer.fc2.register_forward_hook(lambda m, i, o: captured.append(o)) for layer in model.encoder.layers]
    out = model(**example_inputs(model.config), output_hidden_states=True, output_ffn_outputs=True)
    for h in hooks:
        h.remove()
    assert len(captured) == len(out.ffn_outputs)
    for recorded, returned in zip(captured, out.ffn_outputs):
        assert torch.equal(recorded, returned)
    if model.config.layer_norm_position == "post":  # block output = LN2(LN1-output + FFN output)
        layer = model.encoder.layers[0]
        h = layer.norm1(out.hidden_states[0] + layer.attention(out.hidden_states[0], _padding_bias(model)))
        torch.testing.assert_close(layer.norm2(h + out.ffn_outputs[0]), out.hidden_states[1])


def _padding_bias(model):
    inputs = example_inputs(model.config)
    if model.config.modality == "text":
        mask = inputs["attention_mask"]
    elif model.config.modality == "audio":
        frames = model.config.num_audio_frames(inputs["input_values"].shape[1])
        mask = model.embeddings.frame_attention_mask(inputs["attention_mask"], frames)
    else:
        return None
    return d2v.modeling_data2vec.padding_to_attn_bias(mask, torch.float32)


def test_text_padding_content_does_not_leak():
    model = _model("text")
    inputs = example_inputs(model.config)
    other = {k: v.clone() for k, v in inputs.items()}
    other["input_ids"][-1, -5:] = 7  # change what sits under the padding mask
    with torch.no_grad():
        a, b = model(**inputs).last_hidden_state, model(**other).last_hidden_state
    torch.testing.assert_close(a[-1, :-5], b[-1, :-5])
    assert not torch.allclose(a[-1, -5:], b[-1, -5:])


@pytest.mark.parametrize("bias", ["shared", "per_layer", "none"])
def test_encoder_runs_on_a_subset_of_positions(bias):
    """Encoding only the kept tokens (with their original positions) equals encoding every token while
    hiding the dropped ones from attention: the data2vec 2.0 student's visible-token path."""
    torch.manual_seed(0)
    model = d2v.Data2VecModel(tiny_config("vision", relative_position_bias=bias)).eval()
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, d2v.modeling_data2vec.Data2VecRelativePositionBias):
                layer.table.normal_()  # a bias that matters
        front = model.embeddings(example_inputs(model.config)["pixel_values"])
        B, T, _ = front.hidden_states.shape
        keep = torch.stack([torch.cat([torch.zeros(1), 1 + torch.randperm(T - 1)[:6].sort().values]) for _ in range(B)])
        keep = keep.long()  # (B, 7): CLS + 6 patches, different per sample
        visible = torch.gather(front.hidden_states, 1, keep[..., None].expand(-1, -1, 32))
        subset = model.encoder(visible, grid=front.grid, position_index=keep).last_hidden_state
        kept_mask = torch.zeros(B, T, dtype=torch.bool).scatter_(1, keep, True)
        full = model.encoder(front.hidden_states, attention_mask=kept_mask, grid=front.grid).last_hidden_state
    torch.testing.assert_close(subset, torch.gather(full, 1, keep[..., None].expand(-1, -1, 32)), rtol=1e-5, atol=1e-5)


def test_vision_other_resolution_interpolates_positions():
    model = _model("vision", use_absolute_position_embeddings=True, relative_position_bias="per_layer")
    out = model(pixel_values=torch.randn(1, 3, 48, 48))
    assert out.last_hidden_state.shape == (1, 1 + 36, 32) and torch.isfinite(out.last_hidden_state).all()


def test_a_text_pretraining_run_loads_with_automodel_without_a_fresh_pooler(tmp_path):
    """A pretraining checkpoint has no pooler: AutoModel gives the text model without one (no LOAD REPORT of missing
    weights, no random pooler); a checkpoint that has one keeps it."""
    from transformers import AutoModel

    d2v.Data2VecForPreTraining(tiny_config("text")).save_pretrained(tmp_path / "run")
    model, info = AutoModel.from_pretrained(tmp_path / "run", output_loading_info=True)
    assert model.pooler is None and not info["missing_keys"] and not info["unexpected_keys"]
    d2v.Data2VecTextModel(tiny_config("text")).save_pretrained(tmp_path / "with_pooler")
    model, info = AutoModel.from_pretrained(tmp_path / "with_pooler", output_loading_info=True)
    assert model.pooler is not None and not info["missing_keys"]


@pytest.mark.slow
def test_importing_the_package_leaves_data_finetuning_and_metrics_for_later():
    """`import modeling_data2vec_unified` (what makes AutoModel know the type) does not import datasets, evaluate or
    the trainers; they load on first use (measured: 5.1 s -> 4.0 s here)."""
    import subprocess
    import sys

    code = ("import sys, modeling_data2vec_unified as d; "
            "print(sorted(m for m in ('datasets', 'evaluate', 'modeling_data2vec_unified.data', "
            "'modeling_data2vec_unified.finetuning', 'modeling_data2vec_unified.trainer') if m in sys.modules)); "
            "d.load_pretraining_data; d.Data2VecTrainer; d.metrics; print('modeling_data2vec_unified.data' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True"


def test_feature_grad_mult_scales_only_the_conv_gradient():
    """fairseq's feature_grad_mult: the conv feature encoder's gradient times the factor, everything after it and
    the forward unchanged; 0 leaves the conv layers without gradients; eval mode is untouched."""
    model = _model("audio")
    x = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    conv = dict(model.embeddings.feature_extractor.named_parameters())

    def grads(mult):
        model.config.feature_grad_mult = mult
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout draws for each factor
        out = model(x).last_hidden_state
        out.square().sum().backward()
        return out.detach(), {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}

    model.train()
    out1, g1 = grads(1.0)
    out01, g01 = grads(0.1)
    out0, g0 = grads(0.0)
    torch.testing.assert_close(out01, out1)
    torch.testing.assert_close(out0, out1)
    for name, grad in g1.items():
        short = name.removeprefix("embeddings.feature_extractor.")
        if short in conv:
            torch.testing.assert_close(g01[name], 0.1 * grad, rtol=1e-4, atol=1e-12)
            assert g0[name] is None and grad.abs().max() > 0
        elif grad is not None:
            torch.testing.assert_close(g01[name], grad)
            torch.testing.assert_close(g0[name], grad)
    with pytest.raises(Exception, match=r"feature_grad_mult must be a number in \[0, 1\]; got -0.1"):
        tiny_config("audio", feature_grad_mult=-0.1)


def test_vision_positions_at_another_resolution_match_transformers(tmp_path):
    """At 48x48 with a 32x32 position table, the positions are resampled as transformers' Data2VecVision does with
    interpolate_pos_encoding=True (bicubic, align_corners=False, the CLS position kept): the outputs agree."""
    from conftest import tiny_transformers_model

    theirs = tiny_transformers_model("vision", use_absolute_position_embeddings=True,
                                     use_relative_position_bias=False, use_shared_relative_position_bias=False).eval()
    theirs.save_pretrained(tmp_path)
    ours = d2v.Data2VecVisionModel.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = ours(pixel_values=pixels).last_hidden_state
        b = theirs(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
    assert a.shape == b.shape == (2, 1 + 36, 32)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
