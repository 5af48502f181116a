"""What the training loop must never do: read a device value back to the host inside a step (each read stalls the
accelerator), let a NaN / inf gradient reach the student, the optimizer or the teacher, call a step that masked
nothing a collapse, or unpickle a file of a checkpoint it resumes from. And `python -m
modeling_data2vec_unified.trainer` (what `accelerate launch -m` runs) starts without runpy's double-import warning."""

import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
from modeling_data2vec_unified.trainer import NonFiniteLossError, PretrainingArguments
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import tiny_config
from run_helpers import NaNAtCall, make_trainer, weights

ROOT = Path(__file__).resolve().parents[2]


# ops that hand a tensor's value to the host (item, bool, int, float, equal) or whose output shape depends on values
# (the device must finish before the host learns the shape): each is a sync on an accelerator
HOST_READS = ("aten._local_scalar_dense", "aten.is_nonzero", "aten.equal", "aten.nonzero.", "aten.nonzero_numpy",
              "aten.masked_select", "aten.argwhere", "aten._unique", "aten.unique", "aten.repeat_interleave.Tensor")


class HostReads(TorchDispatchMode):
    """Records every op dispatched inside it, and each host read with its Python stack. `.tolist()` / `.numpy()` read
    CPU tensors without dispatching an op: `trace_steps` patches them to report to the recorder running."""

    running: "HostReads | None" = None

    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()
        self.reads: list[str] = []

    def __enter__(self):
        HostReads.running = self
        return super().__enter__()

    def __exit__(self, *exc):
        HostReads.running = None
        return super().__exit__(*exc)

    def read(self, what: str) -> None:
        self.reads.append(f"{what}\n" + "".join(traceback.format_stack(limit=9)[:-2]))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        self.ops.add(name)
        indices = args[1] if name.startswith(("aten.index.", "aten.index_put")) else ()  # x[mask]: a nonzero inside
        if name.startswith(HOST_READS) or any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
            self.read(name)
        return func(*args, **(kwargs or {}))


def trace_steps(trainer, monkeypatch) -> list[HostReads]:
    """Runs each `_train_step` of `trainer` under a `HostReads` of its own (returned, one per step)."""
    for name in ("tolist", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, _reported(getattr(torch.Tensor, name), f"Tensor.{name}"))
    steps, inner = [], trainer._train_step

    def train_step(*args, **kwargs):
        steps.append(HostReads())
        with steps[-1]:
            return inner(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train_step", train_step)
    return steps


def _reported(method, what: str):
    def wrapper(self, *args, **kwargs):
        if HostReads.running is not None:
            HostReads.running.read(what)
        return method(self, *args, **kwargs)

    return wrapper


@pytest.mark.parametrize("modality,accumulate", [("vision", 2), ("audio", 1), ("text", 1)])
def test_training_steps_read_nothing_back_to_the_host(tmp_path, monkeypatch, modality, accumulate):
    """Forward, backward, clipping, fused AdamW with found_inf, the schedule and the teacher's update with `skip`: no
    device value reaches the host inside a step, neither in a good step nor in one whose loss is NaN (skipped)."""
    # audio: no layer drop, whose coin is a draw of the CPU generator read on the host (not a device read)
    config = tiny_config(modality, layerdrop=0.0) if modality == "audio" else None
    t = make_trainer(tmp_path, modality, config=config, max_steps=3, logging_steps=3, skip_nonfinite=True,
                     gradient_accumulation_steps=accumulate)
    t.model.forward_loss = NaNAtCall(t.model, at=accumulate + 1)  # step 2's loss is NaN: the skip path runs too
    # the model's value checks of its inputs run where they are free (CPU tensors) and are off on accelerators
    # (`masking.host_checks_are_free`): off here, as on an accelerator
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("modeling_data2vec_unified") and hasattr(
                module, "host_checks_are_free"):
            monkeypatch.setattr(module, "host_checks_are_free", lambda tensor: False)
    steps = trace_steps(t, monkeypatch)
    metrics = t.train()
    assert len(steps) == 3 and metrics["nonfinite_steps"] == 1
    for number, step in enumerate(steps, 1):
        assert not step.reads, f"step {number} read device values on the host:\n" + "\n".join(step.reads)
        # the whole step ran under the recorder: forward, backward, clip, the optimizer and the teacher
        assert {"aten._fused_adamw_.default", "aten._foreach_lerp_.List"} <= step.ops, sorted(step.ops)
        assert any(op.startswith("aten.linalg_vector_norm") for op in step.ops)
        assert any("backward" in op for op in step.ops)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("modality,precision", [("vision", "no"), ("vision", "bf16"), ("audio", "no"),
                                                ("text", "no")])
def test_training_steps_never_synchronize_cuda(tmp_path, monkeypatch, modality, precision):
    """On CUDA, torch's own detector raises at any synchronizing call inside a step (a value read, a blocking copy, a
    value-dependent shape); layer drop's host coin and the CPU-only input checks are no syncs there. From step 2 on:
    step 1 fills one-time caches (the relative position index, copied to the device once)."""
    t = make_trainer(tmp_path, modality, max_steps=3, logging_steps=3, skip_nonfinite=True,
                     gradient_accumulation_steps=2, mixed_precision=precision)
    t.model.forward_loss = NaNAtCall(t.model, at=3)  # step 2 is skipped on the device
    inner = t._train_step

    def train_step(micro_batches, step, tallies):
        if step == 1:
            return inner(micro_batches, step, tallies)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return inner(micro_batches, step, tallies)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(t, "_train_step", train_step)
    assert t.train()["nonfinite_steps"] == 1 and t.accelerator.device.type == "cuda"


def snapshot(trainer) -> dict[str, torch.Tensor]:
    """Student and teacher weights and the optimizer's state (step counts and moments), copied."""
    out = {k: v for k, v in weights(trainer).items() if not k.endswith("_extra_state")}
    optimizer = trainer.optimizer.optimizer
    names = {p: n for n, p in trainer.unwrapped.named_parameters()}
    for param, state in optimizer.state.items():
        out.update({f"adamw.{names[param]}.{k}": v.detach().cpu().clone() for k, v in state.items()})
    return out


def poison_gradient(trainer, value: float, at_step: int) -> dict:
    """In step `at_step`, one entry of the regression head's weight gradient becomes `value` (a hook: the loss stays
    finite). Records per step: the loss and snapshots before and after."""
    record = {"loss": {}, "before": {}, "after": {}}
    current = {"step": 0}

    def hook(grad):
        if current["step"] != at_step:
            return grad
        grad = grad.clone()
        grad.view(-1)[0] = value
        return grad

    trainer.model.regression_head.proj.weight.register_hook(hook)
    forward_loss, inner = trainer.model.forward_loss, trainer._train_step

    def recording_loss(*args):
        loss, num_masked = forward_loss(*args)
        record["loss"][current["step"]] = loss.detach().clone()
        return loss, num_masked

    def train_step(micro_batches, step, tallies):
        current["step"] = step
        record["before"][step] = snapshot(trainer) if trainer.optimizer.optimizer.state else weights(trainer)
        decay = inner(micro_batches, step, tallies)
        record["after"][step] = snapshot(trainer)
        return decay

    trainer.model.forward_loss = recording_loss
    trainer._train_step = train_step
    return record


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_nonfinite_gradient_with_a_finite_loss_reaches_nothing(tmp_path, value):
    t = make_trainer(tmp_path, "vision", max_steps=5, logging_steps=1)
    record = poison_gradient(t, value, at_step=3)
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        t.train()
    assert torch.isfinite(record["loss"][3])  # only the gradient was poisoned
    before, after = record["before"][3], record["after"][3]
    assert before.keys() == after.keys() and any(k.startswith("adamw.") for k in before)
    for k in before:  # student, teacher and AdamW state (moments, step counts) are those of step 2
        assert torch.equal(before[k], after[k]), k
    moved = [k for k in record["before"][2] if not torch.equal(record["before"][2][k], record["after"][2][k])]
    assert any(k.startswith("student.") for k in moved) and any(k.startswith("teacher.") for k in moved)
    assert any(k.startswith("adamw.") for k in moved)  # the recorder sees what a good step changes


def test_skip_nonfinite_skips_a_nonfinite_gradient_and_trains_on(tmp_path):
    t = make_trainer(tmp_path, "vision", max_steps=4, logging_steps=2, skip_nonfinite=True)
    record = poison_gradient(t, float("nan"), at_step=2)
    metrics = t.train()
    assert metrics["nonfinite_steps"] == 1 and [h["nonfinite_steps"] for h in t.log_history] == [1, 1]
    for k, v in record["before"][2].items():
        assert torch.equal(v, record["after"][2][k]), k
    assert not torch.equal(record["after"][3]["student.regression_head.proj.weight"],
                           record["after"][2]["student.regression_head.proj.weight"])  # step 3 trained again
    assert all(torch.isfinite(v).all() for v in snapshot(t).values() if v.is_floating_point())


def test_a_micro_batch_that_masks_nothing_is_not_called_a_collapse(tmp_path):
    """Steps 1-2: no micro-batch masks anything (no spread measured: no collapse check, target_var / pred_var NaN);
    steps 3-4: the first of two micro-batches masks nothing, and the logged spreads are the second's alone."""
    config = tiny_config("vision", min_pred_var=0.0)  # an untrained head may predict near-constants
    t = make_trainer(tmp_path, "vision", config=config, max_steps=4, logging_steps=1, collapse_check_after=1,
                     gradient_accumulation_steps=2)
    collate, calls, outputs = t.collator, [], []

    def collator(examples):
        batch = collate(examples)
        step, micro = divmod(len(calls), 2)
        calls.append(1)
        if step < 2 or micro == 0:  # check_inputs is off in the step, as on an accelerator: nothing refuses it
            batch["bool_masked_pos"] = torch.zeros_like(batch["bool_masked_pos"])
        return batch

    forward = t.model.forward

    def recording_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        outputs.append({k: out[k].item() for k in ("num_masked", "target_var", "pred_var")})
        return out

    t.collator, t.model.forward = collator, recording_forward
    t.train()  # no Data2VecCollapseError
    history = {h["step"]: h for h in t.log_history}
    assert [o["num_masked"] > 0 for o in outputs] == [False] * 5 + [True, False, True]
    for step in (1, 2):
        assert history[step]["masked_fraction"] == 0.0
        assert history[step]["target_var"] != history[step]["target_var"]  # NaN: nothing was measured
    for step in (3, 4):
        masked = outputs[2 * step - 1]
        assert history[step]["target_var"] == pytest.approx(masked["target_var"], rel=1e-6)
        assert history[step]["pred_var"] == pytest.approx(masked["pred_var"], rel=1e-6)


def test_an_output_dir_that_is_a_file_or_a_config_that_is_not_json_is_refused_at_once(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="--output_dir .*afile is a file, not a folder"):
        PretrainingArguments(output_dir=str(tmp_path / "afile")).resolve()
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"--config .*config.json is not JSON .*save_pretrained"):
        PretrainingArguments(output_dir=str(tmp_path / "out"), config=str(tmp_path / "config.json")).resolve()


@pytest.mark.slow
def test_python_m_trainer_starts_without_runpy_warning():
    """`accelerate launch -m modeling_data2vec_unified.trainer` runs the module as __main__: the package must not have
    imported it already (runpy's RuntimeWarning, and two copies of the module)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "modeling_data2vec_unified.trainer",
                          "--help"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "RuntimeWarning" not in run.stderr, run.stderr[-3000:]
    assert "--resume_from_checkpoint" in run.stdout
    lazy = subprocess.run([sys.executable, "-c", (
        "import sys, modeling_data2vec_unified as d2v\n"
        "assert 'modeling_data2vec_unified.trainer' not in sys.modules\n"
        "from modeling_data2vec_unified import trainer\n"
        "assert d2v.Data2VecPretrainer is trainer.Data2VecPretrainer\n"
        "assert d2v.PretrainingArguments is trainer.PretrainingArguments\n"
        "assert {'Data2VecPretrainer', 'PretrainingArguments'} <= set(dir(d2v))\n"
    )], env=env, capture_output=True, text=True, timeout=300)
    assert lazy.returncode == 0, lazy.stderr[-3000:]
