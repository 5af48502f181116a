"""Converting Meta's released data2vec checkpoints (fairseq `.pt` files, data2vec_vision's BEiT `.pth`) into this
package's models, without fairseq: `convert_fairseq_checkpoint`, and the data2vec 2.0 (`data2vec_multi`) converters.

What the converters share (safe loading, kinds, rename tables, the result, the registry) is
`conversion_fairseq_base.py`; the data2vec 1.0 and data2vec_vision converters are `conversion_fairseq_v1.py`. Both
register by kind in `conversion_fairseq_base.CONVERTERS`; this module imports both and dispatches. The EMA teacher
(`_ema`, `model_ema`) becomes the converted model's teacher (`teacher.safetensors`), so continued pretraining starts
from Meta's teacher.

The layouts, config fields and quirks, with citations into the fairseq / data2vec_vision sources: docs/checkpoints.md.
`data2vec-convert` (conversion_cli) calls `convert_fairseq_checkpoint`; the tests compare the converted models with
an independent reference forward written from the fairseq module definitions (tests/fairseq_reference.py).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from . import conversion_fairseq_v1  # noqa: F401  (registers the data2vec 1.0 and data2vec_vision converters)
from .configuration_data2vec import Data2VecConfig
from .conversion_fairseq_base import (
    CONVERTERS,
    KINDS,
    ConvertedCheckpoint,
    RenameTable,
    Rule,
    _conv_fields,
    _d2v2_modality,
    _model_cfg,
    _sub_state,
    _target_norms,
    _tensors,
    _unsupported,
    checkpoint_kind,
    collapse_guard,
    converter,
    load_checkpoint,
    parse_conv_spec,
)

logger = logging.getLogger(__name__)


def convert_fairseq_checkpoint(checkpoint: str | Path | dict) -> ConvertedCheckpoint:
    """A released data2vec checkpoint (a path, or the dict `torch.load` gave) converted: see `ConvertedCheckpoint`."""
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    kind = checkpoint_kind(checkpoint)
    if kind not in CONVERTERS:
        raise ValueError(f"{KINDS[kind]}: recognised, but this version cannot convert it yet")
    try:
        converted = CONVERTERS[kind](checkpoint)
    except KeyError as error:  # a cfg (or state) without a field every released checkpoint of the kind has
        raise ValueError(f"{KINDS[kind]}: the checkpoint lacks {error} (in its cfg or weights), which every released "
                         "checkpoint of this kind has: an edited or partial checkpoint? Convert the released file, or "
                         "restore the field") from error
    logger.info("%s: %d tensors mapped, %d dropped (%s)%s", KINDS[kind], len(converted.state_dict),
                len(converted.dropped), "; ".join(sorted(set(converted.dropped.values())))[:300],
                ", with its EMA teacher" if converted.teacher is not None else "")
    return converted


# ---- data2vec 2.0 (fairseq examples/data2vec/models/data2vec2.py, `data2vec_multi`) ---------------------------------

D2V2_MODALITY = {"IMAGE": "vision", "AUDIO": "audio", "TEXT": "text"}


def _block_rules(source: str, target: str, offset: int = 0) -> list[Rule]:
    """fairseq's AltBlock (post-LN: norm1(x + attn(x)), norm2(x + mlp(x)); one fused qkv) -> our encoder layer."""
    names = {"norm1": "norm1", "attn.qkv": "attention.qkv", "attn.proj": "attention.out_proj", "norm2": "norm2",
             "mlp.fc1": "fc1", "mlp.fc2": "fc2"}
    alternatives = "|".join(re.escape(n) for n in names)

    def rename(match: re.Match) -> str:
        return f"{target}{int(match.group(1)) + offset}.{names[match.group(2)]}.{match.group(3)}"

    why = "AltBlock" + (f" (prenet blocks first: main block i is our layer {offset} + i)" if offset else "")
    return [Rule(rf"{re.escape(source)}(\d+)\.({alternatives})\.(weight|bias)", rename, why)]


def _d2v2_config(kind: str, model_cfg: dict, state: dict, prefix: str) -> tuple[Data2VecConfig, int]:
    """Our config from a `data2vec_multi` model cfg (and the weights' shapes where the cfg is silent); returns it with
    the prenet depth (blocks of the modality's context encoder, run before the main blocks)."""
    name = model_cfg["supported_modality"] if model_cfg.get("supported_modality") in D2V2_MODALITY else None
    name = name or _d2v2_modality({"cfg": {"model": model_cfg}, "model": state})
    modality = D2V2_MODALITY[name]
    m = model_cfg["modalities"][name.lower()]
    if model_cfg.get("layer_norm_first"):
        raise _unsupported(kind, "pre-LN blocks (layer_norm_first: true; the released models are post-LN)")
    prenet = int(m.get("prenet_depth") or 0)
    D = int(model_cfg["embed_dim"])
    decoder = m.get("decoder") or {}
    if decoder.get("add_positions_masked") or decoder.get("add_positions_all"):
        raise _unsupported(kind, "decoder positions (decoder.add_positions_*)")
    if model_cfg.get("shared_decoder"):
        raise _unsupported(kind, "a shared decoder")
    projection_layers = int(decoder.get("projection_layers") or 1)
    if projection_layers > 2 or (projection_layers == 2 and float(decoder.get("projection_ratio", 2.0)) != 2.0):
        raise _unsupported(kind, f"a decoder projection of {projection_layers} layers, ratio "
                                 f"{decoder.get('projection_ratio')} (ours: 1, or 2 with ratio 2)")
    fields = dict(
        modality=modality, algorithm="data2vec2", hidden_size=D, num_hidden_layers=prenet + int(model_cfg["depth"]),
        num_attention_heads=int(model_cfg["num_heads"]), intermediate_size=int(D * float(model_cfg["mlp_ratio"])),
        layer_norm_eps=float(model_cfg["norm_eps"]), layer_norm_position="post",
        hidden_dropout_prob=float(model_cfg.get("encoder_dropout") or 0.0),
        attention_probs_dropout_prob=float(model_cfg.get("attention_dropout") or 0.0),
        activation_dropout=float(model_cfg.get("activation_dropout") or 0.0),
        layerdrop=float(model_cfg.get("layerdrop") or 0.0),
        drop_path_rate=float(model_cfg.get("end_drop_path_rate") or 0.0),
        # audio's context-encoder norm is our front end's LayerNorm after the positional conv
        pre_block_layer_norm=modality != "audio" and f"{prefix}context_encoder.norm.weight" in state,
        average_top_k_layers=int(model_cfg["average_top_k_layers"]),
        target_layer_output="block" if model_cfg.get("end_of_block_targets") else "ffn", **_target_norms(model_cfg),
        loss_beta=float(model_cfg.get("loss_beta") or 0.0),
        loss_scale=None if model_cfg.get("loss_scale") is None else float(model_cfg["loss_scale"]),
        teacher_scope=("encoder" if model_cfg.get("ema_encoder_only") else
                       "model" if m.get("ema_local_encoder") else "model_except_feature_encoder"),
        ema_decay=float(model_cfg["ema_decay"]), ema_end_decay=float(model_cfg["ema_end_decay"]),
        ema_anneal_end_step=int(model_cfg["ema_anneal_end_step"]), clone_batch=int(model_cfg["clone_batch"]),
        mask_prob=float(m["mask_prob"]), mask_length=int(m["mask_length"]),
        mask_prob_adjust=float(m.get("mask_prob_adjust") or 0.0), mask_noise_std=float(m.get("mask_noise_std", 0.01)),
        decoder_layers=int(decoder["decoder_layers"]), decoder_dim=int(decoder["decoder_dim"]),
        decoder_kernel=int(decoder["decoder_kernel"]), decoder_groups=int(decoder["decoder_groups"]),
        decoder_residual=bool(decoder.get("decoder_residual", True)),
        decoder_input_dropout=float(decoder.get("input_dropout") or 0.0), head_layers=projection_layers,
        cls_loss_weight=float(model_cfg.get("cls_loss") or 0.0), cls_loss_reduction="sum",
        **collapse_guard(model_cfg),
    )
    if fields["teacher_scope"] == "model_except_feature_encoder" and modality != "audio":
        fields["teacher_scope"] = "model"  # only audio has a feature encoder to share
    if modality == "vision":
        if f"{prefix}local_encoder.0.proj.weight" in state:
            raise _unsupported(kind, "a patch embedding wider or narrower than the encoder (modalities.image.embed_dim)")
        if not m.get("fixed_positions", True) or int(m.get("num_extra_tokens", 1)) != 1:
            raise _unsupported(kind, "learned image positions or other than one CLS token")
        patch = state[f"{prefix}local_encoder.proj.weight"]
        fields.update(image_size=int(m["input_size"]), patch_size=int(patch.shape[-1]), num_channels=int(patch.shape[1]),
                      position_embedding_type="sincos", use_absolute_position_embeddings=False,
                      mask_type="inverse_block" if m.get("inverse_mask") else "random")
    elif modality == "audio":
        if m.get("extractor_mode", "layer_norm") != "layer_norm" or m.get("conv_pos_pre_ln"):
            raise _unsupported(kind, "a conv feature encoder in group-norm mode or a pre-LN positional conv")
        if not m.get("use_alibi_encoder") or m.get("learned_alibi_scale_per_layer"):
            raise _unsupported(kind, "audio without ALiBi, or with one ALiBi scale per layer")
        depth, width = int(m["conv_pos_depth"]), int(m["conv_pos_width"])
        conv_bias = f"{prefix}local_encoder.conv_layers.0.0.bias" in state
        fields.update(**_conv_fields(m["feature_encoder_spec"], conv_bias), num_conv_pos_embeddings=depth,
                      conv_pos_kernel_size=max(3, width // depth), num_conv_pos_embedding_groups=int(m["conv_pos_groups"]),
                      relative_position_bias="alibi", pos_conv_zero_padding=False,
                      mask_type="block" if not m.get("inverse_mask") else "random")
    else:
        if int(m.get("max_source_positions", 512)) + 2 != state[f"{prefix}local_encoder.embed_positions.weight"].shape[0]:
            raise _unsupported(kind, "positions other than fairseq's learned ones offset by the padding index")
        if not m.get("no_scale_embedding", True) or not m.get("layernorm_embedding", True):
            raise _unsupported(kind, "scaled token embeddings or no embedding LayerNorm")
        tokens = state[f"{prefix}local_encoder.embed_tokens.weight"]
        fields.update(vocab_size=int(tokens.shape[0]), max_position_embeddings=int(m["max_source_positions"]) + 2,
                      type_vocab_size=0, pad_token_id=1, bos_token_id=0, eos_token_id=2, mask_type="random")
    return Data2VecConfig(**fields), prenet


def _d2v2_student_rules(modality: str, prefix: str, prenet: int, ours: str) -> list[Rule]:
    """fairseq `data2vec_multi` student -> our model under `ours` ("data2vec." in a pretraining model)."""
    p, e = re.escape(prefix), ours + "embeddings."
    rules = _block_rules(f"{prefix}context_encoder.blocks.", f"{ours}encoder.layers.")
    rules += _block_rules("blocks.", f"{ours}encoder.layers.", offset=prenet)
    if modality == "vision":
        rules += [
            Rule(rf"{p}extra_tokens", e + "cls_token", "the CLS token (num_extra_tokens 1), prepended after positions"),
            Rule(rf"{p}local_encoder\.proj\.(weight|bias)", e + r"patch_embedding.\1", "timm PatchEmbed conv"),
            Rule(rf"{p}fixed_positional_encoder\.positions", e + "sincos_positions",
                 "the fixed 2-D sin-cos table as stored (fp16-rounded; checked to be MAE's table)"),
            Rule(rf"{p}context_encoder\.norm\.(weight|bias)", ours + r"encoder.layer_norm.\1",
                 "the context encoder's LayerNorm before the first block (pre_block_layer_norm)"),
        ]
    elif modality == "audio":
        rules += [
            Rule(rf"{p}alibi_scale", ours + "encoder.alibi.scale", "the learned ALiBi scale, one per head, shared "
                 "by the layers: (1, 1, H, 1, 1) or the old (1, H, 1, 1) -> (H,)", transform=lambda t: t.reshape(-1)),
            Rule(rf"{p}local_encoder\.conv_layers\.(\d+)\.0\.(weight|bias)", e + r"feature_extractor.\1.conv.\2",
                 "conv feature encoder: Sequential(conv, dropout, Sequential(TransposeLast, LayerNorm, ...), GELU)"),
            Rule(rf"{p}local_encoder\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", e + r"feature_extractor.\1.layer_norm.\2",
                 "its per-layer LayerNorm over channels (extractor_mode layer_norm)"),
            Rule(rf"{p}project_features\.1\.(weight|bias)", e + r"feature_layer_norm.\1",
                 "project_features = TransposeLast, LayerNorm, Linear"),
            Rule(rf"{p}project_features\.2\.(weight|bias)", e + r"feature_projection.\1", "its Linear"),
            Rule(rf"{p}relative_positional_encoder\.(\d+)\.0\.(weight|bias)",
                 lambda m: f"{e}pos_conv.{int(m.group(1)) - 1}.conv.{m.group(2)}",
                 "positional conv layers, after a leading TransposeLast (index 0)"),
            Rule(rf"{p}context_encoder\.norm\.(weight|bias)", e + r"layer_norm.\1",
                 "the LayerNorm after the positional conv, before the first block"),
            Rule(rf"{p}encoder_mask", None, "a parameter of Meta's internal branch; fairseq deletes it on load"),
        ]
    else:
        rules += [
            Rule(rf"{p}local_encoder\.embed_tokens\.weight", e + "word_embeddings.weight", "token embeddings (no "
                 "scaling: no_scale_embedding)"),
            Rule(rf"{p}local_encoder\.embed_positions\.weight", e + "position_embeddings.weight",
                 "learned positions from padding_idx + 1, as RoBERTa's"),
            Rule(rf"{p}local_encoder\.layernorm_embedding\.(weight|bias)", e + r"layer_norm.\1", "embedding LayerNorm"),
            Rule(rf"{p}context_encoder\.norm\.(weight|bias)", ours + r"encoder.layer_norm.\1",
                 "a LayerNorm before the first block (text with prenet blocks)"),
        ]
    return rules


def _d2v2_decoder_rules(prefix: str) -> list[Rule]:
    p = re.escape(prefix)
    return [
        Rule(rf"{p}decoder\.blocks\.(\d+)\.0\.(weight|bias)", r"decoder.layers.\1.conv.\2",
             "Decoder1d / Decoder2d block: conv, (SamePad,) LayerNorm without affine, GELU"),
        Rule(rf"{p}decoder\.proj\.(weight|bias)", r"decoder.proj.proj.\1", "the decoder's projection to targets"),
        Rule(rf"{p}decoder\.proj\.0\.(weight|bias)", r"decoder.proj.dense.\1", "2-layer projection: Linear(d, 2d)"),
        Rule(rf"{p}decoder\.proj\.2\.(weight|bias)", r"decoder.proj.proj.\1", "then GELU, Linear(2d, D)"),
    ]


def _check_sincos(state: dict, prefix: str, config: Data2VecConfig, kind: str) -> None:
    """The stored fixed positions must be the sin-cos table our model computes (stored in fp16: ~5e-4 apart)."""
    from .modeling_data2vec import sincos_2d

    stored = state.get(f"{prefix}fixed_positional_encoder.positions")
    if stored is None:
        return
    grid = config.patch_grid
    expected = sincos_2d(grid, config.hidden_size)
    if tuple(stored.shape[-2:]) != tuple(expected.shape) or (stored.float()[0] - expected).abs().max() > 2e-3:
        raise _unsupported(kind, "fixed image positions that are not MAE's 2-D sin-cos table")


@converter("d2v2_vision")
@converter("d2v2_audio")
@converter("d2v2_text")
def _convert_d2v2(checkpoint: dict) -> ConvertedCheckpoint:
    """A pretrained data2vec 2.0 model -> Data2VecForPreTraining (student, decoder) + its EMA teacher."""
    kind = checkpoint_kind(checkpoint)
    model_cfg, state = _model_cfg(checkpoint), checkpoint["model"]
    name = _d2v2_modality(checkpoint)
    prefix = f"modality_encoders.{name}."
    config, prenet = _d2v2_config(kind, model_cfg, state, prefix)
    _check_sincos(state, prefix, config, kind)
    table = RenameTable(_d2v2_student_rules(config.modality, prefix, prenet, "data2vec.") + _d2v2_decoder_rules(prefix))
    mapped, dropped = table.apply(_tensors(state), KINDS[kind])
    if "_ema" in state:
        dropped["_ema"] = "the EMA teacher: converted on its own"
    converted = ConvertedCheckpoint(kind, config, "Data2VecForPreTraining", mapped, dropped=dropped)
    if isinstance(state.get("_ema"), dict):
        converted.teacher, teacher_dropped = _d2v2_teacher(state["_ema"], converted, prefix, prenet)
        dropped.update({f"_ema.{k}": why for k, why in teacher_dropped.items()})
    else:
        converted.notes.append("no EMA teacher (_ema) in the checkpoint: the teacher starts as a copy of the student")
    return converted


def _d2v2_teacher(ema: dict, converted: ConvertedCheckpoint, prefix: str, prenet: int):
    """fairseq's `_ema` (the EMA copy's fp32 parameters) -> our teacher's weights. Text (ema_encoder_only) holds the
    blocks alone ("0.norm1.weight"); image the whole model but the decoder; audio also without the local encoder and
    project_features, which the teacher takes from the student (ema_local_encoder false)."""
    config = converted.config
    scope = config.teacher_scope
    if scope == "encoder":
        rules = _block_rules("", "layers.", offset=prenet)
        rules += _block_rules(f"{prefix}context_encoder.blocks.", "layers.")
    else:
        rules = _d2v2_student_rules(config.modality, prefix, prenet, "")
    teacher, dropped = RenameTable(rules).apply(_tensors(ema), "the EMA teacher (_ema)")
    # our teacher's own copy of what fairseq's teacher takes from the student (audio: project_features; and any
    # weight the EMA copy does not hold): the student's weights, as fairseq's teacher sees them at this step
    source = "data2vec.encoder." if scope == "encoder" else "data2vec."
    shared = (["embeddings.feature_extractor."] if scope == "model_except_feature_encoder" else [])
    filled = []
    for key, value in converted.state_dict.items():
        if key.startswith(source):
            ours = key[len(source):]
            if ours not in teacher and not any(ours.startswith(s) for s in shared):
                teacher[ours] = value.clone()
                filled.append(ours)
    if filled:
        converted.notes.append(f"the teacher takes {len(filled)} tensor(s) from the student, as fairseq's does "
                               f"(not in _ema): {', '.join(sorted(filled)[:6])}")
    return teacher, dropped


def _finetuned_d2v2_config(kind: str, inner_cfg: dict, state: dict, prefix: str, overrides: dict):
    """The pretrained model's config (stored inside the fine-tune's cfg), with the fine-tuning dropouts applied."""
    model_cfg = dict(inner_cfg["model"])
    for name in ("encoder_dropout", "attention_dropout", "activation_dropout", "layerdrop"):  # the fine-tune's
        if overrides.get(name) is not None:
            model_cfg[name] = overrides[name]
    return _d2v2_config(kind, model_cfg, state, prefix)


@converter("d2v2_vision_ft")
def _convert_d2v2_image_classifier(checkpoint: dict) -> ConvertedCheckpoint:
    """`mae_image_classification` on a data2vec 2.0 image model -> Data2VecForImageClassification: the mean of the
    patch tokens (CLS excluded, prediction_mode MEAN_POOLING), fc_norm, head."""
    kind, ft = "d2v2_vision_ft", _model_cfg(checkpoint)
    if ft.get("prediction_mode", "MEAN_POOLING") != "MEAN_POOLING" or not ft.get("use_fc_norm", True):
        raise _unsupported(kind, f"prediction_mode {ft.get('prediction_mode')} / use_fc_norm "
                                 f"{ft.get('use_fc_norm')} (ours: MEAN_POOLING with fc_norm)")
    state = _sub_state(checkpoint["model"], "model.")
    prefix = "modality_encoders.IMAGE."
    config, prenet = _finetuned_d2v2_config(kind, ft["pretrained_model_args"], state, prefix, ft)
    _check_sincos(state, prefix, config, kind)
    head = checkpoint["model"]["head.weight"]
    config.num_labels = int(head.shape[0])
    config.drop_path_rate = float(ft.get("drop_path_rate") or 0.0)
    rules = [Rule(r"model\." + r.pattern, r.target, r.why, r.transform)
             for r in _d2v2_student_rules("vision", prefix, prenet, "data2vec.")]
    rules += [
        Rule(r"fc_norm\.(weight|bias)", r"data2vec.pooler.layernorm.\1", "LayerNorm of the mean patch token"),
        Rule(r"head\.(weight|bias)", r"classifier.\1", "the classification layer"),
    ]
    mapped, dropped = RenameTable(rules).apply(_tensors(checkpoint["model"]), KINDS[kind])
    converted = ConvertedCheckpoint(kind, config, "Data2VecForImageClassification", mapped, dropped=dropped)
    converted.notes.append(f"{config.num_labels} classes, named LABEL_0.. (fairseq stores no class names; ImageNet-1k "
                           "fine-tunes use the standard class order)")
    return converted


@converter("d2v2_audio_ctc")
def _convert_d2v2_ctc(checkpoint: dict) -> ConvertedCheckpoint:
    """`wav2vec_ctc` on a data2vec 2.0 speech model -> Data2VecForCTC (w2v_encoder.proj -> lm_head; fairseq's CTC
    blank is index 0 (<s>), which becomes our pad_token_id, the blank of Data2VecForCTC)."""
    kind, ft = "d2v2_audio_ctc", _model_cfg(checkpoint)
    prefix = "modality_encoders.AUDIO."
    state = _sub_state(checkpoint["model"], "w2v_encoder.w2v_model.")
    overrides = {"encoder_dropout": ft.get("dropout"), "attention_dropout": ft.get("attention_dropout"),
                 "activation_dropout": ft.get("activation_dropout"), "layerdrop": ft.get("layerdrop")}
    config, prenet = _finetuned_d2v2_config(kind, ft["w2v_args"], state, prefix, overrides)
    proj = checkpoint["model"]["w2v_encoder.proj.weight"]
    config.vocab_size, config.pad_token_id = int(proj.shape[0]), 0
    config.final_dropout = float(ft.get("final_dropout") or 0.0)
    config.ctc_zero_infinity = True
    rules = [Rule(r"w2v_encoder\.w2v_model\." + r.pattern, r.target, r.why, r.transform)
             for r in _d2v2_student_rules("audio", prefix, prenet, "data2vec.")]
    rules.append(Rule(r"w2v_encoder\.proj\.(weight|bias)", r"lm_head.\1", "the CTC vocabulary projection"))
    mapped, dropped = RenameTable(rules).apply(_tensors(checkpoint["model"]), KINDS[kind])
    return ConvertedCheckpoint(kind, config, "Data2VecForCTC", mapped, dropped=dropped)


__all__ = ["ConvertedCheckpoint", "KINDS", "checkpoint_kind", "convert_fairseq_checkpoint", "load_checkpoint",
           "parse_conv_spec"]
