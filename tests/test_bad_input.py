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
        # ids the embeddings do not have: the tokenizer does not match the model
        ("text", dict(input_ids=torch.tensor([[0, 5, 120, 2]])),
         r"input_ids holds 120 at example 0, position 2, outside 0..98 \(config.vocab_size = 99\).*tokenizer"),
        ("text", dict(input_ids=torch.tensor([[0, 5, 2], [0, -100, 2]])),
         r"input_ids holds -100 at example 1, position 1.*pad input_ids with pad_token_id \(1\)"),
        ("text", dict(input_ids=torch.tensor([[0, 5, 2]]), token_type_ids=torch.tensor([[0, 1, 1]])),
         r"token_type_ids holds 1 at example 0, position 1.*type_vocab_size = 1.*drop token_type_ids"),
        # an additive mask (0 = attend, negative = padding) would be read inverted
        ("text", dict(input_ids=torch.tensor([[0, 5, 2]]), attention_mask=torch.tensor([[0.0, 0.0, -1e4]])),
         r"attention_mask holds -10000; it must be 1 for real tokens and 0 for padding.*\(mask == 0\).long\(\)"),
        ("audio", dict(input_values=torch.randn(1, 800), attention_mask=torch.full((1, 800), float("-inf"))),
         r"attention_mask holds -inf; it must be 1 for real tokens.*\(mask == 0\).long\(\)"),
        # an example that is all padding
        ("text", dict(input_ids=torch.tensor([[0, 5, 2], [1, 1, 1]]), attention_mask=torch.tensor([[1] * 3, [0] * 3])),
         r"example\(s\) \[1\] of the batch are all padding.*Drop empty examples"),
        ("audio", dict(input_values=torch.randn(3, 800),
                       attention_mask=torch.tensor([[1] * 800, [0] * 800, [1] * 800])),
         r"example\(s\) \[1\] of the batch are all padding.*Drop empty examples"),
        ("audio", dict(input_values=torch.randn(2, 800),
                       attention_mask=torch.tensor([[1] * 800, [1] * 20 + [0] * 780])),
         r"example\(s\) \[1\] of the batch have fewer real samples .* receptive field \(40\)"),
        ("text", dict(input_ids=torch.tensor([[0, 5, 2]]), attention_mask=torch.tensor([[1, 1]])),
         r"attention_mask must be \(batch, length\) = \(1, 3\), like the input; got \(1, 2\)"),
        ("text", dict(input_ids=torch.tensor([[0, 5, 2]]), attention_mask=torch.tensor([[1, 2, 1]])),
         r"attention_mask holds 2; it must be 1 for real tokens and 0 for padding. Pass a 0 / 1 mask"),
        # channels-last images
        ("vision", dict(pixel_values=torch.randn(2, 32, 32, 3)),
         r"channels-last.*pass pixel_values.permute\(0, 3, 1, 2\)"),
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


def test_fine_tuning_heads_check_token_ids():
    config = tiny_config("text", num_labels=2)
    head = d2v.Data2VecForSequenceClassification(config).eval()
    with pytest.raises(ValueError, match=r"input_ids holds 99 at example 0, position 1.*vocab_size"):
        head(input_ids=torch.tensor([[0, 99, 2]]))


def test_padding_bias_refuses_an_additive_mask():
    bias = d2v.modeling_data2vec.padding_to_attn_bias
    assert bias(torch.tensor([[1.0, 1.0, 0.0]]), torch.float32)[0, 0, 0, 2] < -1e30  # a float 0 / 1 mask is fine
    with pytest.raises(ValueError, match=r"attention_mask holds -inf.*\(mask == 0\).long\(\)"):
        bias(torch.tensor([[0.0, 0.0, float("-inf")]]), torch.float32)
