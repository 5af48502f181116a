"""The EMA teacher and its decay schedule, against the closed form."""

import modeling_data2vec_unified as d2v
import pytest
import torch
from modeling_data2vec_unified import EMATeacher, ema_decay_at
from safetensors.torch import save_file

from conftest import tiny_config, tiny_examples


def test_decay_schedule_is_linear_then_constant():
    start, end, steps = 0.999, 0.9999, 1000
    for n in (0, 1, 250, 999):
        assert ema_decay_at(n, start, end, steps) == pytest.approx(start + (end - start) * n / steps, abs=1e-15)
    for n in (1000, 1001, 10**7):
        assert ema_decay_at(n, start, end, steps) == end
    assert ema_decay_at(0, 0.9998, 0.9998, 0) == 0.9998  # vision: constant, no anneal


def test_teacher_follows_a_fixed_student_as_the_closed_form():
    """With the student fixed at S, after k updates T_k - S = (T_0 - S) * prod(decay_i)."""
    torch.manual_seed(0)
    teacher_src, student = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    teacher = EMATeacher(teacher_src, 0.5, 0.9, 4)
    t0 = {n: p.detach().double().clone() for n, p in teacher_src.named_parameters()}
    decays = [teacher.update(student) for _ in range(7)]
    assert decays == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9])
    factor = torch.tensor(decays, dtype=torch.float64).prod()
    for name, p in teacher.model.named_parameters():
        s = dict(student.named_parameters())[name].detach().double()
        torch.testing.assert_close(p.double(), s + (t0[name] - s) * factor, atol=1e-6, rtol=0)
    assert teacher.num_updates == 7


def test_decay_one_skips_the_update_but_counts_it():
    src, student = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    teacher = EMATeacher(src, 1.0, 1.0, 0)
    before = [p.clone() for p in teacher.parameters()]
    assert teacher.update(student) == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert teacher.num_updates == 1


def bf16_pair():
    """A bf16 source and a bf16 student with other weights (a teacher that moves towards it changes)."""
    torch.manual_seed(0)
    src = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5)).to(torch.bfloat16)
    student = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5)).to(torch.bfloat16)
    return src, student


def test_teacher_is_frozen_fp32_eval_and_its_count_travels_in_state_dict():
    src, student = bf16_pair()
    teacher = EMATeacher(src, 0.9, 0.99, 10)
    teacher.train()
    assert not teacher.training and not teacher.model.training and not teacher.model[1].training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in teacher.parameters())
    teacher.update(student)  # a bf16 student is averaged into the fp32 teacher
    teacher.update(student)
    other = EMATeacher(src, 0.9, 0.99, 10)  # a fresh copy of src: other weights, count 0
    assert not any(torch.equal(a, b) for a, b in zip(teacher.parameters(), other.parameters()))
    other.load_state_dict(teacher.state_dict())
    assert other.num_updates == 2 and other.decay == teacher.decay == ema_decay_at(2, 0.9, 0.99, 10)
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), other.parameters()))


def test_teacher_saves_and_loads_weights_and_count_as_safetensors(tmp_path):
    src, student = bf16_pair()
    teacher = EMATeacher(src, 0.9, 0.99, 10)
    for _ in range(3):
        teacher.update(student)
    teacher.save(tmp_path / "teacher.safetensors")
    other = EMATeacher(src, 0.9, 0.99, 10)
    assert not any(torch.equal(a, b) for a, b in zip(teacher.parameters(), other.parameters()))
    other.load(tmp_path / "teacher.safetensors")
    assert other.num_updates == 3
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), other.parameters()))
    # and the loaded teacher continues as the saved one would
    assert other.update(student) == teacher.update(student)
    assert all(torch.equal(a, b) for a, b in zip(teacher.parameters(), other.parameters()))
    save_file({"0.weight": torch.zeros(3, 3), "0.bias": torch.zeros(3)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not a teacher saved by EMATeacher.save"):
        other.load(tmp_path / "plain.safetensors")


def test_model_teacher_drifts_as_expected_over_training_steps(modality):
    """Teacher after k optimizer steps == the EMA recursion over the student weights recorded after each step."""
    config = tiny_config(modality, ema_decay=0.5, ema_end_decay=0.8, ema_anneal_end_step=3, layerdrop=0.0)
    torch.manual_seed(0)
    model = d2v.Data2VecForPreTraining(config)
    collator = d2v.DataCollatorForData2VecPretraining(config, seed=0)
    batch = collator(tiny_examples(modality))
    params = model.teacher_source_parameters()
    copied = model.teacher_copied_modules  # audio 1.0: the positional conv (fairseq's skip_keys)
    expected = {n: p.detach().double().clone() for n, p in params.items()}
    teacher = model.teacher
    assert dict(teacher.model.named_parameters()).keys() == params.keys()
    assert all(torch.equal(p, params[n]) for n, p in teacher.model.named_parameters())  # step 0: a copy
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(5):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        decay = model.update_teacher()
        assert decay == pytest.approx(ema_decay_at(step, 0.5, 0.8, 3))
        for n, p in params.items():
            w = 0.0 if n.startswith(copied) and copied else decay  # copied: the student's value at every step
            expected[n] = w * expected[n] + (1 - w) * p.detach().double()
    moved = 0
    for n, p in model.teacher.model.named_parameters():
        torch.testing.assert_close(p.double(), expected[n], atol=1e-6, rtol=0)
        moved += not torch.equal(p, params[n])
    assert moved > 0  # the student moved away and the teacher lags behind it


def test_skip_tensor_leaves_the_teacher_unchanged_on_the_device():
    torch.manual_seed(0)
    src, student = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    teacher = EMATeacher(src, 0.5, 0.5, 0)
    before = [p.clone() for p in teacher.parameters()]
    assert teacher.update(student, skip=torch.tensor(True)) == 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert teacher.num_updates == 1  # the schedule advances, as the learning rate's does
    teacher.update(student, skip=torch.tensor(False))
    for p, b, s in zip(teacher.parameters(), before, student.parameters()):
        torch.testing.assert_close(p, 0.5 * b + 0.5 * s.detach())


def test_update_with_a_skip_tensor_reads_nothing_back_to_the_host():
    """`skip` stays on the device: no `.item()` (aten._local_scalar_dense) in the update, one foreach call."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    src, student = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    teacher = EMATeacher(src, 0.5, 0.5, 0)
    teacher.update(student, skip=torch.tensor(False))  # builds the parameter lists
    for skip in (torch.tensor(False), torch.tensor(True)):
        with Ops() as seen:
            teacher.update(student, skip=skip)
        assert "aten._local_scalar_dense.default" not in seen.ops, seen.ops
        assert seen.ops.count("aten._foreach_lerp_.List") == 1, seen.ops


def test_own_audio_recipe_teacher_is_fairseqs_layout():
    """The package's 1.0 audio recipe builds fairseq's teacher (data2vec_audio.py: ema_transformer_only,
    ema_layers_only): the student's projected conv features -> the teacher's positional conv, COPIED from the student
    at every step -> the teacher's own LayerNorm, averaged like the layers. So the targets follow the teacher's
    LayerNorm and the student's positional conv, and not the student's LayerNorm."""
    config = tiny_config("audio", ema_decay=0.5, ema_end_decay=0.5, layerdrop=0.0)
    torch.manual_seed(0)
    model = d2v.Data2VecForPreTraining(config).eval()
    assert model.teacher_copied_modules == ("embeddings.pos_conv",)
    batch = d2v.DataCollatorForData2VecPretraining(config, seed=0)(tiny_examples("audio"))
    before = {k: v.clone() for k, v in model.teacher.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():  # the student moves
            p.add_(0.1 * torch.randn_like(p))
    model.update_teacher()
    student, teacher = dict(model.data2vec.named_parameters()), dict(model.teacher.model.named_parameters())
    for name, p in teacher.items():
        want = student[name] if name.startswith("embeddings.pos_conv.") else 0.5 * before[name] + 0.5 * student[name]
        torch.testing.assert_close(p, want, atol=1e-6, rtol=0, msg=name)

    def targets():
        with torch.no_grad():
            inputs = {k: batch[k] for k in ("input_values", "attention_mask") if k in batch}
            return model.forward_teacher(inputs, model.data2vec.embed(inputs))

    reference = targets()
    with torch.no_grad():
        model.data2vec.embeddings.layer_norm.weight.mul_(3.0)  # the student's LayerNorm: not the teacher's
    torch.testing.assert_close(targets(), reference, atol=0, rtol=0)
    with torch.no_grad():
        model.teacher.model.embeddings.layer_norm.weight.mul_(3.0)  # the teacher's own
    assert (targets() - reference).abs().max() > 1e-3


def test_copied_modules_follow_the_student_also_with_a_skip_tensor():
    torch.manual_seed(0)
    src = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    teacher = EMATeacher(src, 0.5, 0.5, 0, copied=("1",))
    student = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    before = [p.clone() for p in teacher.model[0].parameters()]
    teacher.update(student, skip=torch.tensor(True))
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.model[0].parameters()))
    assert not torch.equal(teacher.model[1].weight, student[1].weight)  # skipped: nothing copied either
    teacher.update(student, skip=torch.tensor(False))
    assert all(torch.equal(a, b) for a, b in zip(teacher.model[1].parameters(), student[1].parameters()))
    for p, b, s in zip(teacher.model[0].parameters(), before, student[0].parameters()):
        torch.testing.assert_close(p, 0.5 * b + 0.5 * s.detach())
    other = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    teacher.update(other)  # the plain path (no skip tensor) copies too
    assert all(torch.equal(a, b) for a, b in zip(teacher.model[1].parameters(), other[1].parameters()))
    with pytest.raises(ValueError, match="copied names submodules the teacher does not hold"):
        EMATeacher(src, 0.5, 0.5, 0, copied=("2",))
