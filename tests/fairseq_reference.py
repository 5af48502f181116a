"""Independent fairseq / data2vec_vision side for the checkpoint-conversion tests (test support, no tests here).

Nothing in this file reads or imports ``modeling_data2vec_unified``: the fake checkpoints and the reference
forward are written from the original sources only:

* facebookresearch/fairseq @ 3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99 (cited as ``fairseq:<path>``), in particular
  ``examples/data2vec/models/{data2vec2.py, modalities/{base,modules,images,audio,text}.py, mae.py,
  mae_image_classification.py, data2vec_audio.py, data2vec_text.py}``, ``fairseq/models/wav2vec/{wav2vec2.py,
  wav2vec2_asr.py}``, ``fairseq/models/transformer/transformer_encoder.py``, ``fairseq/modules/*``,
  ``fairseq/trainer.py`` (what a checkpoint holds) and ``fairseq/modules/ema_module.py`` (what ``_ema`` holds);
* facebookresearch/data2vec_vision @ af9a36349aaed59ae66e69b5dabeef2d62fdc5da (cited as ``beit:<path>``):
  ``beit/modeling_cyclical.py``, ``beit/modeling_finetune.py``, ``beit/run_cyclical.py``, ``beit/utils.py``,
  ``beit/engine_for_cyclical.py``.

API
---
``KINDS``                      the checkpoint kinds.
``fake_checkpoint(kind, seed)``  the object ``torch.load`` returns for that released file, at tiny sizes.
``example_inputs(kind, batch, seed)``  inputs (with padding where the modality has it).
``reference_forward(ckpt, inputs, weights="student"|"ema")``  fp32 eval-mode outputs, see its docstring.
``SAFE_GLOBALS`` / ``safe_globals_for(kind)``  what ``torch.load(weights_only=True)`` must be allowed.

See docs/fairseq-layouts.md for the layouts, quirks and citations.
"""

from __future__ import annotations

import argparse
import copy
import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

import fairseq_cfg_data as _cfgdata

KINDS = (
    "d2v2_vision",       # data2vec 2.0 base_imagenet.pt / large_imagenet.pt / huge_imagenet.pt
    "d2v2_vision_ft",    # data2vec 2.0 *_imagenet_ft.pt (mae_image_classification)
    "d2v2_audio",        # data2vec 2.0 base_libri.pt / large_vox.pt
    "d2v2_audio_ctc",    # data2vec 2.0 base_libri_960h.pt / large_vox_960h.pt (wav2vec_ctc)
    "d2v2_text",         # data2vec 2.0 nlp_base.pt
    "d2v1_audio",        # data2vec 1.0 audio_base_ls.pt / vox_pretrained.pt (data2vec_audio)
    "d2v1_audio_ctc",    # data2vec 1.0 audio_base_ls_{10m,100h,960h}.pt / vox_*.pt (wav2vec_ctc)
    "d2v1_text",         # data2vec 1.0 nlp_base.pt (data2vec_text)
    "beit_vision",       # data2vec 1.0 vision, data2vec_vision's checkpoint-799.pth (BEiT code base)
)

# tiny sizes shared by all kinds
D, HEADS, FFN = 32, 2, 64
IMG, PATCH = 16, 4
AUDIO_SPEC = "[(32, 10, 5)] + [(32, 3, 2)] * 2"
# fairseq dictionary: <s>=0 <pad>=1 </s>=2 <unk>=3, then dict.txt symbols, then "<mask>" added by the task
BOS, PAD, EOS, UNK = 0, 1, 2, 3
TEXT_WORDS = 44                      # ordinary dict.txt entries
TEXT_MADEUP = 2                      # "madeupword0000".. padding entries at the end of RoBERTa's dict.txt
TEXT_VOCAB = 4 + TEXT_WORDS + TEXT_MADEUP + 1   # + <mask>  = 51
TEXT_MASK = TEXT_VOCAB - 1
TEXT_MAX_POS = 16                    # max_source_positions / tokens_per_sample
LTR_VOCAB = 4 + 8                    # CTC letter dictionary (dict.ltr.txt): 4 specials + letters; blank = <s> = 0
NUM_CLASSES = 5                      # image classification head


# ----------------------------------------------------------------------------------------------------------
# cfg (the ``cfg`` entry: OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), fairseq:fairseq/trainer.py
# Trainer.state_dict)
# ----------------------------------------------------------------------------------------------------------

def _merge(base, over):
    """deep merge ``over`` into a copy of ``base`` (dict keys absent from ``base`` are added, as open_dict or a
    checkpoint written by another fairseq branch would have them)"""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve(cfg):
    """resolve ``"${a.b}"`` interpolations against the whole cfg, as to_container(resolve=True) does"""
    def get(path):
        cur = cfg
        for p in path.split("."):
            cur = cur[p]
        return cur

    def walk(d):
        items = d.items() if isinstance(d, dict) else enumerate(d)
        for k, v in list(items):
            if isinstance(v, str) and v.startswith("${") and v.endswith("}"):
                try:
                    d[k] = get(v[2:-1])
                except (KeyError, TypeError):
                    d[k] = None
            elif isinstance(v, (dict, list)):
                walk(v)
    for _ in range(3):
        walk(cfg)
    return cfg


def _defaults(cls):
    return copy.deepcopy(_cfgdata.DEFAULTS[cls])


def _full_cfg(model, task, criterion, optimizer, lr_scheduler, **sections):
    cfg = {name: _defaults(cls) for name, cls in _cfgdata.SECTIONS.items() if name != "ema"}
    for k, v in sections.items():
        cfg[k] = _merge(cfg[k], v)
    cfg.update(model=model, task=task, criterion=criterion, optimizer=optimizer, lr_scheduler=lr_scheduler,
               scoring=None, bpe=None, tokenizer=None, ema=_defaults("EMAConfig"))
    # FairseqConfig field order: common .. interactive, model, task, criterion, optimizer, lr_scheduler, scoring,
    # bpe, tokenizer, ema (fairseq:fairseq/dataclass/configs.py FairseqConfig)
    order = ["_name", "common", "common_eval", "distributed_training", "dataset", "optimization", "checkpoint",
             "bmuf", "generation", "eval_lm", "interactive", "model", "task", "criterion", "optimizer",
             "lr_scheduler", "scoring", "bpe", "tokenizer", "ema"]
    cfg["_name"] = None
    return _resolve({k: cfg[k] for k in order})


def _named(cls, name, **over):
    return _merge(_merge(_defaults(cls), {"_name": name}), over)


def _composite(lr, betas, wd, warmup, eps=1e-6, min_lr=None):
    sched = _named("CosineLRScheduleConfig", "cosine", warmup_updates=warmup, lr=[lr])
    if min_lr is not None:
        sched["min_lr"] = min_lr
    return _named("CompositeOptimizerConfig", "composite", dynamic_groups=True, groups={"default": {
        "lr_float": lr, "optimizer": _named("FairseqAdamConfig", "adam", adam_betas=betas, adam_eps=eps,
                                            weight_decay=wd, lr=[lr]),
        "lr_scheduler": sched, "lr": [lr]}})


_LOG_KEYS = ["ema_decay", "target_var", "pred_var", "model_norm", "ema_norm", "masked_pct"]
_COMMON = {"fp16": True, "log_format": "json", "log_interval": 200, "tensorboard_logdir": "tb",
           "user_dir": "/private/home/abaevski/fairseq-py/examples/data2vec"}


def _d2v2_model_cfg(modality):
    """Data2VecMultiConfig as in examples/data2vec/config/v2/base_{images,audio,text}_only_task.yaml, with tiny
    sizes (depth, embed_dim, num_heads, mlp_ratio, modality front ends)."""
    m = _defaults("Data2VecMultiConfig")
    common = dict(_name="data2vec_multi", depth=2, embed_dim=D, num_heads=HEADS, mlp_ratio=FFN / D,
                  encoder_dropout=0.0, post_mlp_drop=0.0, attention_dropout=0.0, activation_dropout=0.0,
                  min_target_var=0, min_pred_var=0)
    if modality == "image":
        over = dict(ema_decay=0.9998, ema_end_decay=0.99999, ema_anneal_end_step=100000,
                    instance_norm_target_layer=True, layer_norm_target_layer=False, layer_norm_targets=True,
                    end_of_block_targets=False, average_top_k_layers=2, clone_batch=16, norm_eps=1e-6,
                    supported_modality="IMAGE", cls_loss=0.01, ema_encoder_only=False,
                    modalities={"image": dict(
                        inverse_mask=True, mask_prob=0.8, mask_prob_adjust=0.07, mask_length=3, mask_noise_std=0.01,
                        prenet_depth=1, ema_local_encoder=True, num_extra_tokens=1, init_extra_token_zero=False,
                        use_alibi_encoder=False, input_size=IMG, patch_size=PATCH, embed_dim=D,
                        decoder=dict(decoder_dim=16, decoder_groups=4, decoder_kernel=3, decoder_layers=2,
                                     input_dropout=0))})
    elif modality == "audio":
        over = dict(loss_beta=0, loss_scale=None, clone_batch=8, ema_decay=0.999, ema_end_decay=0.99999,
                    ema_anneal_end_step=75000, ema_encoder_only=False, average_top_k_layers=2,
                    instance_norm_target_layer=True, layer_norm_target_layer=False, layer_norm_targets=False,
                    layerdrop=0.05, norm_eps=1e-5, supported_modality="AUDIO",
                    modalities={"audio": dict(
                        feature_encoder_spec=AUDIO_SPEC, conv_pos_depth=2, conv_pos_width=10, conv_pos_groups=4,
                        prenet_depth=1, mask_prob=0.5, mask_prob_adjust=0.05, inverse_mask=False, mask_length=5,
                        mask_noise_std=0.01, mask_dropout=0, add_masks=False, ema_local_encoder=False,
                        use_alibi_encoder=True, prenet_layerdrop=0.05, prenet_dropout=0.1,
                        learned_alibi_scale=True, learned_alibi_scale_per_head=True,
                        decoder=dict(input_dropout=0.1, decoder_dim=16, decoder_groups=4, decoder_kernel=3,
                                     decoder_layers=2))})
    else:
        over = dict(loss_beta=0, loss_scale=1, clone_batch=8, ema_decay=0.9999, ema_end_decay=0.99999,
                    ema_anneal_end_step=100000, ema_encoder_only=True, average_top_k_layers=2,
                    layer_norm_target_layer=False, instance_norm_target_layer=True, batch_norm_target_layer=False,
                    instance_norm_targets=False, layer_norm_targets=False, layerdrop=0, norm_eps=1e-5,
                    supported_modality="TEXT",
                    modalities={"text": dict(
                        mask_prob=0.48, mask_length=1, mask_noise_std=0.01, prenet_depth=0,
                        max_source_positions=TEXT_MAX_POS,
                        decoder=dict(input_dropout=0.1, decoder_dim=D, decoder_groups=1, decoder_kernel=3,
                                     decoder_layers=2, decoder_residual=False, projection_layers=2,
                                     projection_ratio=2.0))})
    return _merge(_merge(m, common), over)


def build_cfg(kind):
    """The ``cfg`` dict of the fake checkpoint of ``kind`` (plain nested dict, interpolations resolved)."""
    if kind in ("d2v2_vision", "d2v2_audio", "d2v2_text"):
        modality = {"d2v2_vision": "image", "d2v2_audio": "audio", "d2v2_text": "text"}[kind]
        model = _d2v2_model_cfg(modality)
        ckpt = dict(save_interval_updates=25000, keep_interval_updates=1, no_epoch_checkpoints=True)
        crit = _named("ModelCriterionConfig", "model", log_keys=list(_LOG_KEYS))
        if modality == "image":
            task = _named("MaeImagePretrainingConfig", "mae_image_pretraining",
                          data="/datasets01/imagenet_full_size/061417/", rebuild_batches=True,
                          local_cache_path="/scratch/cache_abaevski/imagenet", key="source",
                          precompute_mask_config={}, input_size=IMG)
            return _full_cfg(model, task, crit, _composite(1e-3, [0.9, 0.95], 0.05, 50040),
                             {"_name": "pass_through"},
                             common={**_COMMON, "min_loss_scale": 1e-6, "fp16_no_flatten_grads": True},
                             checkpoint=dict(ckpt, save_interval=5),
                             dataset=dict(num_workers=10, batch_size=16, skip_invalid_size_inputs_valid_test=True,
                                          required_batch_size_multiple=1, disable_validation=True),
                             distributed_training=dict(distributed_world_size=16, ddp_backend="c10d"),
                             optimization=dict(max_update=375300, lr=[0.001], debug_param_names=True,
                                               clip_norm=4))
        if modality == "audio":
            # rebuild_batches: a task field of the branch the released checkpoints were trained on; it is not in
            # the public AudioPretrainingConfig (fairseq issue #5021 "Key 'rebuild_batches' not in
            # 'AudioPretrainingConfig'")
            task = _named("AudioPretrainingConfig", "audio_pretraining",
                          data="/private/home/abaevski/data/librispeech/full", max_sample_size=320000,
                          min_sample_size=32000, normalize=True, precompute_mask_config={}, rebuild_batches=True)
            return _full_cfg(model, task, crit,
                             _named("FairseqAdamConfig", "adam", adam_betas=[0.9, 0.98], adam_eps=1e-6,
                                    weight_decay=0.01, lr=[0.00075]),
                             _named("CosineLRScheduleConfig", "cosine", warmup_updates=8000, lr=[0.00075]),
                             common={**_COMMON, "min_loss_scale": 1e-6},
                             checkpoint=dict(ckpt, save_interval=1),
                             dataset=dict(num_workers=6, max_tokens=1000000, skip_invalid_size_inputs_valid_test=True,
                                          validate_interval=5, required_batch_size_multiple=1,
                                          disable_validation=True),
                             distributed_training=dict(distributed_world_size=8, ddp_backend="legacy_ddp"),
                             optimization=dict(max_update=400000, lr=[0.00075], debug_param_names=True))
        task = _named("MaskedLMConfig", "masked_lm", data="/fsx-wav2vec/abaevski/data/nlp/bookwiki_aml-full-mmap2-bin",
                      sample_break_mode="none", tokens_per_sample=TEXT_MAX_POS, include_target_tokens=True,
                      random_token_prob=0, leave_unmasked_prob=0, include_index=True, skip_masking=True,
                      d2v2_multi=True)
        return _full_cfg(model, task, crit, _composite(0.0002, [0.9, 0.98], 0.01, 4000),
                         {"_name": "pass_through"},
                         common={**_COMMON, "fp16_no_flatten_grads": True},
                         checkpoint=dict(no_epoch_checkpoints=True, save_interval_updates=50000,
                                         keep_interval_updates=1),
                         dataset=dict(batch_size=4, ignore_unused_valid_subsets=True,
                                      skip_invalid_size_inputs_valid_test=True, disable_validation=True),
                         distributed_training=dict(distributed_world_size=16, ddp_backend="legacy_ddp"),
                         optimization=dict(clip_norm=1, lr=[0.0002], max_update=1000000, update_freq=[1]))
    if kind == "d2v2_vision_ft":
        pre = build_cfg("d2v2_vision")
        # MaeImageClassificationModel.__init__ (fairseq:examples/data2vec/models/mae_image_classification.py):
        # criterion / lr_scheduler set to None, drop path rates and dropouts written into the pretraining cfg
        # with open_dict (drop_path_rate is not a Data2VecMultiConfig field)
        pre["criterion"] = None
        pre["lr_scheduler"] = None
        dpr = np.linspace(0, 0.1, pre["model"]["depth"]).tolist()
        pre["model"] = _merge(pre["model"], dict(
            drop_path_rate=0.1, start_drop_path_rate=dpr[1], end_drop_path_rate=dpr[-1], encoder_dropout=0,
            post_mlp_drop=0, attention_dropout=0, activation_dropout=0.0, dropout_input=0.0, layerdrop=0.0,
            modalities={"image": dict(start_drop_path_rate=dpr[0], end_drop_path_rate=max(0, dpr[0]),
                                      prenet_layerdrop=0, prenet_dropout=0)}))
        pre["task"]["data"] = "/datasets01/imagenet_full_size/061417"
        model = _named("MaeImageClassificationConfig", "mae_image_classification", mixup=0.7, mixup_prob=0.9,
                       model_path="/checkpoint/abaevski/d2v2/base_imagenet.pt", num_classes=NUM_CLASSES,
                       pretrained_model_args=pre)
        task = {"_name": "mae_image_classification", "data": "/datasets01/imagenet_full_size/061417",
                "input_size": IMG, "local_cache_path": None, "key": "imgs", "beit_transforms": False,
                "target_transform": False, "no_transform": False, "rebuild_batches": True,
                "precompute_mask_config": None, "subsample": 1, "seed": 1, "dataset_type": "imagefolder"}
        return _full_cfg(model, task, _named("ModelCriterionConfig", "model", log_keys=["correct"]),
                         _composite(0.001, [0.9, 0.95], 0.05, 16000, min_lr=1e-6), {"_name": "pass_through"},
                         common={"fp16": True, "log_format": "json", "log_interval": 200, "tensorboard_logdir": "tb",
                                 "fp16_no_flatten_grads": True},
                         checkpoint=dict(save_interval=1, save_interval_updates=25000, keep_interval_updates=1,
                                         no_epoch_checkpoints=True, best_checkpoint_metric="accuracy",
                                         maximize_best_checkpoint_metric=True),
                         dataset=dict(num_workers=6, batch_size=32, skip_invalid_size_inputs_valid_test=True,
                                      required_batch_size_multiple=2, valid_subset="val"),
                         distributed_training=dict(distributed_world_size=16, ddp_backend="c10d"),
                         optimization=dict(max_update=250200, lr=[0.001]))
    if kind in ("d2v2_audio_ctc", "d2v1_audio_ctc"):
        pre = build_cfg(kind[:-4])
        # Wav2VecEncoder.__init__ (fairseq:fairseq/models/wav2vec/wav2vec2_asr.py): the pretraining cfg is loaded
        # with arg_overrides (overwrite_args_by_name: every key of that name, at any depth) and stored in
        # cfg.model.w2v_args with criterion and lr_scheduler set to None
        ft = _named("Wav2Vec2CtcConfig", "wav2vec_ctc", w2v_path="/checkpoint/abaevski/data2vec/"
                    + ("base_libri.pt" if kind.startswith("d2v2") else "audio_base_ls.pt"),
                    apply_mask=True, mask_prob=0.5, mask_channel_prob=0.1, mask_channel_length=64, layerdrop=0.1,
                    activation_dropout=0.1, feature_grad_mult=0.0, freeze_finetune_updates=0)
        overrides = {"dropout": ft["dropout"], "activation_dropout": ft["activation_dropout"],
                     "dropout_input": ft["dropout_input"], "attention_dropout": ft["attention_dropout"],
                     "mask_length": ft["mask_length"], "mask_prob": ft["mask_prob"], "require_same_masks": True,
                     "pct_holes": 0, "mask_selection": "static", "mask_other": 0, "no_mask_overlap": False,
                     "mask_channel_length": 64, "mask_channel_prob": 0.1, "mask_channel_before": False,
                     "mask_channel_selection": "static", "mask_channel_other": 0, "no_mask_channel_overlap": False,
                     "encoder_layerdrop": 0.1, "feature_grad_mult": 0.0, "checkpoint_activations": False,
                     "offload_activations": False, "min_params_to_wrap": 100000000, "encoder_dropout": 0.0,
                     "drop_path": 0, "mask_dropout": 0.0, "zero_mask": False, "local_grad_mult": 0.0,
                     "layerdrop": 0.1, "prenet_layerdrop": 0.1, "prenet_dropout": 0.0, "post_mlp_drop": 0.0,
                     "encoder_zero_mask": False, "inverse_mask": False, "learned_alibi_scale": True}

        def overwrite(d):
            for k in list(d):
                if isinstance(d[k], dict):
                    overwrite(d[k])
                elif k in overrides:
                    d[k] = overrides[k]
        overwrite(pre)
        pre["criterion"] = None
        pre["lr_scheduler"] = None
        ft["w2v_args"] = pre
        task = _named("AudioFinetuningConfig", "audio_finetuning", data="/private/home/abaevski/data/librispeech",
                      normalize=True, labels="ltr")
        return _full_cfg(ft, task, _named("CtcCriterionConfig", "ctc", zero_infinity=True),
                         _named("FairseqAdamConfig", "adam", adam_betas="(0.9,0.98)", adam_eps=1e-08, lr=[0.0001]),
                         _named("TriStageLRScheduleConfig", "tri_stage", phase_ratio=[0.1, 0.4, 0.5],
                                final_lr_scale=0.05, lr=[0.0001]),
                         common={"fp16": True, "log_format": "json", "log_interval": 200,
                                 "user_dir": "examples/data2vec"},
                         checkpoint=dict(no_epoch_checkpoints=True, best_checkpoint_metric="wer"),
                         dataset=dict(num_workers=6, max_tokens=3200000, skip_invalid_size_inputs_valid_test=True,
                                      valid_subset="dev_other"),
                         distributed_training=dict(ddp_backend="legacy_ddp", distributed_world_size=8),
                         optimization=dict(max_update=320000, lr=[0.0001], sentence_avg=True))
    if kind == "d2v1_audio":
        # examples/data2vec/config/audio/pretraining/base_librispeech.yaml (Data2VecAudioConfig extends
        # Wav2Vec2Config), tiny sizes
        model = _named("Data2VecAudioConfig", "data2vec_audio", extractor_mode="layer_norm", encoder_layerdrop=0.05,
                       dropout_input=0.0, dropout_features=0.0, feature_grad_mult=1.0, encoder_embed_dim=D,
                       encoder_ffn_embed_dim=FFN, encoder_attention_heads=HEADS, encoder_layers=2,
                       conv_feature_layers=AUDIO_SPEC, mask_prob=0.65, mask_length=10, loss_beta=0, loss_scale=None,
                       instance_norm_target_layer=True, average_top_k_layers=2, pos_conv_depth=2, conv_pos=12,
                       conv_pos_groups=4, ema_decay=0.999, ema_end_decay=0.9999, ema_anneal_end_step=30000,
                       ema_transformer_only=True, ema_layers_only=True, require_same_masks=True, mask_dropout=0)
        task = _named("AudioPretrainingConfig", "audio_pretraining", data="/private/home/abaevski/data/librispeech",
                      max_sample_size=320000, min_sample_size=32000, normalize=True)
        return _full_cfg(model, task, _named("ModelCriterionConfig", "model",
                                             log_keys=["ema_decay", "target_var", "pred_var"]),
                         _named("FairseqAdamConfig", "adam", adam_betas="(0.9,0.98)", adam_eps=1e-06,
                                weight_decay=0.01, lr=[0.0005]),
                         _named("TriStageLRScheduleConfig", "tri_stage", phase_ratio=[0.03, 0.9, 0.07], lr=[0.0005]),
                         common={"fp16": True, "log_format": "json", "log_interval": 200, "tensorboard_logdir": "tb"},
                         checkpoint=dict(save_interval=5, save_interval_updates=25000, keep_interval_updates=1,
                                         no_epoch_checkpoints=True),
                         dataset=dict(num_workers=6, max_tokens=3800000, skip_invalid_size_inputs_valid_test=True,
                                      validate_interval=5, required_batch_size_multiple=1, disable_validation=True),
                         distributed_training=dict(distributed_world_size=16, ddp_backend="legacy_ddp"),
                         optimization=dict(max_update=400000, lr=[0.0005]))
    if kind == "d2v1_text":
        # examples/data2vec/config/text/pretraining/base.yaml, tiny sizes
        model = _named("Data2VecTextConfig", "data2vec_text", head_layers=2, average_top_k_layers=2,
                       layer_norm_target_layer=True, loss_scale=1, ema_decay=0.999, ema_end_decay=0.9999,
                       ema_anneal_end_step=300000, loss_beta=4, ema_transformer_layers_only=True,
                       transformer=dict(dropout=0.1, attention_dropout=0.1, layernorm_embedding=True,
                                        activation_fn="gelu", no_scale_embedding=True,
                                        max_source_positions=TEXT_MAX_POS,
                                        encoder=dict(embed_dim=D, ffn_embed_dim=FFN, layers=2, attention_heads=HEADS,
                                                     normalize_before=False, learned_pos=True, layerdrop=0)))
        task = _named("MaskedLMConfig", "masked_lm", data="/fsx/abaevski/data/nlp/bookwiki_aml-full-mmap2-bin",
                      sample_break_mode="complete_doc", tokens_per_sample=TEXT_MAX_POS, include_target_tokens=True,
                      random_token_prob=0, leave_unmasked_prob=0, mask_prob=0.35, mask_multiple_length=4)
        return _full_cfg(model, task, _named("ModelCriterionConfig", "model", log_keys=["ema_decay", "target_var",
                                                                                     "pred_var"]),
                         _named("FairseqAdamConfig", "adam", adam_betas="(0.9,0.98)", adam_eps=1e-06,
                                weight_decay=0.01, lr=[0.0005]),
                         _named("CosineLRScheduleConfig", "cosine", warmup_updates=10000, lr=[0.0005]),
                         common={"fp16": True, "log_format": "json", "log_interval": 200, "tensorboard_logdir": "tb"},
                         checkpoint=dict(no_epoch_checkpoints=True, save_interval_updates=50000,
                                         keep_interval_updates=1),
                         distributed_training=dict(distributed_world_size=16, ddp_backend="legacy_ddp"),
                         optimization=dict(max_update=1000000, lr=[0.0005]))
    raise ValueError(f"no fairseq cfg for kind {kind!r}")


# ----------------------------------------------------------------------------------------------------------
# state dicts with fairseq's key names (module registration order, own parameters before children, as
# torch.nn.Module.state_dict writes them)
# ----------------------------------------------------------------------------------------------------------

class _SD:
    """collects (key -> tensor) with random but structured values, so that no mapping mistake hides behind
    zeros or ones"""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)
        self.sd = OrderedDict()

    def randn(self, *shape, std=0.2):
        return torch.randn(*shape, generator=self.g) * std

    def put(self, key, value):
        assert key not in self.sd, key
        self.sd[key] = value

    def linear(self, p, fan_in, fan_out, bias=True, std=None):
        self.put(p + ".weight", self.randn(fan_out, fan_in, std=std or fan_in ** -0.5))
        if bias:
            self.put(p + ".bias", self.randn(fan_out, std=0.1))

    def ln(self, p, dim):
        self.put(p + ".weight", 1.0 + self.randn(dim, std=0.1))
        self.put(p + ".bias", self.randn(dim, std=0.1))

    def conv(self, p, c_out, c_in_per_group, *kernel, bias=True):
        fan_in = c_in_per_group * int(np.prod(kernel))
        self.put(p + ".weight", self.randn(c_out, c_in_per_group, *kernel, std=fan_in ** -0.5))
        if bias:
            self.put(p + ".bias", self.randn(c_out, std=0.1))


def _alt_block(s, p, dim, ffn):
    """AltBlock (fairseq:examples/data2vec/models/modalities/modules.py): norm1, attn.qkv (bias), attn.proj,
    norm2, mlp.fc1, mlp.fc2 (timm Mlp)"""
    s.ln(p + ".norm1", dim)
    s.linear(p + ".attn.qkv", dim, 3 * dim)
    s.linear(p + ".attn.proj", dim, dim)
    s.ln(p + ".norm2", dim)
    s.linear(p + ".mlp.fc1", dim, ffn)
    s.linear(p + ".mlp.fc2", ffn, dim)


def _conv_feature_extractor(s, p, spec, mode, conv_bias=False):
    """ConvFeatureExtractionModel (fairseq:fairseq/models/wav2vec/wav2vec2.py): conv_layers.i.0 = Conv1d (no bias
    by default), layer_norm mode: conv_layers.i.2.1 = Fp32LayerNorm inside Sequential(TransposeLast, LN,
    TransposeLast); default mode: conv_layers.0.2 = Fp32GroupNorm(dim, dim) on the first layer only"""
    in_d = 1
    for i, (dim, k, _stride) in enumerate(eval(spec)):
        s.conv(f"{p}.conv_layers.{i}.0", dim, in_d, k, bias=conv_bias)
        if mode == "layer_norm":
            s.ln(f"{p}.conv_layers.{i}.2.1", dim)
        elif i == 0:
            s.ln(f"{p}.conv_layers.{i}.2", dim)
        in_d = dim
    return in_d


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    """verbatim math of fairseq:examples/data2vec/models/mae.py get_2d_sincos_pos_embed (MAE): float64 numpy;
    np.meshgrid(grid_w, grid_h) puts the *column* index first, so the first embed_dim/2 channels encode the
    column (w) and the last embed_dim/2 the row (h); each half is [sin(pos*omega), cos(pos*omega)] with
    omega_d = 1 / 10000**(d / (dim/4)), d = 0 .. dim/4-1."""
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64)
        omega /= dim / 2.0
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


def _d2v2_state(s, mcfg, modality, vocab=None, with_decoder=True, prefix=""):
    """Data2VecMultiModel (fairseq:examples/data2vec/models/data2vec2.py) student weights for one modality"""
    mc = mcfg["modalities"][modality]
    dim, depth = mcfg["embed_dim"], mcfg["depth"]
    ffn = int(dim * mcfg["mlp_ratio"])
    M = modality.upper()
    p = f"{prefix}modality_encoders.{M}"
    # ModalitySpecificEncoder own parameters first (fairseq:.../modalities/base.py __init__)
    if mc["num_extra_tokens"] > 0:
        s.put(p + ".extra_tokens", s.randn(1, mc["num_extra_tokens"], dim, std=0.5))
    if mc["use_alibi_encoder"]:
        n_scale = (mc["prenet_depth"] + depth) if mc["learned_alibi_scale_per_layer"] else 1
        n_heads = mcfg["num_heads"] if mc["learned_alibi_scale_per_head"] else 1
        # learned per-head scales; one negative so that fairseq's alibi_scale.clamp_min(0) matters
        vals = torch.linspace(0.9, -0.1, n_heads) if n_heads > 1 else torch.tensor([0.8])
        s.put(p + ".alibi_scale", vals.view(1, 1, n_heads, 1, 1).repeat(n_scale, 1, 1, 1, 1).clone())
    if modality == "image":
        side = mc["input_size"] // mc["patch_size"]
        if mc["embed_dim"] != dim:
            s.conv(p + ".local_encoder.0.proj", mc["embed_dim"], mc["in_chans"], mc["patch_size"], mc["patch_size"])
            s.linear(p + ".local_encoder.1", mc["embed_dim"], dim)
        else:
            s.conv(p + ".local_encoder.proj", dim, mc["in_chans"], mc["patch_size"], mc["patch_size"])
        # FixedPositionalEncoder.positions: a requires_grad=False Parameter, so it is saved (and .half()-ed)
        pos = torch.from_numpy(get_2d_sincos_pos_embed(dim, side, cls_token=False)).float().unsqueeze(0)
        s.put(p + ".fixed_positional_encoder.positions", pos)
    elif modality == "audio":
        feat = _conv_feature_extractor(s, p + ".local_encoder", mc["feature_encoder_spec"], mc["extractor_mode"])
        s.ln(p + ".project_features.1", feat)
        s.linear(p + ".project_features.2", feat, dim)
        k = max(3, mc["conv_pos_width"] // mc["conv_pos_depth"])
        rp = p + ".relative_positional_encoder" + (".1" if mc["conv_pos_pre_ln"] else "")
        if mc["conv_pos_pre_ln"]:
            s.ln(p + ".relative_positional_encoder.0", dim)
        for i in range(mc["conv_pos_depth"]):
            s.conv(f"{rp}.{i + 1}.0", dim, dim // mc["conv_pos_groups"], k)
    else:
        s.put(p + ".local_encoder.embed_tokens.weight", s.randn(vocab, dim, std=0.5))
        s.sd[p + ".local_encoder.embed_tokens.weight"][PAD] = 0  # nn.Embedding(padding_idx) row stays 0
        n_pos = mc["max_source_positions"] + PAD + 1   # PositionalEmbedding: num_embeddings + padding_idx + 1
        s.put(p + ".local_encoder.embed_positions.weight", s.randn(n_pos, dim, std=0.5))
        s.sd[p + ".local_encoder.embed_positions.weight"][PAD] = 0
        if mc["layernorm_embedding"]:
            s.ln(p + ".local_encoder.layernorm_embedding", dim)
    # context_encoder = BlockEncoder(blocks, norm): the norm exists unless layer_norm_first (and, for text,
    # only when prenet_depth > 0)
    for i in range(mc["prenet_depth"]):
        _alt_block(s, f"{p}.context_encoder.blocks.{i}", dim, ffn)
    if not mcfg["layer_norm_first"] and (modality != "text" or mc["prenet_depth"] > 0):
        s.ln(p + ".context_encoder.norm", dim)
    if with_decoder and mc["decoder"] is not None:
        dc = mc["decoder"]
        kk = dc["decoder_kernel"]
        for i in range(dc["decoder_layers"]):
            cin = dim if i == 0 else dc["decoder_dim"]
            if modality == "image":
                s.conv(f"{p}.decoder.blocks.{i}.0", dc["decoder_dim"], cin // dc["decoder_groups"], kk, kk)
            else:
                s.conv(f"{p}.decoder.blocks.{i}.0", dc["decoder_dim"], cin // dc["decoder_groups"], kk)
        if modality != "image" and dc["projection_layers"] > 1:
            cur, j = dc["decoder_dim"], 0
            for li in range(dc["projection_layers"] - 1):
                nxt = int(cur * dc["projection_ratio"]) if li == 0 else cur
                s.linear(f"{p}.decoder.proj.{j}", cur, nxt)
                cur, j = nxt, j + 2
            s.linear(f"{p}.decoder.proj.{j}", cur, dim)
        else:
            s.linear(p + ".decoder.proj", dc["decoder_dim"], dim)
    for i in range(depth):
        _alt_block(s, f"{prefix}blocks.{i}", dim, ffn)
    if mcfg["layer_norm_first"]:
        s.ln(prefix + "norm", dim)


def _w2v_layer(s, p, dim, ffn):
    """TransformerSentenceEncoderLayer (fairseq:fairseq/models/wav2vec/wav2vec2.py) / TransformerEncoderLayerBase
    (fairseq:fairseq/modules/transformer_layer.py): MultiheadAttention registers k_proj, v_proj, q_proj, out_proj"""
    for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
        s.linear(f"{p}.self_attn.{n}", dim, dim)
    s.ln(p + ".self_attn_layer_norm", dim)
    s.linear(p + ".fc1", dim, ffn)
    s.linear(p + ".fc2", ffn, dim)
    s.ln(p + ".final_layer_norm", dim)


def _d2v1_audio_state(s, mc, prefix="", final_proj=True):
    """Data2VecAudioModel (fairseq:examples/data2vec/models/data2vec_audio.py)"""
    dim = mc["encoder_embed_dim"]
    s.put(prefix + "mask_emb", torch.rand(dim, generator=s.g))   # FloatTensor(dim).uniform_()
    feat = _conv_feature_extractor(s, prefix + "feature_extractor", mc["conv_feature_layers"], mc["extractor_mode"],
                                   mc["conv_bias"])
    s.linear(prefix + "post_extract_proj", feat, dim)
    if mc["pos_conv_depth"] > 1:
        k = max(3, mc["conv_pos"] // mc["pos_conv_depth"])
        for i in range(mc["pos_conv_depth"]):
            s.conv(f"{prefix}encoder.pos_conv.{i}.0", dim, dim // mc["conv_pos_groups"], k)
    else:   # wav2vec 2.0 style make_conv_pos: weight_norm(dim=2) -> weight_g (1, 1, K), weight_v
        k = mc["conv_pos"]
        s.put(prefix + "encoder.pos_conv.0.bias", s.randn(dim, std=0.1))
        s.put(prefix + "encoder.pos_conv.0.weight_g", 1.0 + s.randn(1, 1, k, std=0.2))
        s.put(prefix + "encoder.pos_conv.0.weight_v", s.randn(dim, dim // mc["conv_pos_groups"], k, std=0.3))
    for i in range(mc["encoder_layers"]):
        _w2v_layer(s, f"{prefix}encoder.layers.{i}", dim, mc["encoder_ffn_embed_dim"])
    s.ln(prefix + "encoder.layer_norm", dim)
    s.ln(prefix + "layer_norm", feat)
    if final_proj:
        # the released 1.0 audio checkpoints name it final_proj.0.* (an nn.Sequential in the branch they were
        # trained on); the public class has nn.Linear final_proj.* -- see docs/fairseq-layouts.md
        s.linear(prefix + "final_proj.0", dim, dim)


def _d2v1_text_state(s, mc):
    """Data2VecTextModel / Data2VecTextEncoder (fairseq:examples/data2vec/models/data2vec_text.py) with the
    TransformerEncoder of fairseq:fairseq/models/transformer/transformer_encoder.py"""
    t = mc["transformer"]
    dim = t["encoder"]["embed_dim"]
    p = "encoder.sentence_encoder"
    s.put(p + ".version", torch.tensor([3.0]))   # register_buffer("version", torch.Tensor([3]))
    s.put(p + ".embed_tokens.weight", s.randn(TEXT_VOCAB, dim, std=0.5))
    s.sd[p + ".embed_tokens.weight"][PAD] = 0
    s.put(p + ".embed_positions.weight", s.randn(t["max_source_positions"] + PAD + 1, dim, std=0.5))
    s.sd[p + ".embed_positions.weight"][PAD] = 0
    s.ln(p + ".layernorm_embedding", dim)
    for i in range(t["encoder"]["layers"]):
        _w2v_layer(s, f"{p}.layers.{i}", dim, t["encoder"]["ffn_embed_dim"])
    if t["encoder"]["normalize_before"]:
        s.ln(p + ".layer_norm", dim)
    cur, j = dim, 0
    for li in range(mc["head_layers"] - 1):
        nxt = dim * 2 if li == 0 else cur
        s.linear(f"encoder.regression_head.{j}", cur, nxt)
        cur, j = nxt, j + 2
    s.linear(f"encoder.regression_head.{j}", cur, dim)


def _beit_state(s, args, depth, dim, heads, mlp_ratio=2.0):
    """VisionTransformerForCyclicalTraining (beit:beit/modeling_cyclical.py) with Block / Attention /
    RelativePositionBias of beit:beit/modeling_finetune.py"""
    side = args.input_size // args.patch_size[0]
    n_rel = (2 * side - 1) * (2 * side - 1) + 3
    s.put("cls_token", s.randn(1, 1, dim, std=0.5))
    s.put("mask_token", s.randn(1, 1, dim, std=0.5))
    if args.abs_pos_emb:
        s.put("pos_embed", s.randn(1, side * side + 1, dim, std=0.2))
    s.conv("patch_embed.proj", dim, 3, args.patch_size[0], args.patch_size[1])
    if args.rel_pos_bias:
        s.put("rel_pos_bias.relative_position_bias_table", s.randn(n_rel, heads, std=0.5))
        s.put("rel_pos_bias.relative_position_index", beit_relative_position_index(side))
    for i in range(depth):
        p = f"blocks.{i}"
        if args.layer_scale_init_value > 0:
            s.put(p + ".gamma_1", 0.5 + s.randn(dim, std=0.2))
            s.put(p + ".gamma_2", 0.5 + s.randn(dim, std=0.2))
        s.ln(p + ".norm1", dim)
        s.put(p + ".attn.q_bias", s.randn(dim, std=0.1))
        s.put(p + ".attn.v_bias", s.randn(dim, std=0.1))
        s.linear(p + ".attn.qkv", dim, 3 * dim, bias=False)
        s.linear(p + ".attn.proj", dim, dim)
        s.ln(p + ".norm2", dim)
        s.linear(p + ".mlp.fc1", dim, int(dim * mlp_ratio))
        s.linear(p + ".mlp.fc2", int(dim * mlp_ratio), dim)
    s.ln("norm", dim)
    s.linear("lm_head", dim, dim)


def beit_relative_position_index(side):
    """beit:beit/modeling_finetune.py RelativePositionBias.__init__ (window side x side, +3 entries for
    cls->token, token->cls, cls->cls)"""
    n_rel = (2 * side - 1) * (2 * side - 1) + 3
    coords = torch.stack(torch.meshgrid([torch.arange(side), torch.arange(side)], indexing="ij"))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += side - 1
    rel[:, :, 1] += side - 1
    rel[:, :, 0] *= 2 * side - 1
    idx = torch.zeros(size=(side * side + 1,) * 2, dtype=rel.dtype)
    idx[1:, 1:] = rel.sum(-1)
    idx[0, 0:] = n_rel - 3
    idx[0:, 0] = n_rel - 2
    idx[0, 0] = n_rel - 1
    return idx


def _perturbed_copy(sd, s, scale=0.05, keep=()):
    """EMA teacher weights: fp32 copies, slightly different from the student (EMAModule.fp32_params,
    fairseq:fairseq/modules/ema_module.py build_fp32_params / _step_internal); entries in ``keep`` (skip_keys and
    requires_grad=False params, copied from the student every step) equal the student's"""
    out = OrderedDict()
    for k, v in sd.items():
        v = v.float().clone()
        if v.is_floating_point() and not any(k == kk or k.endswith("." + kk) or k.startswith(kk + ".")
                                             for kk in keep) and "version" not in k:
            v = v + s.randn(*v.shape, std=scale)
        out[k] = v
    return out


def _fp16(sd):
    """fairseq Trainer: with common.fp16 (and not amp / memory_efficient) the model is .half()-ed
    (fairseq:fairseq/trainer.py Trainer.__init__), so its state dict holds fp16 tensors"""
    return OrderedDict((k, v.half() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in sd.items())


def _meters(numpy_scalar):
    """extra_state["metrics"]: fairseq.logging.metrics.state_dict() = OrderedDict(name -> MetersDict.state_dict()
    = [(priority, key, meter class name, meter.state_dict())])"""
    loss_val = np.float64(1.2345) if numpy_scalar else 1.2345
    train = [(0, "loss", "AverageMeter", {"val": loss_val, "sum": 1234.5, "count": 1000, "round": 3}),
             (100, "ema_decay", "AverageMeter", {"val": 999.9, "sum": 99990.0, "count": 100, "round": 3}),
             (145, "wps", "TimeMeter", {"init": 0, "n": 1.5e7, "round": 1}),
             (300, "wall", "StopwatchMeter", {"sum": 123456.7, "n": 1, "round": 0})]
    return OrderedDict([("default", []), ("train", train), ("train_inner", train[:2])])


def _fairseq_top(cfg, model_sd, criterion_name, num_updates, epoch, optimizer_name="FP16Optimizer"):
    """top level of a hydra-era fairseq checkpoint (fairseq:fairseq/trainer.py Trainer.state_dict +
    save_checkpoint, fairseq:fairseq/checkpoint_utils.py save_checkpoint)"""
    g = torch.Generator().manual_seed(num_updates)
    return {
        "args": None,   # legacy argparse args: None for hydra-trained models
        "cfg": cfg,
        "model": model_sd,
        "criterion": None,   # ModelCriterion / CtcCriterion have no parameters
        "optimizer_history": [{"criterion_name": criterion_name, "optimizer_name": optimizer_name,
                               "lr_scheduler_state": {"best": None}, "num_updates": num_updates}],
        "task_state": {},
        "extra_state": {"metrics": _meters(numpy_scalar=True), "previous_training_time": 123456.789,
                        "train_iterator": {"version": 2, "epoch": epoch, "iterations_in_epoch": 0,
                                           "shuffle": True},
                        "val_loss": None},
        # FP16Optimizer.state_dict: the wrapped fp32 optimizer's state dict plus the loss scale; trimmed to one
        # flat parameter here (the real one covers all parameters)
        "last_optimizer_state": {"state": {0: {"step": num_updates, "exp_avg": torch.randn(8, generator=g),
                                               "exp_avg_sq": torch.rand(8, generator=g)}},
                                 "param_groups": [{"lr": 1.0e-5, "betas": (0.9, 0.98), "eps": 1e-6,
                                                   "weight_decay": 0.01, "amsgrad": False, "params": [0]}],
                                 "loss_scale": 64.0},
    }


def _beit_args():
    """argparse.Namespace of beit:beit/run_cyclical.py get_args() with the README's ViT-B command line, plus
    what main() and utils.init_distributed_mode add (window_size, patch_size, rank, gpu, distributed,
    dist_backend), at tiny input size"""
    a = dict(batch_size=128, epochs=800, save_ckpt_freq=10, model="beit_base_patch16_224", rel_pos_bias=True,
             abs_pos_emb=False, layer_scale_init_value=1e-4, num_mask_patches=120, max_mask_patches_per_block=196,
             min_mask_patches_per_block=16, input_size=IMG, drop_path=0.25, opt="adamw", opt_eps=1e-8,
             opt_betas=None, clip_grad=3.0, momentum=0.9, weight_decay=0.05, weight_decay_end=None, lr=2e-3,
             warmup_lr=1e-6, min_lr=1e-5, tri_phase_schedule=None, warmup_epochs=10, warmup_steps=-1,
             color_jitter=0.4, train_interpolation="bicubic", aug_level=-1, target_layers="[0,1]",
             data_path="/datasets01/imagenet_full_size/061417/", imagenet_default_mean_and_std=True,
             output_dir="/checkpoint/data2vec_vision/base_800", log_dir="/checkpoint/data2vec_vision/base_800",
             device="cuda", seed=0, resume="", auto_resume=True, ema_decay_init=0.999, ema_decay=0.9998,
             ema_start_at=0, start_epoch=0, num_workers=10, pin_mem=True, world_size=16, local_rank=0,
             dist_on_itp=False, dist_url="tcp://localhost:10001", seed_model=None, model_key="model|module",
             model_prefix="", l2_loss=False, l1_beta=2.0, layer_results="end", var_w0=0.0, var_w1=0.0,
             var_margin0=0.5, var_margin1=0.5, skip_ema_during_lr_decay_for_tri=False, loss_scale=-1.0,
             ema_annealing_till_end=False, attn_drop_rate=0.05, mask_dropout_prob=-1.0,
             no_target_layer_norm_last=False, target_batch_norm=False, target_instance_norm=False,
             post_target_instance_norm=False, post_target_layer_norm=True,
             rank=0, gpu=0, distributed=True, dist_backend="nccl", window_size=(IMG // PATCH, IMG // PATCH),
             patch_size=(PATCH, PATCH))
    return argparse.Namespace(**a)


def fake_checkpoint(kind, seed=0):
    """The object ``torch.load`` returns for the released file of ``kind``, at tiny sizes (see module doc)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
    s = _SD(seed * 1000 + KINDS.index(kind))
    if kind == "beit_vision":
        args = _beit_args()
        _beit_state(s, args, depth=2, dim=D, heads=HEADS)
        model = s.sd
        ema = _perturbed_copy(model, s, keep=("rel_pos_bias.relative_position_index",))
        ema["rel_pos_bias.relative_position_index"] = model["rel_pos_bias.relative_position_index"].clone()
        g = torch.Generator().manual_seed(seed)
        n_params = sum(1 for k in model if not k.endswith("relative_position_index"))
        optimizer = {"state": {i: {"step": 1000, "exp_avg": torch.randn(4, generator=g),
                                   "exp_avg_sq": torch.rand(4, generator=g)} for i in range(2)},
                     "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.05,
                                       "amsgrad": False, "maximize": False, "foreach": None,
                                       "capturable": False, "differentiable": False, "fused": None,
                                       "params": list(range(n_params))}]}
        # beit:beit/utils.py save_model (loss_scaler given): model, optimizer, epoch, scaler, args, model_ema
        return {"model": model, "optimizer": optimizer, "epoch": 799,
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                           "_growth_tracker": 123},
                "args": args, "model_ema": ema}

    cfg = build_cfg(kind)
    mc = cfg["model"]
    if kind in ("d2v2_vision", "d2v2_audio", "d2v2_text"):
        modality = mc["supported_modality"].lower()
        _d2v2_state(s, mc, modality, vocab=TEXT_VOCAB)
        student = s.sd
        M = modality.upper()
        # _ema = EMAModule.fp32_params = state dict of make_target_model()'s copy
        # (fairseq:examples/data2vec/models/data2vec2.py make_target_model / state_dict)
        if mc["ema_encoder_only"]:
            ema = OrderedDict((k[len("blocks."):], v) for k, v in student.items() if k.startswith("blocks."))
            ema = _perturbed_copy(ema, s)
        else:
            keep_local = mc["modalities"][modality]["ema_local_encoder"]
            ema = OrderedDict()
            for k, v in student.items():
                if ".decoder." in k:
                    continue   # mod_enc.decoder = None in the copy
                if not keep_local and (".local_encoder." in k or ".project_features." in k):
                    continue
                ema[k] = v
            # requires_grad=False parameters are copied from the student at every EMA step
            ema = _perturbed_copy(ema, s, keep=(f"modality_encoders.{M}.fixed_positional_encoder.positions",))
        model = _fp16(student)
        for k, v in ema.items():   # non-averaged entries equal the (fp16) student's values
            if k.endswith("fixed_positional_encoder.positions"):
                ema[k] = model[k].float()
        model["_ema"] = ema
        return _fairseq_top(cfg, model, "ModelCriterion", 400000, 313)
    if kind == "d2v2_vision_ft":
        pre = mc["pretrained_model_args"]["model"]
        _d2v2_state(s, pre, "image", with_decoder=False, prefix="model.")
        s.ln("fc_norm", D)
        s.linear("head", D, NUM_CLASSES)
        return _fairseq_top(cfg, _fp16(s.sd), "ModelCriterion", 250200, 100)
    if kind == "d2v2_audio_ctc":
        pre = mc["w2v_args"]["model"]
        _d2v2_state(s, pre, "audio", with_decoder=False, prefix="w2v_encoder.w2v_model.")
        s.linear("w2v_encoder.proj", pre["embed_dim"], LTR_VOCAB)
        return _fairseq_top(cfg, _fp16(s.sd), "CtcCriterion", 320000, 270)
    if kind == "d2v1_audio":
        _d2v1_audio_state(s, mc)
        student = s.sd
        # EMAModule(self.encoder, skip_keys=pos_conv.*) (ema_layers_only): the whole TransformerEncoder's state
        # dict; pos_conv entries are copied from the student at every step
        enc = OrderedDict((k[len("encoder."):], v) for k, v in student.items() if k.startswith("encoder."))
        ema = _perturbed_copy(enc, s, keep=("pos_conv",))
        model = _fp16(student)
        for k in ema:
            if k.startswith("pos_conv."):
                ema[k] = model["encoder." + k].float()
        model["_ema"] = ema
        return _fairseq_top(cfg, model, "ModelCriterion", 400000, 240)
    if kind == "d2v1_audio_ctc":
        pre = mc["w2v_args"]["model"]
        _d2v1_audio_state(s, pre, prefix="w2v_encoder.w2v_model.", final_proj=False)
        s.linear("w2v_encoder.proj", pre["encoder_embed_dim"], LTR_VOCAB)
        return _fairseq_top(cfg, _fp16(s.sd), "CtcCriterion", 320000, 270)
    if kind == "d2v1_text":
        _d2v1_text_state(s, mc)
        student = s.sd
        enc = OrderedDict((k[len("encoder.sentence_encoder."):], v) for k, v in student.items()
                          if k.startswith("encoder.sentence_encoder."))
        # skip_keys of make_ema_teacher (ema_transformer_layers_only): embed_tokens.weight (sic: built from the
        # *positions'* parameter names), embed_positions.weight, layernorm_embedding.*
        keep = ("embed_tokens", "embed_positions", "layernorm_embedding")
        ema = _perturbed_copy(enc, s, keep=keep)
        model = _fp16(student)
        for k in ema:
            if k.split(".")[0] in keep or k == "version":
                ema[k] = model["encoder.sentence_encoder." + k].float()
        # Data2VecTextEncoder.state_dict adds prefix + "_ema" -> "encoder._ema", after the encoder's keys
        out = OrderedDict()
        for k, v in model.items():
            out[k] = v
        out["encoder._ema"] = ema
        return _fairseq_top(cfg, out, "ModelCriterion", 1000000, 55)
    raise AssertionError(kind)


# ----------------------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------------------

AUDIO_LEN = 400        # samples; frames = 19 with AUDIO_SPEC


def example_inputs(kind, batch=2, seed=0):
    """Inputs for ``kind``.  Vision: ``pixel_values`` (B, 3, 16, 16).  Audio: ``input_values`` (B, L) with the
    shorter samples right-padded with 0.0 as fairseq's RawAudioDataset collater does, ``padding_mask`` (B, L) bool
    True = pad (fairseq) and ``attention_mask`` (B, L) long 1 = real sample (HF).  Text: ``input_ids`` (B, T)
    ``<s> w .. w </s>`` right-padded with <pad>=1, ``padding_mask`` True = pad, ``attention_mask`` 1 = real."""
    g = torch.Generator().manual_seed(seed)
    if kind in ("d2v2_vision", "d2v2_vision_ft", "beit_vision"):
        return {"pixel_values": torch.randn(batch, 3, IMG, IMG, generator=g)}
    if "audio" in kind:
        lengths = [AUDIO_LEN - 37 * i for i in range(batch)]   # 400, 363, 326, ...
        x = torch.zeros(batch, AUDIO_LEN)
        for i, n in enumerate(lengths):
            x[i, :n] = torch.randn(n, generator=g)
        pad = torch.arange(AUDIO_LEN)[None, :] >= torch.tensor(lengths)[:, None]
        return {"input_values": x, "padding_mask": pad, "attention_mask": (~pad).long(),
                "lengths": torch.tensor(lengths)}
    if "text" in kind:
        T = 10
        lengths = [T - 3 * i if T - 3 * i > 2 else 3 for i in range(batch)]
        ids = torch.full((batch, T), PAD, dtype=torch.long)
        for i, n in enumerate(lengths):
            ids[i, 0] = BOS
            ids[i, 1:n - 1] = torch.randint(4, 4 + TEXT_WORDS, (n - 2,), generator=g)
            ids[i, n - 1] = EOS
        pad = ids.eq(PAD)
        return {"input_ids": ids, "padding_mask": pad, "attention_mask": (~pad).long(),
                "lengths": torch.tensor(lengths)}
    raise ValueError(kind)


# ----------------------------------------------------------------------------------------------------------
# reference forward (fp32, eval mode: every dropout / drop path / layerdrop is the identity)
# ----------------------------------------------------------------------------------------------------------

def _ln(x, sd, p, eps):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)


def _lin(x, sd, p):
    return F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))


def _gelu(x):
    return F.gelu(x)   # nn.GELU / fairseq "gelu": exact erf form


def _alt_attention(x, sd, p, heads, padding_mask, alibi_bias):
    """AltAttention.forward (fairseq:examples/data2vec/models/modalities/modules.py)"""
    B, N, C = x.shape
    qkv = _lin(x, sd, p + ".qkv").reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * (C // heads) ** -0.5
    attn = q @ k.transpose(-2, -1)
    if alibi_bias is not None:
        attn = attn.clone()
        attn[:, : alibi_bias.size(1)] += alibi_bias
    if padding_mask is not None and padding_mask.any():
        attn = attn.masked_fill(padding_mask.unsqueeze(1).unsqueeze(2).to(torch.bool), float("-inf"))
    attn = attn.softmax(dim=-1, dtype=torch.float32)
    x = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return _lin(x, sd, p + ".proj")


def _alt_block_fwd(x, sd, p, heads, eps, layer_norm_first, ffn_targets, padding_mask, alibi_bias):
    """AltBlock.forward: returns (x, t); post-LN (layer_norm_first=False, all released d2v2 models):
    x = norm1(x + attn(x)); t = mlp(x); x = norm2(x + t).  t is the FFN output before the residual
    (ffn_targets = not end_of_block_targets) or the block output."""
    if layer_norm_first:
        x = x + _alt_attention(_ln(x, sd, p + ".norm1", eps), sd, p + ".attn", heads, padding_mask, alibi_bias)
        r = x = _lin(_gelu(_lin(_ln(x, sd, p + ".norm2", eps), sd, p + ".mlp.fc1")), sd, p + ".mlp.fc2")
        t = x
        x = r + x   # sic: fairseq adds the mlp output to itself (residual is overwritten), never used released
    else:
        x = x + _alt_attention(x, sd, p + ".attn", heads, padding_mask, alibi_bias)
        r = x = _ln(x, sd, p + ".norm1", eps)
        x = _lin(_gelu(_lin(x, sd, p + ".mlp.fc1")), sd, p + ".mlp.fc2")
        t = x
        x = _ln(r + x, sd, p + ".norm2", eps)
    return x, (t if ffn_targets else x)


def _conv_features(wav, sd, p, spec, mode):
    """ConvFeatureExtractionModel.forward: (B, L) -> (B, C, T)"""
    x = wav.unsqueeze(1)
    for i, (dim, k, stride) in enumerate(eval(spec)):
        x = F.conv1d(x, sd[f"{p}.conv_layers.{i}.0.weight"], sd.get(f"{p}.conv_layers.{i}.0.bias"), stride=stride)
        if mode == "layer_norm":   # Fp32LayerNorm over channels (default eps 1e-5)
            x = _ln(x.transpose(1, 2), sd, f"{p}.conv_layers.{i}.2.1", 1e-5).transpose(1, 2)
        elif i == 0:               # Fp32GroupNorm(dim, dim): each channel normalised over time
            x = F.group_norm(x, dim, sd[f"{p}.conv_layers.0.2.weight"], sd[f"{p}.conv_layers.0.2.bias"], 1e-5)
        x = _gelu(x)
    return x


def conv_output_lengths(lengths, spec):
    """_get_feat_extract_output_lengths: floor((L - k) / s + 1) per conv layer"""
    lengths = lengths.clone().float()
    for _dim, k, st in eval(spec):
        lengths = torch.floor((lengths - k) / st + 1)
    return lengths.long()


def _frame_padding_mask(padding_mask, T, spec):
    """AudioEncoder.convert_padding_mask (d2v2) / Data2VecAudioModel.forward (d2v1): frames at or after the conv
    output length of the number of non-pad samples are padding"""
    if padding_mask is None:
        return None
    lengths = conv_output_lengths((1 - padding_mask.long()).sum(-1), spec)
    return torch.arange(T)[None, :] >= lengths[:, None]


def _same_pad_conv1d(x, w, b, k, groups):
    """Conv1d(padding=k//2) + SamePad(k) (drops the last frame when k is even)"""
    x = F.conv1d(x, w, b, padding=k // 2, groups=groups)
    return x[:, :, :-1] if k % 2 == 0 else x


def get_alibi(max_positions, heads, dims=1):
    """get_alibi (fairseq:examples/data2vec/models/modalities/base.py): slopes (ALiBi, power-of-2 workaround)
    times -|i - j| (dims=1) or -manhattan distance on the sqrt(T) x sqrt(T) grid (dims=2); (H, T, T)"""
    def slopes(n):
        def pow2(n):
            start = 2 ** (-(2 ** -(math.log2(n) - 3)))
            return [start * start ** i for i in range(n)]
        if math.log2(n).is_integer():
            return pow2(n)
        c = 2 ** math.floor(math.log2(n))
        return pow2(c) + slopes(2 * c)[0::2][: n - c]
    sl = torch.tensor(slopes(heads), dtype=torch.float32)
    if dims == 1:
        ar = torch.arange(max_positions)
        pos = -(ar[None, :] - ar[:, None]).abs()
    else:
        n = int(math.isqrt(max_positions))
        assert n * n == max_positions
        ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2)
        pos = -(ij[:, None, :] - ij[None, :, :]).abs().sum(-1)
    return sl[:, None, None] * pos[None].float()


def _make_targets(layers, mc, permuted_input=False):
    """Data2VecMultiModel.make_targets (identical steps in data2vec_audio / data2vec_text forward for 1.0):
    per-layer instance / batch / layer norm (no affine, eps 1e-5, over the whole padded length for the
    instance norm), average, then layer_norm_targets / instance_norm_targets"""
    k = mc["average_top_k_layers"]
    ys = layers[-k:]
    if mc.get("instance_norm_target_layer") or mc.get("batch_norm_target_layer"):
        ys = [y.transpose(1, 2) for y in ys]
        if mc.get("batch_norm_target_layer"):
            ys = [F.batch_norm(y.float(), None, None, training=True) for y in ys]
        if mc.get("instance_norm_target_layer"):
            ys = [F.instance_norm(y.float()) for y in ys]
        ys = [y.transpose(1, 2) for y in ys]
    if mc.get("group_norm_target_layer"):
        ys = [F.layer_norm(y.float(), y.shape[-2:]) for y in ys]
    if mc.get("layer_norm_target_layer"):
        ys = [F.layer_norm(y.float(), y.shape[-1:]) for y in ys]
    y = sum(ys) / len(ys)
    if mc.get("layer_norm_targets"):
        y = F.layer_norm(y, y.shape[-1:])
    if mc.get("instance_norm_targets"):
        y = F.instance_norm(y.transpose(1, 2)).transpose(1, 2)
    return y


def _d2v2_forward(sd, mc, modality, inputs, prefix="", teacher=None):
    """Data2VecMultiModel.extract_features(mask=False) (fairseq:examples/data2vec/models/data2vec2.py forward with
    features_only=True) and the modality encoders' local_features / contextualized_features
    (fairseq:.../modalities/base.py).  ``teacher``: state dict to use for the context encoder and blocks
    (ema path of Data2VecMultiModel.forward); the local encoder comes from ``teacher`` only when
    ema_local_encoder, else from ``sd`` (the student)."""
    mcm = mc["modalities"][modality]
    M = modality.upper()
    p = f"{prefix}modality_encoders.{M}"
    heads, eps = mc["num_heads"], mc["norm_eps"]
    lnf, ffn_targets = mc["layer_norm_first"], not mc["end_of_block_targets"]
    ctx = sd if teacher is None else teacher
    if teacher is not None and mc["ema_encoder_only"]:
        ctx_enc = sd          # contextualized_features of the *student* feature extractor, ema blocks only
    else:
        ctx_enc = ctx
    loc = ctx if (teacher is not None and not mc["ema_encoder_only"] and mcm["ema_local_encoder"]) else sd
    padding_mask = None
    # ---- local encoder + project_features
    if modality == "image":
        img = inputs["pixel_values"]
        if p + ".local_encoder.proj.weight" in loc:
            x = F.conv2d(img, loc[p + ".local_encoder.proj.weight"], loc[p + ".local_encoder.proj.bias"],
                         stride=mcm["patch_size"])
            x = x.flatten(2).transpose(1, 2)
        else:
            x = F.conv2d(img, loc[p + ".local_encoder.0.proj.weight"], loc[p + ".local_encoder.0.proj.bias"],
                         stride=mcm["patch_size"]).flatten(2).transpose(1, 2)
            x = _lin(x, loc, p + ".local_encoder.1")
    elif modality == "audio":
        x = _conv_features(inputs["input_values"], loc, p + ".local_encoder", mcm["feature_encoder_spec"],
                           mcm["extractor_mode"]).transpose(1, 2)
        x = _lin(_ln(x, loc, p + ".project_features.1", 1e-5), loc, p + ".project_features.2")
        if inputs.get("padding_mask") is not None:
            pm = inputs["padding_mask"]
            padding_mask = (_frame_padding_mask(pm, x.shape[1], mcm["feature_encoder_spec"]) if pm.any()
                            else torch.zeros(x.shape[:2], dtype=torch.bool))
    else:
        tok = inputs["input_ids"]
        emb_scale = 1.0 if mcm["no_scale_embedding"] else math.sqrt(mc["embed_dim"])
        x = emb_scale * F.embedding(tok, loc[p + ".local_encoder.embed_tokens.weight"])
        if not mcm["no_token_positional_embeddings"]:
            mask = tok.ne(PAD).int()
            positions = (torch.cumsum(mask, dim=1) * mask).long() + PAD   # utils.make_positions
            x = x + F.embedding(positions, loc[p + ".local_encoder.embed_positions.weight"])
        if mcm["layernorm_embedding"]:
            x = _ln(x, loc, p + ".local_encoder.layernorm_embedding", 1e-5)
        padding_mask = inputs.get("padding_mask")   # RightPaddingMaskDataset: True = pad
    # ---- contextualized_features (mask=False, remove_masked=False)
    B, T, _ = x.shape
    if modality == "image" and mcm["fixed_positions"]:
        x = x + ctx_enc[p + ".fixed_positional_encoder.positions"]
    if modality == "audio":
        rp = p + ".relative_positional_encoder"
        xp = x
        if mcm["conv_pos_pre_ln"]:
            xp = _ln(xp, ctx_enc, rp + ".0", 1e-5)
            rp = rp + ".1"
        xp = xp.transpose(1, 2)
        k = max(3, mcm["conv_pos_width"] // mcm["conv_pos_depth"])
        for i in range(mcm["conv_pos_depth"]):
            xp = _same_pad_conv1d(xp, ctx_enc[f"{rp}.{i + 1}.0.weight"], ctx_enc[f"{rp}.{i + 1}.0.bias"], k,
                                  mcm["conv_pos_groups"])
            xp = F.layer_norm(xp.transpose(1, 2), (xp.shape[1],), eps=1e-5).transpose(1, 2)   # no affine
            xp = _gelu(xp)
        x = x + xp.transpose(1, 2)   # NB: padded frames are *not* zeroed before this conv (unlike 1.0)
    alibi_bias, alibi_scale = None, None
    if mcm["use_alibi_encoder"]:
        dims = mcm.get("alibi_dims", 1) if modality == "image" else 1
        alibi_bias = get_alibi(T, mcm["num_alibi_heads"], dims).unsqueeze(0).expand(B, -1, -1, -1)
        alibi_scale = ctx_enc.get(p + ".alibi_scale")
        if alibi_scale is not None and alibi_scale.dim() == 4:
            alibi_scale = alibi_scale.unsqueeze(0)   # ModalitySpecificEncoder.upgrade_state_dict_named (old 4-D)
        if alibi_scale is not None:
            alibi_scale = alibi_scale.clamp_min(0)
            if alibi_scale.size(0) == 1:
                alibi_bias = alibi_bias * alibi_scale.squeeze(0)
                alibi_scale = None
    n_extra = mcm["num_extra_tokens"]
    if n_extra > 0:
        x = torch.cat([ctx_enc[p + ".extra_tokens"].expand(B, -1, -1), x], dim=1)
        if padding_mask is not None:
            padding_mask = F.pad(padding_mask, (n_extra, 0))
        if alibi_bias is not None:
            alibi_bias = F.pad(alibi_bias, (n_extra, 0, n_extra, 0))
    # BlockEncoder: norm before the prenet blocks (layer_norm_first=False) or after them
    norm_key = p + ".context_encoder.norm"
    if not lnf and norm_key + ".weight" in ctx_enc:
        x = _ln(x, ctx_enc, norm_key, eps)
    prenet = []
    for i in range(mcm["prenet_depth"]):
        ab = alibi_bias
        if ab is not None and alibi_scale is not None:
            ab = ab * (alibi_scale[i] if alibi_scale.size(0) > 1 else alibi_scale.squeeze(0))
        x, _ = _alt_block_fwd(x, ctx_enc, f"{p}.context_encoder.blocks.{i}", heads, eps, lnf, ffn_targets,
                              padding_mask, ab)
        prenet.append(x)
    if lnf and norm_key + ".weight" in ctx_enc:
        x = _ln(x, ctx_enc, norm_key, eps)
    if alibi_scale is not None and alibi_scale.size(0) > 1:
        alibi_scale = alibi_scale[mcm["prenet_depth"]:]
    # ---- main blocks
    if teacher is not None and mc["ema_encoder_only"]:
        # the EMA model is the ModuleList ``blocks`` itself: its keys are "0.norm1.weight", ...
        blocks = {f"{prefix}blocks.{k}": v for k, v in teacher.items()}
    else:
        blocks = ctx
    hidden = [x]
    layer_results, ffn_results = [], []
    for i in range(mc["depth"]):
        ab = alibi_bias
        if ab is not None and alibi_scale is not None:
            ab = ab * (alibi_scale[i] if alibi_scale.size(0) > 1 else alibi_scale.squeeze(0))
        x, t = _alt_block_fwd(x, blocks, f"{prefix}blocks.{i}", heads, eps, lnf, ffn_targets, padding_mask, ab)
        layer_results.append(x)
        ffn_results.append(t)
        hidden.append(x)
    if lnf:
        x = _ln(x, blocks, prefix + "norm", eps)
    out = {"last_hidden_state": x, "features": x[:, n_extra:], "hidden_states": hidden,
           "layer_results": layer_results, "ffn_results": ffn_results, "prenet_results": prenet,
           "padding_mask": padding_mask[:, n_extra:] if padding_mask is not None else None}
    return out


def _d2v2_decoder(x_feat, sd, mc, modality):
    """forward_decoder with mask_info=None: decoder_input drops the extra tokens (+ positions when
    add_positions_all), then Decoder2d (image) / Decoder1d (audio, text) (fairseq:.../modalities/modules.py)"""
    mcm = mc["modalities"][modality]
    dc = mcm["decoder"]
    p = f"modality_encoders.{modality.upper()}.decoder"
    x = x_feat
    if dc["add_positions_all"]:
        x = x + sd[f"modality_encoders.{modality.upper()}.fixed_positional_encoder.positions"]
    B, T, C = x.shape
    k = dc["decoder_kernel"]
    if modality == "image":
        side = int(math.isqrt(T))
        x = x.transpose(1, 2).reshape(B, C, side, side)
    else:
        x = x.transpose(1, 2)
    residual = x
    for i in range(dc["decoder_layers"]):
        w, b = sd[f"{p}.blocks.{i}.0.weight"], sd[f"{p}.blocks.{i}.0.bias"]
        if modality == "image":
            y = F.conv2d(x, w, b, padding=k // 2, groups=dc["decoder_groups"])
            if k % 2 == 0:
                y = y[:, :, :-1, :-1]   # SamePad2d
            y = F.layer_norm(y.transpose(-3, -1), (y.shape[1],), eps=1e-5).transpose(-3, -1)
        else:
            y = _same_pad_conv1d(x, w, b, k, dc["decoder_groups"])
            y = F.layer_norm(y.transpose(1, 2), (y.shape[1],), eps=1e-5).transpose(1, 2)
        y = _gelu(y)
        if dc["decoder_residual"] and residual.size(1) == y.size(1):
            y = y + residual
        x = residual = y
    x = x.reshape(B, -1, T).transpose(1, 2) if modality == "image" else x.transpose(1, 2)
    if p + ".proj.weight" in sd:
        return _lin(x, sd, p + ".proj")
    j = 0
    while f"{p}.proj.{j + 2}.weight" in sd:
        x = _gelu(_lin(x, sd, f"{p}.proj.{j}"))
        j += 2
    return _lin(x, sd, f"{p}.proj.{j}")


def _mha(x, sd, p, heads, key_padding_mask):
    """fairseq MultiheadAttention (self attention, no bias_kv): q = q_proj(x) * head_dim**-0.5, key padding
    -> -inf; x is (B, T, C) here"""
    B, T, C = x.shape
    hd = C // heads
    q = (_lin(x, sd, p + ".q_proj") * hd ** -0.5).view(B, T, heads, hd).transpose(1, 2)
    k = _lin(x, sd, p + ".k_proj").view(B, T, heads, hd).transpose(1, 2)
    v = _lin(x, sd, p + ".v_proj").view(B, T, heads, hd).transpose(1, 2)
    attn = q @ k.transpose(-2, -1)
    if key_padding_mask is not None:
        attn = attn.masked_fill(key_padding_mask[:, None, None, :].bool(), float("-inf"))
    attn = attn.softmax(-1)
    return _lin((attn @ v).transpose(1, 2).reshape(B, T, C), sd, p + ".out_proj")


def _post_ln_layer(x, sd, p, heads, key_padding_mask, normalize_before=False):
    """TransformerSentenceEncoderLayer (wav2vec2.py) / TransformerEncoderLayerBase (transformer_layer.py):
    returns (x, ffn output before the residual = wav2vec2 ``lr`` / transformer ``fc_result``)"""
    if normalize_before:
        x = x + _mha(_ln(x, sd, p + ".self_attn_layer_norm", 1e-5), sd, p + ".self_attn", heads, key_padding_mask)
        r = x
        t = _lin(_gelu(_lin(_ln(x, sd, p + ".final_layer_norm", 1e-5), sd, p + ".fc1")), sd, p + ".fc2")
        return r + t, t
    x = _ln(x + _mha(x, sd, p + ".self_attn", heads, key_padding_mask), sd, p + ".self_attn_layer_norm", 1e-5)
    t = _lin(_gelu(_lin(x, sd, p + ".fc1")), sd, p + ".fc2")
    return _ln(x + t, sd, p + ".final_layer_norm", 1e-5), t


def _d2v1_audio_forward(sd, mc, inputs, prefix="", teacher=None):
    """Data2VecAudioModel.extract_features(mask=False) (fairseq:examples/data2vec/models/data2vec_audio.py) with
    TransformerEncoder.extract_features (fairseq:fairseq/models/wav2vec/wav2vec2.py).  ``teacher``: the
    ``_ema`` dict (encoder keys without the ``encoder.`` prefix) run on the student's post_extract_proj
    output (ema_transformer_only)."""
    spec = mc["conv_feature_layers"]
    x = _conv_features(inputs["input_values"], sd, prefix + "feature_extractor", spec, mc["extractor_mode"])
    x = _ln(x.transpose(1, 2), sd, prefix + "layer_norm", 1e-5)
    pm = inputs.get("padding_mask")
    padding_mask = _frame_padding_mask(pm, x.shape[1], spec) if pm is not None and pm.any() else None
    x = _lin(x, sd, prefix + "post_extract_proj")
    enc = {("encoder." + k): v for k, v in teacher.items()} if teacher is not None else sd
    ep = "encoder." if teacher is not None else prefix + "encoder."
    heads, lnf = mc["encoder_attention_heads"], mc["layer_norm_first"]
    if padding_mask is not None:
        x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)   # index_put(x, padding_mask, 0)
    xp = x.transpose(1, 2)
    if mc["pos_conv_depth"] > 1:
        k = max(3, mc["conv_pos"] // mc["pos_conv_depth"])
        for i in range(mc["pos_conv_depth"]):
            xp = _same_pad_conv1d(xp, enc[f"{ep}pos_conv.{i}.0.weight"], enc[f"{ep}pos_conv.{i}.0.bias"], k,
                                  mc["conv_pos_groups"])
            xp = _gelu(F.layer_norm(xp.transpose(1, 2), (xp.shape[1],), eps=1e-5).transpose(1, 2))
    else:
        g, v = enc[f"{ep}pos_conv.0.weight_g"], enc[f"{ep}pos_conv.0.weight_v"]
        w = g * v / v.norm(dim=(0, 1), keepdim=True)   # torch weight_norm(dim=2)
        xp = _gelu(_same_pad_conv1d(xp, w, enc[f"{ep}pos_conv.0.bias"], mc["conv_pos"], mc["conv_pos_groups"]))
    x = x + xp.transpose(1, 2)
    if not lnf:
        x = _ln(x, enc, ep + "layer_norm", 1e-5)
    # pad_to_multiple(required_seq_len_multiple) only appends masked keys; no effect on real positions
    hidden, layer_results, ffn_results = [x], [], []
    for i in range(mc["encoder_layers"]):
        x, t = _post_ln_layer(x, enc, f"{ep}layers.{i}", heads, padding_mask, normalize_before=lnf)
        layer_results.append(x)
        ffn_results.append(t)
        hidden.append(x)
    if lnf:
        x = _ln(x, enc, ep + "layer_norm", 1e-5)
    return {"last_hidden_state": x, "features": x, "hidden_states": hidden, "layer_results": layer_results,
            "ffn_results": ffn_results, "padding_mask": padding_mask}


def _d2v1_text_forward(sd, mc, inputs, teacher=None):
    """Data2VecTextEncoder.extract_features -> TransformerEncoder.forward_scriptable
    (fairseq:fairseq/models/transformer/transformer_encoder.py); ``teacher``: ``encoder._ema`` (sentence
    encoder keys)"""
    t = mc["transformer"]
    enc = teacher if teacher is not None else {k[len("encoder.sentence_encoder."):]: v for k, v in sd.items()
                                               if k.startswith("encoder.sentence_encoder.")}
    tok = inputs["input_ids"]
    pad = tok.eq(PAD)
    scale = 1.0 if t["no_scale_embedding"] else math.sqrt(t["encoder"]["embed_dim"])
    x = scale * F.embedding(tok, enc["embed_tokens.weight"])
    if not t["no_token_positional_embeddings"]:
        m = tok.ne(PAD).int()
        x = x + F.embedding((torch.cumsum(m, 1) * m).long() + PAD, enc["embed_positions.weight"])
    if t["layernorm_embedding"]:
        x = _ln(x, enc, "layernorm_embedding", 1e-5)
    if pad.any():
        x = x * (1 - pad.unsqueeze(-1).type_as(x))   # "account for padding while computing the representation"
    hidden, layer_results, ffn_results = [x], [], []
    nb = t["encoder"]["normalize_before"]
    for i in range(t["encoder"]["layers"]):
        x, fc = _post_ln_layer(x, enc, f"layers.{i}", t["encoder"]["attention_heads"], pad if pad.any() else None,
                               normalize_before=nb)
        layer_results.append(x)
        ffn_results.append(fc)
        hidden.append(x)
    if "layer_norm.weight" in enc:
        x = _ln(x, enc, "layer_norm", 1e-5)
    return {"last_hidden_state": x, "features": x, "hidden_states": hidden, "layer_results": layer_results,
            "ffn_results": ffn_results, "padding_mask": pad}


def _beit_forward(sd, args, inputs):
    """VisionTransformerForCyclicalTraining.forward_features(bool_masked_pos=None) (beit:beit/modeling_cyclical.py)
    with Block / Attention (beit:beit/modeling_finetune.py): pre-LN, layer scale gamma_1/gamma_2, qkv bias =
    cat(q_bias, 0, v_bias), shared relative position bias added to every block's logits, final norm."""
    img = inputs["pixel_values"]
    x = F.conv2d(img, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=args.patch_size)
    x = x.flatten(2).transpose(1, 2)
    B, N, C = x.shape
    x = torch.cat([sd["cls_token"].expand(B, -1, -1), x], dim=1)
    if "pos_embed" in sd:
        x = x + sd["pos_embed"]
    heads = None
    rel = None
    if "rel_pos_bias.relative_position_bias_table" in sd:
        table, idx = sd["rel_pos_bias.relative_position_bias_table"], sd["rel_pos_bias.relative_position_index"]
        heads = table.shape[1]
        rel = table[idx.view(-1)].view(N + 1, N + 1, -1).permute(2, 0, 1)
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    hidden, layer_results, ffn_results = [x], [], []
    for i in range(depth):
        p = f"blocks.{i}"
        bt = sd.get(p + ".attn.relative_position_bias_table")
        if bt is not None:
            heads = bt.shape[1]
        if heads is None:
            raise ValueError("BEiT checkpoint without a relative position bias table: the number of heads is not in"
                             " the weights")
        h = _ln(x, sd, p + ".norm1", 1e-6)
        qkv_bias = torch.cat([sd[p + ".attn.q_bias"], torch.zeros_like(sd[p + ".attn.v_bias"]),
                              sd[p + ".attn.v_bias"]])
        qkv = F.linear(h, sd[p + ".attn.qkv.weight"], qkv_bias).reshape(B, N + 1, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (C // heads) ** -0.5, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        if bt is not None:
            attn = attn + bt[sd[p + ".attn.relative_position_index"].view(-1)].view(N + 1, N + 1, -1).permute(2, 0, 1)
        if rel is not None:
            attn = attn + rel
        a = _lin((attn.softmax(-1) @ v).transpose(1, 2).reshape(B, N + 1, -1), sd, p + ".attn.proj")
        g1, g2 = sd.get(p + ".gamma_1"), sd.get(p + ".gamma_2")
        x = x + (g1 * a if g1 is not None else a)
        f = _lin(_gelu(_lin(_ln(x, sd, p + ".norm2", 1e-6), sd, p + ".mlp.fc1")), sd, p + ".mlp.fc2")
        fc = g2 * f if g2 is not None else f
        x = x + fc
        layer_results.append(x)
        ffn_results.append(fc)
        hidden.append(x)
    x = _ln(x, sd, "norm", 1e-6)
    return {"last_hidden_state": x, "features": x[:, 1:], "hidden_states": hidden, "layer_results": layer_results,
            "ffn_results": ffn_results, "padding_mask": None}


def _float(sd):
    return {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in sd.items()
            if torch.is_tensor(v)}


def _kind_of(ckpt):
    if "cfg" not in ckpt:
        return "beit_vision"
    name = ckpt["cfg"]["model"]["_name"]
    if name == "data2vec_multi":
        return {"IMAGE": "d2v2_vision", "AUDIO": "d2v2_audio", "TEXT": "d2v2_text"}[
            ckpt["cfg"]["model"]["supported_modality"]]
    if name == "mae_image_classification":
        return "d2v2_vision_ft"
    if name == "wav2vec_ctc":
        return ("d2v2_audio_ctc" if ckpt["cfg"]["model"]["w2v_args"]["model"]["_name"] == "data2vec_multi"
                else "d2v1_audio_ctc")
    return {"data2vec_audio": "d2v1_audio", "data2vec_text": "d2v1_text"}[name]


@torch.no_grad()
def reference_forward(checkpoint, inputs, weights="student"):
    """fp32, eval-mode forward of a fairseq / data2vec_vision checkpoint (the dict ``torch.load`` returns), written
    from the original module definitions.  ``weights="ema"`` runs the teacher (``_ema`` / ``encoder._ema`` /
    ``model_ema``) the way the pretraining forward does and also returns the regression ``targets``.

    Returns a dict:
      ``last_hidden_state`` (B, T, C): output of the last main block (after the final norm where there is one),
          *including* extra tokens (d2v2 image: CLS at index 0; BEiT: CLS at index 0).
      ``features``: fairseq's ``extract_features(...)["x"]`` (d2v2: extra tokens removed; BEiT: patch tokens).
      ``hidden_states``: [input of the first main block] + [output of each main block] (HF-style, depth + 1).
      ``layer_results``: output of each main block (B, T, C), extra tokens included.
      ``ffn_results``: per main block, the FFN output before its residual: what d2v2
          ``extract_features()["layer_results"]`` holds (AltBlock ``t``), wav2vec2 ``layer_results[i][2]``,
          transformer ``fc_results``, BEiT ``fc_feature`` (gamma_2 * mlp); the teachers average these.
      ``prenet_results`` (d2v2): outputs of the modality encoder's context_encoder blocks.
      ``padding_mask``: frame / token level, True = pad (fairseq), or None.
      ``decoder_output`` (d2v2 pretrained): the modality decoder applied to the unmasked features.
      ``logits`` (fine-tunes): image classification (B, num_classes); CTC (B, frames, vocab), the raw
          ``w2v_encoder.proj`` output (Wav2VecCtc.get_logits would further overwrite padded frames).
      ``targets`` (weights="ema", pretrained kinds): the teacher's regression targets (B, T, C).
    """
    kind = _kind_of(checkpoint)
    if kind == "beit_vision":
        if weights == "ema":
            sd = _float(checkpoint["model_ema"])
        else:
            sd = _float(checkpoint["model"])
        out = _beit_forward(sd, checkpoint["args"], inputs)
        if weights == "ema":   # beit:beit/engine_for_cyclical.py train_one_epoch
            a = checkpoint["args"]
            tl = [int(i) for i in a.target_layers.strip("[]").split(",")]
            vals = [out["layer_results"][i][:, 1:] for i in tl]
            if a.target_instance_norm or a.target_batch_norm:
                vals = [v.transpose(1, 2) for v in vals]
                vals = [F.instance_norm(v) if a.target_instance_norm else F.batch_norm(v, None, None, training=True)
                        for v in vals]
                vals = [v.transpose(1, 2) for v in vals]
            if not a.no_target_layer_norm_last:
                vals = [F.layer_norm(v, v.shape[-1:]) for v in vals]
            y = sum(vals) / len(tl)
            if a.post_target_instance_norm:
                y = F.instance_norm(y.transpose(1, 2)).transpose(1, 2)
            if a.post_target_layer_norm:
                y = F.layer_norm(y, y.shape[-1:])
            out["targets"] = y
        return out
    cfg = checkpoint["cfg"]
    sd = _float(checkpoint["model"])
    if weights not in ("student", "ema"):
        raise ValueError(weights)
    if kind in ("d2v2_vision", "d2v2_audio", "d2v2_text"):
        mc = cfg["model"]
        modality = mc["supported_modality"].lower()
        teacher = None
        if weights == "ema":
            teacher = _float(checkpoint["model"]["_ema"])
        out = _d2v2_forward(sd, mc, modality, inputs, teacher=teacher)
        if weights == "student" and mc["modalities"][modality]["decoder"] is not None:
            out["decoder_output"] = _d2v2_decoder(out["features"], sd, mc, modality)
        if weights == "ema":
            n_extra = mc["modalities"][modality]["num_extra_tokens"]
            out["targets"] = _make_targets([t[:, n_extra:] for t in out["ffn_results"]], mc)
        return out
    if weights == "ema" and kind not in ("d2v1_audio", "d2v1_text"):
        raise ValueError(f"{kind}: fine-tuned checkpoints have no EMA teacher")
    if kind == "d2v2_vision_ft":
        mc = cfg["model"]["pretrained_model_args"]["model"]
        out = _d2v2_forward(sd, mc, "image", inputs, prefix="model.")
        # MaeImageClassificationModel.forward: PredictionMode.MEAN_POOLING over the non-extra tokens, fc_norm
        # (LayerNorm eps 1e-6), head
        mode = cfg["model"]["prediction_mode"]
        feats = out["features"] if mode != "CLS_TOKEN" else out["last_hidden_state"]
        if mode == "MEAN_POOLING":
            pooled = feats.mean(dim=1)
        elif mode == "CLS_TOKEN":
            pooled = feats[:, 0]
        else:
            raise NotImplementedError(mode)
        if cfg["model"]["use_fc_norm"]:
            pooled = _ln(pooled, sd, "fc_norm", 1e-6)
        out["pooled"] = pooled
        out["logits"] = _lin(pooled, sd, "head")
        return out
    if kind == "d2v2_audio_ctc":
        mc = cfg["model"]["w2v_args"]["model"]
        out = _d2v2_forward(sd, mc, "audio", inputs, prefix="w2v_encoder.w2v_model.")
        out["logits"] = _lin(out["features"], sd, "w2v_encoder.proj")
        return out
    if kind == "d2v1_audio_ctc":
        mc = cfg["model"]["w2v_args"]["model"]
        out = _d2v1_audio_forward(sd, mc, inputs, prefix="w2v_encoder.w2v_model.")
        out["logits"] = _lin(out["features"], sd, "w2v_encoder.proj")
        return out
    if kind == "d2v1_audio":
        mc = cfg["model"]
        teacher = _float(checkpoint["model"]["_ema"]) if weights == "ema" else None
        out = _d2v1_audio_forward(sd, mc, inputs, teacher=teacher)
        if weights == "ema":
            out["targets"] = _make_targets(out["ffn_results"], mc)
        return out
    if kind == "d2v1_text":
        mc = cfg["model"]
        teacher = _float(checkpoint["model"]["encoder._ema"]) if weights == "ema" else None
        out = _d2v1_text_forward(sd, mc, inputs, teacher=teacher)
        if weights == "ema":
            out["targets"] = _make_targets(out["ffn_results"], mc)
        return out
    raise AssertionError(kind)


# ----------------------------------------------------------------------------------------------------------
# torch.load(weights_only=True)
# ----------------------------------------------------------------------------------------------------------

def _numpy_scalar_globals():
    """numpy scalars pickle as numpy.core.multiarray.scalar (numpy 1.x) or numpy._core.multiarray.scalar
    (numpy 2.x), plus numpy.dtype and, from numpy 1.25, the dtype class (numpy.dtypes.Float64DType)"""
    out = [np.dtype]
    try:
        from numpy._core.multiarray import scalar
    except ImportError:   # numpy < 2
        from numpy.core.multiarray import scalar
    out.append(scalar)
    # a file written with numpy 1.x names the module numpy.core.multiarray
    out.append((scalar, "numpy.core.multiarray.scalar"))
    try:
        import numpy.dtypes as nd
        out += [nd.Float64DType, nd.Float32DType, nd.Int64DType]
    except ImportError:
        pass
    return out


# Only what the checkpoints need beyond torch's default weights_only allow-list (tensors, dicts, OrderedDict,
# lists, tuples, str/int/float/bool/None):
#   fairseq kinds: numpy scalars in extra_state (see docs/fairseq-layouts.md for the caveat), nothing else
#   beit_vision:   argparse.Namespace (the "args" entry)
SAFE_GLOBALS = {
    "fairseq": _numpy_scalar_globals(),
    "beit": [argparse.Namespace],
}


def safe_globals_for(kind):
    return SAFE_GLOBALS["beit" if kind.startswith("beit") else "fairseq"]
