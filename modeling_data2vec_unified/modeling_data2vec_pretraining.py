"""data2vec pretraining: the student (a modality's model from `modeling_data2vec`), a regression head, and an EMA
teacher that makes the targets from the unmasked input (`Data2VecForPreTraining`), with the targets
(`data2vec_targets`: the top-K layer average, each layer normalised) and the loss (`forward_loss`).

Kept apart from the models that fine-tuning and feature extraction load (`modeling_data2vec`): `AutoModel` on a
pretraining run's output needs none of this, and a second pretraining algorithm adds its code here, not there.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration_data2vec import Data2VecConfig
from .ema import EMATeacher
from .masking import MASK_INPUT, check_batch, draw_mask
from .modeling_data2vec import MODALITY_INPUTS, MODEL_CLASSES, Data2VecPreTrainedModel, FrontEndOutput


def normalize_targets(x: torch.Tensor, kind: str, real: torch.Tensor | None = None) -> torch.Tensor:
    """Parameter-free normalisation of (B, T, D) fp32 teacher outputs.

    "layer": over the D channels of each position. "instance": over time, per example and channel (F.instance_norm),
    with the statistics taken over the `real` (B, T) positions only, so padding does not shift them. "none": as is.
    """
    if kind == "layer":
        return F.layer_norm(x, x.shape[-1:])
    if kind == "instance":
        if real is None:
            return F.instance_norm(x.transpose(1, 2)).transpose(1, 2)
        w = real[..., None].to(x.dtype)  # (B, T, 1)
        n = w.sum(1, keepdim=True).clamp(min=1)
        mean = (x * w).sum(1, keepdim=True) / n
        var = ((x - mean).square() * w).sum(1, keepdim=True) / n  # biased, as F.instance_norm
        return (x - mean) * torch.rsqrt(var + 1e-5)
    return x


def data2vec_targets(layer_outputs: Sequence[torch.Tensor], config: Data2VecConfig, real: torch.Tensor | None = None):
    """The regression targets: the average of the top `average_top_k_layers` layer outputs, each normalised by
    `target_layer_norm`, then the average normalised by `target_final_norm`; (B, T, D) in fp32."""
    top = layer_outputs[-config.average_top_k_layers :]
    y = sum(normalize_targets(layer.float(), config.target_layer_norm, real) for layer in top) / len(top)
    return normalize_targets(y, config.target_final_norm, real)


def masked_std(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the (unbiased) std across the masked positions of (B, T, D) `x`: fairseq
    data2vec's `target_var` / `pred_var`, the collapse diagnostics."""
    w = mask[..., None]
    n = mask.sum().to(x.dtype)
    mean = torch.where(w, x, 0).sum((0, 1)) / n.clamp(min=1)
    var = torch.where(w, (x - mean).square(), 0).sum((0, 1)) / (n - 1).clamp(min=1)
    return torch.sqrt(var + 1e-6).mean()


@contextmanager
def _eval_mode(module: nn.Module):
    """Runs `module` without dropout / layer drop, then restores every submodule's own mode."""
    modes = [(m, m.training) for m in module.modules()]
    module.train(False)
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class Data2VecRegressionHead(nn.Module):
    """Maps the student's outputs to target space: Linear(D, D) (vision, audio), or Linear(D, 2D)-GELU-Linear(2D, D)
    (data2vec text's `head_layers=2`)."""

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        D = config.hidden_size
        self.dense = nn.Linear(D, 2 * D) if config.head_layers == 2 else None
        self.act = nn.GELU() if config.head_layers == 2 else None
        self.proj = nn.Linear(2 * D if config.head_layers == 2 else D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            x = self.act(self.dense(x))
        return self.proj(x)


class Data2VecCollapseError(RuntimeError):
    """The representations collapsed: targets or predictions barely vary across positions."""


@dataclass
class Data2VecForPreTrainingOutput(ModelOutput):
    """
    loss: regression loss over the masked positions, reduced as `config.loss_reduction` names, times the scale.
    target_var / pred_var: mean over channels of the std of targets / predictions across masked positions;
        both falling towards 0 signals collapse (see `Data2VecForPreTraining.check_collapse`).
    num_masked: masked real positions in the batch; masked_fraction: their share of the real positions.
    predictions / targets: (B, P, D) over every position P (the loss reads the masked ones); mask: (B, P).
    """

    loss: torch.FloatTensor | None = None
    target_var: torch.FloatTensor | None = None
    pred_var: torch.FloatTensor | None = None
    num_masked: torch.LongTensor | None = None
    masked_fraction: torch.FloatTensor | None = None
    predictions: torch.FloatTensor | None = None
    targets: torch.FloatTensor | None = None
    mask: torch.BoolTensor | None = None


class Data2VecForPreTraining(Data2VecPreTrainedModel):
    """data2vec pretraining for any modality: the student (`self.data2vec`, the modality's model), a regression
    head, and an EMA teacher that makes the targets from the unmasked input.

    The teacher is a copy of what `config.teacher_scope` names: the student's encoder ("encoder": text, audio; the
    front end is then shared, the teacher sees the student's embedding of the unmasked input) or the whole model
    ("model": vision). It is *not* a submodule: not in `parameters()` (so never in an optimizer, never wrapped by
    DDP), not in `state_dict()` (so `save_pretrained` writes the student, which `AutoModel` loads). It is built
    from the student on first use, which is also what makes it survive `from_pretrained` (transformers builds the
    model on the meta device and initialises what the checkpoint lacks); it follows the student's device, keeps
    fp32 weights, and stays in eval mode. Training checkpoints save `model.teacher.state_dict()` (weights and
    update count) and load it back.

    Step: `out = model(**batch); out.loss.backward(); optimizer.step(); model.update_teacher()`.
    """

    main_input_name = "input_values"
    # what a transformers text checkpoint holds that pretraining does not use
    _keys_to_ignore_on_load_unexpected = [r"^data2vec\.pooler\."]

    def __init__(self, config: Data2VecConfig):
        super().__init__(config)
        kwargs = {"add_pooling_layer": False} if config.modality in ("text", "vision") else {}
        self.data2vec = MODEL_CLASSES[config.modality](config, **kwargs)
        self.main_input_name = self.data2vec.main_input_name
        # a pre-LN encoder ends un-normalised where the model has no final LayerNorm (vision with mean pooling):
        # the student's outputs get one before the head, as data2vec vision's encoder norm
        has_final_norm = isinstance(getattr(self.data2vec, "layernorm", None), nn.LayerNorm)
        open_end = config.layer_norm_position == "pre" and not has_final_norm
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if open_end else None
        self.regression_head = Data2VecRegressionHead(config)
        self.num_prefix_tokens = 1 if config.modality == "vision" else 0  # CLS: no target there
        self.__dict__["_teacher"] = None  # not a submodule, on purpose (see the class docstring)
        self.post_init()

    # ---- the teacher --------------------------------------------------------------------------------------------

    def _ema_source(self) -> nn.Module:
        return self.data2vec.encoder if self.config.teacher_scope == "encoder" else self.data2vec

    @property
    def teacher(self) -> EMATeacher:
        """The EMA teacher, built from the student on first use and kept on the student's device."""
        source = self._ema_source()
        device = next(source.parameters()).device
        teacher = self.__dict__["_teacher"]
        if teacher is None:
            if device.type == "meta":
                raise RuntimeError("the student's weights are not loaded yet (meta device): no teacher to build")
            c = self.config
            teacher = EMATeacher(source, c.ema_decay, c.ema_end_decay, c.ema_anneal_end_step)
            self.__dict__["_teacher"] = teacher
        elif next(teacher.parameters()).device != device:
            teacher.to(device)
        return teacher

    def update_teacher(self, skip: torch.Tensor | None = None) -> float:
        """One EMA step of the teacher towards the student, at the decay scheduled for this update count (call it
        after every optimizer step). Returns the decay used. `skip` (a bool tensor) leaves the teacher unchanged
        where True, without a host sync: pass it for an optimizer step that was skipped on the device."""
        return self.teacher.update(self._ema_source(), skip=skip)

    def reset_teacher(self) -> None:
        """Make the teacher a fresh copy of the student (update count 0) at its next use."""
        self.__dict__["_teacher"] = None

    @property
    def ema_decay(self) -> float:
        """The decay the next `update_teacher()` uses."""
        return self.teacher.decay

    def check_collapse(self, target_var, pred_var) -> None:
        """Raises `Data2VecCollapseError` naming the likely causes if `target_var` / `pred_var` (from an output,
        tensors or floats) fell below `config.min_target_var` / `config.min_pred_var`. Reads the values back to
        the host: call it at a logging interval, after a warm-up."""
        c = self.config
        target_var, pred_var = float(target_var), float(pred_var)
        low = []
        if target_var < c.min_target_var:
            low.append(f"target_var {target_var:.4g} < min_target_var {c.min_target_var}")
        if pred_var < c.min_pred_var:
            low.append(f"pred_var {pred_var:.4g} < min_pred_var {c.min_pred_var}")
        if low:
            raise Data2VecCollapseError(
                "data2vec representations collapsed (" + "; ".join(low) + "): the teacher's targets no longer vary "
                "across positions, so predicting a constant is enough. Likely causes: a learning rate too high or "
                "a warm-up too short; an EMA decay too low for the run (the teacher chases the student) - raise "
                "ema_decay / ema_end_decay; unnormalised targets (target_layer_norm='none'); too little masking "
                "(mask_prob). Lower min_target_var / min_pred_var only if the data truly varies little."
            )

    # ---- forward: masks -> student -> teacher -> loss ------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        masked_input_ids: torch.Tensor | None = None,
        check_inputs: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Data2VecForPreTrainingOutput | tuple:
        """The modality's input unmasked (the teacher's view) and its mask (True = hidden from the student):
        `bool_masked_pos` (text tokens; vision patches, (B, patches) or (B, h, w)) or `mask_time_indices` (audio
        frames), as `DataCollatorForData2VecPretraining` makes them; text may add `masked_input_ids` (the
        student's view, e.g. BERT's 80/10/10), else every masked token becomes `<mask>`. Without a mask, one is
        drawn from torch's global RNG.

        `check_inputs` refuses bad batches with a clear error (see `masking.check_batch`); it reads values back
        to the host, so by default it runs only for CPU inputs (on accelerators the collator has checked them).
        """
        if kwargs:
            raise TypeError(f"Data2VecForPreTraining.forward() got unexpected arguments: {sorted(kwargs)}")
        c = self.config
        batch = dict(
            input_ids=input_ids, pixel_values=pixel_values, input_values=input_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, bool_masked_pos=bool_masked_pos, mask_time_indices=mask_time_indices,
            masked_input_ids=masked_input_ids,
        )
        values = batch[MODALITY_INPUTS[c.modality]]
        if values is None:
            check_batch(c, batch)  # raises, naming the input the batch holds instead
        foreign = [k for m, k in MODALITY_INPUTS.items() if m != c.modality and batch[k] is not None]
        if foreign:
            raise ValueError(f"a {c.modality} model got {foreign[0]} as well: pass only {MODALITY_INPUTS[c.modality]}")
        mask_key = MASK_INPUT[c.modality]
        if batch[mask_key] is None:
            rng = np.random.default_rng(int(torch.randint(2**62, (1,))))  # follows torch.manual_seed
            batch.update({k: v.to(values.device) for k, v in draw_mask(c, rng, **batch).items()})
        if check_inputs if check_inputs is not None else values.device.type == "cpu":
            check_batch(c, batch)

        mask = batch[mask_key].bool().reshape(len(values), -1)  # (B, P)
        predictions, student_front = self.forward_student(batch, mask)
        real = student_front.attention_mask  # (B, P) or None: every position is real
        targets = self.forward_teacher(batch, student_front)
        if real is not None:
            mask = mask & real
        loss, num_masked = self.forward_loss(predictions, targets, mask)
        with torch.no_grad():
            target_var = masked_std(targets, mask)
            pred_var = masked_std(predictions.detach().float(), mask)
            num_real = real.sum() if real is not None else mask.numel()
            masked_fraction = num_masked / num_real
        out = Data2VecForPreTrainingOutput(
            loss=loss, target_var=target_var, pred_var=pred_var, num_masked=num_masked,
            masked_fraction=masked_fraction, predictions=predictions, targets=targets, mask=mask,
        )
        return out if return_dict is None or return_dict else out.to_tuple()

    def embed(self, batch: dict, mask: torch.Tensor | None = None, features: torch.Tensor | None = None):
        """The student's front end on the batch: its masked view when `mask` is given, else the unmasked one.
        Audio may pass the conv `features` already computed for this input."""
        front_end = self.data2vec.embeddings
        if self.config.modality == "text":
            ids = batch["input_ids"]
            if mask is not None:
                ids = batch.get("masked_input_ids")
                if ids is None:
                    ids = batch["input_ids"].masked_fill(mask, self.config.mask_token_id)
            return front_end(ids, batch.get("attention_mask"), batch.get("token_type_ids"))
        if self.config.modality == "vision":
            return front_end(batch["pixel_values"], mask)
        return front_end(batch["input_values"], batch.get("attention_mask"), mask, features=features)

    def forward_student(self, batch: dict, mask: torch.Tensor) -> tuple[torch.Tensor, FrontEndOutput]:
        """Masked input -> student encoder -> regression head: predictions (B, P, D) at every position."""
        front = self.embed(batch, mask)
        hidden = self.data2vec.encoder(front.hidden_states, front.attention_mask, front.grid).last_hidden_state
        if self.config.modality == "vision":
            hidden = self.data2vec.layernorm(hidden)
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        return self.regression_head(hidden[:, self.num_prefix_tokens :]), front

    @torch.no_grad()
    def forward_teacher(self, batch: dict, student_front: FrontEndOutput) -> torch.Tensor:
        """Unmasked input -> EMA teacher -> targets (B, P, D) in fp32 (`data2vec_targets`)."""
        c = self.config
        teacher = self.teacher
        ffn = c.target_layer_output == "ffn"
        if c.teacher_scope == "encoder":  # the student's front end (no dropout) feeds the teacher's encoder
            with _eval_mode(self.data2vec.embeddings):
                front = self.embed(batch, features=student_front.extract_features)
            dtype = next(teacher.parameters()).dtype
            out = teacher(
                front.hidden_states.to(dtype), front.attention_mask, front.grid,
                output_hidden_states=not ffn, output_ffn_outputs=ffn,
            )
        else:
            inputs = {k: batch[k] for k in MODEL_INPUT_NAMES[c.modality] if batch.get(k) is not None}
            out = teacher(**inputs, output_hidden_states=not ffn, output_ffn_outputs=ffn)
        layers = out.ffn_outputs if ffn else out.hidden_states[1:]
        layers = [layer[:, self.num_prefix_tokens :] for layer in layers[-c.average_top_k_layers :]]
        return data2vec_targets(layers, c, student_front.attention_mask)

    def forward_loss(self, predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor):
        """Smooth L1 (beta > 0) or L2 (beta 0) in fp32 over the masked positions, reduced as `loss_reduction` names:
        "channel_sum" sums over channels and averages over positions (fairseq data2vec), "mean" averages over both
        (data2vec_vision); times `target_loss_scale`. Returns (loss, number of masked positions)."""
        c = self.config
        predictions = predictions.float()
        if c.loss_beta == 0:
            elementwise = F.mse_loss(predictions, targets, reduction="none")  # (B, P, D)
        else:
            elementwise = F.smooth_l1_loss(predictions, targets, reduction="none", beta=c.loss_beta)
        per_position = elementwise.sum(-1) if c.loss_reduction == "channel_sum" else elementwise.mean(-1)  # (B, P)
        num_masked = mask.sum()
        loss = torch.where(mask, per_position, 0).sum() * c.target_loss_scale / num_masked.clamp(min=1)
        return loss, num_masked


# the base model's own input names, per modality (what a whole-model teacher is called with)
MODEL_INPUT_NAMES = {
    "text": ("input_ids", "attention_mask", "token_type_ids"),
    "vision": ("pixel_values",),
    "audio": ("input_values", "attention_mask"),
}


__all__ = [
    "Data2VecCollapseError",
    "Data2VecForPreTraining",
    "Data2VecForPreTrainingOutput",
    "data2vec_targets",
    "masked_std",
    "normalize_targets",
]
