"""--streaming: local json / parquet / webdataset shards read as a datasets IterableDataset; shards split across
processes and workers without duplicates; exact resume (in-process stop, and kill -9 with DataLoader workers); audio
(each storage equal to map-style's examples, short clips dropped, other rates resampled or refused); bad images, clips
and shards; clear errors."""

import gc
import io
import json
import logging
import math

import modeling_data2vec_unified as d2v
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
import torch
from modeling_data2vec_unified.data import synthesize_sounds
from modeling_data2vec_unified.streaming import StreamingExamples, open_stream, stream_batches
from modeling_data2vec_unified.trainer import cli
from safetensors.torch import load_file

from conftest import tiny_config
from run_helpers import QUICK, ROOT, kill_9_at


def run_cli(out, *extra):
    import os
    import subprocess
    import sys

    # datasets sleeps SLEEP_TIME_ON_THREADS_SHUTDOWN (5 s) at the end of every pass over parquet shards (an arrow
    # workaround): 0 here, so that the test's many short epochs take no minutes
    main = ("import sys, datasets.config; datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN = 0; "
            "from modeling_data2vec_unified.trainer import main; main(sys.argv[1:])")
    argv = [sys.executable, "-c", main, "--output_dir", str(out), "--no_probe", *QUICK, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(autouse=True)
def no_parquet_sleep(monkeypatch):
    """See run_cli."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    yield
    gc.collect()  # streams left open close now, while the sleep is 0 (else later, in another test's time)


TEXT_FLAGS = ["--modality", "text", "--streaming", "--max_seq_length", "32", "--tokenizer_vocab_size", "300",
              "--shuffle_buffer_size", "8"]


def write_text_shards(folder, shards=6, rows=12):
    from pydoc_data.topics import topics

    texts = [topics[k] for k in sorted(topics)]
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with open(folder / f"shard-{s}.jsonl", "w") as f:
            for i in range(rows):
                f.write(json.dumps({"text": f"s{s}r{i} " + texts[(s * rows + i) % len(texts)][:400]}) + "\n")
    return folder


def png(rng, size=12) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def write_image_shards(folder, shards=4, rows=24, bad=()):
    """Parquet shards of {"image": {"bytes", "path"}}; `bad`: (shard, row) pairs whose bytes are not an image."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        cells = [{"bytes": b"not a png" if (s, i) in bad else png(rng), "path": f"img-{s}-{i}.png"}
                 for i in range(rows)]
        pq.write_table(pa.table({"image": cells}), folder / f"shard-{s}.parquet")
    return folder


AUDIO_FLAGS = ["--modality", "audio", "--streaming", "--max_audio_seconds", "0.5", "--min_audio_seconds", "0.5",
               "--shuffle_buffer_size", "8"]


def wav(wave, rate) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format="WAV")
    return buffer.getvalue()


def write_audio_shards(folder, shards=2, rows=8, bad=(), short=(), slow=()):
    """Parquet shards of {"audio": {"bytes", "path"}}: WAV files of `synthesize_sounds`' clips (1-2 s at 16 kHz);
    (shard, row) pairs in `bad`: bytes that are not audio; in `short`: cut to 0.2 s; in `slow`: at 8 kHz."""
    clips, _ = synthesize_sounds(shards * rows, 16000)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        cells = []
        for i, clip in enumerate(clips[s * rows : (s + 1) * rows]):
            clip, rate = (clip[:3200], 16000) if (s, i) in short else (clip[::2], 8000) if (s, i) in slow else (
                clip, 16000)
            cells.append({"bytes": b"not a wav" if (s, i) in bad else wav(clip, rate), "path": f"clip-{s}-{i}.wav"})
        pq.write_table(pa.table({"audio": cells}), folder / f"shard-{s}.parquet")
    return folder


class _Rows:
    """A `_Prepare` stand-in: each row is its own example (its text)."""

    column = "text"

    def __call__(self, row):
        return [row["text"]]


def _epoch_rows(examples: StreamingExamples, num_workers: int, batches: int) -> list[str]:
    """The rows of epoch 0 this process read (batch size 1)."""
    rows = []
    for batch, worker, position in stream_batches(examples, list, num_workers, 0, {}, 0):
        if position.epoch == 0:
            rows += batch
        batches -= 1
        if not batches:
            return rows


@pytest.mark.parametrize("num_workers", [0, 2])
def test_shards_are_split_across_processes_and_workers_without_duplicates(tmp_path, num_workers):
    folder = write_text_shards(tmp_path / "text", shards=6, rows=5)
    stream, _ = open_stream(str(folder), None, "train", None)
    seen = []
    for rank in range(2):  # two processes, simulated: split_dataset_by_node(rank, 2)
        examples = StreamingExamples(stream, _Rows(), 1, 0, 4, None, "test", rank, 2)
        seen.append(_epoch_rows(examples, num_workers, 60))
    everything = [json.loads(line)["text"] for f in sorted(folder.iterdir()) for line in f.read_text().splitlines()]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(everything)  # each row of each shard once per epoch
    assert {row.split("r")[0] for row in seen[0]} != {row.split("r")[0] for row in seen[1]}  # by shards: 3 + 3
    assert seen[0] != sorted(seen[0])  # shuffled


def _weights(path):
    return load_file(path / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["text", "audio"])
def test_stream_resumes_exactly(tmp_path, modality):
    """Stopped at step 3 (text: a row's blocks half emitted, so the position is inside a row; audio: short clips
    dropped on the way), resumed: the same weights as the uninterrupted run."""
    if modality == "text":
        folder = write_text_shards(tmp_path / "text")
        data = dict(max_seq_length=32, tokenizer_vocab_size=300)
    else:  # 2 x 12 clips, 2 dropped: 5 batches of 4 per epoch (step 3: mid-epoch)
        folder = write_audio_shards(tmp_path / "clips", rows=12, short={(0, 2), (1, 5)}, slow={(1, 1)})
        data = dict(max_audio_seconds=0.5, min_audio_seconds=0.5)
    flags = dict(modality=modality, streaming=True, dataset=str(folder), **data,
                 shuffle_buffer_size=8, max_steps=8, save_steps=3, per_device_train_batch_size=4,
                 report_to="none", disable_tqdm=True, logging_steps=4, probe=False)
    d2v.Data2VecPretrainer(d2v.PretrainingArguments(output_dir=str(tmp_path / "full"), **flags)).train()
    stopped = d2v.PretrainingArguments(output_dir=str(tmp_path / "stopped"), **flags)
    d2v.Data2VecPretrainer(stopped).train(stop_at_step=3)
    state = json.loads((tmp_path / "stopped" / "checkpoint-3" / "stream_state_0.json").read_text())
    assert state["positions"]["0"]["batches"] == 3
    resumed = d2v.Data2VecPretrainer(d2v.PretrainingArguments(output_dir=str(tmp_path / "stopped"),
                                                              resume_from_checkpoint="latest", **flags))
    resumed.train()
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "stopped")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_image_stream_with_workers_kill_9_then_resume_equals_uninterrupted(tmp_path):
    """Parquet shards of PNG bytes, 2 DataLoader workers, several epochs (4 shards x 24 rows, batches of 8: 12 per
    epoch, 30 steps); killed with SIGKILL after checkpoint-5 (an odd micro-batch: the resumed run starts at worker
    1), resumed: bit-identical weights."""
    folder = write_image_shards(tmp_path / "images")
    flags = ["--dataset", str(folder), "--streaming", "--dataloader_num_workers", "2", "--max_steps", "30",
             "--per_device_train_batch_size", "8", "--shuffle_buffer_size", "16", "--config_overrides",
             "image_size=12,patch_size=4,num_channels=1", "--save_steps", "5"]
    killed = run_cli(tmp_path / "killed", *flags)
    kill_9_at(killed, tmp_path / "killed" / "checkpoint-5")
    resumed = run_cli(tmp_path / "killed", *flags, "--resume_from_checkpoint", "latest")
    full = run_cli(tmp_path / "full", *flags)
    for proc in (resumed, full):
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_other_workers_is_refused(tmp_path, capsys):
    folder = write_text_shards(tmp_path / "text")
    base = ["--dataset", str(folder), *TEXT_FLAGS, "--output_dir", str(tmp_path / "out"), "--max_steps", "4",
            "--per_device_train_batch_size", "4", *QUICK]
    cli([*base, "--save_steps", "2"])
    with pytest.raises(SystemExit):
        cli([*base, "--max_steps", "4", "--dataloader_num_workers", "2", "--resume_from_checkpoint",
             str(tmp_path / "out" / "checkpoint-2")])
    assert "Resume with --dataloader_num_workers 0" in capsys.readouterr().err


@pytest.mark.parametrize("modality", ["vision", "audio"])
def test_bad_images_and_clips_stop_the_run_or_are_skipped_and_counted(tmp_path, capsys, caplog, modality):
    if modality == "vision":
        folder, name = write_image_shards(tmp_path / "images", bad={(1, 3)}), "img-1-3.png"
        base = ["--streaming", "--max_steps", "12", "--per_device_train_batch_size", "8", "--config_overrides",
                "image_size=12,patch_size=4,num_channels=1"]
    else:  # an epoch: 4 batches of 4 (and the bad clip); the 5th step reads all of it
        folder, name = write_audio_shards(tmp_path / "clips", rows=9, bad={(1, 3)}), "clip-1-3.wav"
        base = [*AUDIO_FLAGS, "--max_steps", "5", "--per_device_train_batch_size", "4"]
    base = ["--dataset", str(folder), *base, *QUICK]
    with pytest.raises(SystemExit):
        cli([*base, "--output_dir", str(tmp_path / "stop")])
    err = capsys.readouterr().err
    assert f"{name} cannot be decoded" in err and "--skip_bad_examples" in err
    with caplog.at_level(logging.WARNING):
        cli([*base, "--output_dir", str(tmp_path / "skip"), "--skip_bad_examples", "0.05"])
    assert any(f"skipped {name}" in r.getMessage() and "1 bad example(s)" in r.getMessage()
               for r in caplog.records)
    assert (tmp_path / "skip" / "model.safetensors").is_file()


def test_a_corrupt_shard_stops_the_run_or_is_skipped(tmp_path, capsys, caplog):
    folder = write_image_shards(tmp_path / "images")
    (folder / "shard-9.parquet").write_bytes(b"PAR1 truncated garbage")
    base = ["--dataset", str(folder), "--streaming", "--max_steps", "2", "--per_device_train_batch_size", "8",
            "--config_overrides", "image_size=12,patch_size=4,num_channels=1", *QUICK]
    with pytest.raises(SystemExit):
        cli([*base, "--output_dir", str(tmp_path / "stop")])
    assert "shard-9.parquet cannot be read" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING):
        cli([*base, "--output_dir", str(tmp_path / "skip"), "--skip_bad_examples", "0.3"])
    assert any("skipped shard" in r.getMessage() and "shard-9.parquet" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@pytest.mark.parametrize("make, extra, message", [
    (lambda p: p.mkdir() or p, [], "holds no data files"),
    (lambda p: write_text_shards(p), ["--validation_split_percentage", "10"], "needs the data's length"),
    (lambda p: write_text_shards(p), ["--max_examples", "10"], "stream fewer shards"),
    (lambda p: write_text_shards(p, shards=1), ["--dataloader_num_workers", "2"], "got no rows"),
    (lambda p: (p.mkdir(), (p / "a.jsonl").write_text(""))[0] or p, [], "not empty or malformed"),
])
def test_streaming_errors_name_the_fix(tmp_path, capsys, make, extra, message):
    folder = make(tmp_path / "data")
    with pytest.raises(SystemExit):
        cli(["--dataset", str(folder), *TEXT_FLAGS, "--output_dir", str(tmp_path / "out"), "--max_steps", "2",
             "--per_device_train_batch_size", "4", *QUICK, *extra])
    assert message in capsys.readouterr().err


def test_builtin_with_streaming_is_refused():
    with pytest.raises(ValueError, match="drop --streaming or pass --dataset"):
        d2v.PretrainingArguments(streaming=True).resolve()


def test_a_malformed_json_shard_stops_the_run_with_a_clear_error(tmp_path, capsys):
    folder = write_text_shards(tmp_path / "text", shards=3, rows=4)
    (folder / "shard-9.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(SystemExit):
        cli(["--dataset", str(folder), *TEXT_FLAGS, "--output_dir", str(tmp_path / "out"), "--max_steps", "40",
             "--per_device_train_batch_size", "4", *QUICK])
    err = capsys.readouterr().err
    assert "a shard cannot be read" in err and "Fix or remove the malformed file" in err, err


@pytest.mark.slow
def test_two_processes_stream_and_resume_exactly(tmp_path):
    """2 processes (torch.distributed.run, gloo): each has its stream_state_<rank>.json; a run resumed from the
    uninterrupted run's checkpoint-3 ends with its weights."""
    import os
    import shutil
    import subprocess
    import sys

    from run_helpers import free_port

    folder = write_text_shards(tmp_path / "text")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def launch(out, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "modeling_data2vec_unified.trainer", "--dataset", str(folder), *TEXT_FLAGS,
               "--output_dir", str(out), "--max_steps", "6", "--save_steps", "3", "--per_device_train_batch_size",
               "4", "--no_probe", "--cpu", *QUICK, *extra]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    launch(tmp_path / "full")
    checkpoint = tmp_path / "full" / "checkpoint-3"
    states = [json.loads((checkpoint / f"stream_state_{r}.json").read_text()) for r in (0, 1)]
    assert all(s["num_processes"] == 2 and s["positions"]["0"]["batches"] == 3 for s in states)
    shutil.copytree(checkpoint, tmp_path / "resumed" / "checkpoint-3")
    launch(tmp_path / "resumed", "--resume_from_checkpoint", "latest")
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _same(batch):
    return batch


class _Blocks:
    """A `_Prepare` stand-in: row "s{s}r{i} ..." gives i % 3 examples (0: skipped), and rows r5 cannot be decoded."""

    column = "text"

    def __call__(self, row):
        name = row["text"].split()[0]
        if name.endswith("r5"):
            raise OSError("undecodable")
        return [f"{name}/{k}" for k in range(int(name.split("r")[1]) % 3)]


@pytest.mark.parametrize("stop", [1, 4, 7])
def test_a_resumed_stream_continues_with_the_same_batches_and_counts(tmp_path, stop):
    """The iterator alone, over epochs, with rows giving 0-2 examples and bad rows skipped: resumed from the position
    after batch `stop`, the following batches, their mask seeds and the positions (bad / seen counts included) are
    those of the uninterrupted stream."""
    folder = write_text_shards(tmp_path / "text", shards=3, rows=7)
    stream, _ = open_stream(str(folder), None, "train", None)

    def batches(positions, start, n):
        examples = StreamingExamples(stream, _Blocks(), 3, 0, 4, 0.5, "test")
        it = stream_batches(examples, _same, 0, start, positions, 0)
        out = []
        for _ in range(n):
            item = next(it)
            out.append((list(item[0]), item[0].seed, item[2]))
        return out

    full = batches({}, 0, 12)
    assert any(p.bad for *_, p in full) and len({p.epoch for *_, p in full}) > 1  # bad rows, several epochs
    assert any(p.emitted for *_, p in full[:8])  # a position inside a row
    resumed = batches({0: full[stop - 1][2]}, stop, 12 - stop)
    assert resumed == full[stop:]


def test_webdataset_tar_shards_stream(tmp_path, caplog):
    """datasets' "webdataset" builder reads local tar shards offline: images (.png members) train."""
    import tarfile

    rng = np.random.default_rng(0)
    folder = tmp_path / "tars"
    folder.mkdir()
    for s in range(2):
        with tarfile.open(folder / f"shard-{s}.tar", "w") as tar:
            for i in range(16):
                for name, data in ((f"{s}-{i:04d}.png", png(rng)), (f"{s}-{i:04d}.json", b'{"label": 1}')):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    (folder / "notes.txt").write_text("where these images came from\n")  # a stray file: left out, named
    config = tiny_config("vision", image_size=12, patch_size=4, num_channels=1)
    with caplog.at_level(logging.WARNING):
        data = d2v.streaming.load_streaming_data(config, str(folder), batch_size=1)
    assert any("left out 1 .txt file(s)" in r.getMessage() and "notes.txt" in r.getMessage() for r in caplog.records)
    epoch = []
    for batch, _, position in data.train:
        if position.epoch:
            break
        epoch += [e["pixel_values"] for e in batch]
    assert len(epoch) == 32 and all(tuple(x.shape) == (1, 12, 12) for x in epoch)
    assert len({x.numpy().tobytes() for x in epoch}) == 32  # 32 different images, each decoded once per epoch
    cli(["--dataset", str(folder), "--streaming", "--max_steps", "3", "--per_device_train_batch_size", "8",
         "--config_overrides", "image_size=12,patch_size=4,num_channels=1", "--output_dir", str(tmp_path / "out"),
         *QUICK])
    history = json.loads((tmp_path / "out" / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) >= 1 and all(math.isfinite(x) and x > 0 for x in losses)
    assert history[-1]["step"] == 3 and history[-1]["samples_per_second"] > 0


def _one_epoch(train: StreamingExamples) -> list[np.ndarray]:
    """The examples of epoch 0 (batch size 1, no workers)."""
    out = []
    for batch, _, position in train:
        if position.epoch:
            return out
        out += [e["input_values"] for e in batch]


@pytest.mark.filterwarnings("ignore:.*resampling audio from 8000 Hz")  # map-style's (the stream logs its own)
def test_audio_stream_drops_short_clips_resamples_and_equals_map_style(tmp_path, caplog):
    """Parquet shards of WAV bytes: an epoch of the stream holds exactly map-style's examples (the clip at 8 kHz
    resampled, the two 0.2 s clips dropped and counted in the log); the trainer pretrains on it."""
    from conftest import tiny_config

    folder = write_audio_shards(tmp_path / "clips", short={(0, 2), (1, 5)}, slow={(1, 1)})
    with caplog.at_level(logging.WARNING):
        data = d2v.streaming.load_streaming_data(tiny_config("audio"), str(folder), batch_size=1,
                                                 min_audio_seconds=0.5, buffer_size=4)
        streamed = _one_epoch(data.train)
    with pytest.warns(UserWarning, match="dropped 2 of 16 clips shorter than 0.5 s"):
        mapped = d2v.load_pretraining_data(tiny_config("audio"), str(folder), min_audio_seconds=0.5,
                                           cache_dir=str(tmp_path / "cache")).train
    expected = sorted((e["input_values"] for e in mapped), key=len)
    streamed = sorted(streamed, key=len)
    assert len(streamed) == 14 and [len(w) for w in streamed] == [len(w) for w in expected]
    assert all(np.array_equal(a, b) and a.dtype == np.float32 for a, b in zip(streamed, expected))
    messages = [r.getMessage() for r in caplog.records]
    assert any("resampling audio at 8000 Hz (first: clip-1-1.wav)" in m for m in messages)
    assert any("dropped 2 of 16 clips seen by this worker shorter than 0.5 s" in m and "clip-1-5.wav" in m
               for m in messages), messages
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cli(["--dataset", str(folder), *AUDIO_FLAGS, "--max_steps", "3", "--per_device_train_batch_size", "4",
             "--output_dir", str(tmp_path / "out"), *QUICK])
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert any("--streaming: dropped 1 of" in r.getMessage() for r in caplog.records)


@pytest.mark.filterwarnings("ignore:.*resampling audio from 8000 Hz")
@pytest.mark.parametrize("storage", ["wav bytes + Audio feature", "arrays", "float lists"])
def test_audio_stream_of_each_storage_equals_map_style(tmp_path, storage):
    """A parquet file as a Hub dataset stores audio (an `Audio` feature: torchcodec if datasets decoded it), arrays
    with their rate (stereo: averaged), or float lists at the model's rate: the stream's examples are map-style's."""
    import datasets

    from conftest import tiny_config

    clips, _ = synthesize_sounds(4, 16000)
    if storage.startswith("wav bytes"):
        column, cells = "audio", [{"bytes": wav(c, 16000), "path": f"{i}.wav"} for i, c in enumerate(clips)]
    elif storage == "arrays":  # one at 8 kHz (resampled), one stereo
        column = "speech"
        cells = [{"array": [c.tolist()] * (1 + (i == 1)), "sampling_rate": 8000 if i == 2 else 16000}
                 for i, c in enumerate(clips)]
    else:
        column, cells = "input_values", [c.tolist() for c in clips]
    table = pa.table({column: cells})
    if storage.endswith("Audio feature"):
        features = datasets.Features({column: datasets.Audio()})
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features.to_dict()}})})
    pq.write_table(table, tmp_path / "clips.parquet")
    config = tiny_config("audio")
    data = d2v.streaming.load_streaming_data(config, str(tmp_path / "clips.parquet"), batch_size=1)
    streamed = sorted(_one_epoch(data.train), key=len)
    mapped = d2v.load_pretraining_data(config, str(tmp_path / "clips.parquet"), cache_dir=str(tmp_path / "cache"))
    expected = sorted((e["input_values"] for e in mapped.train), key=len)
    assert len(streamed) == 4 and all(np.array_equal(a, b) for a, b in zip(streamed, expected))


def test_audio_stream_errors_name_the_fix(tmp_path, capsys):
    """--no_resample_audio with a clip at another rate stops the run (not a bad example, even with
    --skip_bad_examples); clips all too short stop it instead of streaming epochs of nothing forever."""
    folder = write_audio_shards(tmp_path / "slow", shards=1, rows=4, slow={(0, 0)})
    base = ["--dataset", str(folder), *AUDIO_FLAGS, "--max_steps", "2", "--per_device_train_batch_size", "4", *QUICK]
    with pytest.raises(SystemExit):
        cli([*base, "--output_dir", str(tmp_path / "out"), "--no_resample_audio", "--skip_bad_examples", "0.5"])
    err = capsys.readouterr().err
    assert "clip-0-0.wav is audio at 8000 Hz but the model expects 16000 Hz" in err and "--no_resample_audio" in err
    with pytest.raises(SystemExit):
        cli([*base, "--output_dir", str(tmp_path / "out2"), "--min_audio_seconds", "3"])
    err = capsys.readouterr().err
    assert "4 clip(s) too short" in err and "a smaller --min_audio_seconds" in err, err


def test_webdataset_tar_of_wav_files_streams(tmp_path):
    """datasets' webdataset builder declares .wav members an Audio feature, which wants torchcodec even undecoded:
    they are read as {"bytes", "path"} structs, decoded with soundfile (here in DataLoader workers)."""
    import tarfile

    clips, _ = synthesize_sounds(16, 16000)
    folder = tmp_path / "tars"
    folder.mkdir()
    for s in range(2):
        with tarfile.open(folder / f"shard-{s}.tar", "w") as tar:
            for i, clip in enumerate(clips[8 * s : 8 * s + 8]):
                for name, data in ((f"{s}-{i:04d}.wav", wav(clip, 16000)), (f"{s}-{i:04d}.json", b'{"label": 1}')):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    cli(["--dataset", str(folder), *AUDIO_FLAGS, "--max_steps", "3", "--per_device_train_batch_size", "4",
         "--dataloader_num_workers", "2", "--output_dir", str(tmp_path / "out"), *QUICK])  # a shard per worker
    history = json.loads((tmp_path / "out" / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert history[-1]["step"] == 3 and losses and all(math.isfinite(x) and x > 0 for x in losses)
    # the clips decoded from the tar members are the clips written (each 0.5 s crop lies inside its source clip)
    data = d2v.streaming.load_streaming_data(tiny_config("audio"), str(folder), batch_size=1)
    decoded = _one_epoch(data.train)
    assert sorted(len(x) for x in decoded) == sorted(len(c) for c in clips)
