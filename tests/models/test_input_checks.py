"""Bad input gets a clear error that names the fix.

Bad pretraining batches and bad checkpoint paths get a clear error that names the fix: the collator,
`check_batch` / `Data2VecForPreTraining`, and `from_pretrained`."""

import modeling_data2vec_unified as d2v
import numpy as np
import pytest
import torch
from modeling_data2vec_unified.conversion import check_local_path, read_state_dict

from conftest import tiny_config, tiny_examples, tiny_transformers_model


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


MASKS = ("bool_masked_pos", "mask_time_indices", "masked_input_ids")


def _setup(modality):
    config = tiny_config(modality)
    batch = d2v.DataCollatorForData2VecPretraining(config, audio_crop="pad")(tiny_examples(modality))
    return d2v.Data2VecForPreTraining(config), batch


def _without_mask(batch):
    return {k: v for k, v in batch.items() if k not in MASKS}


def test_pretraining_refuses_ids_outside_the_vocabulary():
    model, batch = _setup("text")
    ids = batch["input_ids"].clone()
    ids[2, 3] = 500
    message = r"input_ids holds 500 at example 2, position 3, outside 0..98 \(config.vocab_size = 99\).*tokenizer"
    with pytest.raises(ValueError, match=message):
        model(**{**batch, "input_ids": ids})
    with pytest.raises(ValueError, match=message):  # the mask is drawn by the model
        model(**_without_mask({**batch, "input_ids": ids}))
    with pytest.raises(ValueError, match=message):
        d2v.check_batch(model.config, {**batch, "input_ids": ids})
    types = r"token_type_ids holds 1 at example 0, position 0.*type_vocab_size = 1.*drop token_type_ids"
    with pytest.raises(ValueError, match=types):
        model(**batch, token_type_ids=torch.ones_like(ids))
    with pytest.raises(ValueError, match=types):
        d2v.check_batch(model.config, {**batch, "token_type_ids": torch.ones_like(ids)})
    collator = d2v.DataCollatorForData2VecPretraining(model.config)
    with pytest.raises(ValueError, match=r"input_ids holds 200 at example 1, position 2.*vocab_size = 99"):
        collator([{"input_ids": [0, 5, 2]}, {"input_ids": [0, 5, 200, 2]}])
    with pytest.raises(ValueError, match=r"input_ids holds -100 .*pad input_ids with pad_token_id \(1\)"):
        collator([{"input_ids": [0, 5, -100, 2]}])


@pytest.mark.parametrize("mod", ["text", "audio"])
def test_pretraining_names_an_example_that_is_all_padding(mod):
    model, batch = _setup(mod)
    attention = batch["attention_mask"].clone()
    attention[1] = 0
    message = r"example\(s\) \[1\] of the batch are all padding \(attention_mask all 0\).*Drop empty examples"
    with pytest.raises(ValueError, match=message):
        model(**{**batch, "attention_mask": attention})
    with pytest.raises(ValueError, match=message):
        model(**_without_mask({**batch, "attention_mask": attention}))
    with pytest.raises(ValueError, match=message):
        d2v.check_batch(model.config, {**batch, "attention_mask": attention})


@pytest.mark.parametrize("mod", ["text", "audio"])
@pytest.mark.parametrize("fill", [-1e4, float("-inf")])
def test_pretraining_refuses_an_additive_attention_mask(mod, fill):
    model, batch = _setup(mod)
    additive = torch.where(batch["attention_mask"].bool(), 0.0, fill)  # 0 for tokens, fill for padding
    message = r"attention_mask holds -(10000|inf); it must be 1 for real tokens and 0 for padding.*\(mask == 0\).long"
    with pytest.raises(ValueError, match=message):
        model(**{**batch, "attention_mask": additive})
    with pytest.raises(ValueError, match=message):
        model(**_without_mask({**batch, "attention_mask": additive}))


def test_additive_mask_without_padding_gets_the_hint():
    model, batch = _setup("text")
    zeros = torch.zeros(batch["attention_mask"].shape)  # an additive mask of a batch without padding
    with pytest.raises(ValueError, match=r"no real tokens.*additive mask.*\(mask == 0\).long"):
        d2v.check_batch(model.config, {**batch, "attention_mask": zeros})


def test_channels_last_images_are_refused_with_the_permute():
    config = tiny_config("vision")
    collator = d2v.DataCollatorForData2VecPretraining(config)
    images = [{"pixel_values": torch.randn(32, 32, 3)} for _ in range(2)]
    with pytest.raises(ValueError, match=r"\(32, 32, 3\) look channels-last.*pixel_values.permute\(2, 0, 1\)"):
        collator(images)
    batched = torch.randn(2, 32, 32, 3)
    with pytest.raises(ValueError, match=r"\(2, 32, 32, 3\) look channels-last.*permute\(0, 3, 1, 2\)"):
        d2v.check_batch(config, {"pixel_values": batched})
    with pytest.raises(ValueError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        d2v.Data2VecForPreTraining(config)(pixel_values=batched)  # the model draws the mask
    with pytest.raises(ValueError, match=r"pixel_values must be \(batch, channels, height, width\); got shape"):
        d2v.check_batch(config, {"pixel_values": torch.randn(3, 32, 32)})
    collator(tiny_examples("vision"))  # channels first still goes through


@pytest.mark.parametrize("path", ["./no/such/dir", "{tmp}/x/y/z"])
def test_a_missing_local_folder_is_named(path, tmp_path):
    path = path.format(tmp=tmp_path)
    message = r"no folder '.*(no/such/dir|x/y/z)'.*check the path"
    with pytest.raises(FileNotFoundError, match=message):
        d2v.Data2VecModel.from_pretrained(path)  # the Auto dispatch reads the config first
    with pytest.raises(FileNotFoundError, match=message):
        d2v.Data2VecTextModel.from_pretrained(path)
    with pytest.raises(FileNotFoundError, match=message):
        d2v.Data2VecTextModel.from_pretrained(path, config=tiny_config("text"))


def test_a_hub_id_still_goes_to_the_hub():
    check_local_path("someone/some-model")  # no local folder, but a Hub id: not refused here
    with pytest.raises(OSError) as info:
        d2v.Data2VecModel.from_pretrained("someone/some-model-that-is-not-here", local_files_only=True)
    assert "no folder" not in str(info.value)


def _break(file, how):
    data = file.read_bytes()
    file.write_bytes(b"" if how == "empty" else data[: len(data) // 2])


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_unreadable_weights_name_the_file(how, tmp_path):
    d2v.Data2VecModel(tiny_config("text")).save_pretrained(tmp_path / "ours")
    tiny_transformers_model("text").save_pretrained(tmp_path / "theirs")  # loaded through the conversion
    for folder in ("ours", "theirs"):
        weights = tmp_path / folder / "model.safetensors"
        _break(weights, how)
        message = rf"{weights} cannot be read .*truncated or corrupt.*save_pretrained.*force_download=True"
        with pytest.raises(OSError, match=message):
            d2v.Data2VecModel.from_pretrained(tmp_path / folder)
        with pytest.raises(OSError, match=message):
            d2v.Data2VecTextModel.from_pretrained(tmp_path / folder)
        with pytest.raises(OSError, match=message):
            read_state_dict(tmp_path / folder)


@pytest.mark.parametrize("modality, example, message", [
    ("text", {"input_ids": [0, 5.7, 9, 2]}, "input_ids must be whole token ids; got 5.7"),
    ("text", {"input_ids": "the cat sat"}, "input_ids is a string .*tokenize the text first"),
    ("audio", {"input_values": (np.sin(np.arange(8000) / 5) * 32000).astype(np.int16)},
     r"input_values are integers \(int16: PCM samples\?\).*divide int16 PCM by 32768"),
    ("vision", {"pixel_values": np.full((3, 32, 32), 200, dtype=np.uint8)},
     r"pixel_values are integers \(uint8: 0-255 pixels\?\).*image processor"),
])
def test_the_collator_refuses_inputs_that_would_train_silently_wrong(modality, example, message):
    from modeling_data2vec_unified import DataCollatorForData2VecPretraining

    collator = DataCollatorForData2VecPretraining(tiny_config(modality))
    with pytest.raises(ValueError, match=message):
        collator([example, example])
    with pytest.raises(ValueError, match="takes a list of examples .*not one dict"):
        collator(example)


def test_whole_float_token_ids_and_float_audio_still_collate():
    from modeling_data2vec_unified import DataCollatorForData2VecPretraining

    batch = DataCollatorForData2VecPretraining(tiny_config("text"))([{"input_ids": [0.0, 5.0, 9.0, 2.0]}] * 2)
    assert batch["input_ids"][0, :4].tolist() == [0, 5, 9, 2]
