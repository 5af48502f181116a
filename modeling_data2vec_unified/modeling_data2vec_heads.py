"""Fine-tuning heads on the data2vec encoders, with transformers' task names, outputs and losses.

    text:   Data2VecForSequenceClassification, Data2VecForTokenClassification, Data2VecForQuestionAnswering
    vision: Data2VecForImageClassification (mean pooling + LayerNorm, as data2vec vision fine-tunes)
    audio:  Data2VecForCTC, Data2VecForAudioClassification

Each holds its modality's model under `data2vec.` (so our pretraining checkpoints and saved models load into it)
and names its head modules as transformers' Data2Vec* task classes do, so their fine-tuned checkpoints
(`facebook/data2vec-audio-base-960h`, `facebook/data2vec-vision-base-ft1k`, ...) load weight for weight.

Label checks read values back to the host; like the pretraining model's input checks they run by default only for
CPU tensors (`check_inputs=True` forces them on an accelerator).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import (
    CausalLMOutput,
    ImageClassifierOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from .configuration_data2vec import Data2VecConfig
from .modeling_data2vec import (
    Data2VecAudioModel,
    Data2VecPreTrainedModel,
    Data2VecTextModel,
    Data2VecVisionModel,
    modality_dispatch,
)


def _checking(check_inputs: bool | None, tensor: torch.Tensor) -> bool:
    return check_inputs if check_inputs is not None else tensor.device.type == "cpu"


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: Data2VecConfig,
                                 check: bool) -> torch.Tensor:
    """transformers' rule: regression for 1 label, single-label for integer labels, else multi-label (BCE). Sets
    `config.problem_type` on first use, as transformers does."""
    num_labels = config.num_labels
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    labels = labels.to(logits.device)
    if config.problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float().view_as(logits.squeeze(-1)))
    if config.problem_type == "single_label_classification":
        if check:
            check_class_labels(labels, num_labels)
        return F.cross_entropy(logits.view(-1, num_labels).float(), labels.view(-1))
    if labels.shape != logits.shape:
        raise ValueError(
            f"multi-label classification takes labels of shape (batch, num_labels) = {tuple(logits.shape)} with 0/1 "
            f"entries; got {tuple(labels.shape)}. For one class per example pass integer (long) labels."
        )
    return F.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.dtype).float())


def check_class_labels(labels: torch.Tensor, num_labels: int, ignore_index: int | None = None) -> None:
    """Class ids must lie in [0, num_labels) (or equal `ignore_index`)."""
    real = labels if ignore_index is None else labels[labels != ignore_index]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= num_labels):
        bad = int(real.max()) if int(real.max()) >= num_labels else int(real.min())
        ignore = f" ({ignore_index} is ignored)" if ignore_index is not None else ""
        raise ValueError(
            f"label {bad} is out of range for a head with num_labels={num_labels}: labels must be in "
            f"[0, {num_labels}){ignore}. Load the model with num_labels=<your number of classes> (and "
            f"ignore_mismatched_sizes=True to replace a fine-tuned head of another size), or map your labels to "
            f"0..{num_labels - 1}."
        )


class Data2VecHeadModel(Data2VecPreTrainedModel):
    """A task head over the modality's model (`self.data2vec`)."""

    base_model_class: ClassVar[type[Data2VecPreTrainedModel]]
    # our pretraining checkpoints carry the regression head; text heads run without the pooler
    _keys_to_ignore_on_load_unexpected = [r"regression_head\.", r"final_norm\.", r"pooler\.dense\.", r"^decoder\."]

    def _base(self, config: Data2VecConfig, **kwargs) -> None:
        self.data2vec = self.base_model_class(config, **kwargs)

    def load_transformers_head(self, head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A transformers task checkpoint's head weights, by our names (ours are named as theirs)."""
        return dict(head)

    def freeze_base_model(self) -> None:
        """Train the head only."""
        self.data2vec.requires_grad_(False)


# ---- text -------------------------------------------------------------------------------------------------------


class Data2VecTextClassificationHead(nn.Module):
    """RoBERTa's sentence head: Linear-tanh-Linear on the <s> token, with dropout before each Linear."""

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden_states[:, 0])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


class Data2VecTextHeadModel(Data2VecHeadModel):
    modality = "text"
    main_input_name = "input_ids"
    input_modalities = ("text",)
    base_model_class = Data2VecTextModel

    def _encode_text(self, input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states):
        return self.data2vec(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             position_ids=position_ids, output_hidden_states=output_hidden_states)


class Data2VecForSequenceClassification(Data2VecTextHeadModel):
    """Text classification / regression (transformers' Data2VecTextForSequenceClassification): regression for
    `num_labels == 1`, single-label for integer labels, multi-label (BCE) for float label vectors, or as
    `config.problem_type` says."""

    def __init__(self, config: Data2VecConfig):
        super().__init__(config)
        self._base(config, add_pooling_layer=False)
        self.classifier = Data2VecTextClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        check_inputs: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        out = self._encode_text(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        logits = self.classifier(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(logits, labels, self.config, _checking(check_inputs, labels))
        return _output(SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states),
                       return_dict)


class Data2VecForTokenClassification(Data2VecTextHeadModel):
    """A label per token (transformers' Data2VecTextForTokenClassification); labels of -100 are ignored."""

    def __init__(self, config: Data2VecConfig):
        super().__init__(config)
        self._base(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        check_inputs: bool | None = None,
    ) -> TokenClassifierOutput | tuple:
        out = self._encode_text(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(
                    f"token classification takes one label per token, (batch, sequence_length) = "
                    f"{tuple(logits.shape[:2])}; got {tuple(labels.shape)} (pad with -100)"
                )
            if _checking(check_inputs, labels):
                check_class_labels(labels, self.config.num_labels, ignore_index=-100)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten().to(logits.device),
                                   ignore_index=-100)
        return _output(TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states), return_dict)


class Data2VecForQuestionAnswering(Data2VecTextHeadModel):
    """Extractive question answering (transformers' Data2VecTextForQuestionAnswering): start and end logits per
    token; positions outside the sequence are ignored in the loss, as transformers does."""

    def __init__(self, config: Data2VecConfig):
        super().__init__(config)
        self._base(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> QuestionAnsweringModelOutput | tuple:
        out = self._encode_text(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        start_logits, end_logits = self.qa_outputs(out.last_hidden_state).unbind(-1)
        loss = None
        if (start_positions is None) != (end_positions is None):
            raise ValueError("pass both start_positions and end_positions (or neither)")
        if start_positions is not None:
            length = start_logits.shape[1]  # the ignored index: answers cut off by truncation
            start = start_positions.view(-1).to(start_logits.device).clamp(0, length)
            end = end_positions.view(-1).to(end_logits.device).clamp(0, length)
            loss = (F.cross_entropy(start_logits.float(), start, ignore_index=length)
                    + F.cross_entropy(end_logits.float(), end, ignore_index=length)) / 2
        return _output(QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                                    hidden_states=out.hidden_states), return_dict)


# ---- vision ------------------------------------------------------------------------------------------------------


class Data2VecForImageClassification(Data2VecHeadModel):
    """Image classification as data2vec vision fine-tunes (transformers' Data2VecVisionForImageClassification):
    LayerNorm of the mean of the patch outputs (or the CLS token with `use_mean_pooling=False`), then a Linear."""

    modality = "vision"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    base_model_class = Data2VecVisionModel

    def __init__(self, config: Data2VecConfig):
        super().__init__(config)
        self._base(config, add_pooling_layer=True)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        check_inputs: bool | None = None,
    ) -> ImageClassifierOutput | tuple:
        out = self.data2vec(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(out.pooler_output)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(logits, labels, self.config, _checking(check_inputs, labels))
        return _output(ImageClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states), return_dict)


# ---- audio -------------------------------------------------------------------------------------------------------


class Data2VecAudioHeadModel(Data2VecHeadModel):
    modality = "audio"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    base_model_class = Data2VecAudioModel

    def freeze_feature_encoder(self) -> None:
        """Stop training the conv feature encoder, as data2vec audio fine-tuning does."""
        self.data2vec.freeze_feature_encoder()

    def frame_lengths(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Output frames per example, from the sample-level attention mask (all samples when there is none)."""
        samples = (attention_mask.long().sum(-1) if attention_mask is not None
                   else torch.full(input_values.shape[:1], input_values.shape[1], device=input_values.device))
        return self.config.num_audio_frames(samples)


class Data2VecForCTC(Data2VecAudioHeadModel):
    """Speech recognition with CTC (transformers' Data2VecAudioForCTC): a Linear over the vocabulary per frame; the
    blank is `config.pad_token_id` (a `Wav2Vec2CTCTokenizer`'s <pad>); labels of -100 are padding."""

    def __init__(self, config: Data2VecConfig):
        super().__init__(config)
        if config.vocab_size is None:
            raise ValueError(
                "Data2VecForCTC needs config.vocab_size, the size of the CTC vocabulary: load it with "
                "from_pretrained(..., vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)"
            )
        self._base(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        check_inputs: bool | None = None,
    ) -> CausalLMOutput | tuple:
        out = self.data2vec(input_values, attention_mask=attention_mask, output_hidden_states=output_hidden_states)
        logits = self.lm_head(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            frames = self.frame_lengths(input_values, attention_mask)
            loss = self.ctc_loss(logits, labels, frames, _checking(check_inputs, labels))
        return _output(CausalLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states), return_dict)

    def ctc_loss(self, logits: torch.Tensor, labels: torch.Tensor, frames: torch.Tensor, check: bool) -> torch.Tensor:
        """CTC over (B, T, V) logits in fp32; `labels` (B, L) padded with -100 (or any negative id)."""
        config = self.config
        blank = config.pad_token_id if config.pad_token_id is not None else 0
        real = labels >= 0
        target_lengths = real.sum(-1)
        if check:
            check_class_labels(labels[real], config.vocab_size)
            # CTC needs a frame per label, plus a blank between repeated labels
            repeats = (real[:, 1:] & (labels[:, 1:] == labels[:, :-1])).sum(-1)
            need = target_lengths + repeats
            too_long = (need > frames.to(need.device)).nonzero().flatten().tolist()
            if too_long and not config.ctc_zero_infinity:
                i = too_long[0]
                raise ValueError(
                    f"example {i}: its transcript needs {int(need[i])} CTC frames ({int(target_lengths[i])} labels + "
                    f"{int(repeats[i])} repeats) but its audio gives only {int(frames[i])} frames (one per "
                    f"{config.inputs_to_logits_ratio} samples): drop or shorten such examples, check that labels are "
                    f"characters of this clip, or set config.ctc_zero_infinity=True to zero their loss"
                )
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN's CTC needs int32 lengths on the CPU
            return F.ctc_loss(log_probs, labels[real], frames, target_lengths, blank=blank,
                              reduction=config.ctc_loss_reduction, zero_infinity=config.ctc_zero_infinity)


class Data2VecForAudioClassification(Data2VecAudioHeadModel):
    """Utterance classification (transformers' Data2VecAudioForSequenceClassification): project every frame (the
    last layer, or a learned softmax-weighted sum of all layers with `use_weighted_layer_sum`), average over the
    real frames, then a Linear."""

    def __init__(self, config: Data2VecConfig):
        super().__init__(config)
        self._base(config)
        if config.use_weighted_layer_sum:
            layers = config.num_hidden_layers + 1  # the embeddings and every layer
            self.layer_weights = nn.Parameter(torch.full((layers,), 1.0 / layers))
        self.projector = nn.Linear(config.hidden_size, config.classifier_proj_size)
        self.classifier = nn.Linear(config.classifier_proj_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        check_inputs: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        weighted = self.config.use_weighted_layer_sum
        out = self.data2vec(input_values, attention_mask=attention_mask,
                            output_hidden_states=True if weighted else output_hidden_states)
        if weighted:
            weights = self.layer_weights.softmax(-1)
            hidden = torch.einsum("l,lbtd->btd", weights, torch.stack(out.hidden_states))
        else:
            hidden = out.last_hidden_state
        hidden = self.projector(hidden)
        if attention_mask is None:
            pooled = hidden.mean(1)
        else:
            real = self.data2vec.embeddings.frame_attention_mask(attention_mask, hidden.shape[1])[..., None]
            pooled = (hidden * real).sum(1) / real.sum(1).clamp(min=1)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(logits, labels, self.config, _checking(check_inputs, labels))
        hidden_states = out.hidden_states if output_hidden_states else None
        return _output(SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states), return_dict)


def _output(out, return_dict: bool | None):
    return out if return_dict is None or return_dict else out.to_tuple()


HEAD_CLASSES: dict[str, type[Data2VecHeadModel]] = {
    cls.__name__: cls
    for cls in (Data2VecForSequenceClassification, Data2VecForTokenClassification, Data2VecForQuestionAnswering,
                Data2VecForImageClassification, Data2VecForCTC, Data2VecForAudioClassification)
}
# transformers' AutoModelForSequenceClassification serves text and audio checkpoints alike (as for wav2vec2)
Data2VecModelForSequenceClassification = modality_dispatch(
    "Data2VecModelForSequenceClassification",
    {"text": Data2VecForSequenceClassification, "audio": Data2VecForAudioClassification},
)
