"""A trainer for long runs (issue 13): no silent overwrite of another run, a signal or a time limit saves and stops,
a resume with other schedule flags is refused, and 0 is not "unset"."""

import os
import re
import subprocess
import sys

import pytest
import torch
from modeling_data2vec_unified.trainer import PretrainingArguments, cli, parse_duration

from run_helpers import ROOT, make_trainer, weights


@pytest.mark.parametrize("name", ["max_steps", "per_device_train_batch_size", "gradient_accumulation_steps"])
def test_zero_is_not_unset(name):
    with pytest.raises(ValueError, match=f"--{name} must be >= 1; got 0"):
        PretrainingArguments(**{name: 0}).resolve()


def test_durations():
    assert [parse_duration(t) for t in ("90", "90s", "1.5m", "12h", "2d")] == [90, 90, 90, 43200, 172800]
    for bad in ("0", "-5", "abc", "12x", ""):
        with pytest.raises(ValueError, match="--max_train_time must be a positive duration"):
            parse_duration(bad)


@pytest.mark.slow
def test_init_from_a_training_checkpoint_names_the_right_flag_and_a_continued_run_has_its_own_ema(tmp_path, capsys):
    quick = ["--report_to", "none", "--disable_tqdm", "--max_examples", "64", "--per_device_train_batch_size", "16"]
    first = tmp_path / "first"
    cli(["--output_dir", str(first), "--max_steps", "6", "--save_steps", "3", "--no_probe", *quick])
    with pytest.raises(SystemExit):
        cli(["--init_from", str(first / "checkpoint-3"), "--output_dir", str(tmp_path / "x"), *quick])
    err = capsys.readouterr().err
    assert "is a training checkpoint" in err and "--resume_from_checkpoint" in err and "output_dir" in err
    second = tmp_path / "second"
    metrics = cli(["--init_from", str(first), "--output_dir", str(second), "--max_steps", "2", *quick])
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(first).ema_anneal_end_step == 6
    assert AutoConfig.from_pretrained(second).ema_anneal_end_step == 2  # this run's, not the first run's 6
    # the probe reports the starting checkpoint next to random init
    assert 0.0 < metrics["probe_starting_checkpoint"] <= 1.0
    assert "--init_from" in capsys.readouterr().out


def test_data2vec_convert_names_a_missing_path_and_refuses_our_own_checkpoints(tmp_path, capsys):
    import modeling_data2vec_unified as d2v
    from modeling_data2vec_unified.conversion_cli import main as convert

    from conftest import tiny_config

    with pytest.raises(SystemExit):
        convert([str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert "no folder" in capsys.readouterr().err
    d2v.Data2VecForPreTraining(tiny_config("audio")).save_pretrained(tmp_path / "ours")
    with pytest.raises(SystemExit):
        convert([str(tmp_path / "ours"), str(tmp_path / "out")])
    assert "nothing to convert" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_push_to_hub_checks_the_repo_before_training(tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoUrl

    def refused(self, repo_id, **kwargs):
        raise PermissionError("401 Unauthorized")

    monkeypatch.setattr(HfApi, "create_repo", refused)
    with pytest.raises(ValueError, match="--push_to_hub: cannot create or reach the Hub repo 'someone/x'.*--hub_token"):
        make_trainer(tmp_path / "a", push_to_hub=True, hub_model_id="someone/x")
    created = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: created.append(repo_id) or RepoUrl(
        f"https://huggingface.co/{repo_id}"))
    t = make_trainer(tmp_path / "b", push_to_hub=True, hub_model_id="someone/x")
    assert created == ["someone/x"] and t.state.global_step == 0  # at start-up, before any step


def test_the_console_summarises_the_run_and_says_where_the_results_are(tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    cli(["--output_dir", str(tmp_path), "--max_steps", "4", "--save_steps", "2", "--logging_steps", "2",
         "--report_to", "none", "--disable_tqdm", "--max_examples", "64", "--per_device_train_batch_size", "16",
         "--no_probe"])
    ours = [r for r in caplog.records if r.name == "modeling_data2vec_unified.trainer"]
    summary = ours[0].getMessage()
    assert summary.startswith("data2vec-pretrain: vision, data2vec")
    for line in ("  data:   builtin digits", "  model:  tiny, hidden 64 x 4 layers", "parameters, from random",
                 "  train:  4 steps x 16 examples", "(cosine, 0 warm-up steps)", "precision no (default)",
                 f"  output: {tmp_path.resolve()}"):
        assert line in summary, summary
    assert sum(r.getMessage().startswith("saved ") for r in ours) == 2  # one line per checkpoint
    assert not [r for r in caplog.records if r.name.startswith("accelerate.checkpointing") and r.levelname == "INFO"]
    assert f"data2vec-pretrain: done. Model: {tmp_path.resolve()}" in capsys.readouterr().out


def test_a_validation_split_reports_the_loss_without_changing_training(tmp_path):
    """Issue 13, item 12: --validation_split_percentage holds examples out and logs eval_loss every --eval_steps with
    fixed masks; evaluating often or once trains exactly the same weights."""
    often = make_trainer(tmp_path / "often", "text", max_steps=4, validation_split_percentage=25, eval_steps=1)
    assert len(often.validation) == 6 and len(often.data.train) == 18
    often.train()
    once = make_trainer(tmp_path / "once", "text", max_steps=4, validation_split_percentage=25, eval_steps=100)
    once.train()
    evals = [h for h in often.log_history if "eval_loss" in h]
    assert [h["step"] for h in evals] == [1, 2, 3, 4] and all(h["eval_loss"] > 0 for h in evals)
    assert [h["eval_loss"] for h in once.log_history if "eval_loss" in h] == [evals[-1]["eval_loss"]]
    train_losses = [[h["loss"] for h in t.log_history if "loss" in h] for t in (often, once)]
    assert train_losses[0] == train_losses[1]
    a, b = weights(often), weights(once)
    assert all(torch.equal(a[k], b[k]) for k in a)
    often.evaluate(4)
    often.evaluate(4)
    assert often.log_history[-1]["eval_loss"] == often.log_history[-2]["eval_loss"]  # the same masks each time
    with pytest.raises(ValueError, match="--validation_split_percentage must be in"):
        PretrainingArguments(validation_split_percentage=100).resolve()


@pytest.mark.slow
def test_log_lines_do_not_land_on_the_progress_bar(tmp_path):
    """With the live progress bar on, every log line of the run starts a line of its own (written above the bar),
    never after the bar's text: each '\\r'-separated piece of stderr that holds a log record starts with its time."""
    argv = [sys.executable, "-m", "modeling_data2vec_unified.trainer", "--output_dir", str(tmp_path), "--max_steps",
            "6", "--save_steps", "3", "--logging_steps", "2", "--max_examples", "64", "--per_device_train_batch_size",
            "16", "--no_probe", "--report_to", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    stderr = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=True).stderr
    assert "data2vec: 100%" in stderr  # the bar was live
    records = [piece for line in stderr.split("\n") for piece in line.split("\r")
               if "modeling_data2vec_unified.trainer:" in piece]
    assert sum("saved " in r for r in records) == 2 and sum(" step " in r for r in records) == 3
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) ", r) for r in records), records


def test_a_datasets_own_validation_split_is_prepared_like_the_training_data(tmp_path):
    """Issue 13, item 12: --validation_split names the dataset's own held-out split (here a folder's valid.txt beside
    train.txt), tokenized with the tokenizer trained on the training split; --max_eval_examples caps it."""
    from modeling_data2vec_unified.trainer import Data2VecPretrainer

    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "train.txt").write_text("".join(f"the train line {i} says alpha beta\n" for i in range(40)))
    (texts / "valid.txt").write_text("".join(f"a held-out line {i} says gamma delta\n" for i in range(40)))
    args = PretrainingArguments(modality="text", dataset=str(texts), validation_split="validation", max_eval_examples=3,
                                output_dir=str(tmp_path / "out"), max_steps=2, eval_steps=1, logging_steps=1,
                                per_device_train_batch_size=4, max_seq_length=16, tokenizer_vocab_size=300,
                                report_to="none", disable_tqdm=True, probe=False)
    trainer = Data2VecPretrainer(args)
    held = "".join(trainer.data.processor.decode(trainer.validation[i]["input_ids"]) for i in range(3))
    trained = "".join(trainer.data.processor.decode(e["input_ids"]) for e in trainer.data.train)
    assert len(trainer.validation) == 3 and "gamma" in held and "alpha" not in held
    assert "alpha" in trained and "gamma" not in trained
    assert "; validation 3 (split validation, eval_loss every 1 steps)" in trainer.summary()
    trainer.train()
    assert [h["step"] for h in trainer.log_history if "eval_loss" in h] == [1, 2]
    for bad, message in (
        (dict(validation_split="validation", validation_split_percentage=10), "not both"),
        (dict(validation_split="validation", dataset="builtin"), "the built-in data has no splits"),
        (dict(validation_split="train", dataset=str(texts)), "is the training split"),
        (dict(max_eval_examples=0), "--max_eval_examples must be >= 1"),
    ):
        with pytest.raises(ValueError, match=message):
            PretrainingArguments(**bad).resolve()
