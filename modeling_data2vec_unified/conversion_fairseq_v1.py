"""Converters for the data2vec **1.0** checkpoints: fairseq's `data2vec_audio` (audio_base_ls.pt, vox_pretrained.pt),
its CTC fine-tunes (`wav2vec_ctc` over `data2vec_audio`), fairseq's `data2vec_text` (nlp_base.pt) and
data2vec_vision's BEiT pretraining checkpoint (checkpoint-799.pth).

Each converter reads the architecture from the checkpoint's own stored config (fairseq: `cfg["model"]`, the CTC
fine-tune's `cfg["model"]["w2v_args"]["model"]`, text's nested `cfg["model"]["transformer"]`; BEiT: the `args`
Namespace plus tensor shapes), maps every tensor by a rename table whose rules each say why
(`conversion_fairseq_base.Rule`), fuses fairseq's separate q / k / v projections into our one `qkv`
(`conversion.fuse_qkv`), and converts the EMA teacher (`_ema`, `encoder._ema`, `model_ema`) to the keys of
`Data2VecForPreTraining(config).teacher.model`. They register by kind in `conversion_fairseq_base.CONVERTERS`, whose
helpers they share with the 2.0 converters; `conversion_fairseq.convert_fairseq_checkpoint` dispatches.
Layouts, cfg fields and quirks, with citations: docs/fairseq-layouts.md sections 5-10.
"""

from __future__ import annotations

import re

import torch

from .configuration_data2vec import Data2VecConfig
from .conversion import fuse_qkv
from .conversion_fairseq_base import (
    ConvertedCheckpoint,
    RenameTable,
    Rule,
    _conv_fields,
    _target_norms,
    _unsupported,
    collapse_guard,
    converter,
)

_WB = r"(weight|bias)"

# fairseq `activation_fn` -> our `hidden_act` (transformers' ACT2FN names): fairseq's "gelu" is the exact erf GELU,
# "gelu_accurate" / "gelu_fast" its tanh approximation (fairseq/utils.py get_activation_fn)
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_accurate": "gelu_new", "gelu_fast": "gelu_new"}

# The teacher scope of a converted 1.0 audio model, the package's 1.0 audio default too. fairseq's teacher
# (ema_transformer_only / ema_layers_only, data2vec_audio.py make_ema_teacher) is the student's TransformerEncoder: it
# reads the student's projected conv features, has its positional conv copied from the student each step (skip_keys:
# our `teacher_copies_pos_conv`) and EMA-averages the LayerNorm after it (`encoder.layer_norm`) and the layers. Our
# "model_except_feature_encoder" teacher holds exactly those (plus the feature LayerNorm / projection / mask embedding,
# which it does not use there): its outputs and its EMA steps equal fairseq's teacher.
AUDIO_TEACHER_SCOPE = "model_except_feature_encoder"


def _check(kind: str, ok: bool, what: str) -> None:
    if not ok:
        raise _unsupported(kind, what)


def _activation(kind: str, name: str) -> str:
    _check(kind, name in _ACTIVATIONS, f"activation_fn {name!r}")
    return _ACTIVATIONS[name]


def _model_state(checkpoint: dict, kind: str, nested: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(the tensors of checkpoint["model"], its nested dicts by key): a non-tensor entry other than the `nested` ones
    is an error naming it, so that nothing is skipped silently."""
    state = checkpoint.get("model")
    if not isinstance(state, dict):
        raise ValueError(f"{kind}: the checkpoint has no 'model' state dict")
    tensors, dicts, other = {}, {}, []
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif key in nested and isinstance(value, dict):
            dicts[key] = value
        else:
            other.append(f"{key} ({type(value).__name__})")
    if other:
        raise ValueError(f"{kind}: entries of the model state dict this converter does not know: {', '.join(other)}")
    return tensors, dicts


def _teacher_tensors(ema: dict, kind: str, where: str) -> dict[str, torch.Tensor]:
    bad = [k for k, v in ema.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{kind}: non-tensor entries in {where}: {', '.join(bad[:5])}")
    return dict(ema)


def _fill_teacher(teacher: dict, student: dict, student_prefix: str, exclude: tuple[str, ...], notes: list,
                  why: str) -> dict:
    """The teacher's missing entries (those of our teacher's scope that the file's teacher does not hold) taken from
    the converted student; a teacher entry that our teacher does not have is an error."""
    expected = {k[len(student_prefix):] for k in student if k.startswith(student_prefix)}
    expected = {k for k in expected if not k.startswith(exclude)} if exclude else expected
    extra = sorted(set(teacher) - expected)
    if extra:
        raise RuntimeError(f"converted teacher entries our teacher does not hold: {extra[:5]}")
    missing = sorted(expected - set(teacher))
    for key in missing:
        teacher[key] = student[student_prefix + key].clone()
    if missing:
        notes.append(f"teacher: {len(missing)} entries the file's teacher does not hold were copied from the converted "
                     f"student ({why}): {', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}")
    return teacher


# ---- rename rules shared by audio and text: fairseq's post-LN TransformerSentenceEncoderLayer (wav2vec2.py) and
# TransformerEncoderLayerBase (transformer_layer.py) have the same parameter names ------------------------------------


def _layer_rules(src: str, dst: str) -> list[Rule]:
    """`src` (a regex prefix, e.g. r"encoder\\.") `layers.i.*` -> `dst` (e.g. "data2vec.encoder.") `layers.i.*`."""
    layer = rf"{src}layers\.(\d+)\."
    return [
        Rule(rf"{layer}self_attn\.(q|k|v)_proj\.{_WB}",
             lambda m, dst=dst: f"{dst}layers.{m[1]}.attention.qkv.{m[3]}:{m[2]}",
             "fairseq MultiheadAttention has separate q / k / v projections; fused into our qkv (rows q, k, v; "
             "fairseq scales q by head_dim^-0.5 after the projection, as scaled_dot_product_attention does)"),
        Rule(rf"{layer}self_attn\.out_proj\.{_WB}", rf"{dst}layers.\1.attention.out_proj.\2",
             "attention output projection"),
        Rule(rf"{layer}self_attn_layer_norm\.{_WB}", rf"{dst}layers.\1.norm1.\2",
             "post-LN: the LayerNorm after the attention residual"),
        Rule(rf"{layer}fc1\.{_WB}", rf"{dst}layers.\1.fc1.\2", "FFN input projection"),
        Rule(rf"{layer}fc2\.{_WB}", rf"{dst}layers.\1.fc2.\2", "FFN output projection"),
        Rule(rf"{layer}final_layer_norm\.{_WB}", rf"{dst}layers.\1.norm2.\2",
             "post-LN: the LayerNorm after the FFN residual"),
    ]


def _rename(rules: list[Rule], state: dict, source: str) -> tuple[dict, dict]:
    mapped, dropped = RenameTable(rules).apply(state, source)
    return fuse_qkv(mapped), dropped


# ---- data2vec 1.0 audio ------------------------------------------------------------------------------------------


def _audio_config(kind: str, mc: dict, **extra) -> Data2VecConfig:
    """Our config for a fairseq `data2vec_audio` model cfg (`Data2VecAudioConfig`, which extends `Wav2Vec2Config`)."""
    mode = mc.get("extractor_mode", "default")
    _check(kind, mode == "layer_norm", f"extractor_mode {mode!r} (wav2vec 2.0's group-normed first conv layer; our "
                                      "conv feature encoder layer-norms every layer)")
    _check(kind, not mc.get("layer_norm_first", False), "layer_norm_first: true (pre-LN layers and a final LayerNorm)")
    _check(kind, mc.get("layer_type", "transformer") == "transformer",
           f"layer_type {mc.get('layer_type')!r} (conformer layers)")
    _check(kind, mc.get("pos_enc_type", "abs") == "abs", f"pos_enc_type {mc.get('pos_enc_type')!r}")
    depth = mc.get("pos_conv_depth", 1)
    _check(kind, depth > 1, "pos_conv_depth 1: one weight-normed positional conv followed by GELU without a "
                            "LayerNorm (wav2vec 2.0 style); our positional conv layers are conv + LayerNorm + GELU")
    return Data2VecConfig(
        modality="audio", algorithm="data2vec",
        hidden_size=mc["encoder_embed_dim"], num_hidden_layers=mc["encoder_layers"],
        num_attention_heads=mc["encoder_attention_heads"], intermediate_size=mc["encoder_ffn_embed_dim"],
        hidden_act=_activation(kind, mc.get("activation_fn", "gelu")),
        hidden_dropout_prob=mc.get("dropout", 0.1), attention_probs_dropout_prob=mc.get("attention_dropout", 0.1),
        activation_dropout=mc.get("activation_dropout", 0.0), layerdrop=mc.get("encoder_layerdrop", 0.0),
        drop_path_rate=0.0, layer_norm_eps=1e-5, layer_norm_position="post", layer_scale_init_value=0.0,
        relative_position_bias="none", pre_block_layer_norm=False,
        **_conv_fields(mc["conv_feature_layers"], bool(mc.get("conv_bias", False))),
        feat_extract_activation="gelu",  # fairseq's conv feature encoder and positional conv use nn.GELU
        feat_proj_dropout=mc.get("dropout_input", 0.0),
        num_conv_pos_embeddings=depth, conv_pos_kernel_size=max(3, mc["conv_pos"] // depth),  # wav2vec2.py:1018-1044
        num_conv_pos_embedding_groups=mc["conv_pos_groups"], use_mask_token=True, **extra,
    )


def _audio_pretraining_fields(mc: dict, notes: list) -> dict:
    fields = dict(
        average_top_k_layers=mc.get("average_top_k_layers", 8),
        target_layer_output="ffn",  # data2vec_audio.py forward: the teachers' layer_results[i][2], the FFN output
        **_target_norms(mc), loss_beta=float(mc.get("loss_beta", 0) or 0), loss_reduction="channel_sum",
        loss_scale=mc.get("loss_scale"),  # None: 1 / sqrt(dim), as ours
        head_layers=1, teacher_scope=AUDIO_TEACHER_SCOPE,
        teacher_copies_pos_conv=bool(mc.get("ema_layers_only", True)),  # fairseq's EMA skip_keys (make_ema_teacher)
        ema_decay=mc.get("ema_decay", 0.999), ema_end_decay=mc.get("ema_end_decay", 0.9999), **collapse_guard(mc),
        mask_prob=mc.get("mask_prob", 0.65), mask_length=mc.get("mask_length", 10), mask_type="span",
    )
    if isinstance(mc.get("ema_anneal_end_step"), int):
        fields["ema_anneal_end_step"] = mc["ema_anneal_end_step"]
    _target_notes(mc, notes)
    if mc.get("mask_selection", "static") != "static" or mc.get("mask_channel_prob", 0):
        notes.append(f"pretraining masks: mask_selection {mc.get('mask_selection')!r} / mask_channel_prob "
                     f"{mc.get('mask_channel_prob')} are not implemented here; continued pretraining uses static spans")
    return fields


def _target_notes(mc: dict, notes: list) -> None:
    for name in ("batch_norm_target_layer", "group_norm_target_layer"):
        if mc.get(name):
            notes.append(f"targets: {name} is not implemented here; continued pretraining normalises the target "
                         "layers as target_layer_norm says")
    if mc.get("instance_norm_target_layer") and mc.get("layer_norm_target_layer"):
        notes.append("targets: fairseq applies both the per-layer instance norm and layer norm; ours the instance norm")
    if mc.get("layer_norm_targets") and mc.get("instance_norm_targets"):
        notes.append("targets: fairseq applies both final layer norm and instance norm; ours the instance norm")


def _audio_rules(src: str) -> list[Rule]:
    """fairseq `Data2VecAudioModel` keys under `src` (a regex prefix) -> our `Data2VecAudioModel` under "data2vec."."""
    d = "data2vec.embeddings."
    return [
        Rule(rf"{src}mask_emb", d + "mask_embedding",
             "the learned vector that replaces masked frames (our mask embedding)"),
        Rule(rf"{src}feature_extractor\.conv_layers\.(\d+)\.0\.{_WB}", d + r"feature_extractor.\1.conv.\2",
             "conv feature encoder: Sequential(Conv1d, Dropout, Sequential(TransposeLast, LayerNorm, TransposeLast), "
             "GELU); the conv is element 0"),
        Rule(rf"{src}feature_extractor\.conv_layers\.(\d+)\.2\.1\.{_WB}", d + r"feature_extractor.\1.layer_norm.\2",
             "extractor_mode layer_norm: the per-layer Fp32LayerNorm over channels is element 1 of element 2"),
        Rule(rf"{src}layer_norm\.{_WB}", d + r"feature_layer_norm.\1",
             "the top-level layer_norm normalises the conv features (512 channels) before post_extract_proj; not "
             "encoder.layer_norm"),
        Rule(rf"{src}post_extract_proj\.{_WB}", d + r"feature_projection.\1",
             "conv features -> model width"),
        Rule(rf"{src}encoder\.pos_conv\.(\d+)\.0\.{_WB}", d + r"pos_conv.\1.conv.\2",
             "pos_conv_depth > 1: each layer is Sequential(Conv1d, SamePad, TransposeLast, LayerNorm without affine, "
             "TransposeLast, GELU), no weight norm; only the conv has weights"),
        Rule(rf"{src}encoder\.layer_norm\.{_WB}", d + r"layer_norm.\1",
             "post-LN models apply encoder.layer_norm after adding the positional conv, before the first layer "
             "(wav2vec2.py:1101); ours is the front end's last LayerNorm"),
        *_layer_rules(rf"{src}encoder\.", "data2vec.encoder."),
    ]


def _audio_teacher(ema: dict, kind: str, student: dict, notes: list) -> tuple[dict, dict]:
    """`_ema` (the TransformerEncoder's EMA state dict, keys without `encoder.`) -> our teacher's keys
    (`AUDIO_TEACHER_SCOPE`)."""
    tensors = _teacher_tensors(ema, kind, "_ema")
    rules = [
        Rule(r"pos_conv\.(\d+)\.0\.{}".format(_WB), r"embeddings.pos_conv.\1.conv.\2",
             "skip_keys: fairseq copies the positional conv from the student at every EMA step (equal to it); so "
             "does ours (teacher_copies_pos_conv)"),
        Rule(rf"layer_norm\.{_WB}", r"embeddings.layer_norm.\1",
             "the teacher's own EMA of encoder.layer_norm, applied after the positional conv"),
        *_layer_rules("", "encoder."),
    ]
    teacher, dropped = _rename(rules, tensors, f"{kind} _ema")
    teacher = _fill_teacher(teacher, student, "data2vec.", ("embeddings.feature_extractor.",), notes,
                            "fairseq's teacher reads the student's projected features: it has no feature "
                            "LayerNorm, projection or mask embedding, which our teacher holds but does not use")
    return teacher, {f"_ema.{k}": v for k, v in dropped.items()}


@converter("d2v1_audio")
def convert_d2v1_audio(checkpoint: dict) -> ConvertedCheckpoint:
    kind = "d2v1_audio"
    mc = checkpoint["cfg"]["model"]
    notes: list[str] = []
    config = _audio_config(kind, mc, **_audio_pretraining_fields(mc, notes))
    state, nested = _model_state(checkpoint, kind, nested=("_ema",))
    rules = _audio_rules("") + [
        Rule(rf"final_proj\.0\.{_WB}", r"regression_head.proj.\1",
             "the 1.0 regression head, named final_proj.0 in the released files (an nn.Sequential on the branch "
             "they were trained on); Linear(dim, dim) as ours"),
        Rule(rf"final_proj\.{_WB}", r"regression_head.proj.\1",
             "the regression head as the public Data2VecAudioModel names it (nn.Linear)"),
    ]
    student, dropped = _rename(rules, state, kind)
    if "regression_head.proj.weight" not in student:
        notes.append("no regression head (final_proj) in the file: ours is freshly initialised")
    teacher = None
    if "_ema" in nested:
        if not (mc.get("ema_transformer_only", True) or mc.get("ema_layers_only", True)):
            raise _unsupported(kind, "a teacher of the whole model (ema_transformer_only: false)")
        teacher, teacher_dropped = _audio_teacher(nested["_ema"], kind, student, notes)
        dropped.update(teacher_dropped)
    else:
        notes.append("no EMA teacher (_ema) in the file: the teacher starts as a copy of the student")
    return ConvertedCheckpoint(kind, config, "Data2VecForPreTraining", student, teacher, dropped, notes)


@converter("d2v1_audio_ctc")
def convert_d2v1_audio_ctc(checkpoint: dict) -> ConvertedCheckpoint:
    kind = "d2v1_audio_ctc"
    cfg = checkpoint["cfg"]
    ft, mc = cfg["model"], cfg["model"]["w2v_args"]["model"]
    state, _ = _model_state(checkpoint, kind)
    proj = state.get("w2v_encoder.proj.weight")
    if proj is None:
        raise ValueError(f"{kind}: no w2v_encoder.proj.weight (the CTC output projection) in the checkpoint")
    criterion = cfg.get("criterion") or {}
    config = _audio_config(
        kind, mc, vocab_size=proj.shape[0],
        pad_token_id=0,  # fairseq's CTC blank is the target dictionary's index 0, <s> (docs/fairseq-layouts.md §8)
        final_dropout=ft.get("final_dropout", 0.0),
        ctc_zero_infinity=bool(criterion.get("zero_infinity", False)),
    )
    notes = ["the CTC blank is index 0 (fairseq's <s>): config.pad_token_id = 0; the letters are those of the "
             "fine-tune's dict.ltr.txt (<s>, <pad>, </s>, <unk>, then the file's lines)"]
    if ft.get("feature_grad_mult", 1.0) == 0.0:
        notes.append("fairseq fine-tuned with feature_grad_mult 0 (conv feature encoder frozen): call "
                     "model.freeze_feature_encoder() to do the same")
    if ft.get("apply_mask") and (ft.get("mask_prob", 0) or ft.get("mask_channel_prob", 0)):
        notes.append(f"fairseq's fine-tuning masks (mask_prob {ft.get('mask_prob')}, mask_channel_prob "
                     f"{ft.get('mask_channel_prob')}) are not applied by Data2VecForCTC")
    src = r"w2v_encoder\.w2v_model\."
    rules = _audio_rules(src) + [
        Rule(rf"w2v_encoder\.proj\.{_WB}", r"lm_head.\1", "the CTC output projection over the letter dictionary"),
        Rule(rf"{src}final_proj(\.0)?\.{_WB}", None,
             "the pretraining regression head, unused by CTC (fairseq's remove_pretraining_modules drops it)"),
    ]
    student, dropped = _rename(rules, state, kind)
    return ConvertedCheckpoint(kind, config, "Data2VecForCTC", student, None, dropped, notes)


# ---- data2vec 1.0 text -------------------------------------------------------------------------------------------


def _text_config(kind: str, checkpoint: dict, state: dict, notes: list) -> Data2VecConfig:
    cfg = checkpoint["cfg"]
    mc = cfg["model"]
    t = mc.get("transformer")
    if not isinstance(t, dict):
        raise ValueError(f"{kind}: cfg.model has no 'transformer' section (TransformerConfig) to read the "
                         "architecture from")
    enc = t["encoder"]
    _check(kind, not enc.get("normalize_before", False), "encoder.normalize_before: true (pre-LN layers)")
    _check(kind, enc.get("learned_pos", False) and not t.get("no_token_positional_embeddings", False),
           "sinusoidal or no positional embeddings (encoder.learned_pos: false)")
    _check(kind, t.get("layernorm_embedding", False), "no LayerNorm on the embeddings (layernorm_embedding: false)")
    _check(kind, t.get("no_scale_embedding", False), "token embeddings scaled by sqrt(dim) (no_scale_embedding: false)")
    _check(kind, not t.get("adaptive_input", False), "adaptive input embeddings")
    tokens = state["encoder.sentence_encoder.embed_tokens.weight"]
    positions = state["encoder.sentence_encoder.embed_positions.weight"]
    head_layers = mc.get("head_layers", 1)
    task = cfg.get("task") or {}
    layers_only = mc.get("ema_transformer_layers_only", True)
    fields = dict(
        average_top_k_layers=mc.get("average_top_k_layers", 8), target_layer_output="ffn",  # fc_results
        **_target_norms(mc), loss_beta=float(mc.get("loss_beta", 0) or 0), loss_reduction="channel_sum",
        loss_scale=mc.get("loss_scale"),  # None: 1 / sqrt(dim), as ours
        head_layers=head_layers if head_layers in (1, 2) else 2,
        teacher_scope="encoder" if layers_only else "model",
        ema_decay=mc.get("ema_decay", 0.999), ema_end_decay=mc.get("ema_end_decay", 0.9999),
        **collapse_guard(None),  # data2vec_text.py has no collapse check
    )
    if isinstance(mc.get("ema_anneal_end_step"), int):
        fields["ema_anneal_end_step"] = mc["ema_anneal_end_step"]
    for ours, theirs in (("mask_prob", "mask_prob"), ("mask_length", "mask_multiple_length"),
                         ("mask_random_token_prob", "random_token_prob"),
                         ("mask_leave_unmasked_prob", "leave_unmasked_prob")):
        if task.get(theirs) is not None:
            fields[ours] = task[theirs]
    _target_notes(mc, notes)
    return Data2VecConfig(
        modality="text", algorithm="data2vec",
        hidden_size=enc["embed_dim"], num_hidden_layers=enc["layers"], num_attention_heads=enc["attention_heads"],
        intermediate_size=enc["ffn_embed_dim"], hidden_act=_activation(kind, t.get("activation_fn", "relu")),
        hidden_dropout_prob=t.get("dropout", 0.1), attention_probs_dropout_prob=t.get("attention_dropout", 0.0),
        activation_dropout=t.get("activation_dropout", 0.0), layerdrop=enc.get("layerdrop", 0.0) or 0.0,
        drop_path_rate=0.0, layer_norm_eps=1e-5, layer_norm_position="post", layer_scale_init_value=0.0,
        relative_position_bias="none", pre_block_layer_norm=False,
        vocab_size=tokens.shape[0],  # the dictionary incl. <mask> (last): not in the cfg
        max_position_embeddings=positions.shape[0],  # max_source_positions + padding_idx + 1
        type_vocab_size=0,  # fairseq has no token-type embedding (a trained zero row would move: not fairseq's)
        pad_token_id=1, bos_token_id=0, eos_token_id=2,  # fairseq Dictionary (§8)
        mask_token_id=tokens.shape[0] - 1,  # masked_lm adds <mask> last
        **fields,
    )


def _text_rules(head_layers: int) -> list[Rule]:
    p, d = r"encoder\.sentence_encoder\.", "data2vec.embeddings."
    head = {1: {0: "proj"}, 2: {0: "dense", 2: "proj"}}.get(head_layers)
    if head is not None:
        head_rule = Rule(r"encoder\.regression_head\.(\d+)\.{}".format(_WB),
                         lambda m: f"regression_head.{head[int(m[1])]}.{m[2]}",
                         f"the {head_layers}-layer regression head (Linear, GELU, Linear: indices 0, 2) -> ours")
    else:
        head_rule = Rule(r"encoder\.regression_head\..*", None,
                         f"a {head_layers}-layer regression head, which ours (1 or 2 layers) cannot hold: "
                         "continued pretraining starts a fresh 2-layer head")
    return [
        Rule(rf"{p}version", None, "TransformerEncoderBase's version buffer (state-dict upgrade bookkeeping)"),
        Rule(rf"{p}embed_tokens\.weight", d + "word_embeddings.weight",
             "token embeddings (fairseq Dictionary order; <pad> = 1 is a zero row; no sqrt(dim) scale)"),
        Rule(rf"{p}embed_positions\.weight", d + "position_embeddings.weight",
             "learned positions, offset past padding_idx as ours (make_positions: first token uses row 2)"),
        Rule(rf"{p}layernorm_embedding\.{_WB}", d + r"layer_norm.\1", "the LayerNorm on the embeddings"),
        *_layer_rules(p, "data2vec.encoder."),
        head_rule,
        Rule(r"encoder\.lm_head\..*", None,
             "RoBERTa's masked-LM head that fairseq's RoBERTa loader creates for these files (dense, layer_norm, "
             "weight, bias): not data2vec's regression head, no use in our models"),
    ]


def _text_teacher(ema: dict, kind: str, student: dict, layers_only: bool, notes: list) -> tuple[dict, dict]:
    """`encoder._ema` (the sentence encoder's EMA state dict) -> our teacher's keys: the encoder ("encoder" scope),
    or the whole text model ("model", when fairseq also averaged the embeddings)."""
    if layers_only:
        embeddings = [Rule(r"(embed_tokens\.weight|embed_positions\.weight|layernorm_embedding\..*)", None,
                           "skip_keys (ema_transformer_layers_only): copied from the student at every EMA step, "
                           "equal to it; our teacher (scope 'encoder') uses the student's embeddings")]
        dst, prefix = "", "data2vec.encoder."
    else:
        embeddings = [
            Rule(r"embed_tokens\.weight", "embeddings.word_embeddings.weight", "the teacher's own token embeddings"),
            Rule(r"embed_positions\.weight", "embeddings.position_embeddings.weight", "the teacher's own positions"),
            Rule(rf"layernorm_embedding\.{_WB}", r"embeddings.layer_norm.\1", "the teacher's embedding LayerNorm"),
        ]
        dst, prefix = "encoder.", "data2vec."
    rules = [Rule(r"version", None, "TransformerEncoderBase's version buffer"), *embeddings, *_layer_rules("", dst)]
    teacher, dropped = _rename(rules, _teacher_tensors(ema, kind, "encoder._ema"), f"{kind} encoder._ema")
    teacher = _fill_teacher(teacher, student, prefix, (), notes,
                            "fairseq has no token-type embeddings: ours are one zero row")
    return teacher, {f"encoder._ema.{k}": v for k, v in dropped.items()}


@converter("d2v1_text")
def convert_d2v1_text(checkpoint: dict) -> ConvertedCheckpoint:
    kind = "d2v1_text"
    mc = checkpoint["cfg"]["model"]
    notes: list[str] = []
    state, nested = _model_state(checkpoint, kind, nested=("encoder._ema",))
    config = _text_config(kind, checkpoint, state, notes)
    head_layers = mc.get("head_layers", 1)
    student, dropped = _rename(_text_rules(head_layers), state, kind)
    if "regression_head.proj.weight" not in student:
        notes.append("no usable regression head (encoder.regression_head) in the file: ours is freshly initialised")
    teacher = None
    if "encoder._ema" in nested:
        teacher, teacher_dropped = _text_teacher(nested["encoder._ema"], kind, student,
                                                 mc.get("ema_transformer_layers_only", True), notes)
        dropped.update(teacher_dropped)
    else:
        notes.append("no EMA teacher (encoder._ema) in the file: the teacher starts as a copy of the student")
    return ConvertedCheckpoint(kind, config, "Data2VecForPreTraining", student, teacher, dropped, notes)


# ---- data2vec 1.0 vision (data2vec_vision's BEiT checkpoint-799.pth) ------------------------------------------------


def _beit_target_fields(args, depth: int, notes: list) -> dict:
    """BEiT's pretraining settings (beit/run_cyclical.py get_args, beit/engine_for_cyclical.py) -> ours."""
    fields: dict = {}
    layers = sorted({int(i) for i in re.findall(r"-?\d+", str(getattr(args, "target_layers", "")))})
    layers = [i + depth if i < 0 else i for i in layers]
    if layers and layers == list(range(depth - len(layers), depth)):
        fields["average_top_k_layers"] = len(layers)
    else:
        notes.append(f"targets: target_layers {getattr(args, 'target_layers', None)!r} are not the top K layers; "
                     "continued pretraining averages the top average_top_k_layers")
    if getattr(args, "layer_results", "end") == "end":
        fields["target_layer_output"] = "block"
    else:
        notes.append(f"targets: layer_results {args.layer_results!r} (BEiT's gamma_2-scaled FFN output) is not "
                     "implemented here; continued pretraining uses block outputs")
        fields["target_layer_output"] = "block"
    instance, layer_last = getattr(args, "target_instance_norm", False), not getattr(args, "no_target_layer_norm_last",
                                                                                      False)
    fields["target_layer_norm"] = "layer" if layer_last else "instance" if instance else "none"
    if instance and layer_last:
        notes.append("targets: BEiT instance-norms then layer-norms each target layer; ours layer-norms only")
    if getattr(args, "target_batch_norm", False):
        notes.append("targets: target_batch_norm is not implemented here")
    fields["target_final_norm"] = ("layer" if getattr(args, "post_target_layer_norm", False) else
                                   "instance" if getattr(args, "post_target_instance_norm", False) else "none")
    fields["loss_beta"] = 0.0 if getattr(args, "l2_loss", False) else float(getattr(args, "l1_beta", 2.0))
    fields["loss_reduction"] = "mean"  # F.smooth_l1_loss / F.mse_loss over masked patches and channels
    scale = getattr(args, "loss_scale", -1)
    fields["loss_scale"] = None if scale in (-1, None) else float(scale)  # -1: unscaled
    # EMA decay: linear from ema_decay_init to ema_decay over ema_start_at updates, then ema_decay
    start_at = int(getattr(args, "ema_start_at", 0) or 0)
    end = float(getattr(args, "ema_decay", 0.9998))
    fields.update(ema_decay=float(getattr(args, "ema_decay_init", end)) if start_at > 0 else end, ema_end_decay=end,
                  ema_anneal_end_step=max(start_at, 0))
    return fields


def _beit_rules(dst: str, student: bool) -> list[Rule]:
    """BEiT `VisionTransformerForCyclicalTraining` keys -> ours under `dst` ("data2vec." for the student, "" for the
    teacher, a `Data2VecVisionModel`)."""
    e, L = dst + "embeddings.", dst + "encoder.layers."
    rules = [
        Rule(r"cls_token", e + "cls_token", "the CLS token, prepended before the (optional) absolute positions"),
        Rule(r"mask_token", e + "mask_token", "the learned token that replaces masked patches (1.0 pretraining)"),
        Rule(r"pos_embed", e + "position_embeddings", "--abs_pos_emb: learned absolute positions incl. CLS"),
        Rule(rf"patch_embed\.proj\.{_WB}", e + r"patch_embedding.\1", "the patch embedding conv (timm PatchEmbed)"),
        Rule(r"rel_pos_bias\.relative_position_bias_table", dst + "encoder.relative_position_bias.table",
             "the shared relative position bias (--rel_pos_bias): same table layout as ours, (2h-1)(2w-1) offsets by "
             "(dy, dx) row-major, then cls->token, token->cls, cls->cls (the stored index is checked equal to ours)"),
        Rule(r"rel_pos_bias\.relative_position_index", None,
             "a buffer our model computes from the grid; checked equal to ours before it is dropped"),
        Rule(r"blocks\.(\d+)\.gamma_(1|2)", L + r"\1.layer_scale_\2", "layer scale of the attention / MLP branch"),
        Rule(rf"blocks\.(\d+)\.norm(1|2)\.{_WB}", L + r"\1.norm\2.\3",
             "pre-LN: norm1 before the attention, norm2 before the MLP, as ours"),
        Rule(r"blocks\.(\d+)\.attn\.qkv\.weight", L + r"\1.attention.qkv.weight", "already fused, rows q, k, v"),
        Rule(r"blocks\.(\d+)\.attn\.(q|v)_bias", L + r"\1.attention.qkv.bias:\2",
             "BEiT has q and v biases only: our fused bias is cat(q_bias, 0, v_bias) (a key bias is "
             "softmax-invariant)"),
        Rule(rf"blocks\.(\d+)\.attn\.proj\.{_WB}", L + r"\1.attention.out_proj.\2", "attention output projection"),
        Rule(rf"blocks\.(\d+)\.mlp\.fc(1|2)\.{_WB}", L + r"\1.fc\2.\3", "timm Mlp: fc1, GELU, fc2"),
    ]
    if student:
        rules += [
            Rule(rf"norm\.{_WB}", r"final_norm.\1",
                 "BEiT's final LayerNorm before lm_head: our vision model (mean pooling) has none, the pretraining "
                 "model's final_norm is it"),
            Rule(rf"lm_head\.{_WB}", r"regression_head.proj.\1", "the regression head, Linear(dim, dim)"),
        ]
    else:
        rules += [
            Rule(rf"norm\.{_WB}", None, "the EMA of the final LayerNorm: the teacher's targets are block outputs, "
                                        "never normed by it, and our teacher (mean pooling) has no final norm"),
            Rule(rf"lm_head\.{_WB}", None, "the EMA of the regression head: the teacher never uses it"),
        ]
    return rules


def _fuse_beit_bias(weights: dict) -> dict:
    """`...qkv.bias:q` / `:v` -> one `...qkv.bias` = cat(q_bias, zeros, v_bias) (BEiT Attention.forward)."""
    out, parts = {}, {}
    for key, value in weights.items():
        if ":" in key:
            name, part = key.split(":")
            parts.setdefault(name, {})[part] = value
        else:
            out[key] = value
    for name, p in parts.items():
        if set(p) != {"q", "v"}:
            raise ValueError(f"{name}: BEiT needs both q_bias and v_bias; found {sorted(p)}")
        out[name] = torch.cat([p["q"], torch.zeros_like(p["q"]), p["v"]])
    return out


@converter("beit_vision")
def convert_beit_vision(checkpoint: dict) -> ConvertedCheckpoint:
    from .modeling_data2vec import _relative_position_index

    kind = "beit_vision"
    args = checkpoint.get("args")
    state = checkpoint["model"]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{kind}: non-tensor entries in the model state dict: {', '.join(bad[:5])}")
    notes: list[str] = []
    # sizes from the tensors (BEiT's args name the model, not its sizes)
    dim = state["cls_token"].shape[-1]
    depth = len({int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    table = state["rel_pos_bias.relative_position_bias_table"]
    heads = table.shape[1]  # not otherwise in the weights
    patch_weight = state["patch_embed.proj.weight"]
    _check(kind, patch_weight.shape[-1] == patch_weight.shape[-2], f"non-square patches {tuple(patch_weight.shape)}")
    patch = patch_weight.shape[-1]
    image_size = getattr(args, "input_size", None)
    side = round(((table.shape[0] - 3) ** 0.5 + 1) / 2)  # table rows = (2 side - 1)^2 + 3
    if image_size is None:
        image_size = side * patch
    _check(kind, (2 * (image_size // patch) - 1) ** 2 + 3 == table.shape[0],
           f"a relative position table of {table.shape[0]} rows for {image_size}px images of {patch}px patches")
    ours = _relative_position_index((side, side), torch.device("cpu"))
    for where in ("model", "model_ema"):
        index = (checkpoint.get(where) or {}).get("rel_pos_bias.relative_position_index")
        if index is not None and not torch.equal(index.long(), ours):
            raise ValueError(f"{kind}: {where}'s relative_position_index differs from the one our model computes "
                             f"for a {side}x{side} grid: the table cannot be mapped")
    gammas = "blocks.0.gamma_1" in state
    mask_token = "mask_token" in state
    config = Data2VecConfig(
        modality="vision", algorithm="data2vec",
        hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads,
        intermediate_size=state["blocks.0.mlp.fc1.weight"].shape[0], hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=float(getattr(args, "attn_drop_rate", 0.0)),
        activation_dropout=0.0, layerdrop=0.0, drop_path_rate=float(getattr(args, "drop_path", 0.0)),
        layer_norm_eps=1e-6, layer_norm_position="pre",  # BEiT: partial(nn.LayerNorm, eps=1e-6), pre-LN blocks
        layer_scale_init_value=float(getattr(args, "layer_scale_init_value", 0.1) or 0.1) if gammas else 0.0,
        relative_position_bias="shared", pre_block_layer_norm=False,
        image_size=image_size, patch_size=patch, num_channels=patch_weight.shape[1], use_mask_token=mask_token,
        use_absolute_position_embeddings="pos_embed" in state, use_mean_pooling=True,
        head_layers=1, teacher_scope="model", mask_type="block", **_beit_target_fields(args, depth, notes),
        **collapse_guard(None),  # engine_for_cyclical.py has no collapse check
        **_beit_mask_fields(args, image_size // patch, notes),
    )
    student, dropped = RenameTable(_beit_rules("data2vec.", student=True)).apply(state, kind)
    student = _fuse_beit_bias(student)
    if "regression_head.proj.weight" not in student:
        notes.append("no regression head (lm_head) in the file: ours is freshly initialised")
    teacher = None
    ema = checkpoint.get("model_ema")
    if isinstance(ema, dict):
        teacher, ema_dropped = RenameTable(_beit_rules("", student=False)).apply(
            _teacher_tensors(ema, kind, "model_ema"), f"{kind} model_ema")
        teacher = _fuse_beit_bias(teacher)
        teacher = _fill_teacher(teacher, student, "data2vec.", (), notes, "absent from model_ema")
        dropped.update({f"model_ema.{k}": v for k, v in ema_dropped.items()})
    else:
        notes.append("no EMA teacher (model_ema) in the file: the teacher starts as a copy of the student")
    notes.append("data2vec_vision's weights are licensed CC-BY-NC (beit/README.md): so are the converted ones")
    converted = ConvertedCheckpoint(kind, config, "Data2VecForPreTraining", student, teacher, dropped, notes)
    # beit datasets.py: ImageNet's mean / std with --imagenet_default_mean_and_std, else Inception's (0.5)
    default = getattr(args, "imagenet_default_mean_and_std", False)
    converted.processor_settings = dict(image_mean=[0.485, 0.456, 0.406] if default else [0.5] * 3,
                                         image_std=[0.229, 0.224, 0.225] if default else [0.5] * 3)
    return converted


def _beit_mask_fields(args, side: int, notes: list) -> dict:
    """BEiT's block masking: num_mask_patches of the side x side patches, blocks of >= min_mask_patches_per_block."""
    fields = {}
    count = getattr(args, "num_mask_patches", None)
    if count is not None:
        prob = count / (side * side)
        if 0 < prob <= 1:
            fields["mask_prob"] = prob
        else:
            notes.append(f"masking: num_mask_patches {count} of {side * side} patches is not a fraction in (0, 1]; "
                         "the default mask_prob is kept")
    if getattr(args, "min_mask_patches_per_block", None):
        fields["mask_length"] = int(args.min_mask_patches_per_block)
    return fields


__all__ = ["AUDIO_TEACHER_SCOPE", "convert_beit_vision", "convert_d2v1_audio", "convert_d2v1_audio_ctc",
           "convert_d2v1_text"]
