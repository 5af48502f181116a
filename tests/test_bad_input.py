"""Bad input gets a clear error that names the fix."""

import pytest
import torch

import modeling_data2vec_unified as d2v

from conftest import tiny_config


def _model(modality, **overrides):
    return d2v.Data2VecModel(tiny_config(modality, **overrides)).eval()


@pytest.mark.parametrize(
    "modality, inputs, message",
    [
        ("text", dict(pixel_values=torch.randn(1, 3, 32, 32)), "takes input_ids.*got pixel_values.*Data2VecVisionModel"),
        ("vision", dict(input_values=torch.randn(1, 800)), "takes pixel_values.*got input_values.*Data2VecAudioModel"),
        ("audio", dict(input_ids=torch.ones(1, 5, dtype=torch.long)), "takes input_values.*Data2VecTextModel"),
        ("text", dict(input_ids=torch.ones(5, dtype=torch.long)), r"\(batch, sequence_length\); got shape \(5,\)"),
        ("text", dict(input_ids=torch.ones(1, 5)), "integer token ids"),
        ("text", dict(input_ids=torch.ones(0, 5, dtype=torch.long)), "empty"),
        ("text", dict(input_ids=torch.ones(1, 60, dtype=torch.long)), "at most 38"),
        ("vision", dict(pixel_values=torch.randn(3, 32, 32)), r"\(batch, channels, height, width\); got shape"),
        ("vision", dict(pixel_values=torch.randn(1, 1, 32, 32)), "1 channels; this model takes 3"),
        ("vision", dict(pixel_values=torch.randn(1, 3, 30, 32)), "not divisible by patch_size 8"),
        ("vision", dict(pixel_values=torch.randn(1, 3, 32, 32), bool_masked_pos=torch.ones(1, 5, dtype=torch.bool)),
         r"bool_masked_pos must be \(batch, num_patches\) = \(1, 16\)"),
        ("audio", dict(input_values=torch.randn(1, 1, 800)), "drop the channel axis"),
        ("audio", dict(input_values=torch.randn(2, 30)), "shorter than the conv feature encoder's receptive field"),
        ("audio", dict(input_values=torch.ones(1, 800, dtype=torch.long)), "float waveforms"),
        ("audio", dict(input_values=torch.randn(1, 800), mask_time_indices=torch.ones(1, 3, dtype=torch.bool)),
         r"mask_time_indices must be \(batch, frames\)"),
    ],
)
def test_bad_inputs_name_the_fix(modality, inputs, message):
    with pytest.raises(ValueError, match=message):
        _model(modality)(**inputs)


def test_mask_without_mask_token():
    model = _model("vision", use_mask_token=False)
    with pytest.raises(ValueError, match="use_mask_token=True"):
        model(pixel_values=torch.randn(1, 3, 32, 32), bool_masked_pos=torch.zeros(1, 16, dtype=torch.bool))


def test_unexpected_argument_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected arguments.*'labelz'"):
        _model("text")(input_ids=torch.ones(1, 4, dtype=torch.long), labelz=1)


def test_inconsistent_conv_lists():
    with pytest.raises(Exception, match="conv_dim, conv_stride and conv_kernel must have one entry per conv layer"):
        tiny_config("audio", conv_stride=[5, 2])
