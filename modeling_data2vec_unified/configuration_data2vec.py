"""`Data2VecConfig`: one configuration for the text, vision and audio data2vec models.

Every knob lives here. Fields left at `None` are filled from `MODALITY_DEFAULTS[modality]`, so
`Data2VecConfig(modality="audio")` is data2vec's base audio model and pretraining setup, and any field
can still be overridden (`Data2VecConfig(modality="audio", num_hidden_layers=4)`).
"""

from __future__ import annotations

import math
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

MODALITIES = ("text", "vision", "audio")

# fields whose value names a choice, and the values they accept
CHOICES: dict[str, tuple[str, ...]] = {
    "layer_norm_position": ("post", "pre"),
    "relative_position_bias": ("none", "shared", "per_layer"),
    "target_layer_output": ("ffn", "block"),
    "target_layer_norm": ("instance", "layer", "none"),
    "target_final_norm": ("instance", "layer", "none"),
    "teacher_scope": ("encoder", "model"),
    "loss_reduction": ("channel_sum", "mean"),
}

# data2vec 1.0 base models (Baevski et al., 2022) and their pretraining recipes: fairseq
# examples/data2vec/config/{text,audio}/pretraining/base*.yaml and the BEiT-based vision recipe.
MODALITY_DEFAULTS: dict[str, dict] = {
    "text": dict(
        # RoBERTa-base encoder with the GPT-2 BPE vocabulary, post-LN layers
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, activation_dropout=0.0,
        layerdrop=0.0, drop_path_rate=0.0, layer_norm_eps=1e-5, layer_norm_position="post",
        layer_scale_init_value=0.0, relative_position_bias="none",
        vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
        # pretraining: top-10 FFN outputs, each layer-normed; smooth L1 beta 4, scale 1; 2-layer head
        average_top_k_layers=10, target_layer_output="ffn", target_layer_norm="layer", target_final_norm="none",
        loss_beta=4.0, loss_reduction="channel_sum", loss_scale=1.0, head_layers=2, teacher_scope="encoder",
        ema_decay=0.999, ema_end_decay=0.9999, ema_anneal_end_step=300000,
        # spans of 4 tokens over ~35% of the tokens, all replaced by <mask> (data2vec text base.yaml)
        mask_prob=0.35, mask_length=4, mask_random_token_prob=0.0, mask_leave_unmasked_prob=0.0, mask_type="span",
    ),
    "vision": dict(
        # BEiT ViT-B/16 as data2vec_vision's ViT-B pretraining command (beit/README.md): pre-LN, shared relative
        # position bias, --layer_scale_init_value 1e-4 --drop_path 0.25 --attn_drop_rate 0.05
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.05, activation_dropout=0.0,
        layerdrop=0.0, drop_path_rate=0.25, layer_norm_eps=1e-6, layer_norm_position="pre",
        layer_scale_init_value=1e-4, relative_position_bias="shared",
        image_size=224, patch_size=16, num_channels=3, use_mask_token=True,
        use_absolute_position_embeddings=False, use_mean_pooling=True,
        # pretraining: top-6 block outputs (--target_layers [6..11] --layer_results end), each layer-normed, then a
        # layer norm of the average (--post_target_layer_norm); smooth L1 beta 2 averaged over positions and
        # channels, unscaled (engine_for_cyclical.py: F.smooth_l1_loss(..., beta=l1_beta), --loss_scale -1)
        average_top_k_layers=6, target_layer_output="block", target_layer_norm="layer", target_final_norm="layer",
        loss_beta=2.0, loss_reduction="mean", loss_scale=None, head_layers=1, teacher_scope="model",
        ema_decay=0.9998, ema_end_decay=0.9998, ema_anneal_end_step=0,
        # BEiT block masking: data2vec masks 120 of the 196 patches (~60%), blocks of >= 16 patches, aspect
        # ratio log-uniform in [0.3, 1/0.3]
        mask_prob=120 / 196, mask_length=16, mask_min_aspect=0.3, mask_type="block",
    ),
    "audio": dict(
        # wav2vec 2.0 base layout with a layer-normed conv feature encoder and a 5-layer positional conv
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, activation_dropout=0.0,
        layerdrop=0.05, drop_path_rate=0.0, layer_norm_eps=1e-5, layer_norm_position="post",
        layer_scale_init_value=0.0, relative_position_bias="none",
        conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_bias=False, feat_extract_activation="gelu", feat_proj_dropout=0.0,
        num_conv_pos_embeddings=5, conv_pos_kernel_size=19, num_conv_pos_embedding_groups=16,
        sampling_rate=16000,
        # pretraining: top-8 FFN outputs, each instance-normed over time; L2 loss summed over channels and scaled
        # by 1/sqrt(dim)
        average_top_k_layers=8, target_layer_output="ffn", target_layer_norm="instance", target_final_norm="none",
        loss_beta=0.0, loss_reduction="channel_sum", loss_scale=None, head_layers=1, teacher_scope="encoder",
        ema_decay=0.999, ema_end_decay=0.9999, ema_anneal_end_step=30000,
        # spans of 10 frames, start probability 0.65 (about half the frames masked)
        mask_prob=0.65, mask_length=10, mask_type="span",
    ),
}


@strict
class Data2VecConfig(PreTrainedConfig):
    r"""
    Configuration of a data2vec model of one modality: its front end, the shared Transformer encoder and the
    data2vec pretraining objective. Shared field names follow transformers' Data2Vec* configs.

    Mask convention everywhere in this package: `True` / 1 in a mask means *masked* (hidden from the student);
    `True` / 1 in an `attention_mask` means *a real token* (not padding).
    """

    model_type = "data2vec"

    modality: Literal["text", "vision", "audio"] = "vision"

    # ---- shared Transformer encoder -------------------------------------------------------------------------
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    hidden_act: str | None = None
    hidden_dropout_prob: float | None = None  # after attention output and FFN output projections
    attention_probs_dropout_prob: float | None = None
    activation_dropout: float | None = None  # inside the FFN, after the activation
    layerdrop: float | None = None  # probability of skipping a whole layer in training (audio)
    drop_path_rate: float | None = None  # stochastic depth, linearly increasing over layers (vision)
    layer_norm_eps: float | None = None
    layer_norm_position: Literal["post", "pre"] | None = None  # post-LN: text, audio; pre-LN: vision
    layer_scale_init_value: float | None = None  # 0 disables layer scale
    relative_position_bias: Literal["none", "shared", "per_layer"] | None = None
    initializer_range: float = 0.02

    # ---- text front end (RoBERTa-style embeddings) -----------------------------------------------------------
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    type_vocab_size: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    mask_token_id: int | None = None  # None: the last id of the vocabulary (RoBERTa's <mask>)

    # ---- vision front end (BEiT-style patch embedding) -------------------------------------------------------
    image_size: int | None = None
    patch_size: int | None = None
    num_channels: int | None = None
    use_mask_token: bool | None = None
    use_absolute_position_embeddings: bool | None = None
    use_mean_pooling: bool | None = None  # pooler = LayerNorm(mean of patches); else final LayerNorm + CLS

    # ---- audio front end (wav2vec2-style conv feature encoder) -----------------------------------------------
    conv_dim: list[int] | tuple[int, ...] | None = None
    conv_stride: list[int] | tuple[int, ...] | None = None
    conv_kernel: list[int] | tuple[int, ...] | None = None
    conv_bias: bool | None = None
    feat_extract_activation: str | None = None
    feat_proj_dropout: float | None = None
    num_conv_pos_embeddings: int | None = None  # number of positional conv layers
    conv_pos_kernel_size: int | None = None  # kernel of each positional conv layer
    num_conv_pos_embedding_groups: int | None = None
    sampling_rate: int | None = None

    # ---- data2vec pretraining ----------------------------------------------------------------------------------
    # targets = average of the teacher's top K layers; None: the base K (vision 6, text 10, audio 8) from 12 layers up,
    # round(K * layers / 12) (at least 1) for shallower encoders (`default_top_k`)
    average_top_k_layers: int | None = None
    target_layer_output: Literal["ffn", "block"] | None = None  # FFN output before residual, or block output
    target_layer_norm: Literal["instance", "layer", "none"] | None = None  # per layer, before averaging
    target_final_norm: Literal["instance", "layer", "none"] | None = None  # after averaging
    loss_beta: float | None = None  # 0: L2 loss; > 0: smooth L1 with this beta
    # "channel_sum": summed over channels, times loss_scale, averaged over masked positions (fairseq data2vec text
    # and audio); "mean": averaged over masked positions and channels, times loss_scale (data2vec_vision)
    loss_reduction: Literal["channel_sum", "mean"] | None = None
    loss_scale: float | None = None  # None: 1 / sqrt(hidden_size) with "channel_sum", 1 with "mean"
    head_layers: int | None = None  # 1: Linear(D, D); 2: Linear(D, 2D)-GELU-Linear(2D, D)
    teacher_scope: Literal["encoder", "model"] | None = None  # what the EMA teacher averages
    ema_decay: float | None = None  # decay at update 0
    ema_end_decay: float | None = None  # decay from `ema_anneal_end_step` on
    ema_anneal_end_step: int | None = None
    mask_prob: float | None = None  # text/vision: fraction masked; audio: span start probability
    mask_length: int | None = None  # text/audio: span length; vision: minimum patches per block
    mask_min_aspect: float | None = None  # vision: block aspect ratio drawn log-uniformly in [min, 1/min]
    # text / audio: "span"; vision: "block" (BEiT) or "random" (a uniform draw of patches, better on tiny grids)
    mask_type: Literal["span", "block", "random"] | None = None
    mask_random_token_prob: float | None = None  # text: of the selected tokens, replaced by a random token
    mask_leave_unmasked_prob: float | None = None  # text: of the selected tokens, left unchanged
    min_target_var: float = 0.1  # collapse check thresholds (fairseq data2vec's defaults)
    min_pred_var: float = 0.01

    # ---- fine-tuning heads (transformers' names and defaults) ------------------------------------------------------
    classifier_dropout: float | None = None  # text heads; None: hidden_dropout_prob
    final_dropout: float = 0.1  # audio CTC: before the vocabulary projection
    classifier_proj_size: int = 256  # audio classification: projection before mean pooling
    use_weighted_layer_sum: bool = False  # audio classification: softmax-weighted sum of all hidden states
    ctc_loss_reduction: Literal["sum", "mean"] = "sum"
    ctc_zero_infinity: bool = False  # CTC: zero the loss of inputs too short for their targets instead of inf

    # what `data2vec-pretrain` records of the run that made these weights (data, steps, optimisation, probe): the
    # model card shows it, and fine-tuned models inherit it with the config
    pretraining_info: dict | None = None

    def __post_init__(self, **kwargs):
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}; got {self.modality!r}")
        defaults = MODALITY_DEFAULTS[self.modality]
        if self.average_top_k_layers is None and self.num_hidden_layers is not None:
            self.average_top_k_layers = default_top_k(self.modality, self.num_hidden_layers)
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.modality == "text" and self.mask_token_id is None:
            self.mask_token_id = self.vocab_size - 1
        for name in ("conv_dim", "conv_stride", "conv_kernel"):
            if getattr(self, name) is not None:
                setattr(self, name, list(getattr(self, name)))
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Checked by `@strict` after construction: inconsistent settings fail here, naming the fix."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")
        allowed = ("block", "random") if self.modality == "vision" else ("span",)
        if self.mask_type not in allowed:
            raise ValueError(f"mask_type for {self.modality} must be one of {allowed}; got {self.mask_type!r}")
        if self.head_layers not in (1, 2):
            raise ValueError(f"head_layers must be 1 or 2; got {self.head_layers}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if not 1 <= self.average_top_k_layers <= self.num_hidden_layers:
            raise ValueError(
                f"average_top_k_layers must be in [1, num_hidden_layers={self.num_hidden_layers}]; "
                f"got {self.average_top_k_layers}"
            )
        if self.modality == "audio":
            lengths = {n: len(getattr(self, n)) for n in ("conv_dim", "conv_stride", "conv_kernel")}
            if len(set(lengths.values())) != 1:
                raise ValueError(
                    "conv_dim, conv_stride and conv_kernel must have one entry per conv layer; got lengths "
                    + ", ".join(f"{n}={v}" for n, v in lengths.items())
                )
            if self.hidden_size % self.num_conv_pos_embedding_groups != 0:
                raise ValueError(
                    f"hidden_size ({self.hidden_size}) must be a multiple of num_conv_pos_embedding_groups "
                    f"({self.num_conv_pos_embedding_groups})"
                )
        if self.modality == "vision" and self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )

    @property
    def num_feat_extract_layers(self) -> int:
        return len(self.conv_dim) if self.conv_dim is not None else 0

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Audio: input samples per output frame."""
        return math.prod(self.conv_stride)

    def num_audio_frames(self, num_samples):
        """Audio: frames the conv feature encoder yields for `num_samples` samples (an int or a tensor)."""
        for kernel, stride in zip(self.conv_kernel, self.conv_stride):
            num_samples = (num_samples - kernel) // stride + 1
        return num_samples

    @property
    def receptive_field(self) -> int:
        """Audio: samples the conv feature encoder needs for one output frame."""
        field = 1
        for kernel, stride in zip(reversed(self.conv_kernel), reversed(self.conv_stride)):
            field = (field - 1) * stride + kernel
        return field

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Vision: patches along height and width at `image_size`."""
        return (self.image_size // self.patch_size, self.image_size // self.patch_size)

    @property
    def target_loss_scale(self) -> float:
        """The factor on the regression loss: `loss_scale`, or by default 1 / sqrt(hidden_size) for a loss summed
        over channels (fairseq data2vec) and 1 for one averaged over them (data2vec_vision)."""
        if self.loss_scale is not None:
            return self.loss_scale
        return 1.0 / math.sqrt(self.hidden_size) if self.loss_reduction == "channel_sum" else 1.0


def default_top_k(modality: str, num_hidden_layers: int) -> int:
    """The default `average_top_k_layers` for an encoder of `num_hidden_layers`: the base model's K (vision 6, text 10,
    audio 8) from 12 layers up (deeper models keep it: data2vec_vision's ViT-L averages its top 6 of 24); below 12, the
    same share of the layers, round(K * layers / 12), at least 1."""
    base = MODALITY_DEFAULTS[modality]
    depth = min(num_hidden_layers, base["num_hidden_layers"])
    return max(1, int(base["average_top_k_layers"] * depth / base["num_hidden_layers"] + 0.5))


__all__ = ["Data2VecConfig", "MODALITY_DEFAULTS", "MODALITIES", "default_top_k"]
