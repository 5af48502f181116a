"""load_pretraining_data: the builtin sets, local folders and files of every kind, audio in parquet, and every
bad-input error; builtin examples go through the collator and a tiny model. Data are written to tmp_path."""

import io
import json
import pickle
import warnings
from pydoc_data.topics import topics

import datasets
import modeling_data2vec_unified as d2v
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
import torch
from modeling_data2vec_unified.data import (
    SOUND_CLASSES,
    ImageProcessor,
    default_feature_extractor,
    load_pretraining_data,
    stdlib_docstring_splits,
    synthesize_sounds,
    train_bpe_tokenizer,
)
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import AutoImageProcessor, AutoTokenizer

from conftest import tiny_config

VISION = dict(image_size=16, patch_size=4, num_channels=1)


DOCS = [topics[key] for key in sorted(topics)]


def all_inputs(data, key):
    return [e[key] for e in data.train.__getitems__(range(len(data.train)))]


def tone(freq, seconds, rate, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave, 0.3 * np.cos(2 * np.pi * 2 * freq * t)], axis=1)


def wav_bytes(wave, rate, fmt="WAV"):
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format=fmt)
    return buffer.getvalue()


def write_images(root, spec):
    """spec: {label folder: [(height, width, mode, extension)]}; random pixels."""
    rng = np.random.default_rng(0)
    for label, images in spec.items():
        (root / label).mkdir(parents=True)
        for i, (h, w, mode, ext) in enumerate(images):
            shape = (h, w, 3) if mode == "RGB" else (h, w)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / label / f"{i}{ext}")
    return root


def normalized(wave):
    return (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)


@pytest.fixture(scope="module")
def digits():
    return load_pretraining_data(tiny_config("vision", **VISION))


@pytest.fixture(scope="module")
def help_topics():
    return load_pretraining_data(tiny_config("text"), max_seq_length=64)


@pytest.fixture(scope="module")
def sounds():
    return load_pretraining_data(tiny_config("audio"))


def test_builtin_digits_are_standardised_images_with_a_held_out_probe(digits, tmp_path):
    pixels = torch.stack(all_inputs(digits, "pixel_values"))
    assert pixels.shape == (1500, 1, 16, 16) and pixels.dtype == torch.float32
    assert abs(pixels.mean().item()) < 0.01 and abs(pixels.std().item() - 1) < 0.01
    order = np.random.default_rng(0).permutation(1797)  # the fixed shuffled split
    target = load_digits().target[order]
    assert len(digits.probe.train) == 1500 and len(digits.probe.test) == 297
    assert [e["labels"] for e in digits.probe.train + digits.probe.test] == target.tolist()
    assert torch.equal(digits.probe.train[7]["pixel_values"], pixels[7])
    assert digits.config_updates == {} and digits.description == "builtin digits: 1500 images -> 1x16x16"
    # the saved processor is what prepared them: it maps the digit image to the same tensor
    digits.processor.save_pretrained(tmp_path)
    image = Image.fromarray(np.round(load_digits().images[order[1600]] * 255 / 16).astype(np.uint8), "L")
    again = torch.as_tensor(np.asarray(AutoImageProcessor.from_pretrained(tmp_path)(image)["pixel_values"][0]))
    torch.testing.assert_close(again, digits.probe.test[100]["pixel_values"])


def test_builtin_digits_for_an_rgb_model_repeat_the_channel(digits):
    rgb = load_pretraining_data(tiny_config("vision", **{**VISION, "num_channels": 3}), max_examples=100)
    assert len(rgb.train) == 100 and rgb.description.endswith("3x16x16")
    x = rgb.train[5]["pixel_values"]
    assert x.shape == (3, 16, 16)
    for channel in x:
        torch.testing.assert_close(channel, digits.train[5]["pixel_values"][0])
    index = np.random.default_rng(0).permutation(1797)[5]  # the fixed shuffled order
    image = Image.fromarray(np.round(load_digits().images[index] * 255 / 16).astype(np.uint8), "L").convert("RGB")
    torch.testing.assert_close(torch.as_tensor(rgb.processor(image)["pixel_values"][0]), x)


@pytest.mark.slow
def test_builtin_batches_are_served_from_memory(digits, sounds):
    """The built-in data is prepared once: a batch is views of the prepared arrays, nothing decoded or copied."""
    for data in (digits, sounds):
        indices = [(7 * i) % len(data.train) for i in range(128)]
        batch = data.train.__getitems__(indices)
        assert len(batch) == 128
        key = next(iter(batch[0]))
        for i, example in zip(indices, batch):
            prepared = data.train.values[i]
            assert example[key] is prepared or example[key].data_ptr() == prepared.data_ptr()


def test_builtin_text_blocks_and_tokenizer_round_trip(help_topics, tmp_path):
    tokenizer = help_topics.processor
    assert tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]) == [0, 1, 2, 3, 2047]
    assert len(tokenizer) == 2048
    assert help_topics.config_updates == {"vocab_size": 2048, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
                                          "mask_token_id": 2047, "max_position_embeddings": 64 + 1 + 1}
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    sentence = "The with statement wraps a block: for x in range(3)."
    ids = loaded(sentence)["input_ids"]
    assert ids == tokenizer(sentence)["input_ids"] and ids[0] == 0 and ids[-1] == 2
    assert loaded.decode(ids, skip_special_tokens=True) == sentence
    assert (loaded.mask_token_id, loaded.pad_token_id) == (2047, 1)

    blocks = all_inputs(help_topics, "input_ids")
    assert len(blocks) > 1500
    assert all(b.dtype == torch.long and len(b) == 64 and b[0] == 0 and b[-1] == 2 for b in blocks)
    assert not any((b[1:-1] == 1).any() or (b[1:-1] == 0).any() for b in blocks)  # no padding, no stray <s>
    # the blocks are the help texts, in order, without gaps (documents separated by </s>)
    text = tokenizer.decode(torch.cat([b[1:-1] for b in blocks[:5]]), skip_special_tokens=True)
    assert len(text) > 200 and "".join(DOCS).startswith(text)
    assert sum(int((b[1:-1] == 2).sum()) for b in blocks) >= len(DOCS) - 2  # separators (some cut at block ends)


def test_builtin_text_probe_holds_out_stdlib_docstrings(help_topics):
    """The built-in text's probe: which of six areas of the standard library a docstring documents, tokenized whole
    with the run's tokenizer and cut at max_seq_length; the held-out docstrings are not in the pretraining text (nor,
    so, in the tokenizer's), the training ones are."""
    train, test = stdlib_docstring_splits()
    tokenizer, probe = help_topics.processor, help_topics.probe
    assert len(probe.train) == len(train) and len(probe.test) == len(test) >= 150
    for split, rows in ((probe.train, train), (probe.test, test)):
        assert [e["labels"] for e in split] == list(rows["label"])
        assert [e["input_ids"].tolist() for e in split] == tokenizer(
            list(rows["text"]), truncation=True, max_length=64)["input_ids"]
    assert sorted(set(test["label"])) == list(range(6)) and max(len(e["input_ids"]) for e in probe.test) == 64
    blocks = all_inputs(help_topics, "input_ids")
    stream = tokenizer.decode(torch.cat([b[1:-1] for b in blocks]), skip_special_tokens=True)
    assert sum(doc in stream for doc in train["text"]) > 0.95 * len(train)
    assert not any(doc in stream for doc in test["text"])


def test_builtin_text_is_deterministic(help_topics):
    again = load_pretraining_data(tiny_config("text"), max_seq_length=64, max_examples=10)
    assert again.processor.get_vocab() == help_topics.processor.get_vocab()
    assert len(again.train) == 10
    for i in range(10):
        assert torch.equal(again.train[i]["input_ids"], help_topics.train[i]["input_ids"])


@pytest.mark.slow
def test_synthesized_sounds_are_balanced_learnable_classes():
    """`synthesize_sounds` (the built-in audio before issue 23; the tests' and benchmarks' steady sounds): 1-2 s clips,
    balanced classes, deterministic given the seed, told apart by their spectrum."""
    sr = 16000
    clips, labels = synthesize_sounds(1000, sr, seed=0)
    assert all(w.dtype == np.float32 and sr <= len(w) <= 2 * sr for w in clips)
    assert sorted(set(labels)) == list(range(len(SOUND_CLASSES))) and np.bincount(labels).min() == 125
    first = synthesize_sounds(4, sr, seed=0)[0]
    assert np.array_equal(first[2], synthesize_sounds(4, sr, seed=0)[0][2])
    assert not np.array_equal(first[0][:100], synthesize_sounds(4, sr, seed=1)[0][0][:100])

    def features(waves):  # log power in 64 bands of 62.5 Hz up to 4 kHz, of each clip normalised
        power = [np.abs(np.fft.rfft((w - w.mean()) / w.std(), n=2 * sr)[:8000]) ** 2 for w in waves]
        return np.log(np.stack([p.reshape(64, -1).mean(1) for p in power]) + 1e-6)

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    probe.fit(features(clips[:800]), labels[:800])
    assert probe.score(features(clips[800:]), labels[800:]) > 0.8


def test_builtin_examples_go_through_the_collator_and_a_tiny_model(modality, request):
    data = request.getfixturevalue({"vision": "digits", "text": "help_topics", "audio": "sounds"}[modality])
    config = tiny_config(modality, **(VISION if modality == "vision" else {}))
    config.update(data.config_updates)
    shortest = sorted(data.train.__getitems__(range(50)), key=lambda e: len(next(iter(e.values()))))[:2]
    batch = d2v.DataCollatorForData2VecPretraining(config, seed=0)(shortest)
    torch.manual_seed(0)
    loss = d2v.Data2VecForPreTraining(config)(**batch).loss
    assert torch.isfinite(loss) and loss > 0


@pytest.fixture
def image_folder(tmp_path):
    return write_images(tmp_path / "pets", {
        "cat": [(10 + i, 12, "RGB", ".png") for i in range(6)],
        "dog": [(20, 7 + 3 * i, "L", ".jpg") for i in range(6)],
    })


@pytest.mark.parametrize("channels", [3, 1])
def test_image_folder_of_mixed_sizes_and_modes(image_folder, tmp_path, channels):
    config = tiny_config("vision", image_size=16, patch_size=4, num_channels=channels)
    data = load_pretraining_data(config, str(image_folder), cache_dir=str(tmp_path / "cache"))
    pixels = torch.stack(all_inputs(data, "pixel_values"))
    assert pixels.shape == (12, channels, 16, 16)
    # the default processor normalises with the images' own statistics (here: all of them)
    torch.testing.assert_close(pixels.mean(dim=(0, 2, 3)), torch.zeros(channels), atol=1e-4, rtol=0)
    torch.testing.assert_close(pixels.std(dim=(0, 2, 3)), torch.ones(channels), atol=1e-3, rtol=0)
    assert len(data.probe.train) == 9 and len(data.probe.test) == 3
    probe = data.probe.train + data.probe.test
    assert sorted({e["labels"] for e in probe}) == [0, 1]
    assert all(e["pixel_values"].shape == pixels.shape[1:] for e in probe)
    cat = Image.open(image_folder / "cat" / "0.png").convert("RGB" if channels == 3 else "L")
    torch.testing.assert_close(torch.as_tensor(data.processor(cat)["pixel_values"][0]), pixels[0])
    first5 = load_pretraining_data(config, str(image_folder), max_examples=5, cache_dir=str(tmp_path / "cache"))
    assert len(first5.train) == 5
    reloaded = pickle.loads(pickle.dumps(first5.train))  # what a spawned DataLoader worker gets
    torch.testing.assert_close(reloaded[4]["pixel_values"], first5.train[4]["pixel_values"])


def test_image_folder_logs_the_size_it_resizes_to(image_folder, tmp_path, caplog):
    """The default processor resizes to config.image_size: the log says so, and for images much smaller than that
    (32 px glyphs and a 224 px model: ~1 s a step on 2 cores) how to train at their own size."""
    caplog.set_level("INFO", logger="modeling_data2vec_unified.data")
    config = tiny_config("vision", image_size=64, patch_size=16, num_channels=3)
    load_pretraining_data(config, str(image_folder), cache_dir=str(tmp_path / "cache"))
    assert "are resized to 64x64, the model's config.image_size (patches of 16: a 4x4 grid)" in caplog.text
    assert "--config_overrides image_size=12,patch_size=2" in caplog.text  # the first image is 10x12
    caplog.clear()
    load_pretraining_data(tiny_config("vision", image_size=16, patch_size=4), str(image_folder),
                          cache_dir=str(tmp_path / "cache"))
    assert "are resized to 16x16" in caplog.text and "--config_overrides" not in caplog.text


@pytest.mark.parametrize("processor", [
    ImageProcessor(do_resize=False, image_mean=[0.5], image_std=[0.5]),
    ImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5], image_std=[0.5]),
])
def test_images_that_do_not_come_out_at_the_config_size_are_refused(image_folder, tmp_path, processor):
    with pytest.raises(ValueError, match=r"shape\(s\) \[\(1, .*image_size"):
        load_pretraining_data(tiny_config("vision", **VISION), str(image_folder), processor=processor,
                              cache_dir=str(tmp_path / "cache"))


def test_a_folder_of_mixed_kinds_gives_the_config_modality_its_files(image_folder, tmp_path):
    soundfile.write(image_folder / "dog" / "bark.wav", tone(300, 0.5, 16000), 16000)
    (image_folder / "README.txt").write_text("pictures and one bark\n")
    images = load_pretraining_data(tiny_config("vision", **VISION), str(image_folder), cache_dir=str(tmp_path / "c"))
    assert len(images.train) == 12
    clips = load_pretraining_data(tiny_config("audio"), str(image_folder))
    assert len(clips.train) == 1 and len(clips.train[0]["input_values"]) == 8000
    assert clips.probe is None  # one folder is not a class label


def write_clips(root):
    """birds/a.wav (stereo, 0.5 s), birds/b.flac, cars/c.wav, cars/d.ogg at 16 kHz."""
    (root / "birds").mkdir(parents=True)
    (root / "cars").mkdir()
    stereo = tone(300, 0.5, 16000, channels=2)
    soundfile.write(root / "birds" / "a.wav", stereo, 16000)
    soundfile.write(root / "birds" / "b.flac", tone(500, 0.25, 16000), 16000)
    soundfile.write(root / "cars" / "c.wav", tone(200, 0.3, 16000), 16000)
    soundfile.write(root / "cars" / "d.ogg", tone(250, 0.4, 16000), 16000)
    return stereo


@pytest.mark.parametrize("in_memory", [True, False])
def test_audio_folder_is_read_with_soundfile(tmp_path, monkeypatch, in_memory):
    """Small data is decoded once at load; data over MAX_IN_MEMORY_BYTES is read per batch, when asked for."""
    if not in_memory:
        monkeypatch.setattr(d2v.data, "MAX_IN_MEMORY_BYTES", 4 * 23200 - 1)  # the 4 clips' float32 samples, less 1
    root = tmp_path / "clips"
    stereo = write_clips(root)
    data = load_pretraining_data(tiny_config("audio"), str(root))
    waves = all_inputs(data, "input_values")
    assert [len(w) for w in waves] == [8000, 4000, 4800, 6400]
    np.testing.assert_allclose(waves[0], normalized(stereo.mean(axis=1)), atol=1e-4)  # channels averaged
    assert {e["labels"] for e in data.probe.train + data.probe.test} == {0, 1}
    assert len(data.probe.train) == 3 and len(data.probe.test) == 1
    loader = torch.utils.data.DataLoader(data.train, batch_size=2, num_workers=2,
                                         collate_fn=d2v.DataCollatorForData2VecPretraining(tiny_config("audio")))
    assert [tuple(b["input_values"].shape) for b in loader] == [(2, 4000), (2, 4800)]  # cropped to the shortest
    soundfile.write(root / "cars" / "c.wav", tone(700, 0.6, 16000), 16000)
    expected = tone(200, 0.3, 16000) if in_memory else tone(700, 0.6, 16000)  # per batch: read when asked for
    np.testing.assert_allclose(data.train[2]["input_values"], normalized(expected), atol=1e-4)


def count_calls(monkeypatch, module, name, count=lambda *args, **kwargs: 1):
    """Replaces module.name by a wrapper that adds count(*args) to the returned list for each call."""
    calls, original = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(count(*args, **kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_small_audio_and_image_folders_are_decoded_once(tmp_path, monkeypatch):
    """Decoding, resampling and image processing happen at load, once per file (the probe reuses the examples), not
    per batch: two epochs of the trainer's batches read no file and process no image (docs/benchmarks.md, the data
    pipeline)."""
    from modeling_data2vec_unified.trainer import Data2VecPretrainer, PretrainingArguments

    reads = count_calls(monkeypatch, soundfile, "read")
    images = count_calls(monkeypatch, d2v.data.preparation, "process_images", lambda processor, batch: len(batch))
    write_clips(tmp_path / "clips")
    soundfile.write(tmp_path / "clips" / "cars" / "e.wav", tone(250, 1.0, 44100), 44100)  # resampled, once
    write_images(tmp_path / "pets", {"cat": [(20, 20, "RGB", ".png")] * 4, "dog": [(24, 16, "RGB", ".jpg")] * 4})
    for modality, dataset, files, prepared in [("audio", "clips", 5, reads), ("vision", "pets", 8, images)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resampling
            trainer = Data2VecPretrainer(PretrainingArguments(
                modality=modality, dataset=str(tmp_path / dataset), per_device_train_batch_size=2,
                output_dir=str(tmp_path / "out"), report_to="none", config_overrides="image_size=16,patch_size=4"
                if modality == "vision" else None, min_audio_seconds=0.1))  # the clips are 0.25 - 1 s
        at_load = sum(prepared)  # images: the first 256 (here all) for the normalisation's statistics, then each once
        assert at_load == (files if modality == "audio" else 2 * files)
        batches = iter(trainer.dataloader(0))
        for _ in range(2 * (len(trainer.data.train) // 2)):  # two epochs of batches of 2
            next(batches)
        assert sum(prepared) == at_load
        key = d2v.masking.MODALITY_INPUT[modality]
        train = [e[key] for e in trainer.data.train.__getitems__(range(files))]
        for example in trainer.data.probe.train + trainer.data.probe.test:  # the same arrays, not copies
            assert any(np.shares_memory(np.asarray(example[key]), np.asarray(x)) for x in train)


def test_audio_at_another_rate_is_resampled_once_or_refused(tmp_path):
    root = tmp_path / "slow"
    root.mkdir()
    for i in range(3):
        soundfile.write(root / f"{i}.wav", tone(440, 1.0, 8000), 8000)
    config = tiny_config("audio", sampling_rate=16000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_pretraining_data(config, str(root))
        wave = data.train[1]["input_values"]
    assert [str(w.message) for w in caught if "resampl" in str(w.message)] == [
        f"folder {root}: resampling audio from 8000 Hz to 16000 Hz (config.sampling_rate)"]
    assert len(wave) == 16000
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.fft.rfftfreq(16000, 1 / 16000)[spectrum.argmax()] - 440) <= 1
    assert spectrum[4100:].max() < 1e-2 * spectrum.max()  # nothing above the old Nyquist frequency
    with pytest.raises(ValueError, match=r"8000 Hz but the model expects 16000 Hz.*resample_audio=True"):
        load_pretraining_data(config, str(root), resample_audio=False)


def test_clips_shorter_than_the_receptive_field_are_dropped(tmp_path):
    config = tiny_config("audio")
    root = tmp_path / "clips"
    root.mkdir()
    for name, samples in [("long1", 2000), ("short", config.receptive_field - 1), ("long2", 3000)]:
        soundfile.write(root / f"{name}.wav", np.random.default_rng(0).standard_normal(samples) * 0.1, 16000)
    dropped = f"dropped 1 of 3 clips shorter than the receptive field of the conv feature encoder \\(" \
              f"{config.receptive_field} samples"
    with pytest.warns(UserWarning, match=dropped):
        data = load_pretraining_data(config, str(root))
    assert [len(e["input_values"]) for e in data.train.__getitems__([0, 1])] == [2000, 3000]
    # a clip the model could encode but too short to be worth cropping a batch to: dropped at --min_audio_seconds
    with pytest.warns(UserWarning, match=r"dropped 2 of 3 clips shorter than 0.15 s \(min_audio_seconds"):
        data = load_pretraining_data(config, str(root), min_audio_seconds=0.15)  # 2400 samples
    assert [len(e["input_values"]) for e in data.train.__getitems__([0])] == [3000] and len(data.train) == 1
    with pytest.raises(ValueError, match=r"every clip .* shorter than 0.5 s .*or a smaller --min_audio_seconds"):
        load_pretraining_data(config, str(root), min_audio_seconds=0.5)
    for name in ("long1", "long2"):
        (root / f"{name}.wav").unlink()
    with pytest.raises(ValueError, match="every clip .* shorter than .* receptive field"):
        load_pretraining_data(config, str(root))


@pytest.mark.parametrize("storage", ["wav bytes", "wav bytes + Audio feature", "arrays", "float lists"])
def test_audio_in_parquet_is_read_without_torchcodec(tmp_path, storage):
    waves = [tone(300, 0.5, 16000), tone(600, 0.25, 16000), tone(400, 0.5, 8000)]
    rates = [16000, 16000, 8000]
    if storage.startswith("wav bytes"):
        column = "audio"
        cells = [{"bytes": wav_bytes(w, r, fmt), "path": f"{i}.x"}
                 for i, (w, r, fmt) in enumerate(zip(waves, rates, ["WAV", "FLAC", "WAV"]))]
    elif storage == "arrays":
        column, cells = "speech", [{"array": w.tolist(), "sampling_rate": r} for w, r in zip(waves, rates)]
    else:
        column, cells, waves = "input_values", [w.tolist() for w in waves[:2]], waves[:2]  # at config.sampling_rate
    table = pa.table({column: cells, "label": list(range(len(cells)))})
    if storage.endswith("Audio feature"):  # as a Hub dataset stores it: decoding would need torchcodec
        features = datasets.Features({column: datasets.Audio(), "label": datasets.Value("int64")})
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features.to_dict()}})})
    pq.write_table(table, tmp_path / "clips.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resampling the 8 kHz clip
        data = load_pretraining_data(tiny_config("audio"), str(tmp_path / "clips.parquet"),
                                     cache_dir=str(tmp_path / "cache"))
    got = all_inputs(data, "input_values")
    assert [len(w) for w in got] == [8000, 4000, 8000][: len(waves)]
    for wave, expected in zip(got[:2], waves):
        np.testing.assert_allclose(wave, normalized(expected), atol=1e-3 if column == "audio" else 1e-5)  # 16-bit files
    assert {e["labels"] for e in data.probe.train + data.probe.test} == set(range(len(cells)))


@pytest.mark.parametrize("fmt", ["txt", "json", "jsonl", "csv", "parquet", "jsonl folder"])
def test_text_files(tmp_path, fmt):
    docs = [d.replace("\n", " ") for d in DOCS[:30]]
    path = tmp_path / ("data" if fmt == "jsonl folder" else f"data.{fmt}")
    if fmt == "txt":
        path.write_text("\n".join(docs))
    elif fmt == "json":
        path.write_text(json.dumps([{"content": d, "id": i} for i, d in enumerate(docs)]))
    elif fmt == "csv":
        datasets.Dataset.from_dict({"id": list(range(30)), "sentence": docs}).to_csv(path)
    elif fmt == "parquet":
        pq.write_table(pa.table({"n": list(range(30)), "body": docs}), path)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    else:  # a folder of two .jsonl files, one level down
        (path / "part").mkdir(parents=True)
        for part in (0, 1):
            lines = docs[part * 15 : part * 15 + 15]
            (path / "part" / f"{part}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in lines))
    data = load_pretraining_data(tiny_config("text"), str(path), max_seq_length=32, tokenizer_vocab_size=400,
                                 cache_dir=str(tmp_path / "cache"))
    tokenizer = data.processor
    assert len(tokenizer) == 400 and data.config_updates["vocab_size"] == 400 and data.probe is None
    blocks = all_inputs(data, "input_ids")
    assert len(blocks) > 100 and all(len(b) == 32 and b[0] == 0 and b[-1] == 2 for b in blocks)
    assert tokenizer.decode(blocks[0], skip_special_tokens=True) in " ".join(docs)


def test_text_probe_from_a_label_column_and_a_saved_tokenizer(tmp_path, help_topics):
    tokenizer = help_topics.processor
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    texts, kinds = [d[:300] for d in DOCS[:40]], ["one" if i % 3 else "two" for i in range(40)]
    datasets.Dataset.from_dict({"text": texts, "kind": kinds}).to_csv(tmp_path / "data.csv")
    data = load_pretraining_data(tiny_config("text"), str(tmp_path / "data.csv"), label_column="kind",
                                 processor=str(tmp_path / "tokenizer"), max_seq_length=48, seed=3)
    assert data.processor.get_vocab() == tokenizer.get_vocab()  # used, not retrained
    assert data.config_updates["max_position_embeddings"] == 50
    assert len(data.probe.train) == 32 and len(data.probe.test) == 8
    label_of = {tuple(tokenizer(t, truncation=True, max_length=48)["input_ids"]): int(k == "two")  # sorted names
                for t, k in zip(texts, kinds)}
    probe = data.probe.train + data.probe.test
    assert sorted(label_of[tuple(e["input_ids"].tolist())] for e in probe) == sorted(label_of.values())
    assert all(label_of[tuple(e["input_ids"].tolist())] == e["labels"] for e in probe)
    assert all(e["input_ids"][0] == 0 and e["input_ids"][-1] == 2 for e in probe)


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/folder", "data/train.csv", "a/b/c"])
def test_a_missing_path_is_named(name):
    with pytest.raises(FileNotFoundError, match=f"dataset '{name}' does not exist"):
        load_pretraining_data(tiny_config("vision", **VISION), name)


def test_a_hub_failure_says_what_was_tried(monkeypatch):
    calls = []

    def offline(*args, **kwargs):
        calls.append((args, kwargs))
        raise ConnectionError("no internet")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match=r"load_dataset\('someone/speech', 'clean', split='validation'\) "
                                                 r"failed: ConnectionError: no internet"):
        load_pretraining_data(tiny_config("audio"), "someone/speech", dataset_config_name="clean", split="validation",
                              cache_dir="/tmp/hf")
    assert calls == [(("someone/speech", "clean"), {"split": "validation", "cache_dir": "/tmp/hf"})]


def test_empty_data_lists_the_extensions_looked_for(tmp_path):
    config = tiny_config("vision", **VISION)
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.md").write_text("hello")
    (tmp_path / "junk" / ".hidden").mkdir()
    (tmp_path / "junk" / ".hidden" / "x.png").write_bytes(b"")
    for folder in ("empty", "junk"):
        with pytest.raises(ValueError, match=r"no usable files: looked for images \(\.png .*\.wav .*\.txt"):
            load_pretraining_data(config, str(tmp_path / folder))
    (tmp_path / "empty.csv").write_text("image,label\n")
    with pytest.raises(ValueError, match=r"could not read .*empty\.csv.*empty or malformed"):
        load_pretraining_data(config, str(tmp_path / "empty.csv"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="not a supported data file: looked for images"):
        load_pretraining_data(config, str(tmp_path / "junk" / "notes.md"))


@pytest.fixture
def data_of_each_kind(tmp_path, image_folder):
    (tmp_path / "wavs").mkdir()
    soundfile.write(tmp_path / "wavs" / "a.wav", tone(300, 0.5, 16000), 16000)
    pq.write_table(pa.table({"audio": [{"bytes": wav_bytes(tone(300, 0.5, 16000), 16000), "path": "a.wav"}]}),
                   tmp_path / "audio.parquet")
    datasets.Dataset.from_dict({"review": ["good", "bad"], "label": [1, 0]}).to_csv(tmp_path / "reviews.csv")
    (tmp_path / "notes.txt").write_text("some text\n")
    return {"images": image_folder, "wavs": tmp_path / "wavs", "audio.parquet": tmp_path / "audio.parquet",
            "reviews.csv": tmp_path / "reviews.csv", "notes.txt": tmp_path / "notes.txt"}


@pytest.mark.parametrize("modality, data, held", [
    ("vision", "wavs", "audio"), ("text", "wavs", "audio"), ("audio", "images", "vision"), ("text", "images", "vision"),
    ("vision", "reviews.csv", "text"), ("audio", "reviews.csv", "text"), ("vision", "notes.txt", "text"),
    ("text", "audio.parquet", "audio"), ("vision", "audio.parquet", "audio"),
])
def test_data_of_another_modality_names_the_modality_to_use(data_of_each_kind, tmp_path, modality, data, held):
    config = tiny_config(modality, **(VISION if modality == "vision" else {}))
    with pytest.raises(ValueError, match=f"holds {held} data .*not {modality}: use --modality {held}"):
        load_pretraining_data(config, str(data_of_each_kind[data]), cache_dir=str(tmp_path / "cache"))


def test_bad_columns_and_settings_name_the_fix(data_of_each_kind, tmp_path):
    reviews, cache = str(data_of_each_kind["reviews.csv"]), str(tmp_path / "cache")
    text = tiny_config("text")
    with pytest.raises(ValueError, match=r"column 'body' is not a column .* its columns: \['review', 'label'\]"):
        load_pretraining_data(text, reviews, column="body", cache_dir=cache)
    with pytest.raises(ValueError, match=r"label_column 'stars' is not a column"):
        load_pretraining_data(text, reviews, label_column="stars", cache_dir=cache)
    with pytest.raises(ValueError, match="fewer than max_seq_length - 2 = 126 tokens"):
        load_pretraining_data(text, reviews, tokenizer_vocab_size=300, cache_dir=cache)
    with pytest.raises(ValueError, match="tokenizer_vocab_size must be at least 261"):
        load_pretraining_data(text, tokenizer_vocab_size=100)
    with pytest.raises(ValueError, match="max_seq_length must be at least 3"):
        load_pretraining_data(text, max_seq_length=2)
    with pytest.raises(ValueError, match="max_examples must be a positive number"):
        load_pretraining_data(text, max_examples=0)
    no_mask = train_bpe_tokenizer(DOCS[:5], vocab_size=300)
    no_mask.mask_token = None
    with pytest.raises(ValueError, match="the tokenizer has no mask token"):
        load_pretraining_data(text, processor=no_mask)
    with pytest.raises(ValueError, match="config.num_channels is 2"):
        load_pretraining_data(tiny_config("vision", **{**VISION, "num_channels": 2}))
    with pytest.raises(ValueError, match="feature extractor works at 8000 Hz but config.sampling_rate is 16000"):
        load_pretraining_data(tiny_config("audio"), processor=default_feature_extractor(8000))


def test_no_probe_prepares_no_probe_examples(image_folder, tmp_path, monkeypatch):
    """Issue 13, item 6: `--no_probe` decodes none of the probe's examples (up to 2000 images at start-up before)."""
    import modeling_data2vec_unified.data.mapstyle as data_module

    config = tiny_config("vision", image_size=16, patch_size=4)

    def no_probe(rows, label_column, prepare, seed):
        if label_column is not None:  # a probe would be prepared (`_probe` returns None without labels)
            raise AssertionError("probe examples prepared")

    monkeypatch.setattr(data_module, "_probe", no_probe)
    data = load_pretraining_data(config, str(image_folder), cache_dir=str(tmp_path / "cache"), probe=False)
    assert data.probe is None and len(data.train) == 12
    assert load_pretraining_data(config, "builtin", probe=False).probe is None
    with pytest.raises(AssertionError, match="probe examples prepared"):  # the default still prepares them
        load_pretraining_data(config, str(image_folder), cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_corrupt_image_is_named_and_skipped_on_request(image_folder, tmp_path, monkeypatch, caplog, in_memory):
    """Issue 13, item 5: a truncated image stops the load naming its file and the flag; --skip_bad_examples skips it
    (logged, counted) up to the fraction given. Per-batch decoding (data over MAX_IN_MEMORY_BYTES) does the same."""
    import modeling_data2vec_unified.data as data_module
    from modeling_data2vec_unified.data import BadExampleError

    if not in_memory:
        monkeypatch.setattr(data_module, "MAX_IN_MEMORY_BYTES", 0)
    broken = image_folder / "cat" / "3.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated
    config = tiny_config("vision", image_size=16, patch_size=4)
    cache = str(tmp_path / "cache")
    if in_memory:
        with pytest.raises(BadExampleError, match=r"cat/3\.png cannot be decoded .*--skip_bad_examples"):
            load_pretraining_data(config, str(image_folder), cache_dir=cache)
        assert "skipped" not in caplog.text  # without the flag nothing says "skipped" before the error
        with pytest.raises(BadExampleError, match="1 of 12 examples cannot be decoded, more than --skip_bad_examples"):
            load_pretraining_data(config, str(image_folder), cache_dir=cache, skip_bad_examples=0.05)
    data = load_pretraining_data(config, str(image_folder), cache_dir=cache, skip_bad_examples=0.2)
    examples = data.train.__getitems__(list(range(len(data.train))))
    assert len(examples) == 11 and data.probe is not None
    assert len(data.probe.train) + len(data.probe.test) == 11 if in_memory else 12 >= len(data.probe.train)


def test_a_corrupt_clip_is_named_and_skipped_on_request(tmp_path):
    from modeling_data2vec_unified.data import BadExampleError

    write_clips(tmp_path / "clips")
    (tmp_path / "clips" / "cars" / "e.wav").write_bytes(b"RIFF not really a wave file")
    config = tiny_config("audio")
    with pytest.raises(BadExampleError, match=r"cars/e\.wav cannot be decoded .*--skip_bad_examples"):
        load_pretraining_data(config, str(tmp_path / "clips"), cache_dir=str(tmp_path / "cache"))
    data = load_pretraining_data(config, str(tmp_path / "clips"), cache_dir=str(tmp_path / "cache"),
                                 skip_bad_examples=0.5)
    assert len(data.train) == 4


def test_a_folder_split_by_name_gives_each_split_its_own_files(tmp_path):
    """Files or subfolders named by split (as `datasets` names them: train* / valid* / dev* / test*) are splits: the
    train split holds none of the held-out files (before, a folder's every file was training data). A folder or file
    without split names has only the train split; asking it for another is an error naming the fix."""
    texts = tmp_path / "texts"
    texts.mkdir()
    for split, words in (("train", "alpha beta gamma"), ("valid", "delta epsilon"), ("test", "zeta")):
        (texts / f"{split}.txt").write_text("\n".join(f"{w} {i} " * 3 for i, w in enumerate(words.split())) + "\n")
    config = tiny_config("text")

    def text_of(data):
        return "".join(data.processor.decode(e["input_ids"], skip_special_tokens=True) for e in data.train)

    train = load_pretraining_data(config, str(texts), tokenizer_vocab_size=300, max_seq_length=8)
    held = load_pretraining_data(config, str(texts), split="validation", processor=train.processor, max_seq_length=8)
    assert "[train]" in train.description and "[validation]" in held.description
    words = {name: {w for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta") if w in text_of(data)}
             for name, data in (("train", train), ("held", held))}
    assert words == {"train": {"alpha", "beta", "gamma"}, "held": {"delta", "epsilon"}}
    expected = train.processor("delta 0 delta 0", add_special_tokens=False)["input_ids"][:6]
    assert held.train[0]["input_ids"].tolist()[1:7] == expected  # the training data's tokenizer
    with pytest.raises(ValueError, match=r"has no split 'dev'; its files are split by name into: train \(1 files\), "
                                         r"validation \(1 files\), test \(1 files\)"):
        load_pretraining_data(config, str(texts), split="dev", processor=train.processor)

    clips = tmp_path / "clips"  # our own audio reader, split by subfolder (LibriSpeech's train-clean-100 / dev-clean)
    for folder, seconds in (("train-clean-100", (0.5, 0.3)), ("dev-clean", (0.4,))):
        (clips / folder).mkdir(parents=True)
        for i, s in enumerate(seconds):
            soundfile.write(clips / folder / f"{i}.wav", tone(300, s, 16000), 16000)
    sizes = {split: sorted(len(w) for w in all_inputs(load_pretraining_data(tiny_config("audio"), str(clips),
                                                                            split=split), "input_values"))
             for split in ("train", "validation")}
    assert sizes == {"train": [4800, 8000], "validation": [6400]}

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("one line of text\n")
    with pytest.raises(ValueError, match="has no split 'validation': its files are not named by split"):
        load_pretraining_data(config, str(plain), split="validation", tokenizer_vocab_size=300)
    with pytest.raises(ValueError, match=r"is one split \(train\); split 'validation' needs a folder"):
        load_pretraining_data(config, str(plain / "notes.txt"), split="validation", tokenizer_vocab_size=300)


def test_a_line_that_is_not_utf8_is_named_or_skipped(tmp_path):
    """One latin-1 line in a .txt: the error names the file, the line, the byte and the encoding, and the fix; with
    --skip_bad_examples the line is dropped (counted) and every other line is kept."""
    from modeling_data2vec_unified.data import BadExampleError, load_pretraining_data

    good = [f"line {i} of plain text about teachers and students" for i in range(60)]
    (tmp_path / "a.txt").write_bytes(("\n".join(good[:30]) + "\n").encode() + "café au lait\n".encode("latin-1")
                                     + ("\n".join(good[30:]) + "\n").encode())
    config = d2v.Data2VecConfig(modality="text", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64)
    with pytest.raises(BadExampleError, match=r"line 31 of .*a\.txt \(byte 0xe9 at column 4\) is not UTF-8.*"
                                              r"iconv.*--skip_bad_examples"):
        load_pretraining_data(config, str(tmp_path / "a.txt"), max_seq_length=16, tokenizer_vocab_size=300)
    data = load_pretraining_data(config, str(tmp_path / "a.txt"), max_seq_length=16, tokenizer_vocab_size=300,
                                 skip_bad_examples=0.05)
    text = data.processor.decode([i for e in data.train for i in e["input_ids"]], skip_special_tokens=True)
    assert "caf" not in text and "line 0 of" in text and "line 45 of" in text  # (the last partial block is dropped)
    with pytest.raises(BadExampleError, match="more than --skip_bad_examples 0.001"):
        load_pretraining_data(config, str(tmp_path / "a.txt"), max_seq_length=16, tokenizer_vocab_size=300,
                              skip_bad_examples=0.001)
