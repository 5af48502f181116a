"""`Data2VecConfig`: one configuration for the text, vision and audio data2vec models.

Every knob lives here. Fields left at `None` are filled from `MODALITY_DEFAULTS[modality]`, so
`Data2VecConfig(modality="audio")` is data2vec's base audio model and pretraining setup, and any field
can still be overridden (`Data2VecConfig(modality="audio", num_hidden_layers=4)`).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .mask_types import MASK_TYPES, MaskType
from .modalities import MODALITIES


# what the EMA teacher averages (`teacher_scope`): the type hint and the check below both read it
TeacherScope = Literal["encoder", "model", "model_except_feature_encoder"]

# fields whose value names a choice, and the values they accept (`mask_type`: mask_types.MASK_TYPES)
CHOICES: dict[str, tuple[str, ...]] = {
    "layer_norm_position": ("post", "pre"),
    "relative_position_bias": ("none", "shared", "per_layer", "alibi"),
    "target_layer_output": ("ffn", "block"),
    "target_layer_norm": ("instance", "batch", "layer", "none"),
    "target_final_norm": ("instance", "layer", "none"),
    "teacher_scope": get_args(TeacherScope),
    "loss_reduction": ("channel_sum", "mean"),
    "cls_loss_reduction": ("sum", "mean"),
    "algorithm": ("data2vec", "data2vec2"),
    "position_embedding_type": ("learned", "sincos"),
    "decoder_type": ("conv_1d", "conv_2d"),
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
        use_mask_token=True,
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
        mask_prob=120 / 196, mask_length=16, mask_min_aspect=0.3, mask_type="block", position_embedding_type="learned",
    ),
    "audio": dict(
        # wav2vec 2.0 base layout with a layer-normed conv feature encoder and a 5-layer positional conv
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, activation_dropout=0.0,
        layerdrop=0.05, drop_path_rate=0.0, layer_norm_eps=1e-5, layer_norm_position="post",
        layer_scale_init_value=0.0, relative_position_bias="none",
        conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_bias=False, feat_extract_activation="gelu", feat_proj_dropout=0.0, feature_grad_mult=1.0,
        num_conv_pos_embeddings=5, conv_pos_kernel_size=19, num_conv_pos_embedding_groups=16,
        pos_conv_zero_padding=True, sampling_rate=16000,
        # pretraining: top-8 FFN outputs, each instance-normed over time; L2 loss summed over channels and scaled
        # by 1/sqrt(dim)
        average_top_k_layers=8, target_layer_output="ffn", target_layer_norm="instance", target_final_norm="none",
        loss_beta=0.0, loss_reduction="channel_sum", loss_scale=None, head_layers=1,
        # fairseq's teacher (ema_transformer_only, ema_layers_only): the student's projected conv features through
        # the teacher's positional conv, COPIED from the student at every EMA step (skip_keys), and the teacher's own
        # EMA of the LayerNorm after it and of the layers (data2vec_audio.py make_ema_teacher / forward)
        teacher_scope="model_except_feature_encoder", teacher_copies_pos_conv=True,
        ema_decay=0.999, ema_end_decay=0.9999, ema_anneal_end_step=30000,
        # spans of 10 frames, start probability 0.65 (about half the frames masked)
        mask_prob=0.65, mask_length=10, mask_type="span", use_mask_token=True,
    ),
}

# what every data2vec 1.0 model shares of the fields data2vec 2.0 added
DATA2VEC_SHARED = dict(clone_batch=1, mask_prob_adjust=0.0, pre_block_layer_norm=False, cls_loss_weight=0.0,
                       cls_loss_reduction="sum")

# data2vec 2.0 base models and recipes (Baevski et al., "Efficient Self-supervised Learning with Contextualized Target
# Representations for Vision, Speech and Language", 2022): fairseq examples/data2vec/config/v2/
# base_{images,audio,text}_only_task.yaml, models/data2vec2.py and models/modalities/{base,images,audio,text}.py.
# Applied over MODALITY_DEFAULTS when algorithm="data2vec2". Every modality: post-LN blocks (AltBlock with
# layer_norm_first=False), targets = the top-K FFN outputs (ffn_targets), each instance-normed over time, averaged;
# L2 loss summed over channels; masked positions are removed from the student and enter the decoder as N(0, 0.01)
# noise (mask_noise_std); the student's masks are clone_batch copies per sample, one teacher pass serves them.
DATA2VEC2_DEFAULTS: dict[str, dict] = {
    "text": dict(
        # RoBERTa-base layout as 1.0; dropout 0.1 everywhere (encoder_dropout, attention_dropout, post_mlp_drop)
        layer_norm_position="post", pre_block_layer_norm=False,
        average_top_k_layers=12, target_layer_output="ffn", target_layer_norm="instance", target_final_norm="none",
        loss_beta=0.0, loss_reduction="channel_sum", loss_scale=1.0, teacher_scope="encoder",  # ema_encoder_only
        ema_decay=0.9999, ema_end_decay=0.99999, ema_anneal_end_step=100000, clone_batch=8,
        # mask_length 1: fairseq's random_masking keeps int(T * (1 - 0.48)) tokens of every row
        mask_type="random", mask_prob=0.48, mask_length=1, mask_prob_adjust=0.0, use_mask_token=False,
        decoder_type="conv_1d", decoder_layers=5, decoder_dim=768, decoder_kernel=9, decoder_groups=1,
        decoder_residual=False, decoder_input_dropout=0.1, head_layers=2,  # projection_layers 2, ratio 2
        mask_noise_std=0.01, cls_loss_weight=0.0,
    ),
    "vision": dict(
        # ViT-B/16 with fixed 2-D sin-cos positions (added before masking), a CLS token without a position, a
        # LayerNorm before the first block (the context encoder's norm), post-LN blocks without layer scale
        layer_norm_position="post", pre_block_layer_norm=True, layer_scale_init_value=0.0,
        relative_position_bias="none", use_absolute_position_embeddings=False, position_embedding_type="sincos",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, activation_dropout=0.0, drop_path_rate=0.0,
        layer_norm_eps=1e-6, use_mask_token=False,
        average_top_k_layers=10, target_layer_output="ffn", target_layer_norm="instance", target_final_norm="layer",
        loss_beta=0.0, loss_reduction="channel_sum", loss_scale=None, teacher_scope="model",  # ema_local_encoder
        ema_decay=0.9998, ema_end_decay=0.99999, ema_anneal_end_step=100000, clone_batch=16,
        # inverse block masking: blocks of 3x3 patches mark what stays visible; int(196 * 0.2) = 39 visible, 157 of
        # 196 masked; mask_prob_adjust 0.07 draws more block centres than needed, the exact count is then set
        mask_type="inverse_block", mask_prob=0.8, mask_length=3, mask_prob_adjust=0.07,
        decoder_type="conv_2d", decoder_layers=6, decoder_dim=768, decoder_kernel=3, decoder_groups=16,
        decoder_residual=True, decoder_input_dropout=0.0, head_layers=1,
        mask_noise_std=0.01,
        # the CLS token regresses the mean of the patch targets; fairseq's weight multiplies a SUM over the copies of
        # a process's batch (data2vec2.py: d2v_loss(cls) * cls_loss * sample_size, summed by the criterion, divided
        # by sample_size): 0.01 x 256 copies per GPU at the base recipe (docs/pretraining.md)
        cls_loss_weight=0.01, cls_loss_reduction="sum",
    ),
    "audio": dict(
        # wav2vec 2.0 base conv encoder; 5 positional conv layers of kernel max(3, 95 // 5) = 19 over the full length
        # with masked frames zeroed (encoder_zero_mask), then gathered; the front end's LayerNorm after them; ALiBi
        # with one learned scale per head (init 1, clamped >= 0) shared by the layers
        layer_norm_position="post", pre_block_layer_norm=False, relative_position_bias="alibi",
        layerdrop=0.05, num_conv_pos_embeddings=5, conv_pos_kernel_size=19, use_mask_token=False,
        # fairseq's 2.0 audio encoder does not zero padded frames before the positional conv (1.0 does)
        pos_conv_zero_padding=False, teacher_copies_pos_conv=False,
        average_top_k_layers=8, target_layer_output="ffn", target_layer_norm="instance", target_final_norm="none",
        loss_beta=0.0, loss_reduction="channel_sum", loss_scale=None,
        teacher_scope="model_except_feature_encoder",  # ema_local_encoder: false, the teacher reuses the features
        ema_decay=0.999, ema_end_decay=0.99999, ema_anneal_end_step=75000, clone_batch=8,
        # 1-D blocks of 5 frames around random centres; int(0.5 * T) frames masked
        mask_type="block", mask_prob=0.5, mask_length=5, mask_prob_adjust=0.05,
        decoder_type="conv_1d", decoder_layers=4, decoder_dim=384, decoder_kernel=7, decoder_groups=16,
        decoder_residual=True, decoder_input_dropout=0.1, head_layers=1,
        mask_noise_std=0.01, cls_loss_weight=0.0,
    ),
}


# value checks at construction (and after `--config_overrides`): integer fields and their least value
POSITIVE_INTS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                 "max_position_embeddings", "image_size", "patch_size", "num_channels",
                 "num_conv_pos_embeddings", "conv_pos_kernel_size", "num_conv_pos_embedding_groups", "sampling_rate",
                 "mask_length", "head_layers", "clone_batch", "decoder_layers", "decoder_dim",
                 "decoder_kernel", "decoder_groups")
NON_NEGATIVE_INTS = ("ema_anneal_end_step", "type_vocab_size")
# probabilities in [0, 1)
DROPOUTS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "activation_dropout", "layerdrop", "drop_path_rate",
            "feat_proj_dropout", "decoder_input_dropout", "classifier_dropout", "final_dropout")
# floats in [low, high]
FLOAT_RANGES = {
    "mask_prob": (0.0, 1.0), "mask_random_token_prob": (0.0, 1.0), "mask_leave_unmasked_prob": (0.0, 1.0),
    "mask_min_aspect": (1e-6, 1.0), "ema_decay": (0.0, 1.0), "ema_end_decay": (0.0, 1.0),
    "layer_norm_eps": (1e-12, 1.0), "initializer_range": (0.0, math.inf), "loss_beta": (0.0, math.inf),
    "loss_scale": (1e-12, math.inf), "mask_prob_adjust": (0.0, 1.0), "mask_noise_std": (0.0, math.inf),
    "cls_loss_weight": (0.0, math.inf), "layer_scale_init_value": (0.0, math.inf), "feature_grad_mult": (0.0, 1.0),
    "min_target_var": (0.0, math.inf), "min_pred_var": (0.0, math.inf),
}
# fields only one modality reads: set on a config of another modality, they would be ignored silently
MODALITY_FIELDS = {
    "text": ("max_position_embeddings", "type_vocab_size", "mask_random_token_prob", "mask_leave_unmasked_prob"),
    "vision": ("image_size", "patch_size", "num_channels", "use_absolute_position_embeddings", "use_mean_pooling",
               "position_embedding_type", "mask_min_aspect"),
    "audio": ("conv_dim", "conv_stride", "conv_kernel", "conv_bias", "feat_extract_activation", "feat_proj_dropout",
              "num_conv_pos_embeddings", "conv_pos_kernel_size", "num_conv_pos_embedding_groups", "sampling_rate",
              "pos_conv_zero_padding", "teacher_copies_pos_conv", "feature_grad_mult"),
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
    # "data2vec" (1.0: the student encodes the masked input) or "data2vec2" (2.0: several masks per sample, the
    # student encodes only the visible tokens, a conv decoder predicts the masked ones); picks the base defaults
    algorithm: Literal["data2vec", "data2vec2"] = "data2vec"

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
    # BEiT's learned table ("shared" / "per_layer"), or ALiBi (data2vec 2.0 audio: -slope * |i - j| per head, times a
    # learned per-head scale clamped >= 0)
    relative_position_bias: Literal["none", "shared", "per_layer", "alibi"] | None = None
    pre_block_layer_norm: bool | None = None  # a LayerNorm before the first block (data2vec 2.0 vision)
    initializer_range: float = 0.02

    # ---- text front end (RoBERTa-style embeddings) -----------------------------------------------------------
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    type_vocab_size: int | None = None  # 0: no token-type embedding (fairseq's text models), token types all 0
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    mask_token_id: int | None = None  # None: the last id of the vocabulary (RoBERTa's <mask>)

    # ---- vision front end (BEiT-style patch embedding) -------------------------------------------------------
    image_size: int | None = None
    patch_size: int | None = None
    num_channels: int | None = None
    use_mask_token: bool | None = None  # 1.0: a learned token replaces masked patches / frames (2.0 removes them)
    use_absolute_position_embeddings: bool | None = None
    use_mean_pooling: bool | None = None  # pooler = LayerNorm(mean of patches); else final LayerNorm + CLS
    # absolute positions of the patches: "learned" (present when use_absolute_position_embeddings) or "sincos" (fixed
    # 2-D sin-cos, MAE's; data2vec 2.0), added to the patches before masking; the CLS token gets none
    position_embedding_type: Literal["learned", "sincos"] | None = None

    # ---- audio front end (wav2vec2-style conv feature encoder) -----------------------------------------------
    conv_dim: list[int] | tuple[int, ...] | None = None
    conv_stride: list[int] | tuple[int, ...] | None = None
    conv_kernel: list[int] | tuple[int, ...] | None = None
    conv_bias: bool | None = None
    feat_extract_activation: str | None = None
    feat_proj_dropout: float | None = None
    # the conv feature encoder's gradient times this in training (fairseq's feature_grad_mult: data2vec 1.0 / 2.0
    # audio 1.0, wav2vec 2.0 base 0.1; 0 freezes it): 1 in the base recipes; the tiny ones slow it down so that it
    # does not forget the spectrum of steady sounds (issue 23, docs/benchmarks.md)
    feature_grad_mult: float | None = None
    num_conv_pos_embeddings: int | None = None  # number of positional conv layers
    conv_pos_kernel_size: int | None = None  # kernel of each positional conv layer
    num_conv_pos_embedding_groups: int | None = None
    # padded frames zeroed before the positional conv (1.0, as fairseq's wav2vec 2.0 / data2vec 1.0 and transformers);
    # fairseq's data2vec 2.0 audio encoder leaves them as the conv features made them
    pos_conv_zero_padding: bool | None = None
    sampling_rate: int | None = None

    # ---- data2vec pretraining ----------------------------------------------------------------------------------
    # targets = average of the teacher's top K layers; None: the base K (vision 6, text 10, audio 8) from 12 layers up,
    # round(K * layers / 12) (at least 1) for shallower encoders (`default_top_k`)
    average_top_k_layers: int | None = None
    target_layer_output: Literal["ffn", "block"] | None = None  # FFN output before residual, or block output
    target_layer_norm: Literal["instance", "batch", "layer", "none"] | None = None  # per layer, before averaging
    target_final_norm: Literal["instance", "layer", "none"] | None = None  # after averaging
    loss_beta: float | None = None  # 0: L2 loss; > 0: smooth L1 with this beta
    # "channel_sum": summed over channels, times loss_scale, averaged over masked positions (fairseq data2vec text
    # and audio); "mean": averaged over masked positions and channels, times loss_scale (data2vec_vision)
    loss_reduction: Literal["channel_sum", "mean"] | None = None
    loss_scale: float | None = None  # None: 1 / sqrt(hidden_size) with "channel_sum", 1 with "mean"
    # 1.0's head / 2.0's projection after the decoder: 1: Linear(d, D); 2: Linear(d, 2d)-GELU-Linear(2d, D)
    head_layers: int | None = None
    # what the EMA teacher averages: the encoder's layers ("encoder": the student's front end feeds them), the whole
    # model ("model"), or all but the audio conv feature encoder, whose features it takes from the student
    teacher_scope: TeacherScope | None = None
    # audio: the teacher copies the student's positional conv at every EMA step instead of averaging it (fairseq data2vec
    # 1.0's ema_layers_only / skip_keys); with teacher_scope "encoder" the teacher uses the student's front end anyway
    teacher_copies_pos_conv: bool | None = None
    ema_decay: float | None = None  # decay at update 0
    ema_end_decay: float | None = None  # decay from `ema_anneal_end_step` on
    ema_anneal_end_step: int | None = None
    mask_prob: float | None = None  # text/vision: fraction masked; audio: span start probability
    mask_length: int | None = None  # text/audio: span length; vision: minimum patches per block
    mask_min_aspect: float | None = None  # vision: block aspect ratio drawn log-uniformly in [min, 1/min]
    # the values each algorithm and modality take: mask_types.MASK_TYPES. 1.0: text / audio "span"; vision "block"
    # (BEiT) or "random" (a uniform draw of patches, better on tiny grids)
    mask_type: MaskType | None = None
    mask_random_token_prob: float | None = None  # text: of the selected tokens, replaced by a random token
    mask_leave_unmasked_prob: float | None = None  # text: of the selected tokens, left unchanged
    min_target_var: float = 0.1  # collapse check thresholds (fairseq data2vec's defaults)

    # ---- data2vec 2.0 ------------------------------------------------------------------------------------------------
    clone_batch: int | None = None  # masked copies of each sample (one teacher pass serves them all); 1.0: 1
    mask_prob_adjust: float | None = None  # block masks: extra share of block centres drawn before the exact count is set
    mask_noise_std: float | None = None  # masked positions enter the decoder as N(0, std) noise
    decoder_type: Literal["conv_1d", "conv_2d"] | None = None  # conv over time / over the patch grid
    decoder_layers: int | None = None
    decoder_dim: int | None = None
    decoder_kernel: int | None = None
    decoder_groups: int | None = None
    decoder_residual: bool | None = None  # each layer adds its input where the shapes match
    decoder_input_dropout: float | None = None
    cls_loss_weight: float | None = None  # vision: the CLS output regresses the mean target, with this weight
    # the CLS loss over a batch's B x clone_batch copies: "sum" (fairseq data2vec 2.0: the weight multiplies a sum, so
    # the term grows with the per-process batch) or "mean" (independent of the batch size)
    cls_loss_reduction: Literal["sum", "mean"] | None = None
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
        if self.algorithm not in CHOICES["algorithm"]:
            raise ValueError(f"algorithm must be one of {CHOICES['algorithm']}; got {self.algorithm!r}")
        defaults = {**MODALITY_DEFAULTS[self.modality], **DATA2VEC_SHARED}
        if self.algorithm == "data2vec2":
            defaults.update(DATA2VEC2_DEFAULTS[self.modality])
        if self.average_top_k_layers is None and self.num_hidden_layers is not None:
            self.average_top_k_layers = default_top_k(self.modality, self.num_hidden_layers, self.algorithm)
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
        self._validate_values()
        for name, allowed in CHOICES.items():
            if getattr(self, name) is None and name in ("position_embedding_type", "decoder_type"):
                continue  # another modality's field / a data2vec 2.0 field on a 1.0 config
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")
        allowed = MASK_TYPES[self.algorithm][self.modality]
        if self.mask_type not in allowed:
            raise ValueError(
                f"mask_type for {self.modality} ({self.algorithm}) must be one of {allowed}; got {self.mask_type!r}"
            )
        if self.algorithm == "data2vec2":
            self._validate_data2vec2()
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
            for name in ("conv_dim", "conv_stride", "conv_kernel"):
                values = list(getattr(self, name))
                if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
                    raise ValueError(f"{name} must be positive whole numbers, one per conv layer; got {values}")
            if self.hidden_size % self.num_conv_pos_embedding_groups != 0:
                raise ValueError(
                    f"hidden_size ({self.hidden_size}) must be a multiple of num_conv_pos_embedding_groups "
                    f"({self.num_conv_pos_embedding_groups})"
                )
        if self.modality == "vision" and self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )

    def _validate_values(self) -> None:
        """Types and ranges of the numeric fields, and fields of another modality."""
        for name in POSITIVE_INTS + NON_NEGATIVE_INTS:
            value, least = getattr(self, name), 1 if name in POSITIVE_INTS else 0
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}; got {value!r}")
        for name in DROPOUTS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 <= value < 1.0):
                raise ValueError(f"{name} must be a probability in [0, 1); got {value!r}")
        for name, (low, high) in FLOAT_RANGES.items():
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not low <= value <= high):
                raise ValueError(f"{name} must be a number in [{low:g}, {high:g}]; got {value!r}")
        for modality, names in MODALITY_FIELDS.items():
            if modality == self.modality:
                continue
            foreign = [n for n in names if getattr(self, n) is not None]
            if foreign:
                raise ValueError(
                    f"{', '.join(foreign)} {'is an' if modality == 'audio' and len(foreign) == 1 else 'is a' if len(foreign) == 1 else 'are'} {modality} field"
                    f"{'' if len(foreign) == 1 else 's'}; this config's modality is {self.modality!r}, which ignores "
                    f"{'it' if len(foreign) == 1 else 'them'}: drop {'it' if len(foreign) == 1 else 'them'}, or use "
                    f"Data2VecConfig(modality={modality!r}, ...)"
                )

    def _validate_data2vec2(self) -> None:
        missing = [n for n in ("clone_batch", "decoder_type", "decoder_dim", "decoder_layers", "mask_noise_std")
                   if getattr(self, n) is None]
        if missing:
            raise ValueError(
                f"algorithm='data2vec2' needs {missing}: build the config with Data2VecConfig(algorithm='data2vec2', "
                "...) so the data2vec 2.0 defaults fill them, rather than setting algorithm on a 1.0 config"
            )
        if self.clone_batch < 1:
            raise ValueError(f"clone_batch must be >= 1 (masked copies per sample); got {self.clone_batch}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(
                f"data2vec 2.0 needs 0 < mask_prob < 1 (some tokens masked, some visible); got {self.mask_prob}"
            )
        if self.mask_type in ("block", "inverse_block") and self.mask_length < 1:
            raise ValueError(f"mask_length (block size) must be >= 1; got {self.mask_length}")
        if self.decoder_dim % self.decoder_groups or self.hidden_size % self.decoder_groups:
            raise ValueError(
                f"decoder_groups ({self.decoder_groups}) must divide decoder_dim ({self.decoder_dim}) and hidden_size "
                f"({self.hidden_size})"
            )
        if self.decoder_layers < 1:
            raise ValueError(f"decoder_layers must be >= 1; got {self.decoder_layers}")
        want = "conv_2d" if self.modality == "vision" else "conv_1d"
        if self.decoder_type != want:
            raise ValueError(f"decoder_type for {self.modality} must be {want!r}; got {self.decoder_type!r}")
        if self.teacher_scope == "model_except_feature_encoder" and self.modality != "audio":
            raise ValueError("teacher_scope='model_except_feature_encoder' is for audio (the conv feature encoder)")
        if self.relative_position_bias == "alibi" and self.modality == "vision":
            raise ValueError("relative_position_bias='alibi' is 1-D (text, audio); vision uses 'shared' or 'none'")
        if self.use_mask_token:
            raise ValueError("data2vec 2.0 removes masked tokens from the student: use_mask_token must be False")
        if self.position_embedding_type == "sincos" and self.hidden_size % 4:
            raise ValueError(f"2-D sin-cos positions need hidden_size divisible by 4; got {self.hidden_size}")

    @property
    def num_token_types(self) -> int:
        """Text: the token types a model takes: type_vocab_size, or type 0 alone without a token-type embedding
        (type_vocab_size 0)."""
        return max(1, self.type_vocab_size or 0)

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


def default_top_k(modality: str, num_hidden_layers: int, algorithm: str = "data2vec") -> int:
    """The default `average_top_k_layers` for an encoder of `num_hidden_layers`: the base model's K (vision 6, text 10,
    audio 8) from 12 layers up (deeper models keep it: data2vec_vision's ViT-L averages its top 6 of 24); below 12, the
    same share of the layers, round(K * layers / 12), at least 1."""
    base = {**MODALITY_DEFAULTS[modality], **(DATA2VEC2_DEFAULTS[modality] if algorithm == "data2vec2" else {})}
    depth = min(num_hidden_layers, base["num_hidden_layers"])
    return max(1, int(base["average_top_k_layers"] * depth / base["num_hidden_layers"] + 0.5))


__all__ = ["DATA2VEC2_DEFAULTS", "Data2VecConfig", "MODALITY_DEFAULTS", "MODALITIES", "default_top_k"]
