"""`--torch_compile`: the compiled regions give the eager model's losses and gradients, the collator's length buckets
bound the shapes (hence the recompiles, counted here from dynamo's own counter), and accelerate's dynamo setting
means the same thing. The `aot_eager` backend traces and compiles the graphs (dynamo + AOTAutograd, the forward and
backward graphs inductor would lower) in seconds; inductor's kernels are timed in bench/compile_vs_eager.py."""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import modeling_data2vec_unified as d2v
import pytest
import torch
import torch._dynamo
from modeling_data2vec_unified.compiling import compile_regions, compiled_graphs
from modeling_data2vec_unified.masking import (
    DataCollatorForData2VecPretraining,
    SeededBatch,
    audio_length_bucket,
    text_max_length,
)
from modeling_data2vec_unified.modeling_data2vec import Data2VecLayer
from torch._dynamo.utils import counters

from conftest import tiny_config, tiny_examples
from run_helpers import free_port, make_trainer, tiny_data


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def test_audio_length_buckets_are_four_per_doubling_and_keep_80_percent():
    for n in range(8, 70_000, 3):
        down, up = audio_length_bucket(n), audio_length_bucket(n, up=True)
        assert down <= n <= up and down >= 0.8 * n and up <= 1.25 * n, n
        for b in (down, up):  # 2^k (1 + j / 4), j in 0..3
            k = b.bit_length() - 1
            assert (b - 2**k) % (2**k // 4) == 0, b
    assert sorted({audio_length_bucket(n) for n in range(16_000, 32_000)}) == [14336, 16384, 20480, 24576, 28672]


def test_the_collator_brings_lengths_to_a_few_buckets():
    text = tiny_config("text")  # 40 positions: 38 tokens at most, buckets of 10
    longest = text_max_length(text)
    collate = DataCollatorForData2VecPretraining(text, bucket_lengths=True)
    lengths = {collate.collate_inputs([{"input_ids": [0] + [5] * n + [2]}])["input_ids"].shape[1]
               for n in range(1, longest - 1)}
    assert lengths == {10, 20, 30, 38} and longest == 38
    audio = tiny_config("audio")
    crop = DataCollatorForData2VecPretraining(audio, bucket_lengths=True)
    pad = DataCollatorForData2VecPretraining(audio, bucket_lengths=True, audio_crop="pad")
    for n in (2500, 3000, 3333, 5000):
        waves = [{"input_values": torch.randn(n)}, {"input_values": torch.randn(n + 700)}]
        assert crop(SeededBatch(waves, (0,)))["input_values"].shape[1] == audio_length_bucket(n)
        batch = pad(SeededBatch(waves, (0,)))
        assert batch["input_values"].shape[1] == audio_length_bucket(n + 700, up=True)
        assert batch["attention_mask"].sum(1).tolist() == [n, n + 700]
    plain = DataCollatorForData2VecPretraining(audio)
    assert plain([{"input_values": torch.randn(3333)}])["input_values"].shape[1] == 3333


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["data2vec", "data2vec2"])
@pytest.mark.parametrize("modality", ["text", "vision", "audio"])
def test_compiled_regions_give_the_eager_losses_and_gradients(modality, algorithm):
    """Layer drop and dropout on (the coins are drawn between the compiled layers, from the same RNG): three steps'
    losses and gradients equal the eager model's; the teacher's layers are compiled too."""
    extra = dict(clone_batch=2) if algorithm == "data2vec2" else {}
    config = tiny_config(modality, algorithm=algorithm, layerdrop=0.3, hidden_dropout_prob=0.1, **extra)
    torch.manual_seed(0)
    eager = d2v.Data2VecForPreTraining(config).train()
    compiled = copy.deepcopy(eager)
    n = compile_regions(compiled, backend="aot_eager")
    layers = [m for m in compiled.teacher.modules() if isinstance(m, Data2VecLayer)]
    assert layers and all(m._compiled_call_impl is not None for m in layers)
    assert n >= 2 * config.num_hidden_layers
    batch = DataCollatorForData2VecPretraining(config, seed=0, bucket_lengths=True)(tiny_examples(modality))
    for step in range(3):
        for model in (eager, compiled):
            model.zero_grad()
            torch.manual_seed(step)
            model.loss_ = model(**batch, check_inputs=False).loss
            model.loss_.backward()
        torch.testing.assert_close(compiled.loss_, eager.loss_, rtol=1e-6, atol=1e-7)
        for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
    graphs = compiled_graphs()
    assert 0 < graphs <= 8, graphs  # one shape: a graph per region kind and mode (+ vision's drop-path rates)


def _shapes(trainer, steps: int) -> set:
    batches = iter(trainer.dataloader(0))
    return {tuple(next(batches)["input_values"].shape) for _ in range(steps)}


@pytest.mark.slow
def test_the_compiled_trainer_equals_eager_and_recompiles_once_per_bucket(tmp_path):
    """Audio clips of 2400-3600 samples, cropped to the batch's shortest: without buckets about every step has its
    own length (a recompile each); with them at most 4 lengths. The compiled run logs the eager run's losses step for
    step, and its graph count is 3 per length seen (the student's conv stack and layers, the teacher's layers)."""
    kw = dict(max_steps=12, bucket_lengths=True)
    eager = make_trainer(tmp_path / "eager", "audio", data=tiny_data("audio", n=48), **kw)
    eager.train()
    compiled = make_trainer(tmp_path / "compiled", "audio", data=tiny_data("audio", n=48), torch_compile=True,
                            torch_compile_backend="aot_eager", **kw)
    assert compiled.collator.bucket_lengths
    compiled.train()
    shapes = _shapes(compiled, 12)
    assert len(shapes) <= 4 and len(_shapes(make_trainer(tmp_path / "plain", "audio", data=tiny_data("audio", n=48)),
                                            12)) > 6
    losses = [[h["loss"] for h in t.log_history if "loss" in h] for t in (eager, compiled)]
    assert len(losses[0]) == 12 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    graphs = [h["compiled_graphs"] for h in compiled.log_history if "compiled_graphs" in h]
    assert graphs[-1] == 3 * len(shapes) and graphs == sorted(graphs), graphs


def test_accelerate_dynamo_backend_means_torch_compile(tmp_path, monkeypatch):
    """`accelerate launch --dynamo_backend aot_eager` (ACCELERATE_DYNAMO_BACKEND): the trainer compiles by region with
    buckets, and accelerate's `prepare` does not compile the whole model again."""
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "AOT_EAGER")
    trainer = make_trainer(tmp_path, "text", max_steps=2)
    assert trainer.args.torch_compile and trainer.args.torch_compile_backend == "aot_eager"
    assert trainer.collator.bucket_lengths
    trainer.train()
    assert not hasattr(trainer.model, "_orig_mod")  # not wrapped whole by accelerate
    assert any(m._compiled_call_impl is not None for m in trainer.unwrapped.modules() if isinstance(m, Data2VecLayer))
    assert trainer.log_history[-1]["compiled_graphs"] > 0


@pytest.mark.parametrize("flags,message", [
    (dict(torch_compile_backend="inductr"), r"--torch_compile_backend 'inductr' is not a torch.compile backend.*use "
                                            r"inductor"),
    (dict(torch_compile_mode="fast"), r"--torch_compile_mode must be one of default, reduce-overhead"),
])
def test_a_bad_compile_flag_is_refused_before_anything_runs(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(tmp_path, "text", torch_compile=True, **flags)


@pytest.mark.slow
def test_torch_compile_with_fsdp_equals_fsdp_eager(tmp_path):
    """Two processes, FSDP2 shards over compiled layers (compiled first, in place, so FSDP's hooks still run):
    the same losses as the eager FSDP run. Launched without --cpu on a machine without an accelerator: the run
    is still distributed (2 processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    logs = []
    for extra in ([], ["--torch_compile", "--torch_compile_backend", "aot_eager"]):
        out = tmp_path / f"run{len(logs)}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "modeling_data2vec_unified.trainer", "--fsdp", "--modality", "vision",
               "--max_steps", "4", "--logging_steps", "1", "--max_examples", "64", "--per_device_train_batch_size",
               "4", "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true", "--probe", "false",
               "--model_size", "tiny", *extra]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "x 2 processes" in result.stderr
        logs.append([float(line.split(" loss ")[1].split()[0]) for line in result.stderr.splitlines()
                     if " step " in line and " loss " in line])
    assert len(logs[0]) == 4 and logs[1] == pytest.approx(logs[0], rel=1e-5)
    assert not math.isnan(sum(logs[1]))
