"""What a pretraining run defaults to, one table per concern, keyed by modality: encoder sizes, the tiny recipes
(1.0 and 2.0), the built-in digits' geometry, the schedule (learning rate, batch, steps), the default algorithm,
the optimizer settings of each modality's recipe, and what to try when a run collapses."""

from __future__ import annotations

# encoder sizes; "base" is data2vec's base model of the modality (the config's defaults)
MODEL_SIZES: dict[str, dict] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                 average_top_k_layers=3),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                  average_top_k_layers=8),
    "base": {},
}
# tiny models learn in a few thousand steps with a fast teacher (EMA 0.99 -> 0.999 over the run: 0.999 -> 0.9999
# lags far behind) and, for images, uniformly random masks over a small grid, FFN targets instance-normed over
# patches and learned absolute positions (measured on digits: ../docs/training.md)
TINY_RECIPES: dict[str, dict] = {
    "vision": dict(mask_type="random", mask_prob=0.6, target_layer_output="ffn", target_layer_norm="instance",
                   target_final_norm="none", relative_position_bias="none", use_absolute_position_embeddings=True,
                   layer_scale_init_value=0.0, drop_path_rate=0.0, attention_probs_dropout_prob=0.0,
                   loss_reduction="channel_sum", ema_decay=0.99, ema_end_decay=0.999),
    # text: instance-normed targets (as data2vec 2.0); per-position layer norm collapsed within 200 tiny steps
    "text": dict(target_layer_norm="instance", ema_decay=0.99, ema_end_decay=0.999),
    "audio": dict(conv_dim=[128] * 6, conv_stride=[5, 2, 2, 2, 2, 2], conv_kernel=[10, 3, 3, 3, 3, 2],
                  num_conv_pos_embeddings=2, conv_pos_kernel_size=19, num_conv_pos_embedding_groups=4, layerdrop=0.0,
                  ema_decay=0.99, ema_end_decay=0.999),
}
# data2vec 2.0's tiny recipes (issue 12; measured on the built-in data: docs/benchmarks.md)
TINY_RECIPES_V2: dict[str, dict] = {
    "vision": dict(mask_prob=0.5, mask_length=2, mask_prob_adjust=0.07, clone_batch=4, decoder_dim=64,
                   decoder_layers=3, decoder_groups=4, average_top_k_layers=3, ema_decay=0.99, ema_end_decay=0.999),
    "text": dict(clone_batch=4, decoder_dim=64, decoder_layers=3, decoder_groups=1, average_top_k_layers=4,
                 ema_decay=0.99, ema_end_decay=0.999),
    "audio": dict(conv_dim=[128] * 6, conv_stride=[5, 2, 2, 2, 2, 2], conv_kernel=[10, 3, 3, 3, 3, 2],
                  num_conv_pos_embeddings=2, conv_pos_kernel_size=19, num_conv_pos_embedding_groups=4, layerdrop=0.0,
                  clone_batch=4, decoder_dim=64, decoder_layers=3, decoder_groups=4, average_top_k_layers=3,
                  ema_decay=0.99, ema_end_decay=0.999),
}
# the built-in digits are 8x8 grey images, upsampled to 16x16 and cut into 4x4 patches
BUILTIN_VISION = dict(image_size=16, patch_size=4, num_channels=1)
# what the built-in data of each modality fixes in the config (the others take any shape the recipe has)
BUILTIN_FIELDS: dict[str, dict] = {"vision": BUILTIN_VISION}

# training defaults that depend on the size: (learning rate, per-device batch, max steps) per modality;
# base learning rates are data2vec's (text 2e-4, vision 2e-3 at batch 2048, audio 5e-4)
TRAINING_DEFAULTS: dict[str, dict[str, tuple[float, int, int]]] = {
    "tiny": {"vision": (3e-3, 128, 1680), "text": (1e-3, 32, 300), "audio": (1e-3, 16, 300)},
    "small": {"vision": (1.5e-3, 64, 400_000), "text": (5e-4, 32, 400_000), "audio": (5e-4, 8, 400_000)},
    "base": {"vision": (1.5e-3, 64, 400_000), "text": (2e-4, 16, 1_000_000), "audio": (5e-4, 8, 400_000)},
}

# the algorithm a fresh run uses when neither --algorithm, --init_from nor --config names one: on the built-in
# spoken words data2vec 2.0 beats its random init at every seed where 1.0 does not (docs/benchmarks.md, issue 23);
# text and vision keep 1.0, whose tiny recipes measure as well or better there
DEFAULT_ALGORITHM: dict[str, str] = {"vision": "data2vec", "text": "data2vec", "audio": "data2vec2"}

# data2vec 2.0 tiny runs: (learning rate, per-device batch, max steps); larger sizes share 1.0's (the base recipes'
# learning rates are close: vision 1e-3, text 2e-4, audio 7.5e-4)
TRAINING_DEFAULTS_V2: dict[str, tuple[float, int, int]] = {"vision": (6e-3, 64, 800), "text": (1e-3, 32, 300),
                                                           "audio": (1e-3, 16, 300)}

# AdamW and clipping of each modality's recipe: text fairseq examples/data2vec/config/text/pretraining/base.yaml
# (adam_betas (0.9, 0.98), eps 1e-6, wd 0.01, clip_norm 5); audio .../audio/pretraining/base_librispeech.yaml (the
# same Adam, no clip_norm: none); vision data2vec_vision beit/README.md's ViT-B command with run_cyclical.py's
# defaults (--opt_betas unset: AdamW's (0.9, 0.999), --opt_eps 1e-8, --weight_decay 0.05, --clip_grad 3.0)
OPTIMIZER_DEFAULTS: dict[str, dict] = {
    "text": dict(weight_decay=0.01, adam_beta2=0.98, adam_epsilon=1e-6, max_grad_norm=5.0),
    "audio": dict(weight_decay=0.01, adam_beta2=0.98, adam_epsilon=1e-6, max_grad_norm=0.0),
    "vision": dict(weight_decay=0.05, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=3.0),
}
# data2vec 2.0: fairseq examples/data2vec/config/v2/base_{images,text,audio}_only_task.yaml (images: betas (0.9,
# 0.95), wd 0.05, clip_norm 4; text: betas (0.9, 0.98), eps 1e-6, wd 0.01, clip_norm 1; audio: the same Adam, no clip)
OPTIMIZER_DEFAULTS_V2: dict[str, dict] = {
    "text": dict(weight_decay=0.01, adam_beta2=0.98, adam_epsilon=1e-6, max_grad_norm=1.0),
    "audio": dict(weight_decay=0.01, adam_beta2=0.98, adam_epsilon=1e-6, max_grad_norm=0.0),
    "vision": dict(weight_decay=0.05, adam_beta2=0.95, adam_epsilon=1e-8, max_grad_norm=4.0),
}
# the tiny vision recipe was measured with betas (0.9, 0.98) and eps 1e-6 (docs/training.md)
TINY_OPTIMIZER: dict[str, dict] = {"vision": dict(adam_beta2=0.98, adam_epsilon=1e-6)}

ALGORITHMS = ("data2vec", "data2vec2")
