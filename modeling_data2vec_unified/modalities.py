"""What differs by modality, in one place: one `Modality` description per modality, read wherever the package used
to branch on the modality's name.

A description is plain data (this module imports nothing, so every module may read it, the config included): the
model's input and mask arguments, what a position is, whether inputs are padded and whether the encoder adds a CLS
token, the front end, the processor that prepares raw data, the probe's pooling and raw-input reference, and what to
try when a run collapses. Behaviour that differs lives with its concern, in one table keyed by modality there:

| what | table |
|---|---|
| front end | `modeling_data2vec.FRONT_ENDS` |
| mask strategies | `masking.MASKS` (keyed by algorithm, modality, `mask_type`; the names: `mask_types.MASK_TYPES`) |
| input checks | `input_checks.VALUE_CHECKS`, `NUM_POSITIONS`, `EXAMPLE_CHECKS` |
| data preparation (decode, resample, tokenize, check) | `data.preparation.PREPARATIONS` |
| built-in data | `data.builtin.BUILTIN_SETS` |
| recipes (sizes, tiny recipes, optimiser, schedule) | `configuration_data2vec.MODALITY_DEFAULTS`, `training.recipes` |

A new modality: its description here, then one entry in each of those tables (docs/architecture.md, "Where to change
what").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Modality:
    """One modality's facts (see the module's docstring)."""

    name: str
    input_name: str  # the model's input argument: input_ids | pixel_values | input_values
    mask_input: str  # the pretraining mask argument (True = masked): bool_masked_pos | mask_time_indices
    position: str  # what one encoder position is: token | patch | frame (audio: an attention mask covers samples)
    processor: str  # what prepares raw data: tokenizer | image_processor | feature_extractor (`data` preparation)
    pooling: str  # the probe's pooling of positions (`probe.pool`): mean | mean_std
    raw_features: str  # the probe's raw-input reference (`probe.raw_input_features`)
    collapse_remedy: str  # what to try when the health check finds a collapse (the trainer's warning)


MODALITY_INFO: dict[str, Modality] = {
    "text": Modality(
        name="text", input_name="input_ids", mask_input="bool_masked_pos", position="token",
        processor="tokenizer", pooling="mean_std",
        raw_features="TF-IDF of the token ids (vocabulary: the probe's training texts)",
        collapse_remedy="target_layer_norm=instance (if changed) and more masking (mask_prob)",
    ),
    "vision": Modality(
        name="vision", input_name="pixel_values", mask_input="bool_masked_pos", position="patch",
        processor="image_processor", pooling="mean",
        raw_features="the pixels, flattened",
        collapse_remedy="more masking (mask_prob) or the layer-normed targets of the recipe (target_layer_norm=layer)",
    ),
    "audio": Modality(
        name="audio", input_name="input_values", mask_input="mask_time_indices", position="frame",
        processor="feature_extractor", pooling="mean_std",
        raw_features="log-power spectrogram (25 ms Hann windows, 10 ms hop): mean and std over time",
        collapse_remedy="on steady sounds (tones, hums, chirps) the conv front end forgets what instance-normed "
                        "targets drop: --config_overrides teacher_scope=model or feature_grad_mult=0 "
                        "(docs/pretraining.md, 'Steady sounds')",
    ),
}

MODALITIES = tuple(MODALITY_INFO)


def modality_info(name: str) -> Modality:
    """The description of modality `name`, or an error naming the modalities there are."""
    try:
        return MODALITY_INFO[name]
    except KeyError:
        raise ValueError(f"unknown modality {name!r}: use one of {', '.join(MODALITIES)}") from None


__all__ = ["MODALITIES", "MODALITY_INFO", "Modality", "modality_info"]
