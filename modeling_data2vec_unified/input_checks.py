"""Checks of what the models and the collator are given, each refusing bad input with an error that names the fix:
token ids outside the vocabulary, channels-last images, an attention_mask that is not 1 / 0 (e.g. additive), examples
that are all padding, integer audio or pixels, NaN / inf values, masks of the wrong shape or count.

The models (`modeling_data2vec.py`, `modeling_data2vec_pretraining.py`) and the collator (`masking.py`) import this
module alike. It imports only the config, `mask_types` (data2vec 2.0's visible count) and `modalities`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .configuration_data2vec import Data2VecConfig
from .mask_types import num_visible
from .modalities import MODALITY_INFO

# each modality's input, and the name of its mask (True = masked, hidden from the student): `modalities`
MODALITY_INPUT = {name: info.input_name for name, info in MODALITY_INFO.items()}
MASK_INPUT = {name: info.mask_input for name, info in MODALITY_INFO.items()}

# Value checks read tensors back to the host: they run on CPU tensors only (the collator, CPU inputs, host copies
# made anyway), never inside an accelerator step. Shape checks cost nothing and run everywhere.


def host_checks_are_free(tensor: torch.Tensor) -> bool:
    """Whether reading `tensor`'s values back costs no device sync: a CPU tensor, outside torch.compile / tracing."""
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling() and not torch.jit.is_tracing()


def check_token_ids(ids: torch.Tensor, name: str, size: int, pad_token_id: int | None = None) -> None:
    """Refuses ids outside [0, size): `input_ids` against vocab_size, `token_type_ids` against type_vocab_size.
    The embedding lookup would fail with a bare IndexError (a device-side assert on GPU)."""
    if ids.numel() == 0 or ids.is_floating_point():
        return
    low, high = int(ids.min()), int(ids.max())
    if low >= 0 and high < size:
        return
    bad = high if high >= size else low
    where = (ids == bad).nonzero()[0].tolist()
    at = f"example {where[0]}, position {where[1]}" if len(where) == 2 else f"index {where}"
    types = name == "token_type_ids"
    if bad < 0:
        pad = "0" if types else f"pad_token_id ({pad_token_id})"
        fix = f"a negative id is no token (-100 marks ignored labels, not inputs): pad {name} with {pad} instead"
    elif types:
        fix = (f"this model has {size} token type(s): drop token_type_ids "
               f"(tokenizer(..., return_token_type_ids=False)) or use a config with type_vocab_size > {bad}")
    else:
        fix = ("the tokenizer does not match the model: tokenize with the model's own tokenizer, or use a config "
               "whose vocab_size covers the tokenizer's ids (vocab_size >= len(tokenizer))")
    field = "type_vocab_size" if types else "vocab_size"
    raise ValueError(f"{name} holds {bad} at {at}, outside 0..{size - 1} (config.{field} = {size}): {fix}")


_ADDITIVE = (
    " If this is an additive mask (0 = attend, a large negative value = padding), convert it: (mask == 0).long()"
)


def check_attention_values(attention_mask: torch.Tensor) -> None:
    """Refuses an attention_mask holding anything but 1 (real) and 0 (padding): an additive float mask (0 for
    tokens, -1e4 or -inf for padding) would otherwise be read inverted."""
    if attention_mask.dtype == torch.bool:
        return
    odd = (attention_mask != 0) & (attention_mask != 1)
    if odd.any():
        value = attention_mask[odd].min().item()
        raise ValueError(
            f"attention_mask holds {value:g}; it must be 1 for real tokens and 0 for padding."
            + (_ADDITIVE if value < 0 else " Pass a 0 / 1 mask, e.g. (mask > 0).long()")
        )


def check_attention_mask(attention_mask: torch.Tensor, shape: Sequence[int], receptive_field: int = 1) -> None:
    """Refuses an `attention_mask` that is not (batch, length) = `shape` of 1 (real) / 0 (padding): an additive
    float mask (0 for tokens, -1e4 or -inf for padding) would be read inverted; refuses a batch with no real
    position and examples that are all padding, naming them (audio: also those with fewer real samples than the
    conv encoder's `receptive_field`, which yield no frame)."""
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(
            f"attention_mask must be (batch, length) = {tuple(shape)}, like the input; "
            f"got {tuple(attention_mask.shape)}"
        )
    check_attention_values(attention_mask)
    hint = "." + _ADDITIVE if attention_mask.is_floating_point() else ""
    real = attention_mask.bool().sum(1)  # (B,)
    if not real.any():
        raise ValueError(f"the batch has no real tokens: every attention_mask entry is 0 (all padding){hint}")
    empty = (real == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"example(s) {empty[:5]} of the batch are all padding (attention_mask all 0): nothing to encode or "
            f"predict there. Drop empty examples before batching (e.g. dataset.filter on their length){hint}"
        )
    short = (real < receptive_field).nonzero().flatten().tolist()
    if short:
        raise ValueError(
            f"example(s) {short[:5]} of the batch have fewer real samples (attention_mask 1) than the conv feature "
            f"encoder's receptive field ({receptive_field}), so no frame: drop such short examples before batching"
        )


def check_pixel_layout(pixel_values: torch.Tensor, num_channels: int) -> None:
    """Refuses channels-last images, (batch, height, width, channels) or one (height, width, channels): the last
    axis holds `num_channels` where the channel axis does not. A shape check: free anywhere."""
    shape = tuple(pixel_values.shape)
    if len(shape) not in (3, 4) or shape[-3] == num_channels or shape[-1] != num_channels:
        return
    batched = len(shape) == 4
    got = "(batch, height, width, channels)" if batched else "(height, width, channels)"
    want = "(batch, channels, height, width)" if batched else "(channels, height, width)"
    permute = "permute(0, 3, 1, 2)" if batched else "permute(2, 0, 1)"
    raise ValueError(
        f"pixel_values of shape {shape} look channels-last, {got}; this model takes channels first, {want} "
        f"(config.num_channels = {num_channels}): pass pixel_values.{permute} (or use an image processor that "
        f"returns channels first)"
    )


def _all_finite(values: torch.Tensor) -> bool:
    """No NaN / inf in `values`: a NaN or inf makes the sum NaN or inf, so a finite sum settles it in one pass without a
    (N,) bool tensor (a 224 px batch of 128: 2 ms against 80 ms on a CPU core); a sum that overflowed is checked
    exactly."""
    return bool(torch.isfinite(torch.sum(values, dtype=torch.float32))) or bool(torch.isfinite(values).all())


def check_batch(config: Data2VecConfig, batch: Mapping[str, torch.Tensor | None]) -> None:
    """Refuses a batch data2vec cannot learn from, naming the fix: another modality's input, token ids outside the
    vocabulary, channels-last images, an attention_mask that is not 1 / 0 (e.g. additive), no real token, an example
    that is all padding, NaN / inf values, a mask of the wrong shape, one that selects nothing, or one that hides
    a whole example.

    Reads values back to the host: the collator calls it on CPU tensors, the model on CPU inputs (or when
    asked), never inside an accelerator step by default."""
    key = MODALITY_INPUT[config.modality]
    values = batch.get(key)
    if values is None:
        found = [m for m, k in MODALITY_INPUT.items() if batch.get(k) is not None]
        hint = f"got {found[0]} input ({MODALITY_INPUT[found[0]]})" if found else "got none"
        raise ValueError(
            f"a {config.modality} model needs {key}; {hint}. Use data of the model's modality, or a config whose "
            f"modality matches the data."
        )
    if values.numel() == 0:
        raise ValueError(f"{key} is empty (shape {tuple(values.shape)}): the batch has no examples")
    VALUE_CHECKS[config.modality](config, batch, values)
    attention = batch.get("attention_mask")
    if attention is not None:
        check_attention_mask(attention, values.shape, attention_unit(config))
    if values.is_floating_point() and not _all_finite(values):
        raise ValueError(f"{key} holds NaN or inf values: clean or drop those examples")
    mask = batch.get(MASK_INPUT[config.modality])
    if mask is None:
        return
    mask = mask.bool()
    if config.algorithm == "data2vec2":
        _check_data2vec2_mask(config, values, attention, mask)
        return
    T = NUM_POSITIONS[config.modality](config, values)
    info = MODALITY_INFO[config.modality]
    if mask.reshape(len(mask), -1).shape != (len(values), T) or (mask.dim() != 2 and info.position != "patch"):
        raise ValueError(f"{info.mask_input} must be (batch, {info.position}s) = {(len(values), T)} for these "
                         f"inputs; got {tuple(mask.shape)}")
    mask = mask.reshape(len(mask), -1)
    real = _real_positions(config, values, attention, T).to(mask.device)
    selected = (mask & real).sum(1)
    if not selected.any():
        raise ValueError(
            f"the mask selects no position among the real {config.modality} positions, so there is nothing to "
            f"predict: use longer examples, a larger mask_prob, or a mask with True where the student is blind"
        )
    full = (selected == real.sum(1)).nonzero().flatten().tolist()
    if full:
        raise ValueError(
            f"the mask hides every real position of example(s) {full[:5]}: the student must see part of its input. "
            f"Lower mask_prob or mask_length, or leave at least one position unmasked."
        )


def _check_text_values(config: Data2VecConfig, batch, values: torch.Tensor) -> None:
    for name in ("input_ids", "masked_input_ids"):
        if batch.get(name) is not None:
            check_token_ids(batch[name], name, config.vocab_size, config.pad_token_id)
    if batch.get("token_type_ids") is not None:
        check_token_ids(batch["token_type_ids"], "token_type_ids", config.num_token_types)


def _check_image_values(config: Data2VecConfig, batch, values: torch.Tensor) -> None:
    if values.dim() != 4:
        raise ValueError(f"pixel_values must be (batch, channels, height, width); got shape {tuple(values.shape)}")
    check_pixel_layout(values, config.num_channels)


# what each modality's input is checked for beyond the common checks
VALUE_CHECKS = {"text": _check_text_values, "vision": _check_image_values, "audio": lambda config, batch, values: None}
# how many encoder positions an input gives: tokens, patches (without the CLS token), conv frames
NUM_POSITIONS = {
    "text": lambda config, values: values.shape[1],
    "vision": lambda config, values: (values.shape[-2] // config.patch_size) * (values.shape[-1] // config.patch_size),
    "audio": lambda config, values: config.num_audio_frames(values.shape[1]),
}


def _per_sample(config: Data2VecConfig) -> bool:
    """Whether the attention mask covers input samples that the front end turns into fewer positions (audio's
    waveform -> conv frames), rather than the positions themselves (text tokens)."""
    return MODALITY_INFO[config.modality].position == "frame"


def attention_unit(config: Data2VecConfig) -> int:
    """Input samples per position that an attention mask must keep whole: audio's receptive field, else 1."""
    return config.receptive_field if _per_sample(config) else 1


def _real_positions(config: Data2VecConfig, values: torch.Tensor, attention, T: int) -> torch.Tensor:
    """(B, T) bool on the CPU: which of the T positions hold input, not padding (images: all)."""
    if attention is None:
        if _per_sample(config):
            attention = torch.ones(values.shape[:2], dtype=torch.long)
        else:
            return torch.ones(len(values), T, dtype=torch.bool)
    if _per_sample(config):
        return torch.arange(T)[None, :] < config.num_audio_frames(attention.long().sum(1).cpu())[:, None]
    return attention.bool().cpu()


def _check_data2vec2_mask(config: Data2VecConfig, values: torch.Tensor, attention, mask: torch.Tensor) -> None:
    name = MASK_INPUT[config.modality]
    T = NUM_POSITIONS[config.modality](config, values)
    want = (values.shape[0], config.clone_batch, T)
    if tuple(mask.shape) != want:
        raise ValueError(
            f"data2vec 2.0 takes {name} as (batch, clone_batch, tokens) = {want}, one mask per copy of each example; "
            f"got {tuple(mask.shape)} (DataCollatorForData2VecPretraining(config) draws them)"
        )
    keep = num_visible(config, T)
    counts = (~mask).sum(-1)
    if (counts != keep).any():
        raise ValueError(
            f"every data2vec 2.0 mask must leave exactly {keep} of {T} tokens visible (the student encodes the same "
            f"number per copy; config mask_type={config.mask_type!r}, mask_prob={config.mask_prob}); got visible "
            f"counts {sorted(set(counts.flatten().tolist()))[:5]}"
        )
    if attention is not None:
        seen = (_real_positions(config, values, attention, T)[:, None].to(mask.device) & ~mask).any(-1)  # (B, copies)
        if not seen.all():
            rows = sorted({int(i) for i in (~seen).nonzero()[:, 0]})
            raise ValueError(
                f"a data2vec 2.0 mask hides every real token of example(s) {rows[:5]}: the student sees only padding "
                f"there; use the collator's masks, which keep a real token visible"
            )


def check_example_values(modality: str, values):
    """One example's input, refused when it cannot be what the model takes: text that is not token ids (a string,
    fractional ids), audio as integer PCM, images as integer pixels (each named with its fix)."""
    tokens = MODALITY_INFO[modality].processor == "tokenizer"
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{MODALITY_INPUT[modality]} is a string ({values[:40]!r}): the collator takes "
                         + ("token ids: tokenize the text first (the run's tokenizer: data.processor)" if tokens
                            else "decoded arrays: decode the file first (load_pretraining_data does)"))
    if torch.is_tensor(values):
        kind = "f" if values.is_floating_point() else ("b" if values.dtype == torch.bool else "i")
        array = values
    else:
        array = np.asarray(values)
        kind = array.dtype.kind
    if kind in "USO":
        raise ValueError(f"{MODALITY_INPUT[modality]} holds {array.dtype} values, not numbers: "
                         + ("tokenize the text first" if tokens else "decode the inputs first"))
    EXAMPLE_CHECKS[modality](array, kind)
    return values


def _whole_token_ids(array, kind: str) -> None:
    if kind == "f":
        as_float = torch.as_tensor(array, dtype=torch.float64)
        if not bool((as_float == as_float.round()).all()):
            bad = as_float[as_float != as_float.round()][0].item()
            raise ValueError(f"input_ids must be whole token ids; got {bad:g}: token ids are integers (a tokenizer's "
                             "output), not features")


def _float_waveform(array, kind: str) -> None:
    if kind in "iu":
        raise ValueError(f"input_values are integers ({array.dtype}: PCM samples?); the model takes float waveforms: "
                         "divide int16 PCM by 32768 (to [-1, 1]) and normalise as the feature extractor does "
                         "(Wav2Vec2FeatureExtractor, do_normalize=True)")


def _float_pixels(array, kind: str) -> None:
    if kind in "iu":
        raise ValueError(f"pixel_values are integers ({array.dtype}: 0-255 pixels?); the model takes normalised "
                         "floats: pass the images through the image processor (rescale to [0, 1], then normalise), "
                         "as load_pretraining_data does")


# what one example's values must be, beyond numbers: whole token ids, float waveforms, float pixels
EXAMPLE_CHECKS = {"text": _whole_token_ids, "audio": _float_waveform, "vision": _float_pixels}


__all__ = [
    "MASK_INPUT",
    "MODALITY_INPUT",
    "attention_unit",
    "check_attention_mask",
    "check_attention_values",
    "check_batch",
    "check_example_values",
    "check_pixel_layout",
    "check_token_ids",
    "host_checks_are_free",
]
