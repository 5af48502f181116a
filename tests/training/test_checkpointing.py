"""Checkpoints (`training/checkpointing.py`, `Checkpointer`): a resumed run continues exactly (weights, teacher,
optimizer, schedule, RNGs, data position; after kill -9, SIGTERM and --max_train_time; data2vec 1.0 and 2.0), saves
are atomic and pruned, and what a resume must not read is refused naming the fix (another model's or algorithm's
checkpoint, other schedule flags, damaged files, planted pickles, another run's output_dir)."""

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import modeling_data2vec_unified as d2v
import pytest
import torch
from modeling_data2vec_unified.trainer import (
    find_checkpoint,
)
from safetensors.torch import load_file
from transformers import AutoModelForPreTraining

from conftest import tiny_config
from run_helpers import kill_9_at, make_trainer, resume_equals_uninterrupted, run_cli, v2_config, weights


@pytest.mark.parametrize("modality,accumulate", [("text", 1), ("vision", 2), ("audio", 1)])
def test_resume_continues_exactly(tmp_path, modality, accumulate):
    """A run stopped at step 5 and resumed to 10 gives the losses and final weights of an uninterrupted 10-step run
    (text has dropout on, so the restored RNG matters; vision accumulates gradients)."""
    kw = dict(max_steps=10, save_steps=5, gradient_accumulation_steps=accumulate)
    full = make_trainer(tmp_path / "full", modality, **kw)
    full.train()
    first = make_trainer(tmp_path / "split", modality, **kw)
    first.train(stop_at_step=5)
    assert first.state.global_step == 5 and (tmp_path / "split" / "checkpoint-5").is_dir()
    resumed = make_trainer(tmp_path / "split", modality, resume_from_checkpoint="latest", **kw)
    resumed.train()
    def losses(trainer):
        return [(h["step"], h["loss"]) for h in trainer.log_history]

    # the resumed run's history starts with the checkpoint's (its curves cover the whole run)
    assert losses(first) == losses(full)[:5] and losses(resumed) == losses(full)
    assert resumed.unwrapped.teacher.num_updates == 10
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the weights did move from their start
    start = weights(make_trainer(tmp_path / "start", modality))
    assert not all(torch.equal(start[k], a[k]) for k in a if k.startswith("student."))


def test_checkpoints_atomic_limit_and_latest(tmp_path):
    t = make_trainer(tmp_path, "vision", max_steps=8, save_steps=2, save_total_limit=2)
    t.train()
    names = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert names == ["checkpoint-6", "checkpoint-8"]
    ckpt = tmp_path / "checkpoint-8"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == 8 and state["modality"] == "vision"
    assert {"model.safetensors", "optimizer.bin"} <= {p.name for p in ckpt.iterdir()}
    # a save killed half-way leaves checkpoint-N.tmp, which is never taken for the latest
    (tmp_path / "checkpoint-10.tmp").mkdir()
    (tmp_path / "checkpoint-12").mkdir()  # no trainer_state.json: not complete either
    assert find_checkpoint(tmp_path, "latest") == ckpt
    assert find_checkpoint(tmp_path / "nothing-here", "latest") is None


def test_bad_checkpoints_refused(tmp_path):
    make_trainer(tmp_path / "v", "vision", max_steps=2, save_steps=2).train()
    with pytest.raises(ValueError, match="not a data2vec-pretrain checkpoint"):
        make_trainer(tmp_path / "x", "vision", resume_from_checkpoint=str(tmp_path / "v"))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        make_trainer(tmp_path / "x", "vision", resume_from_checkpoint=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="another model"):
        make_trainer(tmp_path / "x", "text", resume_from_checkpoint=str(tmp_path / "v" / "checkpoint-2"))


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
    killed = run_cli(tmp_path / "killed")
    kill_9_at(killed, tmp_path / "killed" / "checkpoint-10")
    resume_equals_uninterrupted(tmp_path, "killed")
    teacher = [load_file(max((tmp_path / run).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
                         / "teacher.safetensors") for run in ("full", "killed")]
    assert teacher[0].keys() == teacher[1].keys() and all(torch.equal(teacher[0][k], teacher[1][k]) for k in teacher[0])


@pytest.mark.parametrize("modality,accumulate", [("text", 1), ("vision", 2), ("audio", 1)])
def test_data2vec2_resume_continues_exactly(tmp_path, modality, accumulate):
    """Stopped at step 3 and resumed to 6: the losses and the final student, decoder and teacher of an uninterrupted
    run (text and audio have dropout and the decoder draws noise: the restored RNGs matter)."""
    kw = dict(max_steps=6, save_steps=3, gradient_accumulation_steps=accumulate)
    config = v2_config(modality)
    full = make_trainer(tmp_path / "full", modality, config=config, **kw)
    assert full.args.algorithm == "data2vec2"  # the model passed in brings its algorithm
    full.train()
    make_trainer(tmp_path / "split", modality, config=config, **kw).train(stop_at_step=3)
    resumed = make_trainer(tmp_path / "split", modality, config=config, resume_from_checkpoint="latest", **kw)
    resumed.train()
    assert [h["loss"] for h in resumed.log_history] == [h["loss"] for h in full.log_history]
    assert all(h["masked_copies"] == 3 for h in full.log_history)
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys() and any(k.startswith("student.decoder.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    start = weights(make_trainer(tmp_path / "start", modality, config=config))
    assert not torch.equal(start["student.decoder.proj.proj.weight"], a["student.decoder.proj.proj.weight"])


@pytest.mark.slow
def test_data2vec2_kill_9_then_resume_equals_uninterrupted(tmp_path):
    flags = ("--algorithm", "data2vec2", "--max_steps", "20")
    kill_9_at(run_cli(tmp_path / "killed", *flags), tmp_path / "killed" / "checkpoint-10")
    a = resume_equals_uninterrupted(tmp_path, "killed", *flags)
    assert any(k.startswith("decoder.") for k in a)
    t = [load_file(tmp_path / run / "checkpoint-20" / "teacher.safetensors") for run in ("full", "killed")]
    assert t[0].keys() == t[1].keys() and all(torch.equal(t[0][k], t[1][k]) for k in t[0])


def test_a_1_0_checkpoint_is_refused_by_a_2_0_run_and_resume(tmp_path):
    t = make_trainer(tmp_path / "one", "vision", max_steps=2, save_steps=2)
    t.train()
    with pytest.raises(ValueError, match="--algorithm"):
        make_trainer(tmp_path / "one", "vision", config=v2_config("vision"), max_steps=4,
                     resume_from_checkpoint="latest")
    with pytest.raises(ValueError, match="--algorithm data2vec2 .*or leave it out"):
        make_trainer(tmp_path / "two", "vision", config=v2_config("vision"), algorithm="data2vec")


@pytest.mark.parametrize("saved,given", [("data2vec2", "data2vec"), ("data2vec", "data2vec2")])
def test_a_checkpoint_loaded_with_the_other_algorithm_is_refused(tmp_path, saved, given):
    make = {"data2vec2": v2_config, "data2vec": tiny_config}
    d2v.Data2VecForPreTraining(make[saved]("audio")).save_pretrained(tmp_path)
    for cls in (d2v.Data2VecForPreTraining, d2v.Data2VecAudioModel, d2v.Data2VecForCTC):
        with pytest.raises(ValueError, match=f"holds a {saved} model .* algorithm='{given}'.*leave config= out"):
            cls.from_pretrained(tmp_path, config=make[given]("audio"))
    assert AutoModelForPreTraining.from_pretrained(tmp_path).config.algorithm == saved  # its own config: fine


def test_a_fresh_run_refuses_another_runs_checkpoints_or_overwrites_them(tmp_path):
    make_trainer(tmp_path, max_steps=4, save_steps=2).train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    with pytest.raises(ValueError, match="--resume_from_checkpoint latest.*--overwrite_output_dir"):
        make_trainer(tmp_path, max_steps=3, save_steps=1)
    again = make_trainer(tmp_path, max_steps=3, save_steps=1, overwrite_output_dir=True)
    assert not list(tmp_path.glob("checkpoint-*"))  # the other run's checkpoints are gone before this one starts
    again.train()
    # this run's newest checkpoints are kept (not pruned as older than the other run's checkpoint-4)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]


def test_resuming_with_other_schedule_flags_is_refused(tmp_path):
    make_trainer(tmp_path, max_steps=4, save_steps=2).train(stop_at_step=2)
    for flag, value in (("max_steps", 8), ("learning_rate", 5e-4), ("per_device_train_batch_size", 2)):
        with pytest.raises(ValueError, match=f"--{flag} .* \\(now {value}\\).*--init_from"):
            make_trainer(tmp_path, **{"max_steps": 4, "save_steps": 2, flag: value, "resume_from_checkpoint": "latest"})
    # a warm-up that came from --warmup_ratio is named as such (the user never typed --warmup_steps)
    with pytest.raises(ValueError, match=r"--warmup_steps 0 \(now 2; without --warmup_steps it is --warmup_ratio x"):
        make_trainer(tmp_path, max_steps=4, save_steps=2, warmup_ratio=0.5, resume_from_checkpoint="latest")
    make_trainer(tmp_path, max_steps=4, save_steps=2, resume_from_checkpoint="latest").train()  # the same: fine


def test_max_train_time_stops_with_a_checkpoint_that_resumes(tmp_path):
    t = make_trainer(tmp_path / "a", max_steps=100000, save_steps=100000, max_train_time="1.5")
    began = time.perf_counter()
    t.train()
    assert time.perf_counter() - began < 30
    step = t.state.global_step
    assert 0 < step < 100000 and (tmp_path / "a" / f"checkpoint-{step}").is_dir()
    assert not (tmp_path / "a" / "model.safetensors").exists()  # stopped, not finished
    resumed = make_trainer(tmp_path / "a", max_steps=100000, save_steps=100000, max_train_time="1.5",
                           resume_from_checkpoint="latest")
    assert resumed.resume_from.name == f"checkpoint-{step}"


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_the_resume_is_exact(tmp_path):
    """A real process gets a real SIGTERM mid-run: it finishes the step, saves it, exits 143 and prints the resume
    command; resuming gives the weights of an uninterrupted run."""
    flags = ("--save_steps", "5", "--max_steps", "80", "--per_device_train_batch_size", "128")  # ~4 s of steps
    proc = run_cli(tmp_path / "stopped", *flags)
    deadline = time.time() + 240
    while not (tmp_path / "stopped" / "checkpoint-5").is_dir():  # the loop is running
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    stderr = proc.stderr.read()
    step = int(stderr.split("stopped at step ")[1].split()[0])
    assert f"stopped at step {step} of 80 (SIGTERM); saved" in stderr and 5 <= step < 80, stderr[-2000:]
    assert (tmp_path / "stopped" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert not (tmp_path / "stopped" / "model.safetensors").exists()
    assert stderr.split("Resume with: ")[1].startswith("data2vec-pretrain --output_dir")
    assert "--resume_from_checkpoint latest" in stderr.split("Resume with:")[1]
    resume_equals_uninterrupted(tmp_path, "stopped", *flags)


class Payload:
    """A hostile pickle: unpickling it creates the folder `marker` (it could run any code instead)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    make_trainer(out, "vision", max_steps=3, save_steps=2).train(stop_at_step=2)
    return out / "checkpoint-2"


def test_a_checkpoint_holds_no_pickle_but_the_optimizer_state(checkpoint):
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "model.safetensors", "optimizer.bin", "rng_state_0.safetensors", "teacher.safetensors", "trainer_state.json"]
    torch.load(checkpoint / "optimizer.bin", weights_only=True)  # plain tensors and numbers, as accelerate loads it


REFUSED = "did not write|neither writes nor loads"


@pytest.mark.parametrize("planted,removed,refused", [
    # pickles accelerate's load_state would unpickle: its registered objects, its RNG states (older checkpoints
    # held custom_checkpoint_0-2.pkl: teacher, scheduler, loop state; random_states_0.pkl)
    ("custom_checkpoint_0.pkl", None, True),
    ("custom_checkpoint_2.pkl", None, True),
    ("random_states_0.pkl", None, True),
    # what accelerate loads with torch.load(weights_only=True), and our safetensors files, replaced by a pickle
    ("optimizer.bin", None, True),
    ("pytorch_model.bin", "model.safetensors", True),
    ("model.safetensors", None, True),
    ("teacher.safetensors", None, True),
    ("rng_state_0.safetensors", None, True),
    # files accelerate writes for objects this trainer does not give it (scheduler, samplers, fp16 scaler): never read
    ("scheduler.bin", None, False),
    ("sampler.bin", None, False),
    ("dl_state_dict.bin", None, False),
    ("scaler.pt", None, False),
])
def test_resuming_never_unpickles_a_planted_file(tmp_path, checkpoint, planted, removed, refused):
    run, marker = tmp_path / "run", tmp_path / "code-ran"
    shutil.copytree(checkpoint, run / "checkpoint-2")
    if removed:
        (run / "checkpoint-2" / removed).unlink()
    torch.save(Payload(marker), run / "checkpoint-2" / planted)
    error = None
    try:
        make_trainer(run, "vision", max_steps=3, save_steps=2, resume_from_checkpoint="latest").train()
    except Exception as caught:  # noqa: BLE001 - judged below, after the marker
        error = caught
    assert not marker.exists(), f"resuming unpickled {planted}: its code ran"
    if refused:  # refused before training, with an error that names the fix
        assert isinstance(error, ValueError) and re.search(REFUSED, str(error)), repr(error)
        assert "new --output_dir" in str(error)
    else:  # never read: the run resumed and finished
        assert error is None, repr(error)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _other_teacher(path: Path) -> None:
    other = make_trainer(path.parent.parent / "other", "text", max_steps=1)
    other.unwrapped.teacher.save(path)


@pytest.mark.parametrize("damage, message", [
    (lambda c: (c / "trainer_state.json").write_text("{not json"), r"trainer_state.json is not JSON"),
    (lambda c: (c / "trainer_state.json").write_text(json.dumps(
        {k: v for k, v in json.loads((c / "trainer_state.json").read_text()).items() if k != "global_step"})),
     r"trainer_state.json lacks global_step"),
    (lambda c: _truncate(c / "optimizer.bin"), r"could not be read .*truncated or damaged"),
    (lambda c: _other_teacher(c / "teacher.safetensors"), r"teacher.safetensors is not this model's teacher"),
    (lambda c: _truncate(c / "model.safetensors"), r"model.safetensors cannot be read \(truncated or damaged"),
    (lambda c: _truncate(c / "teacher.safetensors"), r"teacher.safetensors cannot be read \(truncated or damaged"),
])
def test_a_damaged_checkpoint_is_refused_naming_the_file_and_the_fix(tmp_path, checkpoint, damage, message):
    run = tmp_path / "run"
    shutil.copytree(checkpoint, run / "checkpoint-2")
    damage(run / "checkpoint-2")
    with pytest.raises(ValueError, match=message) as refused:
        make_trainer(run, "vision", max_steps=3, save_steps=2, resume_from_checkpoint="latest").train()
    assert "new --output_dir" in str(refused.value)


def test_overwrite_output_dir_removes_the_old_logs_and_a_linked_checkpoint_without_following_it(tmp_path):
    make_trainer(tmp_path / "run", "vision", max_steps=2, save_steps=1, report_to="tensorboard").train()
    old_logs = list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    elsewhere = tmp_path / "kept"
    shutil.copytree(tmp_path / "run" / "checkpoint-1", elsewhere)
    (tmp_path / "run" / "checkpoint-7").symlink_to(elsewhere, target_is_directory=True)
    make_trainer(tmp_path / "run", "vision", max_steps=1, save_steps=1, report_to="tensorboard",
                 overwrite_output_dir=True).train()
    assert old_logs and not any(p.exists() for p in old_logs)
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))  # only the new run's
    assert elsewhere.is_dir() and (elsewhere / "trainer_state.json").is_file()  # the link's target is untouched
    assert not (tmp_path / "run" / "checkpoint-7").exists()
