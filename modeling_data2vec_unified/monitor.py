"""Label-free health of the representations during pretraining: how much the pooled features of a fixed set of
examples still differ from one example to the next.

data2vec's own collapse check (`target_var` / `pred_var`) watches the spread of targets and predictions across the
masked *positions* of a batch. It misses the collapse a new user met on steady tones and chirps: targets normalised
per example over time (instance norm) keep varying along each clip while every clip's pooled features become the
same, so whatever reads a clip as a whole (the linear probe, a fine-tuned classifier) has nothing to go on. This
module measures that directly, on any data, labelled or not:

- `pooled_spread`: the mean over channels of the standard deviation, across examples, of the features pooled over
  each example's real positions (`probe.pool`, "mean");
- `effective_rank`: RankMe (Garrido et al., 2023, "RankMe: assessing the downstream performance of pretrained
  self-supervised representations by their rank"): exp of the entropy of the normalised singular values of the
  (examples x channels) matrix of pooled features, here centred over the examples so that it counts the directions
  in which examples differ (1 = they differ along one direction only).

Three representations are measured: the front end's output (what a fine-tune with a frozen front end is left
with), the mean of the student's top 2 layers (what the probe and the task heads read) and the teacher's top
`average_top_k_layers` before normalisation (what the targets are made of). Each is compared with its value at the
start of the run: a pooled spread below `COLLAPSE_RATIO` of it is reported as a collapse (`collapsed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .masking import DataCollatorForData2VecPretraining
from .probe import real_positions, pool

REPRESENTATIONS = ("front_end", "student", "teacher")
COLLAPSE_RATIO = 0.2  # a pooled spread below this share of its value at the start of the run is a collapse
STUDENT_TOP_LAYERS = 2  # the probe's and the heads' features: the mean of the top 2 layers


def effective_rank(features: torch.Tensor) -> float:
    """RankMe of (N, D) `features`, centred over the N rows: exp(entropy of the singular values / their sum);
    between 1 and min(N - 1, D); 0 when every row is the same."""
    x = features.double() - features.double().mean(0)
    s = torch.linalg.svdvals(x)
    if float(s.sum()) <= 1e-12 * max(1.0, float(features.double().abs().max())):
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def pooled_spread(features: torch.Tensor) -> float:
    """Mean over channels of the (biased) standard deviation across the N rows of (N, D) `features`."""
    return float(features.double().std(0, unbiased=False).mean())


@torch.no_grad()
def pooled_representations(model, examples: Sequence[dict], batch_size: int = 32) -> dict[str, torch.Tensor]:
    """(N, D) pooled features of `examples` for each of `REPRESENTATIONS`, from a `Data2VecForPreTraining` in eval
    mode (its mode restored after), with no mask; draws no random number."""
    config = model.config
    collator = DataCollatorForData2VecPretraining(config, audio_crop="pad")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = {name: [] for name in REPRESENTATIONS}
    try:
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collator.collate_inputs(examples[start : start + batch_size]).items()}
            states = model.data2vec(**batch, output_hidden_states=True).hidden_states
            real = real_positions(config, batch, states[-1].shape[1], device)
            top = torch.stack(states[-STUDENT_TOP_LAYERS:]).mean(0).float()
            out["front_end"].append(pool(states[0].float(), real, "mean"))
            out["student"].append(pool(top, real, "mean"))
            layers = model.teacher_layers(batch)  # (B, P, D) each, without the prefix (CLS) tokens
            teacher_real = real[:, real.shape[1] - layers[0].shape[1] :]
            out["teacher"].append(pool(torch.stack(layers).mean(0).float(), teacher_real, "mean"))
    finally:
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in out.items()}


def representation_health(model, examples: Sequence[dict]) -> dict[str, float]:
    """{'<representation>_spread': ..., '<representation>_rank': ...} for each of `REPRESENTATIONS`."""
    metrics = {}
    for name, features in pooled_representations(model, examples).items():
        metrics[f"{name}_spread"] = pooled_spread(features)
        metrics[f"{name}_rank"] = effective_rank(features)
    return metrics


def collapsed(health: dict[str, float], start: dict[str, float], ratio: float = COLLAPSE_RATIO) -> list[str]:
    """The representations whose pooled spread fell below `ratio` of its value at the start, in words."""
    out = []
    for name in REPRESENTATIONS:
        now, then = health.get(f"{name}_spread"), start.get(f"{name}_spread")
        if now is None or not then or math.isnan(now):
            continue
        if now < ratio * then:
            out.append(f"{name.replace('_', ' ')} (pooled spread {now:.3g}, {now / then:.0%} of its {then:.3g} at "
                       f"the start; effective rank {health[f'{name}_rank']:.1f} from {start[f'{name}_rank']:.1f})")
    return out
