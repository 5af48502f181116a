"""`data2vec-pretrain` on the built-in data: each modality end to end, the probe report, errors before training, and
a real process killed with SIGKILL mid-run that resumes to the same weights as an uninterrupted run."""

import json
import os
import subprocess

import modeling_data2vec_unified as d2v
import pytest
import torch
from modeling_data2vec_unified.trainer import cli
from transformers import AutoModel, AutoModelForPreTraining, AutoTokenizer

from run_helpers import QUICK, ROOT


@pytest.mark.slow
def test_builtin_vision_run_reports_a_probe(tmp_path):
    metrics = cli(["--output_dir", str(tmp_path), "--max_steps", "20", "--save_steps", "10", *QUICK])
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["test_examples"] == 297 and probe["train_examples"] == 1500 and probe["steps"] == 20
    assert metrics["probe_pretrained"] == probe["pretrained"] and metrics["probe_random_init"] == probe["random_init"]
    model = AutoModel.from_pretrained(tmp_path)
    assert isinstance(model, d2v.Data2VecVisionModel) and model.config.image_size == 16
    assert (tmp_path / "preprocessor_config.json").is_file()
    card = (tmp_path / "README.md").read_text()  # the run and its probe, in the card that a push uploads
    assert "| dataset | builtin digits: 1500 images" in card and "| steps | 20 |" in card
    assert f"| linear probe (held out) | pretrained {probe['pretrained']:.1%}" in card
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]


@pytest.mark.slow
def test_the_default_run_learns_features_better_than_random_init(tmp_path):
    """README's main job, exactly as a newcomer runs it (1680 steps on the built-in digits, ~2.5 min on 2 cores).
    Measured over seeds 0 / 1 / 2 (docs/benchmarks.md): pretrained 96.0 / 96.6 / 96.3%, random init 91.9 / 93.6 /
    92.6%, a margin of 4.1 / 3.0 / 3.7 points; raw pixels 98.0%. Asserted: the smallest margin less one point (3 of the
    297 held-out images) for another machine's arithmetic."""
    cli(["--output_dir", str(tmp_path), "--report_to", "none", "--disable_tqdm", "--logging_steps", "500"])
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["steps"] == 1680
    assert probe["pretrained"] - probe["random_init"] >= 0.02, probe
    assert probe["pretrained"] >= 0.94 and probe["raw_inputs"] >= 0.97, probe


@pytest.mark.slow
def test_builtin_text_run_saves_its_tokenizer_and_reports_a_probe(tmp_path):
    """The built-in text has labels (which area of the standard library a docstring documents): the run ends with a
    probe of the pretrained encoder, its random initialisation and TF-IDF of the token ids, on the held-out
    docstrings."""
    from modeling_data2vec_unified.data import stdlib_docstring_splits

    metrics = cli(["--modality", "text", "--output_dir", str(tmp_path), "--max_steps", "4", "--max_examples", "64",
                   "--per_device_train_batch_size", "8", "--max_seq_length", "32", "--tokenizer_vocab_size", "300",
                   *QUICK])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert model.config.vocab_size == len(tokenizer) and model.config.mask_token_id == tokenizer.mask_token_id
    ids = tokenizer("def f(x): return x", return_tensors="pt")
    assert AutoModel.from_pretrained(tmp_path)(**ids).last_hidden_state.shape[-1] == model.config.hidden_size
    probe = json.loads((tmp_path / "probe.json").read_text())
    train, test = stdlib_docstring_splits()
    assert (probe["train_examples"], probe["test_examples"], probe["steps"]) == (len(train), len(test), 4)
    assert all(isinstance(probe[k], float) for k in ("pretrained", "random_init", "raw_inputs"))
    assert metrics["probe_pretrained"] == probe["pretrained"] and metrics["probe_raw_inputs"] == probe["raw_inputs"]
    assert "std over time" in probe["features"] and "TF-IDF" in probe["raw_inputs_features"]
    assert probe["raw_inputs"] > 0.35, probe  # six areas (chance 1/6): the token ids say much about the area


@pytest.mark.slow
def test_builtin_audio_run(tmp_path):
    metrics = cli(["--modality", "audio", "--output_dir", str(tmp_path), "--max_steps", "4", "--max_examples", "64",
                    "--per_device_train_batch_size", "4", "--no_probe", *QUICK])  # the probe: test_trainer.py
    assert isinstance(AutoModel.from_pretrained(tmp_path), d2v.Data2VecAudioModel)
    assert (tmp_path / "preprocessor_config.json").is_file()
    assert metrics["masked_fraction"] > 0.2 and not (tmp_path / "probe.json").exists()


@pytest.mark.slow
def test_a_short_default_audio_run_learns_the_spoken_words(tmp_path):
    """The built-in audio (two-syllable words in anagram pairs, a new synthetic voice per clip) can show learning: the
    default audio run (data2vec 2.0), cut to 60 steps (its full 300 steps: docs/benchmarks.md), against its random init
    and the raw spectrogram, which cannot tell a pair's two words apart. Measured (seed 0, 2026-12-08): pretrained
    75.0%, random init 38.0%, spectrogram 43.0%. Asserted: half the margin."""
    cli(["--modality", "audio", "--output_dir", str(tmp_path), "--max_steps", "60", "--save_steps", "1000",
         "--report_to", "none", "--disable_tqdm", "--logging_steps", "30"])
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert probe["test_examples"] == 200 and probe["raw_inputs"] < 0.6, probe
    assert probe["pretrained"] - probe["random_init"] >= 0.18, probe
    assert json.loads((tmp_path / "config.json").read_text())["algorithm"] == "data2vec2"  # the audio default


@pytest.mark.parametrize("modality, clip, decay, betas, eps", [
    ("vision", 3.0, 0.05, (0.9, 0.999), 1e-8),  # data2vec_vision's ViT-B command + run_cyclical.py defaults
    ("text", 5.0, 0.01, (0.9, 0.98), 1e-6),  # fairseq data2vec text base.yaml: clip_norm 5
    ("audio", 0.0, 0.01, (0.9, 0.98), 1e-6),  # fairseq data2vec audio base_librispeech.yaml: no clip_norm
])
def test_optimizer_defaults_follow_each_modality_recipe(modality, clip, decay, betas, eps):
    args = d2v.PretrainingArguments(modality=modality, model_size="base").resolve()
    assert (args.max_grad_norm, args.weight_decay, (args.adam_beta1, args.adam_beta2), args.adam_epsilon) == (
        clip, decay, betas, eps)
    override = d2v.PretrainingArguments(modality=modality, max_grad_norm=1.5, weight_decay=0.1).resolve()
    assert (override.max_grad_norm, override.weight_decay) == (1.5, 0.1)  # a flag still wins
    tiny = d2v.PretrainingArguments(modality=modality).resolve()  # tiny vision keeps the betas it was measured with
    assert tiny.max_grad_norm == clip and tiny.adam_beta2 == (0.98 if modality == "vision" else betas[1])


@pytest.mark.parametrize("modality, clip, decay, betas, eps", [  # fairseq examples/data2vec/config/v2/:
    ("vision", 4.0, 0.05, (0.9, 0.95), 1e-8),  # base_images_only_task.yaml (adam_eps unset: fairseq's 1e-8)
    ("text", 1.0, 0.01, (0.9, 0.98), 1e-6),  # base_text_only_task.yaml
    ("audio", 0.0, 0.01, (0.9, 0.98), 1e-6),  # base_audio_only_task.yaml: no clip_norm
])
def test_data2vec2_optimizer_defaults_follow_each_modality_recipe(modality, clip, decay, betas, eps):
    for size in ("tiny", "base"):
        args = d2v.PretrainingArguments(modality=modality, algorithm="data2vec2", model_size=size).resolve()
        assert (args.max_grad_norm, args.weight_decay, (args.adam_beta1, args.adam_beta2), args.adam_epsilon) == (
            clip, decay, betas, eps), size


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "./no/such/folder"], "no/such/folder"),
    (["--modality", "text", "--resume_from_checkpoint", "."], "not a data2vec-pretrain checkpoint"),
    (["--config_overrides", "mask_probability=0.5"], "not a Data2VecConfig field"),
    (["--warmup_ratio", "5"], "--warmup_ratio must be a fraction of --max_steps in [0, 1]"),
    (["--warmup_steps", "500", "--max_steps", "10"], "--warmup_steps 500 is longer than the run"),
    (["--skip_bad_examples", "2"], "--skip_bad_examples must be the fraction of bad examples tolerated"),
    (["--max_grad_norm", "-1"], "a negative bound would flip every gradient"),
    (["--learning_rate", "0"], "--learning_rate must be a positive number"),
    (["--adam_beta2", "1"], "--adam_beta2 must be a number in [0, 1)"),
])
def test_cli_errors_before_training(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli(["--output_dir", str(tmp_path), *QUICK, *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("checkpoint-*"))


def test_a_folder_of_another_modality_is_refused(tmp_path, capsys):
    import numpy as np
    import soundfile

    for i in range(3):
        soundfile.write(tmp_path / f"{i}.wav", np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(SystemExit):
        cli(["--dataset", str(tmp_path), "--output_dir", str(tmp_path / "out"), *QUICK])
    assert "--modality audio" in capsys.readouterr().err


@pytest.mark.slow
def test_continued_pretraining_from_transformers_and_from_our_run(tmp_path):
    from conftest import tiny_transformers_model

    released = tmp_path / "released"
    tiny_transformers_model("audio").save_pretrained(released)  # stands in for facebook/data2vec-audio-base
    source = d2v.Data2VecAudioModel.from_pretrained(released)
    trainer = d2v.Data2VecPretrainer(d2v.PretrainingArguments(
        modality="audio", init_from=str(released), output_dir=str(tmp_path / "continued"), max_steps=2,
        max_examples=32, per_device_train_batch_size=4, report_to="none", disable_tqdm=True, probe=False))
    model = trainer.model
    teacher = model.teacher.model.state_dict()  # fairseq's 1.0 speech teacher: all but the conv feature encoder
    assert not any(k.startswith("embeddings.feature_extractor.") for k in teacher)
    for name, p in source.state_dict().items():  # it starts as the loaded student
        if not name.startswith("embeddings.feature_extractor."):
            torch.testing.assert_close(teacher[name], p)
    trainer.train()
    assert AutoModel.from_pretrained(tmp_path / "continued").config.hidden_size == 32
    with pytest.raises(SystemExit):  # a vision run cannot continue an audio checkpoint
        cli(["--init_from", str(released), "--output_dir", str(tmp_path / "x"), *QUICK])
    # text: a run continued from one of ours reuses that run's tokenizer
    first = tmp_path / "text"
    cli(["--modality", "text", "--output_dir", str(first), "--max_steps", "2", "--max_examples", "32",
         "--per_device_train_batch_size", "8", "--max_seq_length", "32", "--tokenizer_vocab_size", "300", *QUICK])
    cli(["--modality", "text", "--init_from", str(first), "--output_dir", str(tmp_path / "text2"), "--max_steps", "2",
         "--max_examples", "32", "--per_device_train_batch_size", "8", "--max_seq_length", "32", *QUICK])
    vocab = AutoTokenizer.from_pretrained(first).get_vocab()
    assert AutoTokenizer.from_pretrained(tmp_path / "text2").get_vocab() == vocab


@pytest.mark.slow
def test_accelerate_launch_precision_and_process_count_are_honoured_or_named(tmp_path):
    """`accelerate launch --mixed_precision bf16` reaches the run (the trainer's own default no longer overrides it)
    and the summary says where the precision came from; an explicit flag still wins. Asked for 2 processes on a
    machine where accelerate starts one, the run says so and names torchrun."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    common = ["--output_dir", str(tmp_path / "run"), "--overwrite_output_dir", "--max_steps", "1", "--max_examples",
              "128", "--no_probe", "--save_steps", "10", *QUICK]
    launch = ["accelerate", "launch", "--num_processes", "2", "--mixed_precision", "bf16", "-m",
              "modeling_data2vec_unified.trainer"]
    done = subprocess.run([*launch, *common], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "precision bf16 (accelerate launch's config)" in done.stderr
    assert "was asked for 2 processes but started 1" in done.stderr and "torchrun --nproc_per_node" in done.stderr
    done = subprocess.run([*launch, *common, "--mixed_precision", "no"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "precision no (--mixed_precision)" in done.stderr, done.stderr[-3000:]


def test_a_saved_text_tokenizer_truncates_to_what_the_model_takes(tmp_path):
    """The tokenizer a text run trains is saved with model_max_length = --max_seq_length (not 1e30), so
    `truncation=True` keeps a long document within the position table and the saved model runs on it."""
    import random

    from transformers import AutoModel, AutoTokenizer

    rng = random.Random(0)
    words = ["data", "vector", "teacher", "student", "mask", "token", "layer", "target", "average", "norm"]
    (tmp_path / "corpus.txt").write_text("\n".join(" ".join(rng.choices(words, k=40)) for _ in range(200)))
    cli(["--modality", "text", "--dataset", str(tmp_path / "corpus.txt"), "--output_dir", str(tmp_path / "run"),
         "--max_steps", "2", "--max_seq_length", "32", "--per_device_train_batch_size", "8", "--no_probe",
         "--save_steps", "10", *QUICK])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run")
    assert tokenizer.model_max_length == 32
    encoded = tokenizer(" ".join(words * 100), truncation=True, return_tensors="pt")
    assert encoded["input_ids"].shape[1] == 32
    model = AutoModel.from_pretrained(tmp_path / "run")
    assert model(input_ids=encoded["input_ids"]).last_hidden_state.shape[1] == 32
