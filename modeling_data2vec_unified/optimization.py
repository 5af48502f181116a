"""Parameter groups for AdamW: no weight decay on biases, norms, tokens and position tables, and data2vec's layer-wise
learning-rate decay for fine-tuning (BEiT / data2vec vision fine-tune with 0.65).

    optimizer = layer_decay_optimizer(model, training_args, layer_decay=0.65)
    Trainer(model=model, args=training_args, optimizers=(optimizer, None), ...)   # Trainer makes the schedule

transformers' schedulers (`LambdaLR`) scale each group's own initial learning rate, so the per-layer rates keep
their ratios through warm-up and decay.
"""

from __future__ import annotations

import re

import torch
from torch import nn

_LAYER = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.")


def is_decay_exempt(name: str, param: torch.Tensor) -> bool:
    """Biases, norm weights, CLS / mask tokens, layer scales and position tables (absolute, and BEiT's relative
    position bias tables) get no weight decay."""
    return param.ndim < 2 or any(k in name for k in ("norm", "token", "position_embeddings", "relative_position_bias"))


def layer_id(name: str, num_layers: int) -> int:
    """0 for the front end (embeddings, patches, conv features), i + 1 for encoder layer i, num_layers + 1 for
    what sits above the layers (a shared relative position bias, final norms, pooler, heads), as BEiT counts."""
    if match := _LAYER.search(name):
        return int(match.group(1)) + 1
    if re.search(r"(?:^|\.)embeddings\.", name):
        return 0
    return num_layers + 1


def parameter_groups(model: nn.Module, learning_rate: float, weight_decay: float,
                     layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups of `model`'s trainable parameters: one per (layer, decayed or not); with `layer_decay < 1`
    layer l's rate is `learning_rate * layer_decay ** (num_layers + 1 - l)`."""
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1] (data2vec vision fine-tunes with 0.65); got {layer_decay}")
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_id(name, num_layers) if layer_decay < 1.0 else num_layers + 1
        exempt = is_decay_exempt(name, param)
        group = groups.setdefault((layer, exempt), {
            "params": [], "weight_decay": 0.0 if exempt else weight_decay,
            "lr": learning_rate * layer_decay ** (num_layers + 1 - layer), "layer": layer,
        })
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def layer_decay_optimizer(model: nn.Module, args, layer_decay: float = 0.65) -> torch.optim.AdamW:
    """AdamW with layer-wise learning-rate decay from a `transformers.TrainingArguments` (its learning rate, weight
    decay, betas and epsilon), for `Trainer(..., optimizers=(optimizer, None))`."""
    groups = parameter_groups(model, args.learning_rate, args.weight_decay, layer_decay)
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                             eps=args.adam_epsilon, foreach=True)
