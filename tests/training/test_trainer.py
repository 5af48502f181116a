"""The accelerate-driven trainer: exact resume, checkpoints, non-finite steps, collapse, the saved result, trackers,
the Hub upload. Tiny configs and in-memory data; the CLI on built-in data is in test_trainer_cli.py."""

import json
import math
import re
from pathlib import Path

import modeling_data2vec_unified as d2v
import pytest
import torch
from accelerate.utils import set_seed
from modeling_data2vec_unified.masking import SeededBatch
from modeling_data2vec_unified.probe import linear_probe
from modeling_data2vec_unified.trainer import (
    EpochBatchSampler,
    NonFiniteLossError,
    PretrainingArguments,
    parse_overrides,
)
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForPreTraining

from conftest import tiny_config
from run_helpers import NaNAtCall, make_trainer, tiny_data, weights


def test_ema_steps_once_per_optimizer_step(tmp_path):
    t = make_trainer(tmp_path, "vision", max_steps=3, gradient_accumulation_steps=3)
    t.train()
    assert t.unwrapped.teacher.num_updates == 3
    assert t.state.micro_batches == 9


def test_nonfinite_loss_stops_without_poisoning(tmp_path):
    t = make_trainer(tmp_path, "vision", max_steps=6, logging_steps=3)
    model = t.model
    model.forward_loss = NaNAtCall(model, at=2)
    snapshots = {}
    original = model.update_teacher

    def update_teacher(skip=None):
        decay = original(skip=skip)
        snapshots[model.teacher.num_updates] = weights(t)
        return decay

    model.update_teacher = update_teacher
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        t.train()
    # step 2's update was skipped on the device: student and teacher after step 2 equal those after step 1
    for k, v in snapshots[1].items():
        assert torch.equal(v, snapshots[2][k]), k
    for k, v in snapshots[3].items():
        assert torch.isfinite(v).all(), k
    assert not torch.equal(snapshots[3]["student.regression_head.proj.weight"],
                           snapshots[2]["student.regression_head.proj.weight"])  # step 3 trained again


def test_skip_nonfinite_finishes(tmp_path):
    t = make_trainer(tmp_path, "text", max_steps=4, logging_steps=4, skip_nonfinite=True)
    t.model.forward_loss = NaNAtCall(t.model, at=3)
    metrics = t.train()
    assert metrics["nonfinite_steps"] == 1
    assert all(torch.isfinite(v).all() for v in weights(t).values() if v.is_floating_point())


def test_collapse_stops_the_run(tmp_path):
    config = tiny_config("vision", min_target_var=50.0)  # no target spread can reach this
    t = make_trainer(tmp_path, "vision", config=config, max_steps=6, logging_steps=2, collapse_check_after=2)
    with pytest.raises(d2v.Data2VecCollapseError, match="target_var"):
        t.train()
    assert t.state.global_step == 2


def record_outputs(trainer) -> list[dict]:
    """Every forward's loss, spreads, masked fraction and geometry, and every step's gradient norm, as the loop saw
    them (read after the fact: the recorder may sync, the loop does not)."""
    record, forward, clip = [], trainer.model.forward, trainer.accelerator.clip_grad_norm_

    def recording_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        mask = kwargs.get("mask_time_indices", kwargs.get("bool_masked_pos"))
        record.append({"loss": out.loss.item(), "target_var": out.target_var.item(), "pred_var": out.pred_var.item(),
                       "masked_fraction": out.masked_fraction.item(), "positions": mask.numel(),
                       "examples": len(mask)})
        return out

    def recording_clip(*args, **kwargs):
        norm = clip(*args, **kwargs)
        record[-1]["grad_norm"] = norm.item()
        return norm

    trainer.model.forward, trainer.accelerator.clip_grad_norm_ = recording_forward, recording_clip
    return record


def test_result_loads_with_auto_classes_and_logs(tmp_path, capsys):
    t = make_trainer(tmp_path, "audio", max_steps=3, report_to="tensorboard", probe=True)
    record = record_outputs(t)
    metrics = t.train()
    # 8 held-out examples: the probe says how uncertain it is (a binomial 95% interval of about +-30 points or more)
    assert re.search(r"note: 8 held-out examples: one example is 12.5%.*uncertain by about \+-([3-9]\d)%",
                     capsys.readouterr().out)
    assert AutoModel.from_pretrained(tmp_path).__class__ is d2v.Data2VecAudioModel
    pretraining = AutoModelForPreTraining.from_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    for k, v in t.unwrapped.state_dict().items():
        assert torch.equal(saved[k], v), k
    assert pretraining.__class__ is d2v.Data2VecForPreTraining
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert set(probe) >= {"pretrained", "random_init", "raw_inputs"}
    # the probe's numbers are those of the saved student and of the run's initial weights, recomputed
    train, test = t.data.probe.train, t.data.probe.test
    assert metrics["probe_pretrained"] == probe["pretrained"] == linear_probe(
        AutoModel.from_pretrained(tmp_path), train, test, top_layers=(2,))[2]
    set_seed(0)
    assert metrics["probe_random_init"] == probe["random_init"] == linear_probe(
        d2v.Data2VecForPreTraining(t.config).data2vec, train, test, top_layers=(2,))[2]
    # each logged step's metrics, recomputed from what the step's forward (one micro-batch) and clip returned
    config, history = t.config, t.log_history
    assert [h["step"] for h in history] == [1, 2, 3] and len(record) == 3
    assert {k: v for k, v in history[-1].items() if k not in ("step", "elapsed_seconds")} == {
        k: metrics[k] for k in history[-1] if k not in ("step", "elapsed_seconds")}
    assert 0 < history[0]["elapsed_seconds"] < history[1]["elapsed_seconds"] < history[2]["elapsed_seconds"]
    for h, seen in zip(history, record):
        for key in ("loss", "target_var", "pred_var", "masked_fraction", "grad_norm"):
            assert h[key] == pytest.approx(seen[key], rel=1e-6), (h["step"], key)
        assert h["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * h["step"] / 3)), abs=1e-12)  # cosine
        assert h["ema_decay"] == d2v.ema_decay_at(h["step"] - 1, config.ema_decay, config.ema_end_decay,
                                                  config.ema_anneal_end_step)
        # tokens (audio frames) and samples are counted over the same interval: their ratio is frames per clip
        assert h["tokens_per_second"] / h["samples_per_second"] == pytest.approx(
            seen["positions"] / seen["examples"], rel=1e-6)
        assert h["nonfinite_steps"] == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "logs").rglob("events.out.tfevents.*")).parent)).Reload()
    assert {"loss", "target_var", "grad_norm", "ema_decay"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([h["loss"] for h in history], rel=1e-6)


def test_probe_steps_log_the_probe_change_no_weight_and_draw_curves(tmp_path, monkeypatch):
    """--probe_steps 2 on a 6-step text run (dropout on: a random number drawn by the probe, or a student left in eval
    mode, would change the weights): the probe runs at steps 2, 4, 6 on the first PERIODIC_PROBE_EXAMPLES examples,
    logs probe/pretrained (the references once), and the run ends with the weights of a run without probes, and
    with curves.json (what was logged) and curves.png."""
    import PIL.Image
    from modeling_data2vec_unified.training import evaluation

    monkeypatch.setattr(evaluation, "PERIODIC_PROBE_EXAMPLES", (12, 6))  # of the probe's 16 / 8
    plain = make_trainer(tmp_path / "plain", "text", max_steps=6, logging_steps=2)
    plain.train()
    probed = make_trainer(tmp_path / "probed", "text", max_steps=6, logging_steps=2, probe_steps=2)
    logged, log = [], probed.accelerator.log

    def recording_log(values, step=None, **kwargs):
        logged.append((step, dict(values)))
        return log(values, step=step, **kwargs)

    probed.accelerator.log = recording_log
    probed.train()
    a, b = weights(plain), weights(probed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    probes = [(step, values) for step, values in logged if "probe/pretrained" in values]
    assert [step for step, _ in probes] == [2, 4, 6]
    assert set(probes[0][1]) == {"probe/pretrained", "probe/random_init", "probe/raw_inputs"}
    assert all(set(values) == {"probe/pretrained"} for _, values in probes[1:])
    # the last probe is the final student's, the reference the run's initial weights, both on the subset
    train, test = probed.data.probe.train[:12], probed.data.probe.test[:6]
    assert probes[-1][1]["probe/pretrained"] == linear_probe(probed.unwrapped.data2vec, train, test)[2]
    set_seed(0)
    assert probes[0][1]["probe/random_init"] == linear_probe(
        d2v.Data2VecForPreTraining(probed.config).data2vec, train, test)[2]
    assert [h["step"] for h in probed.log_history if "probe/pretrained" in h] == [2, 4, 6]

    curves = json.loads((tmp_path / "probed" / "curves.json").read_text())
    probe = curves["probe"]
    assert probe["step"] == [2, 4, 6] and probe["pretrained"] == [values["probe/pretrained"] for _, values in probes]
    assert (probe["random_init"], probe["raw_inputs"]) == (probes[0][1]["probe/random_init"],
                                                           probes[0][1]["probe/raw_inputs"])
    assert (probe["train_examples"], probe["test_examples"]) == (12, 6)
    trained = [values for step, values in logged if "loss" in values]
    assert curves["step"] == [2, 4, 6] and curves["loss"] == [values["loss"] for values in trained]
    assert curves["target_var"] == [values["target_var"] for values in trained]
    assert curves["pred_var"] == [values["pred_var"] for values in trained]
    assert curves["elapsed_seconds"] == sorted(curves["elapsed_seconds"]) and curves["elapsed_seconds"][0] > 0
    with PIL.Image.open(tmp_path / "probed" / "curves.png") as image:
        image.load()
        assert image.format == "PNG" and image.width >= 500 and image.height >= 500
    assert json.loads((tmp_path / "plain" / "curves.json").read_text())["probe"] is None  # no probes: two panels


def test_bf16_keeps_teacher_and_targets_fp32(tmp_path):
    t = make_trainer(tmp_path, "vision", max_steps=2, mixed_precision="bf16")
    seen, forward, forward_teacher = [], t.model.forward, t.model.forward_teacher

    def recording_teacher(*args, **kwargs):
        targets = forward_teacher(*args, **kwargs)
        seen.append({"targets": targets.dtype, "teacher": {p.dtype for p in t.model.teacher.parameters()},
                     "autocast": torch.is_autocast_enabled(t.accelerator.device.type)})
        return targets

    def recording_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        seen[-1].update(predictions=out.predictions.dtype, loss=out.loss.dtype)
        return out

    t.model.forward_teacher, t.model.forward = recording_teacher, recording_forward
    t.train()
    assert len(seen) == 2
    for step in seen:  # inside bf16 autocast the student predicts in bf16; targets, teacher and loss stay fp32
        assert step == {"targets": torch.float32, "teacher": {torch.float32}, "autocast": True,
                        "predictions": torch.bfloat16, "loss": torch.float32}, step
    assert all(p.dtype == torch.float32 for p in t.unwrapped.teacher.parameters())
    assert math.isfinite(t.log_history[-1]["loss"])


def test_push_to_hub_uploads_the_result_only(tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoUrl

    calls = {}
    monkeypatch.setattr(HfApi, "create_repo",
                        lambda self, repo_id, **kw: calls.setdefault("repo", (repo_id, kw)) and RepoUrl(
                            f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(HfApi, "create_commit",
                        lambda self, repo_id, operations, **kw: calls.setdefault("files", {
                            op.path_in_repo: Path(op.path_or_fileobj).read_text(errors="replace")
                            for op in operations}))
    t = make_trainer(tmp_path / "run", "vision", max_steps=2, save_steps=1, push_to_hub=True,
                     hub_model_id="someone/d2v-tiny")
    t.train()
    assert calls["repo"][0] == "someone/d2v-tiny"
    # the model, the code that loads it without this package and the card (the processor: test_trainer_cli.py)
    assert {"config.json", "model.safetensors", "modeling_data2vec.py", "modeling_data2vec_heads.py",
            "README.md"} <= set(calls["files"])
    assert not any(f.startswith("checkpoint-") for f in calls["files"])
    card = calls["files"]["README.md"]
    assert "- data2vec" in card and "- self-supervised" in card
    assert "| steps | 2 |" in card and "| dataset | tiny |" in card and "| optimizer | AdamW lr 0.001" in card


def test_sampler_shards_and_resumes():
    full = EpochBatchSampler(20, 3, seed=1)
    assert full.batches_per_epoch == 6
    it = iter(full)
    run = [next(it) for _ in range(14)]
    assert sorted(sum(run[:6], [])) == sorted(set(sum(run[:6], [])))  # an epoch has no repeats
    assert run[6] != run[0]  # a new permutation per epoch
    later = iter(EpochBatchSampler(20, 3, seed=1, start=9))
    assert [next(later) for _ in range(5)] == run[9:14]
    assert [b.seed for b in run[:2]] == [(1, 0, 0, 0), (1, 0, 1, 0)]
    ranks = [iter(EpochBatchSampler(20, 3, seed=1, num_processes=2, process_index=r)) for r in (0, 1)]
    first = [next(r) for r in ranks]
    assert not set(first[0]) & set(first[1]) and first[0].seed != first[1].seed
    with pytest.raises(ValueError, match="fewer than one batch"):
        EpochBatchSampler(5, 3, num_processes=2)


def test_parse_overrides():
    assert parse_overrides("mask_prob=0.5,target_layer_norm=layer,conv_dim=[8,8],use_mask_token=true") == {
        "mask_prob": 0.5, "target_layer_norm": "layer", "conv_dim": [8, 8], "use_mask_token": True}
    with pytest.raises(ValueError, match="name=value"):
        parse_overrides("mask_prob")


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(tmp_path):
    data = tiny_data("text")
    data.config_updates = {"vocab_size": 500}
    with pytest.raises(ValueError, match="vocab_size model=99 data=500"):
        make_trainer(tmp_path, "text", data=data)


def _record_step_gradients(monkeypatch) -> list[torch.Tensor]:
    """Patches AdamW.step to record the flat gradient it is about to apply (after clipping), then steps."""
    seen, step = [], torch.optim.AdamW.step

    def recording_step(self, *a, **kw):
        seen.append(torch.cat([p.grad.detach().flatten() for group in self.param_groups for p in group["params"]
                               if p.grad is not None]))
        return step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    return seen


def test_gradients_are_clipped_to_max_grad_norm(tmp_path, monkeypatch):
    """The optimizer sees gradients of norm <= --max_grad_norm (and the unclipped run's are larger, so the bound
    bit); a negative bound, which would scale every gradient by a negative factor, is refused."""
    seen = _record_step_gradients(monkeypatch)
    make_trainer(tmp_path / "free", "vision", max_steps=2, max_grad_norm=0.0).train()
    make_trainer(tmp_path / "clipped", "vision", max_steps=2, max_grad_norm=1e-3).train()
    free, clipped = [g.norm().item() for g in seen[:2]], [g.norm().item() for g in seen[2:]]
    assert min(free) > 0.01 and max(clipped) <= 1e-3 * (1 + 1e-4), (free, clipped)
    with pytest.raises(ValueError, match="max_grad_norm must be the clipping norm"):
        PretrainingArguments(max_grad_norm=-1.0).resolve()


def test_accumulating_two_micro_batches_equals_one_batch_of_both(tmp_path, monkeypatch):
    """Two micro-batches of 4 accumulated give the gradient of one batch of 8 (same examples, same masks, dropout
    off; every image masks the same number of patches, so the mean over masked patches splits evenly)."""
    seen = _record_step_gradients(monkeypatch)
    config = tiny_config("vision", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0)
    one = make_trainer(tmp_path / "one", "vision", config=config, max_steps=1, per_device_train_batch_size=8)
    batch = one.collator(SeededBatch([one.data.train[i] for i in range(8)], (0,)))
    assert len(set(batch["bool_masked_pos"].sum(1).tolist())) == 1  # the even split the equality rests on
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    two = make_trainer(tmp_path / "two", "vision", config=config, max_steps=1, per_device_train_batch_size=4,
                       gradient_accumulation_steps=2)
    for trainer, micro_batches in ((one, [batch]), (two, halves)):
        queue = iter(micro_batches)
        trainer._next_batch = lambda batches, queue=queue: next(queue)  # the step trains on these micro-batches
        trainer.train()
    assert len(seen) == 2 and seen[0].norm() > 0
    torch.testing.assert_close(seen[1], seen[0], rtol=1e-4, atol=1e-7)
