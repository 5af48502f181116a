"""Loading transformers' Data2VecText / Data2VecVision / Data2VecAudio checkpoints into our models.

A conversion is (1) a config mapping, (2) a rename table applied to every weight, (3) one structural step
(separate query / key / value projections fused into one `qkv`), and (4) before anything is written, an
`allclose` check of our outputs against transformers' own model on the same weights (`conversion_cli.convert_checkpoint`,
the `data2vec-convert` command). `from_pretrained` imports this module when it meets such a checkpoint; reading a
checkpoint's files is `checkpoint_files.py`'s. A weight the table does not know is an error naming it: nothing is
dropped silently.
"""

from __future__ import annotations

import logging
import re

import torch

from .checkpoint_files import (  # noqa: F401  (re-exported: their home before checkpoint_files.py)
    HUB_KWARGS,
    TRANSFORMERS_MODEL_TYPES,
    hub_kwargs,
    check_local_path,
    checkpoint_modality,
    read_config_dict,
    read_state_dict,
    register_transformers_loader,
    unreadable_weights_error,
)
from .configuration_data2vec import MODALITY_DEFAULTS, Data2VecConfig

logger = logging.getLogger(__name__)

# the attribute under which transformers' task classes hold the base model
TRANSFORMERS_BASE_PREFIX = {"text": "data2vec_text.", "vision": "data2vec_vision.", "audio": "data2vec_audio."}


# ---- 1. config ------------------------------------------------------------------------------------------------

_SHARED_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "layer_norm_eps", "initializer_range", "id2label", "label2id", "problem_type", "classifier_dropout",
)


def config_from_transformers(config_dict: dict) -> Data2VecConfig:
    """Our `Data2VecConfig` for a transformers Data2Vec* config.json (as a dict)."""
    d = config_dict
    modality = TRANSFORMERS_MODEL_TYPES[d["model_type"]]
    fields = {k: d[k] for k in _SHARED_FIELDS if d.get(k) is not None}
    if modality == "text":
        if d.get("is_decoder") or d.get("add_cross_attention"):
            raise ValueError("decoder Data2VecText checkpoints (is_decoder / cross-attention) are not supported")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={d['position_embedding_type']!r} is not supported")
        fields.update(
            layer_norm_position="post", layer_scale_init_value=0.0, relative_position_bias="none",
            hidden_dropout_prob=d.get("hidden_dropout_prob", 0.1),
            attention_probs_dropout_prob=d.get("attention_probs_dropout_prob", 0.1), activation_dropout=0.0,
            layerdrop=0.0, drop_path_rate=0.0,
        )
        for k in ("vocab_size", "max_position_embeddings", "type_vocab_size", "pad_token_id", "bos_token_id",
                  "eos_token_id"):
            if k in d:
                fields[k] = d[k]
    elif modality == "vision":
        image_size, patch_size = d.get("image_size", 224), d.get("patch_size", 16)
        for name, v in (("image_size", image_size), ("patch_size", patch_size)):
            if isinstance(v, (list, tuple)):
                if v[0] != v[1]:
                    raise ValueError(f"non-square {name} {v} is not supported")
                v = v[0]
            fields[name] = v
        shared, per_layer = d.get("use_shared_relative_position_bias", False), d.get("use_relative_position_bias", False)
        if shared and per_layer:
            raise ValueError("a checkpoint with both shared and per-layer relative position bias is not supported")
        fields.update(
            layer_norm_position="pre",
            relative_position_bias="shared" if shared else "per_layer" if per_layer else "none",
            layer_scale_init_value=d.get("layer_scale_init_value", 0.1),
            hidden_dropout_prob=d.get("hidden_dropout_prob", 0.0),
            attention_probs_dropout_prob=d.get("attention_probs_dropout_prob", 0.0), activation_dropout=0.0,
            layerdrop=0.0, drop_path_rate=d.get("drop_path_rate", 0.1),
            num_channels=d.get("num_channels", 3), use_mask_token=d.get("use_mask_token", False),
            use_absolute_position_embeddings=d.get("use_absolute_position_embeddings", False),
            use_mean_pooling=d.get("use_mean_pooling", True),
        )
    else:
        if d.get("add_adapter"):
            raise ValueError("Data2VecAudio checkpoints with an adapter (add_adapter=True) are not supported")
        fields.update(
            layer_norm_position="post", layer_scale_init_value=0.0, relative_position_bias="none",
            hidden_dropout_prob=d.get("hidden_dropout", 0.1),
            attention_probs_dropout_prob=d.get("attention_dropout", 0.1),
            activation_dropout=d.get("activation_dropout", 0.1), layerdrop=d.get("layerdrop", 0.1),
            drop_path_rate=0.0,
        )
        for k in ("conv_dim", "conv_stride", "conv_kernel", "conv_bias", "feat_extract_activation",
                  "feat_proj_dropout", "num_conv_pos_embeddings", "conv_pos_kernel_size",
                  "num_conv_pos_embedding_groups", "vocab_size", "pad_token_id", "final_dropout",
                  "classifier_proj_size", "use_weighted_layer_sum", "ctc_loss_reduction", "ctc_zero_infinity"):
            if k in d:
                fields[k] = d[k]
        if d.get("mask_time_prob"):
            fields["mask_length"] = d.get("mask_time_length", 10)
    layers = fields.get("num_hidden_layers", 12)
    top_k = min(layers, MODALITY_DEFAULTS[modality]["average_top_k_layers"])
    return Data2VecConfig(modality=modality, average_top_k_layers=top_k, **fields)


# ---- 2. rename table ----------------------------------------------------------------------------------------------
# (transformers key, ours) as full-match regular expressions. `qkv.<weight|bias>:<q|k|v>` marks a separate
# projection that step 3 fuses.

_L = r"encoder\.layer\.(\d+)\."  # text / vision layer prefix
_A = r"encoder\.layers\.(\d+)\."  # audio layer prefix
_WB = r"(weight|bias)"

RENAMES: dict[str, list[tuple[str, str]]] = {
    "text": [
        (r"embeddings\.(word|position|token_type)_embeddings\.weight", r"embeddings.\1_embeddings.weight"),
        (rf"embeddings\.LayerNorm\.{_WB}", r"embeddings.layer_norm.\1"),
        (rf"{_L}attention\.self\.(query|key|value)\.{_WB}", r"encoder.layers.\1.attention.qkv.\3:\2"),
        (rf"{_L}attention\.output\.dense\.{_WB}", r"encoder.layers.\1.attention.out_proj.\2"),
        (rf"{_L}attention\.output\.LayerNorm\.{_WB}", r"encoder.layers.\1.norm1.\2"),
        (rf"{_L}intermediate\.dense\.{_WB}", r"encoder.layers.\1.fc1.\2"),
        (rf"{_L}output\.dense\.{_WB}", r"encoder.layers.\1.fc2.\2"),
        (rf"{_L}output\.LayerNorm\.{_WB}", r"encoder.layers.\1.norm2.\2"),
        (rf"pooler\.dense\.{_WB}", r"pooler.dense.\1"),
    ],
    "vision": [
        (r"embeddings\.(cls_token|mask_token|position_embeddings)", r"embeddings.\1"),
        (rf"embeddings\.patch_embeddings\.projection\.{_WB}", r"embeddings.patch_embedding.\1"),
        (r"encoder\.relative_position_bias\.relative_position_bias_table", r"encoder.relative_position_bias.table"),
        (rf"{_L}attention\.attention\.(query|key|value)\.{_WB}", r"encoder.layers.\1.attention.qkv.\3:\2"),
        (
            rf"{_L}attention\.attention\.relative_position_bias\.relative_position_bias_table",
            r"encoder.layers.\1.attention.relative_position_bias.table",
        ),
        (rf"{_L}attention\.output\.dense\.{_WB}", r"encoder.layers.\1.attention.out_proj.\2"),
        (rf"{_L}layernorm_before\.{_WB}", r"encoder.layers.\1.norm1.\2"),
        (rf"{_L}layernorm_after\.{_WB}", r"encoder.layers.\1.norm2.\2"),
        (rf"{_L}intermediate\.dense\.{_WB}", r"encoder.layers.\1.fc1.\2"),
        (rf"{_L}output\.dense\.{_WB}", r"encoder.layers.\1.fc2.\2"),
        (rf"{_L}lambda_(1|2)", r"encoder.layers.\1.layer_scale_\2"),
        (rf"layernorm\.{_WB}", r"layernorm.\1"),
        (rf"pooler\.layernorm\.{_WB}", r"pooler.layernorm.\1"),
    ],
    "audio": [
        (
            rf"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.{_WB}",
            r"embeddings.feature_extractor.\1.\2.\3",
        ),
        (rf"feature_projection\.layer_norm\.{_WB}", r"embeddings.feature_layer_norm.\1"),
        (rf"feature_projection\.projection\.{_WB}", r"embeddings.feature_projection.\1"),
        (r"masked_spec_embed", r"embeddings.mask_embedding"),
        (rf"encoder\.pos_conv_embed\.layers\.(\d+)\.conv\.{_WB}", r"embeddings.pos_conv.\1.conv.\2"),
        (rf"encoder\.layer_norm\.{_WB}", r"embeddings.layer_norm.\1"),
        (rf"{_A}attention\.(q|k|v)_proj\.{_WB}", r"encoder.layers.\1.attention.qkv.\3:\2"),
        (rf"{_A}attention\.out_proj\.{_WB}", r"encoder.layers.\1.attention.out_proj.\2"),
        (rf"{_A}layer_norm\.{_WB}", r"encoder.layers.\1.norm1.\2"),
        (rf"{_A}feed_forward\.intermediate_dense\.{_WB}", r"encoder.layers.\1.fc1.\2"),
        (rf"{_A}feed_forward\.output_dense\.{_WB}", r"encoder.layers.\1.fc2.\2"),
        (rf"{_A}final_layer_norm\.{_WB}", r"encoder.layers.\1.norm2.\2"),
    ],
}
# buffers some checkpoints carry, recomputed by both implementations
IGNORED = [r"embeddings\.(position_ids|token_type_ids)", r".*relative_position_index"]

_QKV_ORDER = {"query": 0, "key": 1, "value": 2, "q": 0, "k": 1, "v": 2}


def convert_state_dict(modality: str, state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """transformers weights -> (our base-model weights, the task head's weights, with their own names).

    Task classes (e.g. Data2VecAudioForCTC) hold the base model under `data2vec_<modality>.`; what lies outside
    it is their head. Every base-model key must be known to the rename table, or this raises naming it.
    """
    prefix = TRANSFORMERS_BASE_PREFIX[modality]
    has_head = any(k.startswith(prefix) for k in state_dict)
    base, head = {}, {}
    for key, value in state_dict.items():
        if has_head and not key.startswith(prefix):
            head[key] = value
        else:
            base[key.removeprefix(prefix)] = value

    renamed, unknown = {}, []
    for key, value in base.items():
        if any(re.fullmatch(p, key) for p in IGNORED):
            continue
        for pattern, replacement in RENAMES[modality]:
            if re.fullmatch(pattern, key):
                renamed[re.sub(pattern, replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"cannot map these {modality} weights onto Data2Vec{modality.capitalize()}Model: {sorted(unknown)}"
        )
    return fuse_qkv(renamed), head


def fuse_qkv(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Step 3: `...qkv.weight:q|k|v` -> one `...qkv.weight` (3D, D); a missing key bias becomes zeros."""
    out, parts = {}, {}
    for key, value in weights.items():
        if ":" in key:
            name, part = key.split(":")
            parts.setdefault(name, [None, None, None])[_QKV_ORDER[part]] = value
        else:
            out[key] = value
    for name in list(parts):
        if name.endswith(".bias") and name[: -len("bias")] + "weight" not in parts:
            raise ValueError(f"{name} has a bias but no weight")
    for name, (q, k, v) in parts.items():
        if name.endswith(".bias") and k is None and q is not None:
            k = torch.zeros_like(q)  # vision: the key has no bias (softmax-invariant, see Data2VecAttention)
        if q is None or k is None or v is None:
            raise ValueError(f"{name}: query, key and value projections must all be present")
        out[name] = torch.cat([q, k, v], dim=0)
    for name in [n for n in parts if n.endswith(".weight")]:
        bias = name[: -len("weight")] + "bias"
        if bias not in out:  # no bias at all in the source: zeros reproduce it
            out[bias] = torch.zeros(out[name].shape[0], dtype=out[name].dtype)
    return out


@register_transformers_loader
def load_from_transformers(cls, pretrained_model_name_or_path, config_dict: dict, *model_args, **kwargs):
    """`cls.from_pretrained` for a transformers Data2Vec* checkpoint: config, rename, fuse, load strictly."""
    config = config_from_transformers(config_dict)
    dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None)
    ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False)
    for key in list(kwargs):
        if key in HUB_KWARGS or key in ("trust_remote_code", "adapter_kwargs", "_from_auto"):
            continue
        if hasattr(config, key):
            setattr(config, key, kwargs.pop(key))
    config.name_or_path = str(pretrained_model_name_or_path)
    weights, head = convert_state_dict(config.modality, read_state_dict(pretrained_model_name_or_path, **kwargs))

    model = cls(config, *model_args)
    prefix = "" if not hasattr(model, model.base_model_prefix) else model.base_model_prefix + "."
    weights = {prefix + k: v for k, v in weights.items()}
    if head and hasattr(model, "load_transformers_head"):
        weights.update(model.load_transformers_head(head))
        head = {}
    own = model.state_dict()
    unused = sorted(k for k in weights if k not in own)
    missing = sorted(k for k in own if k not in weights)
    mismatched = sorted(k for k, v in weights.items() if k in own and own[k].shape != v.shape)
    if mismatched and not ignore_mismatched_sizes:
        key = mismatched[0]
        raise ValueError(
            f"{pretrained_model_name_or_path}: {key} has shape {tuple(weights[key].shape)} in the checkpoint but "
            f"{tuple(own[key].shape)} in this {cls.__name__} (e.g. another num_labels / vocab_size than the "
            f"checkpoint's head): drop the argument to keep the checkpoint's head, or pass "
            f"ignore_mismatched_sizes=True to initialise a new head of the size you asked for"
        )
    for key in mismatched:
        del weights[key]
        missing.append(key)
    model.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)
    if unused or head:
        logger.warning(
            "%s: weights this %s does not use: %s", pretrained_model_name_or_path, cls.__name__,
            unused + sorted(head),
        )
    if missing:
        logger.warning("%s: newly initialised in %s: %s", pretrained_model_name_or_path, cls.__name__, missing)
    if dtype is not None and dtype != "auto":
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model.eval()


# ---- 4. convert with a check against the source ----------------------------------------------------------------


def example_inputs(config: Data2VecConfig, batch_size: int = 2, generator: torch.Generator | None = None) -> dict:
    """A small batch for `config`'s modality, with padding in the second example where the modality pads."""
    g = generator or torch.Generator().manual_seed(0)
    if config.modality == "text":
        T = 16
        ids = torch.randint(3, config.vocab_size, (batch_size, T), generator=g)
        mask = torch.ones(batch_size, T, dtype=torch.long)
        ids[-1, T - 5 :], mask[-1, T - 5 :] = config.pad_token_id, 0
        ids[:, 0] = config.bos_token_id if config.bos_token_id is not None else ids[:, 0]
        return {"input_ids": ids, "attention_mask": mask}
    if config.modality == "vision":
        S = config.image_size
        return {"pixel_values": torch.randn(batch_size, config.num_channels, S, S, generator=g)}
    S = 24 * config.inputs_to_logits_ratio + config.receptive_field  # 25 frames; a third is padding in the last
    mask = torch.ones(batch_size, S, dtype=torch.long)
    mask[-1, S - S // 3 :] = 0
    wave = torch.randn(batch_size, S, generator=g) * mask
    return {"input_values": wave, "attention_mask": mask}


OUTPUTS_COMPARED = ("last_hidden_state", "logits", "start_logits", "end_logits")


@torch.no_grad()
def max_output_difference(ours, theirs, inputs: dict) -> float:
    """max |ours - theirs| over every entry of `hidden_states` and whichever of `OUTPUTS_COMPARED` both give (a base
    model's last_hidden_state; a task model's logits), in eval mode."""
    ours.eval(), theirs.eval()
    a = ours(**inputs, output_hidden_states=True)
    b = theirs(**inputs, output_hidden_states=True)
    if len(a.hidden_states) != len(b.hidden_states):
        raise AssertionError(f"{len(a.hidden_states)} hidden states vs transformers' {len(b.hidden_states)}")
    diffs = [(x - y).abs().max() for x, y in zip(a.hidden_states, b.hidden_states)]
    for name in OUTPUTS_COMPARED:
        if a.get(name) is not None and b.get(name) is not None:
            diffs.append((a[name] - b[name]).abs().max())
    return float(torch.stack(diffs).max())
