"""Helpers several test files share: building and running trainers, the CLI, processes."""

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import modeling_data2vec_unified as d2v
import torch
from modeling_data2vec_unified.data import PretrainingData, ProbeData
from modeling_data2vec_unified.trainer import (
    Data2VecPretrainer,
    PretrainingArguments,
)
from safetensors.torch import load_file
from transformers import (
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModelForAudioClassification,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from conftest import tiny_config

WORKER = textwrap.dedent('''
    import json, sys
    import torch
    import modeling_data2vec_unified as d2v
    from modeling_data2vec_unified.data import PretrainingData
    from modeling_data2vec_unified.trainer import Data2VecPretrainer, PretrainingArguments

    out, stop, resume, algorithm = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume", sys.argv[4]
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    examples = [{"input_ids": [0, *torch.randint(3, 97, (int(k),), generator=g).tolist(), 2]}
                for k in torch.randint(8, 20, (32,), generator=g)]
    config = d2v.Data2VecConfig(modality="text", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, average_top_k_layers=2, vocab_size=99,
                                max_position_embeddings=40, ema_decay=0.9, ema_end_decay=0.99,
                                ema_anneal_end_step=6, algorithm=algorithm,
                                **(dict(clone_batch=2, decoder_dim=32, decoder_layers=1, decoder_groups=4)
                                   if algorithm == "data2vec2" else {}))
    args = PretrainingArguments(modality="text", output_dir=out, max_steps=6, per_device_train_batch_size=4,
                                learning_rate=1e-3, logging_steps=1, save_steps=3, report_to="none",
                                disable_tqdm=True, probe=False, cpu=True, collapse_check_after=1000,
                                resume_from_checkpoint="latest" if resume else None)
    torch.manual_seed(0)  # the same initial weights in every launch
    trainer = Data2VecPretrainer(args, model=d2v.Data2VecForPreTraining(config),
                                 data=PretrainingData(examples, None, {}, None, "tiny"))
    trainer.train(stop_at_step=stop)
    rank = trainer.accelerator.process_index
    assert trainer.accelerator.num_processes == 2
    model = trainer.unwrapped
    torch.save({"teacher": model.teacher.state_dict(), "student": model.state_dict()}, f"{out}/rank{rank}.pt")
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"history": trainer.log_history}, f)
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, out: Path, stop: int, resume: bool = False, algorithm: str = "data2vec") -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(script), str(out), str(stop), "resume" if resume else "fresh", algorithm]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def load(out: Path, rank: int):
    return json.loads((out / f"rank{rank}.json").read_text()), torch.load(out / f"rank{rank}.pt")


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k


ROOT = Path(__file__).resolve().parents[1]


FEW_STEPS = ["--max_steps", "3", "--max_eval_examples", "16", "--per_device_train_batch_size", "8",
             "--per_device_eval_batch_size", "8", "--disable_tqdm", "true"]


SMALL = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,average_top_k_layers=2"


EXAMPLES = {  # name: (Auto model class, Auto processor class, extra flags)
    "image": (AutoModelForImageClassification, AutoImageProcessor, ["--config_overrides", SMALL]),
    "text": (AutoModelForSequenceClassification, AutoTokenizer, ["--config_overrides", SMALL,
                                                                 "--tokenizer_vocab_size", "300"]),
    "audio": (AutoModelForAudioClassification, AutoFeatureExtractor,
              ["--config_overrides", SMALL + ",conv_dim=[32,32,32,32,32,32],classifier_proj_size=16"]),
}


EVAL_LINE = re.compile(r"^eval accuracy (\d\.\d{4}) \((\d+) examples\)$", re.MULTILINE)


def load_example(name: str, monkeypatch):
    """examples/finetune_{name}_classification.py for the classification examples, else examples/finetune_{name}.py"""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # the examples import example_utils from their folder
    path = ROOT / "examples" / (f"finetune_{name}_classification.py" if name in EXAMPLES else f"finetune_{name}.py")
    spec = importlib.util.spec_from_file_location(f"finetune_{name}", path)
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, example)  # its dataclasses look their module up
    spec.loader.exec_module(example)
    return example


def run_example(name: str, argv: list[str], monkeypatch, capsys, eval_line: re.Pattern = EVAL_LINE):
    """Runs the example's main(argv); returns (its metrics, the printed eval line's match, its trainer)."""
    example = load_example(name, monkeypatch)
    trainers = []

    class Recorded(example.Data2VecTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    monkeypatch.setattr(example, "Data2VecTrainer", Recorded)
    result = example.main(argv)
    lines = eval_line.findall(capsys.readouterr().out)
    assert len(lines) == 1, "one final eval line"
    return result, lines[0], trainers[0]


def check_reload(trainer, auto_model, auto_processor, output_dir: Path, outputs: tuple[str, ...] = ("logits",)):
    """The saved model (and processor) reload with the Auto classes and give the evaluated model's `outputs` (for a
    classifier: logits (batch, num_labels)). Returns (the eval batch, the evaluated model's output, the reloaded
    processor)."""
    reloaded = auto_model.from_pretrained(output_dir).eval()
    assert type(reloaded) is type(trainer.model)
    assert reloaded.config.id2label == trainer.model.config.id2label
    processor = auto_processor.from_pretrained(output_dir)
    batch = next(iter(trainer.get_eval_dataloader()))  # through the Trainer's collator and column removal
    batch = {k: v for k, v in batch.items() if k not in ("labels", "start_positions", "end_positions")}
    trainer.model.eval()
    with torch.no_grad():
        expected, got = trainer.model(**batch), reloaded(**batch)
    if outputs == ("logits",) and expected.logits.ndim == 2:
        assert expected.logits.shape == (len(next(iter(batch.values()))), trainer.model.config.num_labels)
    for name in outputs:
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=1e-5, atol=1e-5)
    return batch, expected, processor


def tiny_data(modality: str, n: int = 24, seed: int = 0) -> PretrainingData:
    g = torch.Generator().manual_seed(seed)
    if modality == "text":
        examples = [{"input_ids": [0, *torch.randint(3, 97, (int(k),), generator=g).tolist(), 2]}
                    for k in torch.randint(8, 20, (n,), generator=g)]
    elif modality == "vision":
        examples = [{"pixel_values": torch.randn(3, 32, 32, generator=g)} for _ in range(n)]
    else:
        lengths = torch.randint(2400, 3600, (n,), generator=g)
        examples = [{"input_values": torch.randn(int(k), generator=g)} for k in lengths]
    probe = ProbeData(train=[{**e, "labels": i % 2} for i, e in enumerate(examples[:16])],
                      test=[{**e, "labels": i % 2} for i, e in enumerate(examples[16:])])
    return PretrainingData(train=examples, processor=None, config_updates={}, probe=probe, description="tiny")


def make_trainer(tmp_path, modality="vision", config=None, data=None, **overrides) -> Data2VecPretrainer:
    defaults = dict(modality=modality, output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4,
                    learning_rate=1e-3, logging_steps=1, save_steps=100, report_to="none", disable_tqdm=True,
                    probe=False, seed=0, collapse_check_after=1000)
    args = PretrainingArguments(**{**defaults, **overrides})
    torch.manual_seed(0)
    model = d2v.Data2VecForPreTraining(config or tiny_config(modality))
    return Data2VecPretrainer(args, model=model, data=data or tiny_data(modality))


def weights(trainer) -> dict[str, torch.Tensor]:
    """Student and teacher weights, copied to the CPU."""
    model = trainer.unwrapped
    out = {f"student.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
    out.update({f"teacher.{k}": v.detach().cpu().clone() for k, v in model.teacher.state_dict().items()
                if isinstance(v, torch.Tensor)})
    return out


class NaNAtCall:
    """Wraps forward_loss: the loss of call number `at` (1-based) becomes NaN."""

    def __init__(self, model, at: int):
        self.inner, self.at, self.calls = model.forward_loss, at, 0

    def __call__(self, *args):
        self.calls += 1
        loss, num_masked = self.inner(*args)
        return (loss * float("nan") if self.calls == self.at else loss), num_masked


QUICK = ["--report_to", "none", "--disable_tqdm", "--logging_steps", "5"]


def run_cli(out: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "modeling_data2vec_unified.trainer", "--output_dir", str(out), "--max_steps", "40",
            "--save_steps", "5", "--max_examples", "256", "--per_device_train_batch_size", "16", "--no_probe",
            *QUICK, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_9_at(killed: subprocess.Popen, checkpoint: Path) -> None:
    """SIGKILL the run as soon as `checkpoint` exists (before the run's end)."""
    deadline = time.time() + 240
    while not checkpoint.is_dir():
        assert killed.poll() is None, killed.stderr.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (checkpoint.parent / "model.safetensors").exists()  # it really died before the end


def resume_equals_uninterrupted(tmp_path, stopped: str, *flags: str) -> dict[str, torch.Tensor]:
    """Resumes the run stopped in tmp_path/stopped and runs it uninterrupted in tmp_path/full (the two at once); the
    final weights must be bit-identical. Returns them."""
    resumed = run_cli(tmp_path / stopped, *flags, "--resume_from_checkpoint", "latest")
    full = run_cli(tmp_path / "full", *flags)
    for proc in (resumed, full):
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(tmp_path / stopped / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return a


V2 = dict(algorithm="data2vec2", clone_batch=3, decoder_dim=32, decoder_layers=2, decoder_groups=4)


def v2_config(modality: str, **overrides) -> d2v.Data2VecConfig:
    extra = dict(mask_prob=0.6, mask_length=2) if modality == "vision" else {}  # a 4x4 grid: 6 visible patches
    return tiny_config(modality, **{**V2, **extra, **overrides})
