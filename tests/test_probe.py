"""The linear probe's features: the pooling of each modality against a written-out computation (padding excluded),
and the raw-input references. Tiny configs, a handful of examples."""

import numpy as np
import pytest
import torch
from modeling_data2vec_unified.masking import DataCollatorForData2VecPretraining
from modeling_data2vec_unified.probe import POOLING, extract_features, pool, raw_input_probe, spectrogram_features
from transformers import AutoModel

from conftest import tiny_config, tiny_examples


def test_pool_mean_and_std_over_real_positions_only():
    hidden = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    real = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]])  # padding at the end; a CLS-like first position
    pooled = pool(hidden, real, "mean_std")
    for i, keep in enumerate(real.bool()):
        x = hidden[i, keep].numpy()  # (positions, D), the real ones only
        expected = np.concatenate([x.mean(0), np.sqrt(((x - x.mean(0)) ** 2).mean(0))])
        np.testing.assert_allclose(pooled[i].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pool(hidden, real, "mean").numpy(), pooled[:, :3].numpy())
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool(hidden, real, "max")


@pytest.mark.parametrize("modality", ["text", "audio"])
def test_mean_std_features_of_a_padded_batch_written_out(modality):
    """Examples of different lengths, padded into one batch: each example's features are the mean and the std over
    its real positions (text: its tokens; audio: the frames of its samples) of the mean of the top 2 hidden states,
    written out here from the batch's hidden states; the padding is in neither statistic."""
    assert POOLING[modality] == "mean_std"
    torch.manual_seed(0)
    config = tiny_config(modality)
    model = AutoModel.from_config(config).eval()
    examples = tiny_examples(modality)
    features = extract_features(model, examples, top_layers=(2, 1))
    batch = DataCollatorForData2VecPretraining(config, audio_crop="pad").collate_inputs(examples)
    assert (batch["attention_mask"] == 0).any()  # there is padding to leave out
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
    for i, example in enumerate(examples):
        length = len(example["input_ids" if modality == "text" else "input_values"])
        real = length if modality == "text" else int(config.num_audio_frames(torch.tensor(length)))
        for k in (2, 1):
            hidden = torch.stack(states[-k:]).mean(0)[i, :real].numpy()  # (real positions, D)
            expected = np.concatenate([hidden.mean(0), np.sqrt(((hidden - hidden.mean(0)) ** 2).mean(0))])
            np.testing.assert_allclose(features[k][i], expected, rtol=1e-4, atol=1e-5)


def test_vision_features_stay_mean_pooled_patches():
    torch.manual_seed(0)
    model = AutoModel.from_config(tiny_config("vision")).eval()
    examples = tiny_examples("vision")
    features = extract_features(model, examples, top_layers=(1,))[1]
    with torch.no_grad():
        hidden = model(torch.stack([e["pixel_values"] for e in examples])).last_hidden_state
    np.testing.assert_allclose(features, hidden[:, 1:].mean(1).numpy(), rtol=1e-5, atol=1e-6)  # CLS left out


def test_raw_references_for_audio_and_text():
    rng = np.random.default_rng(0)
    rate = 16000
    t = np.arange(rate // 2) / rate
    # audio: low and high tones in noise; the spectrogram's mean peaks at the tone's frequency bin (40 Hz per bin)
    waves = [(np.sin(2 * np.pi * f * t) + 0.1 * rng.standard_normal(len(t))).astype(np.float32)
             for f in [400, 2000] * 6]
    features = spectrogram_features(waves[1], rate)
    assert features.shape == (2 * 201,) and np.argmax(features[:201]) == 2000 // 40
    clips = [{"input_values": w, "labels": i % 2} for i, w in enumerate(waves)]
    assert raw_input_probe(clips[:8], clips[8:], "audio", rate) == 1.0
    # text: two vocabularies; TF-IDF of the token ids separates them
    texts = [{"input_ids": torch.tensor([0, *rng.integers(10, 20, 6) + 10 * (i % 2), 2]), "labels": i % 2}
             for i in range(12)]
    assert raw_input_probe(texts[:8], texts[8:], "text") == 1.0


@pytest.mark.parametrize("modality", ["vision", "audio"])
def test_bench_probe_layers_reads_the_same_features_as_the_probe(modality):
    """bench/probe_layers.py (the per-layer sweep of docs/benchmarks.md) pools every layer itself: its top-2 and
    last-layer features are the package probe's `extract_features`, with either pooling, and L0 is the front end's
    output (hidden_states[0], pooled as written out here)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "bench" / "probe_layers.py"
    spec = importlib.util.spec_from_file_location("probe_layers", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    config = tiny_config(modality, layer_scale_init_value=0.0)  # vision: layers that visibly change the states
    model = AutoModel.from_config(config).eval()
    examples = tiny_examples(modality)
    layers = bench.layer_features(model, examples)  # one batch, as extract_features pads it
    assert len([k for k in layers if k.startswith("mean@L")]) == config.num_hidden_layers + 1
    for pooling in ("mean", "mean_std"):
        ours = extract_features(model, examples, top_layers=(2, 1), pooling=pooling)
        np.testing.assert_allclose(layers[f"{pooling}@top2"], ours[2], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layers[f"{pooling}@L{config.num_hidden_layers}"], ours[1], rtol=1e-5, atol=1e-6)
    if modality == "vision":  # patches only, not the CLS token
        with torch.no_grad():
            batch = DataCollatorForData2VecPretraining(config).collate_inputs(examples)
            first = model(**batch, output_hidden_states=True).hidden_states[0]
        np.testing.assert_allclose(layers["mean@L0"], first[:, 1:].mean(1).numpy(), rtol=1e-5, atol=1e-6)
