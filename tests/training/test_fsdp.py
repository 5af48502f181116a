"""--fsdp (FSDP2 `fully_shard`) on two CPU processes (torch's launcher, gloo): per-step losses equal a DDP run's, the
sharded teacher equals the closed-form EMA of the student's weights, resume is exact, the output folder loads with
AutoModel, and what FSDP cannot do is refused with its fix.

`accelerate launch --cpu --num_processes 2` starts one process on this machine, and accelerate's FSDP plugin is for
GPUs only (on MULTI_CPU it is ignored: the model is DDP-wrapped), so the trainer shards with `fully_shard` itself."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

WORKER = textwrap.dedent('''
    import json, sys
    import torch
    from modeling_data2vec_unified.modeling_data2vec_pretraining import Data2VecForPreTraining
    from modeling_data2vec_unified.trainer import Data2VecPretrainer, PretrainingArguments, exit_after_gloo_run

    out, mode, stop, algorithm = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[5]
    resume, accumulate = sys.argv[4] == "resume", int(sys.argv[6])
    torch.set_num_threads(1)
    args = PretrainingArguments(modality="vision", algorithm=algorithm, output_dir=out, max_steps=6,
                                per_device_train_batch_size=8, logging_steps=1, save_steps=3, report_to="none",
                                disable_tqdm=True, probe=False, cpu=True, max_examples=256, fsdp=mode == "fsdp",
                                gradient_accumulation_steps=accumulate,
                                resume_from_checkpoint="latest" if resume else None)
    trainer = Data2VecPretrainer(args)
    model = trainer.model
    initial = {n: p.detach().clone() for n, p in model._ema_source().named_parameters()}
    records = []
    original = Data2VecForPreTraining.update_teacher

    def update_teacher(self, skip=None):  # records the (gathered) student the teacher moves towards, and the decay
        decay = original(self, skip=skip)
        records.append((decay, {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
                                for n, p in self._ema_source().named_parameters()}))
        return decay

    Data2VecForPreTraining.update_teacher = update_teacher
    acc, end_training = trainer.accelerator, trainer.accelerator.end_training

    def gather_then_end():  # accelerate's end_training ends the process group: gather before it
        assert acc.num_processes == 2
        full = lambda t: (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()
        teacher = {n: full(p) for n, p in trainer.unwrapped.teacher.model.named_parameters()}
        student = {n: full(p) for n, p in trainer.unwrapped.named_parameters()}
        if acc.process_index == 0:
            torch.save({"teacher": teacher, "student": student, "initial": initial, "records": records,
                        "history": trainer.log_history, "teacher_updates": trainer.unwrapped.teacher.num_updates},
                       f"{out}/result.pt")
        torch.distributed.barrier()  # rank 1 must not tear its process group down while rank 0 still writes
        end_training()

    acc.end_training = gather_then_end
    trainer.train(stop_at_step=stop)
    exit_after_gloo_run()  # as the CLI does: no C++ static teardown (it aborted now and then, after the outputs)
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp: Path, out: Path, mode: str, stop: int = 6, resume: bool = False, algorithm: str = "data2vec",
           accumulate: int = 1):
    script = tmp / "fsdp_worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(script), str(out), mode, str(stop), "resume" if resume else "fresh", algorithm, str(accumulate)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    if "returned a view tensor" in result.stderr:  # torch's warning comes with the trainer's word on it
        assert "Harmless here: that view is the layer's FFN output" in result.stderr
    return torch.load(out / "result.pt", weights_only=False)


def losses(result) -> list[float]:
    return [h["loss"] for h in result["history"] if "loss" in h]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    return {"tmp": tmp, "ddp": launch(tmp, tmp / "ddp", "ddp"), "fsdp": launch(tmp, tmp / "fsdp", "fsdp")}


@pytest.mark.slow
def test_fsdp_losses_equal_ddp_and_teacher_is_the_closed_form_ema(runs):
    check_against_ddp(runs["fsdp"], runs["ddp"])


@pytest.mark.slow
def test_fsdp_data2vec2_losses_equal_ddp_and_teacher_is_the_closed_form_ema(tmp_path):
    check_against_ddp(launch(tmp_path, tmp_path / "fsdp", "fsdp", algorithm="data2vec2"),
                      launch(tmp_path, tmp_path / "ddp", "ddp", algorithm="data2vec2"))


@pytest.mark.slow
def test_fsdp_gradient_accumulation_equals_ddp(tmp_path):
    """FSDP accumulates unsharded gradients over the micro-batches and reduce-scatters once, after the last
    (`set_requires_gradient_sync`, FSDP2's no_sync)."""
    check_against_ddp(launch(tmp_path, tmp_path / "fsdp", "fsdp", accumulate=2),
                      launch(tmp_path, tmp_path / "ddp", "ddp", accumulate=2))


def check_against_ddp(fsdp, ddp):
    assert len(losses(fsdp)) == 6
    torch.testing.assert_close(torch.tensor(losses(fsdp)), torch.tensor(losses(ddp)), rtol=1e-4, atol=0)
    # the teacher, gathered from its shards, is the EMA of the student's (gathered) weights after each step
    expected = {n: t.clone() for n, t in fsdp["initial"].items()}
    for decay, student in fsdp["records"]:
        for n in expected:
            expected[n] = expected[n] + (1 - decay) * (student[n] - expected[n])
    assert fsdp["teacher_updates"] == 6 and expected.keys() == fsdp["teacher"].keys()
    for n in expected:
        torch.testing.assert_close(fsdp["teacher"][n], expected[n], rtol=0, atol=1e-6)
        torch.testing.assert_close(fsdp["teacher"][n], ddp["teacher"][n], rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(fsdp["teacher"][n], fsdp["initial"][n]) for n in expected)  # it moved


@pytest.mark.slow
def test_fsdp_resume_is_exact(runs):
    tmp = runs["tmp"]
    out = tmp / "resumed"
    launch(tmp, out, "fsdp", stop=3)
    saved = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert saved["fsdp"] and sorted(p.name for p in (out / "checkpoint-3").glob("fsdp_shards_*")) == [
        "fsdp_shards_0.safetensors", "fsdp_shards_1.safetensors"]
    resumed = launch(tmp, out, "fsdp", resume=True)
    assert losses(resumed) == losses(runs["fsdp"])
    for part in ("student", "teacher"):
        for n, t in runs["fsdp"][part].items():
            assert torch.equal(resumed[part][n], t), (part, n)


def test_fsdp_output_loads_with_automodel(runs):
    import modeling_data2vec_unified  # noqa: F401  (registers the Auto classes)
    from transformers import AutoModel

    out = runs["tmp"] / "fsdp"
    model = AutoModel.from_pretrained(out).eval()
    student = runs["fsdp"]["student"]
    for n, t in model.state_dict().items():
        if f"data2vec.{n}" in student:
            assert torch.equal(t, student[f"data2vec.{n}"]), n
    reference = AutoModel.from_config(model.config).eval()
    reference.load_state_dict({n[len("data2vec."):]: t for n, t in student.items() if n.startswith("data2vec.")},
                              strict=False)
    pixels = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixels).last_hidden_state,
                                   reference(pixel_values=pixels).last_hidden_state, rtol=0, atol=0)


@pytest.mark.slow
def test_fsdp_refuses_what_it_cannot_do(runs, tmp_path):
    from modeling_data2vec_unified.trainer import Data2VecPretrainer, PretrainingArguments

    base = dict(modality="vision", max_steps=6, per_device_train_batch_size=8, report_to="none", disable_tqdm=True,
                probe=False, cpu=True, max_examples=256, logging_steps=1, save_steps=3)
    out = str(runs["tmp"] / "fsdp")
    with pytest.raises(ValueError, match=r"saved with --fsdp .* resume it with --fsdp on 2 process"):
        Data2VecPretrainer(PretrainingArguments(**base, output_dir=out, resume_from_checkpoint="latest"))
    with pytest.raises(ValueError, match=r"shards of 2 processes .* this run has 1: resume it on 2 processes"):
        Data2VecPretrainer(PretrainingArguments(**base, output_dir=out, resume_from_checkpoint="latest", fsdp=True))
    with pytest.raises(ValueError, match=r"saved without --fsdp .* resume it without --fsdp"):
        Data2VecPretrainer(PretrainingArguments(**base, output_dir=str(runs["tmp"] / "ddp"),
                                                resume_from_checkpoint="latest", fsdp=True))
    with pytest.raises(ValueError, match=r"--fsdp shards over several processes: launch with .*torch.distributed.run"):
        Data2VecPretrainer(PretrainingArguments(**base, output_dir=str(tmp_path / "one"), fsdp=True))
    with pytest.raises(ValueError, match=r"--fsdp with --probe_steps.*Drop --probe_steps"):
        Data2VecPretrainer(PretrainingArguments(**base, output_dir=str(tmp_path / "a"), fsdp=True, probe_steps=2))
    with pytest.raises(ValueError, match=r"--fsdp with layer drop.*layerdrop=0"):
        Data2VecPretrainer(PretrainingArguments(**base, output_dir=str(tmp_path / "b"), fsdp=True,
                                                config_overrides="layerdrop=0.1"))
    with pytest.raises(ValueError, match=r"--fsdp with --mixed_precision fp16.*bf16"):
        Data2VecPretrainer(PretrainingArguments(**base, output_dir=str(tmp_path / "c"), fsdp=True,
                                                mixed_precision="fp16"))
