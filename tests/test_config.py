"""Data2VecConfig: per-modality data2vec base defaults, one field per choice, validation that names the fix."""

import pytest
from transformers import AutoConfig

import modeling_data2vec_unified as d2v


def test_modality_defaults_are_data2vec_base():
    audio = d2v.Data2VecConfig(modality="audio")
    assert (audio.hidden_size, audio.num_hidden_layers, audio.layer_norm_position) == (768, 12, "post")
    assert audio.conv_stride == [5, 2, 2, 2, 2, 2, 2] and audio.conv_kernel == [10, 3, 3, 3, 3, 2, 2]
    assert (audio.num_conv_pos_embeddings, audio.conv_pos_kernel_size) == (5, 19)  # pos_conv_depth 5, conv_pos 95
    assert audio.receptive_field == 400 and audio.inputs_to_logits_ratio == 320
    assert (audio.average_top_k_layers, audio.target_layer_norm, audio.loss_beta) == (8, "instance", 0.0)
    assert (audio.mask_prob, audio.mask_length, audio.teacher_scope) == (0.65, 10, "encoder")
    assert (audio.ema_decay, audio.ema_end_decay, audio.ema_anneal_end_step) == (0.999, 0.9999, 30000)
    assert audio.target_loss_scale == pytest.approx(768**-0.5)

    text = d2v.Data2VecConfig(modality="text")
    assert (text.vocab_size, text.pad_token_id, text.mask_token_id, text.max_position_embeddings) == (
        50265, 1, 50264, 514)
    assert (text.average_top_k_layers, text.target_layer_norm, text.loss_beta, text.target_loss_scale) == (
        10, "layer", 4.0, 1.0)
    assert (text.head_layers, text.mask_prob, text.mask_length) == (2, 0.35, 4)

    vision = d2v.Data2VecConfig(modality="vision")
    assert (vision.layer_norm_position, vision.layer_scale_init_value, vision.relative_position_bias) == (
        "pre", 0.1, "shared")
    assert (vision.average_top_k_layers, vision.target_layer_output, vision.target_final_norm) == (6, "block", "layer")
    assert (vision.loss_beta, vision.head_layers, vision.ema_decay) == (2.0, 1, 0.9998)
    assert round(vision.mask_prob * 196) == 120  # data2vec masks 120 of 196 patches at 224/16
    assert vision.patch_grid == (14, 14)


def test_overrides_and_round_trip(tmp_path):
    cfg = d2v.Data2VecConfig(modality="audio", num_hidden_layers=4, average_top_k_layers=3, loss_beta=0.25)
    cfg.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, d2v.Data2VecConfig)
    assert loaded.modality == "audio" and loaded.num_hidden_layers == 4 and loaded.loss_beta == 0.25
    ignore = {"_name_or_path", "transformers_version"}
    assert {k: v for k, v in loaded.to_dict().items() if k not in ignore} == {
        k: v for k, v in cfg.to_dict().items() if k not in ignore
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(modality="speech"), "modality must be one of"),
        (dict(modality="audio", conv_dim=[8, 8]), "one entry per conv layer"),
        (dict(modality="text", layer_norm_position="middle"), "layer_norm_position must be one of"),
        (dict(modality="vision", target_layer_norm="batch"), "target_layer_norm must be one of"),
        (dict(modality="vision", hidden_size=30, num_attention_heads=4), "multiple of num_attention_heads"),
        (dict(modality="vision", image_size=30, patch_size=16), "multiple of patch_size"),
        (dict(modality="text", num_hidden_layers=4), "average_top_k_layers must be in"),
        (dict(modality="text", head_layers=3), "head_layers must be 1 or 2"),
    ],
)
def test_invalid_configs_name_the_fix(kwargs, message):
    with pytest.raises(Exception, match=message):
        d2v.Data2VecConfig(**kwargs)
