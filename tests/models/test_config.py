"""Data2VecConfig: per-modality data2vec base defaults, one field per choice, validation that names the fix."""

import modeling_data2vec_unified as d2v
import pytest
from transformers import AutoConfig


def test_modality_defaults_are_data2vec_base():
    audio = d2v.Data2VecConfig(modality="audio")
    assert (audio.hidden_size, audio.num_hidden_layers, audio.layer_norm_position) == (768, 12, "post")
    assert audio.conv_stride == [5, 2, 2, 2, 2, 2, 2] and audio.conv_kernel == [10, 3, 3, 3, 3, 2, 2]
    assert (audio.num_conv_pos_embeddings, audio.conv_pos_kernel_size) == (5, 19)  # pos_conv_depth 5, conv_pos 95
    assert audio.receptive_field == 400 and audio.inputs_to_logits_ratio == 320
    assert (audio.average_top_k_layers, audio.target_layer_norm, audio.loss_beta) == (8, "instance", 0.0)
    assert (audio.mask_prob, audio.mask_length) == (0.65, 10)
    # fairseq data2vec_audio.py make_ema_teacher (ema_layers_only): the teacher reads the student's projected features,
    # copies its positional conv, averages the LayerNorm after it and the layers
    assert (audio.teacher_scope, audio.teacher_copies_pos_conv) == ("model_except_feature_encoder", True)
    assert (audio.ema_decay, audio.ema_end_decay, audio.ema_anneal_end_step) == (0.999, 0.9999, 30000)
    assert audio.target_loss_scale == pytest.approx(768**-0.5)

    text = d2v.Data2VecConfig(modality="text")
    assert (text.vocab_size, text.pad_token_id, text.mask_token_id, text.max_position_embeddings) == (
        50265, 1, 50264, 514)
    assert (text.average_top_k_layers, text.target_layer_norm, text.loss_beta, text.target_loss_scale) == (
        10, "layer", 4.0, 1.0)
    assert (text.head_layers, text.mask_prob, text.mask_length) == (2, 0.35, 4)

    assert audio.loss_reduction == text.loss_reduction == "channel_sum"

    # data2vec_vision's ViT-B command (beit/README.md): --layer_scale_init_value 1e-4 --drop_path 0.25
    # --attn_drop_rate 0.05 --l1_beta 2.0 --loss_scale -1 (a smooth L1 averaged over positions and channels)
    vision = d2v.Data2VecConfig(modality="vision")
    assert (vision.layer_norm_position, vision.layer_scale_init_value, vision.relative_position_bias) == (
        "pre", 1e-4, "shared")
    assert (vision.drop_path_rate, vision.attention_probs_dropout_prob, vision.hidden_dropout_prob) == (0.25, 0.05, 0)
    assert (vision.loss_reduction, vision.target_loss_scale) == ("mean", 1.0)
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
        (dict(modality="audio", conv_stride=[5, 0, 2, 2, 2, 2, 2]), r"conv_stride must be positive whole numbers"),
        (dict(modality="audio", conv_kernel=[10, 3, 3, 3, 3, 2, 2.5]), r"conv_kernel must be positive whole numbers"),
        (dict(modality="text", layer_norm_position="middle"), "layer_norm_position must be one of"),
        (dict(modality="vision", target_layer_norm="group"), "target_layer_norm must be one of"),
        (dict(modality="vision", hidden_size=30, num_attention_heads=4), "multiple of num_attention_heads"),
        (dict(modality="vision", image_size=30, patch_size=16), "multiple of patch_size"),
        (dict(modality="text", num_hidden_layers=4, average_top_k_layers=6), "average_top_k_layers must be in"),
        (dict(modality="vision", average_top_k_layers=0), "average_top_k_layers must be in"),
        (dict(modality="audio", loss_reduction="sum"), "loss_reduction must be one of"),
        (dict(modality="text", head_layers=3), "head_layers must be 1 or 2"),
    ],
)
def test_invalid_configs_name_the_fix(kwargs, message):
    with pytest.raises(Exception, match=message):
        d2v.Data2VecConfig(**kwargs)


@pytest.mark.parametrize("modality, layers, k", [
    ("vision", 12, 6), ("vision", 2, 1), ("vision", 3, 2), ("vision", 24, 6), ("vision", 1, 1),
    ("text", 12, 10), ("text", 4, 3), ("text", 2, 2), ("text", 24, 10), ("audio", 12, 8), ("audio", 4, 3),
    ("audio", 1, 1),
])
def test_default_top_k_follows_the_depth(modality, layers, k, tmp_path):
    """An encoder without an explicit average_top_k_layers gets the base K from 12 layers up (data2vec_vision's ViT-L:
    top 6 of 24) and the same share of its layers below (round(K_base * layers / 12), at least 1), so shrinking a
    model needs no pretraining knowledge."""
    audio = dict(num_conv_pos_embedding_groups=4) if modality == "audio" else {}
    config = d2v.Data2VecConfig(modality=modality, num_hidden_layers=layers, hidden_size=32, num_attention_heads=4,
                                intermediate_size=64, **audio)
    assert config.average_top_k_layers == k == d2v.configuration_data2vec.default_top_k(modality, layers)
    config.save_pretrained(tmp_path)  # the derived value is written out and read back as given
    assert AutoConfig.from_pretrained(tmp_path).average_top_k_layers == k


def test_a_two_layer_vision_model_builds_for_fine_tuning_and_pretraining():
    config = d2v.Data2VecConfig(modality="vision", num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                intermediate_size=64, image_size=32, patch_size=8)
    assert config.average_top_k_layers == 1
    model = d2v.Data2VecForPreTraining(config)
    assert len(model.data2vec.encoder.layers) == 2
    assert d2v.Data2VecForImageClassification(config).config.num_hidden_layers == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(mask_prob="abc"), "mask_prob must be a number in \\[0, 1\\]; got 'abc'"),
    (dict(mask_prob=1.5), "mask_prob must be a number in \\[0, 1\\]; got 1.5"),
    (dict(hidden_size=64.5), "hidden_size must be an integer >= 1; got 64.5"),
    (dict(num_attention_heads=True), "num_attention_heads must be an integer >= 1; got True"),
    (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob must be a probability in \\[0, 1\\); got 1.0"),
    (dict(ema_decay=1.2), "ema_decay must be a number in \\[0, 1\\]"),
    (dict(conv_dim=[8, 8]), "conv_dim is an audio field; this config's modality is 'vision'.*modality='audio'"),
    (dict(modality="audio", image_size=32, patch_size=8), "image_size, patch_size are vision fields"),
])
def test_values_are_type_and_range_checked(kwargs, message):
    """Issue 13, item 8: at construction and after --config_overrides, naming the field and the allowed range."""
    with pytest.raises(Exception, match=message):
        d2v.Data2VecConfig(**kwargs)
    from modeling_data2vec_unified.trainer import apply_config_updates, parse_overrides

    if "modality" not in kwargs:  # the same through --config_overrides
        text = ",".join(f"{k}={v!r}".replace("'", '"') for k, v in kwargs.items())
        with pytest.raises(Exception, match=message.split(";")[0]):
            apply_config_updates(d2v.Data2VecConfig(), parse_overrides(text))


def test_the_type_hints_allow_exactly_the_values_the_checks_allow():
    """The config's Literal type hints and its value tables (CHOICES, MASK_TYPES) agree: one source of the allowed
    values must not be narrower than the other (the audit found 'inverse_block' missing from mask_type's hint).
    mask_type's and teacher_scope's hints are their tables' own source (mask_types.MaskType, TeacherScope)."""
    import typing

    from modeling_data2vec_unified import configuration_data2vec as cfg

    namespace = {**vars(typing), **vars(cfg)}
    hints = {name: eval(hint, namespace) if isinstance(hint, str) else hint  # noqa: S307 - the package's own hints
             for name, hint in cfg.Data2VecConfig.__annotations__.items()}

    def literal_values(hint) -> set:
        out = set()
        for arg in typing.get_args(hint) or ():
            out |= set(typing.get_args(arg)) if typing.get_origin(arg) is typing.Literal else set()
        return out | (set(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else set())

    mask_types = {t for per_modality in cfg.MASK_TYPES.values() for types in per_modality.values() for t in types}
    assert literal_values(hints["mask_type"]) == mask_types
    assert literal_values(hints["teacher_scope"]) == {"encoder", "model", "model_except_feature_encoder"}
    for name, allowed in cfg.CHOICES.items():
        if name in hints and literal_values(hints[name]):
            assert literal_values(hints[name]) == set(allowed), name


def _documented_mask_types(text: str) -> dict:
    """{algorithm: {modality: names}} from every "`mask_type` ... 1.0, text: `a`; vision: `b` or `c`; audio: `d`"
    in a doc; a name may carry a remark in parentheses."""
    import re

    name = r"`[a-z_]+`(?: \((?:[^()]|\([^()]*\))*\))?"
    names = rf"{name}(?:(?:, | or ){name})*"
    found = {}
    for m in re.finditer(rf"`mask_type`\W*(1\.0|2\.0), text: ({names}); vision: ({names}); audio: ({names})", text):
        algorithm = {"1.0": "data2vec", "2.0": "data2vec2"}[m[1]]
        found[algorithm] = {modality: tuple(re.findall(r"(?:^|, | or )`([a-z_]+)`", m[i]))
                            for i, modality in ((2, "text"), (3, "vision"), (4, "audio"))}
    return found


def test_the_mask_registry_and_the_docs_name_the_allowed_mask_types():
    """One source of mask_type's values (mask_types.py): the type hint allows exactly the names of MASK_TYPES, a
    strategy is registered (masking.MASKS) for every algorithm / modality / name it allows and for nothing else, and
    the docs' mask_type entries (docs/pretraining.md's knob tables, docs/architecture.md's field table) name exactly
    the values each algorithm and modality accepts."""
    from pathlib import Path
    from typing import get_args

    from modeling_data2vec_unified.mask_types import MASK_TYPES, MaskType
    from modeling_data2vec_unified.masking import MASKS

    assert {t for per in MASK_TYPES.values() for types in per.values() for t in types} == set(get_args(MaskType))
    allowed = {(a, m, t) for a, per in MASK_TYPES.items() for m, types in per.items() for t in types}
    assert set(MASKS) == allowed
    docs = Path(__file__).parents[2] / "docs"
    for doc in ("pretraining.md", "architecture.md"):
        documented = _documented_mask_types((docs / doc).read_text())
        assert documented.keys() == MASK_TYPES.keys(), (doc, documented)
        for algorithm, per_modality in MASK_TYPES.items():
            for modality, types in per_modality.items():
                assert set(documented[algorithm][modality]) == set(types), (doc, algorithm, modality)
