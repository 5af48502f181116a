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
from .input_checks import MASK_INPUT, check_batch
from .mask_types import num_visible
from .masking import draw_mask
from .modeling_data2vec import MODALITY_INPUTS, MODEL_CLASSES, Data2VecPreTrainedModel, FrontEndOutput


TEACHER_WEIGHTS = "teacher.safetensors"  # an EMA teacher's weights and update count (`EMATeacher.save`)


def _checkpoint_file(name_or_path, filename: str, kwargs: dict) -> str | None:
    """The path of `filename` in a local checkpoint folder or a Hub repo (downloaded), or None where it has none."""
    from transformers.utils import cached_file

    from .checkpoint_files import hub_kwargs

    if name_or_path is None:
        return None
    return cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False, **hub_kwargs(kwargs))


def _check_teacher_file(path: str) -> None:
    """A teacher file that cannot be read (truncated, damaged, not safetensors) or was not written by
    `EMATeacher.save`: a ValueError naming it and the fix."""
    from safetensors import SafetensorError, safe_open

    fix = (f"remove it (the teacher then starts as a copy of the student), or copy the checkpoint's {TEACHER_WEIGHTS} "
           "again")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} cannot be read ({error}): truncated or damaged; {fix}") from error
    if "num_updates" not in metadata:
        raise ValueError(f"{path} is not a teacher saved by EMATeacher.save (no num_updates): {fix}")


def normalize_targets(x: torch.Tensor, kind: str, real: torch.Tensor | None = None) -> torch.Tensor:
    """Parameter-free normalisation of (B, T, D) fp32 teacher outputs.

    "layer": over the D channels of each position. "instance": over time, per example and channel (F.instance_norm).
    "batch": over the batch and time, per channel (fairseq data2vec_audio's `batch_norm_target_layer`: F.batch_norm
    with the batch's statistics): unlike "instance" it keeps what sets an example apart from the others, e.g. a
    steady tone's pitch, constant over its clip. Statistics over the `real` (B, T) positions only, so padding does not
    shift them. "none": as is.
    """
    if kind == "layer":
        return F.layer_norm(x, x.shape[-1:])
    if kind == "batch":
        w = torch.ones_like(x[..., :1]) if real is None else real[..., None].to(x.dtype)  # (B, T, 1)
        n = w.sum((0, 1), keepdim=True).clamp(min=1)
        mean = (x * w).sum((0, 1), keepdim=True) / n
        var = ((x - mean).square() * w).sum((0, 1), keepdim=True) / n  # biased, as F.batch_norm normalises
        return (x - mean) * torch.rsqrt(var + 1e-5)
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
def eval_mode(module: nn.Module):
    """Runs `module` without dropout / layer drop, then restores every submodule's own mode."""
    modes = [(m, m.training) for m in module.modules()]
    module.train(False)
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class Data2VecRegressionHead(nn.Module):
    """Maps `in_dim` features (default: the student's outputs) to target space: Linear(d, D) (vision, audio), or
    Linear(d, 2d)-GELU-Linear(2d, D) (data2vec text's `head_layers=2`; 2.0 text's decoder projection)."""

    def __init__(self, config: Data2VecConfig, in_dim: int | None = None):
        super().__init__()
        d, D = in_dim or config.hidden_size, config.hidden_size
        self.dense = nn.Linear(d, 2 * d) if config.head_layers == 2 else None
        self.act = nn.GELU() if config.head_layers == 2 else None
        self.proj = nn.Linear(2 * d if config.head_layers == 2 else d, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None:
            x = self.act(self.dense(x))
        return self.proj(x)


class Data2VecDecoderLayer(nn.Module):
    """conv (1-D over time or 2-D over the patch grid, "same" padding) -> LayerNorm over channels without affine ->
    GELU (fairseq data2vec 2.0's Decoder1d / Decoder2d blocks). Works on (B, C, T) or (B, C, h, w)."""

    def __init__(self, config: Data2VecConfig, in_dim: int):
        super().__init__()
        conv = nn.Conv2d if config.decoder_type == "conv_2d" else nn.Conv1d
        k = config.decoder_kernel
        self.conv = conv(in_dim, config.decoder_dim, k, padding=k // 2, groups=config.decoder_groups)
        self.trim = 1 - k % 2  # an even kernel with padding k // 2 yields one extra position (fairseq's SamePad)
        self.norm = nn.LayerNorm(config.decoder_dim, elementwise_affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.trim:
            x = x[..., : -self.trim] if x.dim() == 3 else x[..., : -self.trim, : -self.trim]
        return F.gelu(self.norm(x.movedim(1, -1)).movedim(-1, 1))


class Data2VecDecoder(nn.Module):
    """data2vec 2.0's decoder: the encoder's visible tokens back in their places, the masked ones as fresh
    N(0, mask_noise_std) noise, then `decoder_layers` conv layers (each adds its input where the shapes match, with
    `decoder_residual`) and a projection to the targets' width."""

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        self.config = config
        D, d = config.hidden_size, config.decoder_dim
        self.input_dropout = nn.Dropout(config.decoder_input_dropout)
        self.layers = nn.ModuleList([Data2VecDecoderLayer(config, D if i == 0 else d) for i in range(config.decoder_layers)])
        self.proj = Data2VecRegressionHead(config, in_dim=d)

    def forward(self, visible: torch.Tensor, keep: torch.Tensor, num_tokens: int,
                grid: tuple[int, int] | None = None) -> torch.Tensor:
        """`visible` (N, K, D) encoder outputs at the `keep` (N, K) positions -> predictions (N, T, D) at all T."""
        N, K, D = visible.shape
        x = self.input_dropout(visible)
        noise = torch.randn(N, num_tokens, D, device=x.device, dtype=x.dtype) * self.config.mask_noise_std
        x = noise.scatter(1, keep[..., None].expand(-1, -1, D), x)  # (N, T, D): visible in place, noise elsewhere
        x = x.transpose(1, 2)  # (N, D, T)
        if self.config.decoder_type == "conv_2d":
            x = x.reshape(N, D, *grid)  # (N, D, h, w)
        for layer in self.layers:
            y = layer(x)
            x = y + x if self.config.decoder_residual and y.shape == x.shape else y
        return self.proj(x.flatten(2).transpose(1, 2))  # (N, T, D)


class Data2VecCollapseError(RuntimeError):
    """The representations collapsed: targets or predictions barely vary across positions."""


@dataclass
class Data2VecForPreTrainingOutput(ModelOutput):
    """
    loss: regression loss over the masked positions, reduced as `config.loss_reduction` names, times the scale (2.0
        vision: + `cls_loss_weight` x the CLS loss).
    target_var / pred_var: mean over channels of the std of targets / predictions across masked positions;
        both falling towards 0 signals collapse (see `Data2VecForPreTraining.check_collapse`).
    num_masked: masked real positions in the batch (of every copy); masked_fraction: their share of the real positions.
    predictions: (B, P, D) at every position P (1.0), (B, clone_batch, P, D) (2.0); targets: (B, P, D), the teacher's,
        once per sample; mask: (B, P) / (B, clone_batch, P), True where the loss reads (masked and real).
    """

    loss: torch.FloatTensor | None = None
    target_var: torch.FloatTensor | None = None
    pred_var: torch.FloatTensor | None = None
    num_masked: torch.LongTensor | None = None
    masked_fraction: torch.FloatTensor | None = None
    predictions: torch.FloatTensor | None = None
    targets: torch.FloatTensor | None = None
    mask: torch.BoolTensor | None = None


@dataclass
class StudentOutput:
    predictions: torch.Tensor  # (B, P, D) or (B, C, P, D)
    mask: torch.Tensor  # (B, P) or (B, C, P), True = masked
    # the front end's output once per sample: 2.0 the unmasked input's tokens; 1.0 the student's view (the teacher
    # reads its padding mask and audio's conv features from it)
    tokens: FrontEndOutput
    cls: torch.Tensor | None = None  # 2.0 vision: the CLS outputs (B, C, D)


class Data2VecForPreTraining(Data2VecPreTrainedModel):
    """data2vec pretraining for any modality, data2vec 1.0 or 2.0 (`config.algorithm`): the student (`self.data2vec`,
    the modality's model), a regression head (1.0) or a conv decoder (2.0), and an EMA teacher that makes the targets
    from the unmasked input.

    1.0: the student encodes the masked input (masked tokens replaced), a head predicts every position.
    2.0: the front end runs once per sample; each sample is repeated `clone_batch` times with its own mask, the
    student encodes only the visible tokens of each copy, the decoder predicts the masked ones; the teacher runs
    once per sample and its targets serve every copy.

    The teacher is a copy of what `config.teacher_scope` names: the student's encoder ("encoder": the front end is
    then shared, the teacher sees the student's embedding of the unmasked input), the whole model ("model"), or all
    but the audio conv feature encoder ("model_except_feature_encoder": the teacher reuses the student's features).
    Each update averages it towards the student, except what `teacher_copied_modules` names (1.0 audio's positional
    conv, `teacher_copies_pos_conv`), which it copies, as fairseq's EMA does with its skip keys.
    It is *not* a submodule: not in `parameters()` (so never in an optimizer, never wrapped by DDP), not in
    `state_dict()` (so `save_pretrained` writes the student, which `AutoModel` loads). It is built from the student on
    first use, which is also what makes it survive `from_pretrained` (transformers builds the model on the meta device
    and initialises what the checkpoint lacks); it follows the student's device, keeps fp32 weights, and stays in
    eval mode. Training checkpoints save `model.teacher.state_dict()` (weights and update count) and load it back.

    Step: `out = model(**batch); out.loss.backward(); optimizer.step(); model.update_teacher()`.
    """

    main_input_name = "input_values"
    # what a transformers text checkpoint holds that pretraining does not use
    _keys_to_ignore_on_load_unexpected = [r"^data2vec\.pooler\."]

    def __init__(self, config: Data2VecConfig):
        super().__init__(config)
        self.data2vec = MODEL_CLASSES[config.modality](config, add_pooling_layer=False)
        self.main_input_name = self.data2vec.main_input_name
        if config.algorithm == "data2vec2":
            self.decoder = Data2VecDecoder(config)
            self.final_norm = self.regression_head = None
        else:
            # a pre-LN encoder ends un-normalised where the model has no final LayerNorm (vision with mean pooling):
            # the student's outputs get one before the head, as data2vec vision's encoder norm
            has_final_norm = isinstance(getattr(self.data2vec, "layernorm", None), nn.LayerNorm)
            open_end = config.layer_norm_position == "pre" and not has_final_norm
            self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if open_end else None
            self.regression_head = Data2VecRegressionHead(config)
            self.decoder = None
        self.num_prefix_tokens = self.data2vec.num_prefix_tokens  # CLS: no target there
        self.__dict__["_teacher"] = None  # not a submodule, on purpose (see the class docstring)
        self.post_init()

    # the teacher's methods that run it besides forward (teacher_scope "model"): hooked too where it is sharded
    teacher_entry_points = ("embed", "contextualize", "encode")

    # ---- the teacher --------------------------------------------------------------------------------------------

    def _ema_source(self) -> nn.Module:
        return self.data2vec.encoder if self.config.teacher_scope == "encoder" else self.data2vec

    def _ema_exclude(self) -> tuple[str, ...]:
        return (self.data2vec.feature_encoder,) if self.config.teacher_scope == "model_except_feature_encoder" else ()

    @property
    def teacher_copied_modules(self) -> tuple[str, ...]:
        """The teacher's submodules copied from the student at every update instead of averaged (fairseq's EMA
        skip_keys)."""
        c, pos_conv = self.config, self.data2vec.positional_conv
        return (pos_conv,) if c.teacher_copies_pos_conv and pos_conv and c.teacher_scope != "encoder" else ()

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
            teacher = EMATeacher(source, c.ema_decay, c.ema_end_decay, c.ema_anneal_end_step,
                                 exclude=self._ema_exclude(), copied=self.teacher_copied_modules)
            if self.__dict__.get("_teacher_file"):  # a checkpoint's own teacher (a converted fairseq `_ema`): its
                try:  # weights; the schedule is this config's, from update 0
                    teacher.load(self.__dict__["_teacher_file"])
                except (KeyError, RuntimeError, ValueError) as error:
                    raise ValueError(
                        f"{self.__dict__['_teacher_file']} is not this model's teacher ({type(error).__name__}: "
                        f"{str(error)[:300]}): remove it (the teacher then starts as a copy of the student) or put "
                        f"the model's own {TEACHER_WEIGHTS} beside it") from error
                teacher.num_updates = 0
            self.__dict__["_teacher"] = teacher
        elif next(teacher.parameters()).device != device:
            teacher.to(device)
        return teacher

    def teacher_source_parameters(self) -> dict[str, nn.Parameter]:
        """The student's parameters the teacher follows, by the teacher's parameter names (averaged, or copied where
        `teacher_copied_modules` says)."""
        return self.teacher.source_parameters(self._ema_source())

    def update_teacher(self, skip: torch.Tensor | None = None) -> float:
        """One EMA step of the teacher towards the student, at the decay scheduled for this update count (call it
        after every optimizer step). Returns the decay used. `skip` (a bool tensor) leaves the teacher unchanged
        where True, without a host sync: pass it for an optimizer step that was skipped on the device."""
        return self.teacher.update(self._ema_source(), skip=skip)

    def reset_teacher(self) -> None:
        """Make the teacher a fresh copy of the student (update count 0) at its next use."""
        self.__dict__["_teacher"] = self.__dict__["_teacher_file"] = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Also reads the checkpoint's EMA teacher where it has one (`teacher.safetensors`, written by the fairseq
        conversion from the checkpoint's `_ema`): the teacher is built from it on first use, after any config update
        (a continued run's EMA schedule), instead of from a copy of the student."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True
        teacher_file = _checkpoint_file(pretrained_model_name_or_path, TEACHER_WEIGHTS, kwargs)
        if teacher_file:  # read at first use; a damaged file is named now, not at the first forward
            _check_teacher_file(teacher_file)
        model.__dict__["_teacher_file"] = teacher_file
        return loaded

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

    # ---- forward: inputs -> student -> teacher -> loss ------------------------------------------------------------

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
        frames), as `DataCollatorForData2VecPretraining` makes them; data2vec 2.0 takes (B, clone_batch, tokens),
        one mask per copy. 1.0 text may add `masked_input_ids` (the student's view, e.g. BERT's 80/10/10), else every
        masked token becomes `<mask>`. Without a mask, masks are drawn from torch's global RNG.

        `check_inputs` refuses bad batches with a clear error (see `input_checks.check_batch`); it reads values back
        to the host, so by default it runs only for CPU inputs (on accelerators the collator has checked them).
        """
        if kwargs:
            raise TypeError(f"Data2VecForPreTraining.forward() got unexpected arguments: {sorted(kwargs)}")
        batch, mask = self.prepare_inputs(dict(
            input_ids=input_ids, pixel_values=pixel_values, input_values=input_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, bool_masked_pos=bool_masked_pos, mask_time_indices=mask_time_indices,
            masked_input_ids=masked_input_ids,
        ), check_inputs)
        student = self.forward_student(batch, mask)
        targets = self.forward_teacher(batch, student.tokens)  # (B, P, D) fp32, once per sample
        real = student.tokens.attention_mask  # (B, P) or None: every position is real
        copies = mask.numel() // (mask.shape[0] * mask.shape[-1])  # 1, or 2.0's clone_batch
        if real is not None:
            mask = mask & (real if mask.dim() == 2 else real[:, None])
        loss, num_masked = self.forward_loss(student.predictions, targets, mask, student.cls)
        with torch.no_grad():
            target_var = masked_std(targets, mask if mask.dim() == 2 else mask.any(1))
            pred_var = masked_std(student.predictions.detach().float().flatten(0, -3), mask.flatten(0, -2))
            num_real = real.sum() * copies if real is not None else mask.numel()
            masked_fraction = num_masked / num_real
        out = Data2VecForPreTrainingOutput(
            loss=loss, target_var=target_var, pred_var=pred_var, num_masked=num_masked,
            masked_fraction=masked_fraction, predictions=student.predictions, targets=targets, mask=mask,
        )
        return out if return_dict is None or return_dict else out.to_tuple()

    def prepare_inputs(self, batch: dict, check_inputs: bool | None) -> tuple[dict, torch.Tensor]:
        """The batch checked (see `forward`), its mask drawn when none was given: (batch, mask (B, P) / (B, C, P))."""
        c = self.config
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
        mask = batch[mask_key].bool()
        if c.algorithm == "data2vec":
            mask = mask.reshape(len(values), -1)  # (B, P); vision may pass (B, h, w)
        elif mask.dim() != 3 or mask.shape[:2] != (len(values), c.clone_batch):
            raise ValueError(
                f"data2vec 2.0 takes {mask_key} as (batch, clone_batch, tokens) = ({len(values)}, {c.clone_batch}, "
                f"tokens); got {tuple(mask.shape)} (DataCollatorForData2VecPretraining(config) draws them)"
            )
        return batch, mask

    def forward_student(self, batch: dict, mask: torch.Tensor) -> StudentOutput:
        """1.0: the masked input -> the student encoder -> the head, at every position. 2.0: the front end once per
        sample -> `clone_batch` copies with their own masks, visible tokens only -> the student encoder -> the
        decoder, at every position of every copy."""
        if self.config.algorithm == "data2vec2":
            return self._student_data2vec2(batch, mask)
        m = self.data2vec
        tokens = m.embed(batch, mask)
        hidden = m.encode(m.contextualize(tokens, mask)).last_hidden_state
        if self.final_norm is not None:
            hidden = self.final_norm(hidden)
        predictions = self.regression_head(hidden[:, self.num_prefix_tokens :])  # (B, P, D)
        return StudentOutput(predictions, mask, tokens)  # the teacher reads its padding mask and audio features

    def _student_data2vec2(self, batch: dict, mask: torch.Tensor) -> StudentOutput:
        m, (B, C, P) = self.data2vec, mask.shape
        tokens = m.embed(batch)  # (B, P, D), once per sample
        copies = FrontEndOutput(
            tokens.hidden_states.repeat_interleave(C, 0),  # (B * C, P, D), copies of a sample side by side
            None if tokens.attention_mask is None else tokens.attention_mask.repeat_interleave(C, 0), tokens.grid,
        )
        flat = mask.reshape(B * C, P)
        keep = visible_positions(flat, num_visible(self.config, P))  # (B * C, K), ascending
        hidden = m.encode(m.contextualize(copies, flat, keep)).last_hidden_state  # (B * C, prefix + K, D)
        p = self.num_prefix_tokens
        predictions = self.decoder(hidden[:, p:], keep, P, tokens.grid).view(B, C, P, -1)
        cls = hidden[:, p - 1].view(B, C, -1) if p else None
        return StudentOutput(predictions, mask, tokens, cls)

    @torch.no_grad()
    def forward_teacher(self, batch: dict, tokens: FrontEndOutput) -> torch.Tensor:
        """The unmasked input -> the EMA teacher -> targets (B, P, D) in fp32 (`data2vec_targets` of
        `teacher_layers`)."""
        return data2vec_targets(self.teacher_layers(batch, tokens), self.config, tokens.attention_mask)

    @torch.no_grad()
    def teacher_layers(self, batch: dict, tokens: FrontEndOutput | None = None) -> list[torch.Tensor]:
        """The teacher's top `average_top_k_layers` outputs (B, P, D) for the unmasked input, before normalisation,
        without prefix (CLS) tokens: the teacher's own front end ("model"), the student's conv features through the
        teacher's positional encoder ("model_except_feature_encoder"), or the student's front end (no dropout)
        through the teacher's encoder ("encoder"). `tokens`: the student's front-end output for `batch` (computed
        here when not given)."""
        c, m = self.config, self.data2vec
        if tokens is None:
            with eval_mode(m.embeddings):
                tokens = m.embed(batch)
        teacher = self.teacher
        dtype = next(teacher.parameters()).dtype
        ffn = c.target_layer_output == "ffn"
        outputs = dict(output_hidden_states=not ffn, output_ffn_outputs=ffn)
        if c.teacher_scope == "model":
            out = teacher.model.encode(teacher.model.contextualize(teacher.model.embed(batch)), **outputs)
        elif c.teacher_scope == "model_except_feature_encoder":
            own = FrontEndOutput(tokens.hidden_states.detach().to(dtype), tokens.attention_mask)
            out = teacher.model.encode(teacher.model.contextualize(own), **outputs)
        else:
            with eval_mode(m.embeddings):
                front = m.contextualize(m.embed(batch, features=tokens.extract_features))
            front.hidden_states = front.hidden_states.to(dtype)
            out = teacher(front.hidden_states, front.attention_mask, front.grid, **outputs)
        layers = out.ffn_outputs if ffn else out.hidden_states[1:]
        return [layer[:, self.num_prefix_tokens :] for layer in layers[-c.average_top_k_layers :]]

    def forward_loss(self, predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                     cls: torch.Tensor | None = None):
        """Smooth L1 (beta > 0) or L2 (beta 0) in fp32 over the masked positions, reduced as `loss_reduction` names:
        "channel_sum" sums over channels and averages over positions (fairseq data2vec), "mean" averages over both
        (data2vec_vision); times `target_loss_scale`. 2.0: predictions (B, C, P, D) against the targets of their
        sample (B, P, D); vision adds `cls_loss_weight` x the CLS outputs' loss against the mean target, summed over
        the B * C copies as fairseq does or averaged (`cls_loss_reduction`). Returns (loss, number of masked
        positions)."""
        c = self.config
        if predictions.dim() == 4:
            targets = targets[:, None]  # (B, 1, P, D): one teacher pass serves every copy
        predictions = predictions.float()
        per_position = self._regression(predictions, targets)  # (B, [C,] P)
        num_masked = mask.sum()
        loss = torch.where(mask, per_position, 0).sum() * c.target_loss_scale / num_masked.clamp(min=1)
        if cls is not None and c.cls_loss_weight > 0:
            cls_target = targets.mean(-2)  # (B, 1, D): the mean over patches of the (normalised) targets
            per_copy = self._regression(cls.float(), cls_target)  # (B, C)
            cls_loss = per_copy.sum() if c.cls_loss_reduction == "sum" else per_copy.mean()
            loss = loss + c.cls_loss_weight * cls_loss * c.target_loss_scale
        return loss, num_masked

    def _regression(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-position loss (..., D) -> (...), over channels as `loss_reduction` names."""
        c = self.config
        if c.loss_beta == 0:
            elementwise = F.mse_loss(predictions, targets.expand_as(predictions), reduction="none")
        else:
            elementwise = F.smooth_l1_loss(predictions, targets.expand_as(predictions), reduction="none",
                                           beta=c.loss_beta)
        return elementwise.sum(-1) if c.loss_reduction == "channel_sum" else elementwise.mean(-1)


def visible_positions(mask: torch.Tensor, count: int) -> torch.Tensor:
    """The positions of the `count` visible tokens of each row of an (N, P) mask (True = masked), ascending: (N, K).
    A stable sort puts the visible positions first in their order; `count` comes from the config (`num_visible`), so
    nothing is read back from the device."""
    return torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices[:, :count]


__all__ = [
    "Data2VecCollapseError",
    "Data2VecForPreTraining",
    "Data2VecForPreTrainingOutput",
    "data2vec_targets",
    "masked_std",
    "normalize_targets",
]
