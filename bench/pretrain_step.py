"""What the data2vec teacher costs: a full pretraining step against a student-only step, the EMA update against
naive alternatives, and peak memory.

    python bench/pretrain_step.py --size tiny
    python bench/pretrain_step.py --size base [--modality vision] [--device cuda --dtype bf16 --peak_tflops 989]

(a) full step  = student forward + backward, teacher forward (targets), EMA update;
    student step = student forward + backward on the same masked batch against fixed targets.
    Both are timed alternately (these machines are noisy) and compared by median; the floor is about 1.33
    (a forward is about a third of a forward + backward). Layer drop is off so both do the same work.
(b) the EMA update of the teacher (one fused `torch._foreach_lerp_`; and with the trainer's device-side `skip`, the
    List overload) against a per-tensor `mul_` / `add_` loop and a `state_dict` blend + `load_state_dict` (what a
    popular unofficial port does).
(c) peak memory of each step kind (CUDA: max allocated; CPU: the peak RSS the steps add to a fresh process).

The last line is `overhead_ratio=<x>`: the largest full / student ratio over the modalities run.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time

import torch

import modeling_data2vec_unified as d2v

SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                 average_top_k_layers=3),
    "base": {},  # data2vec base: 768 wide, 12 layers
}
INPUTS = {  # (batch size, example length) per size
    "tiny": {"text": (8, 128), "vision": (8, 224), "audio": (4, 32000)},
    "base": {"text": (4, 256), "vision": (4, 224), "audio": (2, 48000)},
}


def build(modality: str, size: str, device: str):
    config = d2v.Data2VecConfig(modality=modality, layerdrop=0.0, **SIZES[size])
    torch.manual_seed(0)
    model = d2v.Data2VecForPreTraining(config).to(device).train()
    batch_size, length = INPUTS[size][modality]
    g = torch.Generator().manual_seed(0)
    if modality == "text":
        examples = [{"input_ids": [0, *torch.randint(3, 50000, (length - 2,), generator=g).tolist(), 2]}
                    for _ in range(batch_size)]
    elif modality == "vision":
        examples = [{"pixel_values": torch.randn(3, length, length, generator=g)} for _ in range(batch_size)]
    else:
        examples = [{"input_values": torch.randn(length, generator=g)} for _ in range(batch_size)]
    batch = d2v.DataCollatorForData2VecPretraining(config, seed=0)(examples)
    return model, {k: v.to(device) for k, v in batch.items()}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_steps(model, batch, autocast):
    mask_key = "mask_time_indices" if model.config.modality == "audio" else "bool_masked_pos"
    mask = batch[mask_key].bool().reshape(len(batch[mask_key]), -1)
    # fixed targets for the student-only step (their values do not change its cost)
    targets = torch.randn(*mask.shape, model.config.hidden_size, device=mask.device)

    def student_step():
        with autocast():
            student = model.forward_student(batch, mask)
            loss, _ = model.forward_loss(student.predictions, targets, mask)
        loss.backward()
        model.zero_grad(set_to_none=True)

    def full_step():
        with autocast():
            loss = model(**batch, check_inputs=False).loss
        loss.backward()
        model.update_teacher()
        model.zero_grad(set_to_none=True)

    return student_step, full_step


def encoder_flops_per_step(model, batch) -> float:
    """Model FLOPs of one full step in the Transformer encoder (matmuls + attention; front ends and head left out):
    the student's forward + backward (3 forwards) and the teacher's forward."""
    c = model.config
    with torch.no_grad():
        front = model.data2vec.embed(batch)
    B, T, D = front.hidden_states.shape
    matmul_params = sum(p.numel() for n, p in model.data2vec.encoder.named_parameters() if p.dim() == 2)
    per_forward = 2 * matmul_params * B * T + c.num_hidden_layers * 4 * B * T * T * D
    return 4 * per_forward


def time_alternating(fns: dict, device: str, repeats: int) -> dict[str, float]:
    for fn in fns.values():  # warm-up
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_ema(model, device: str, repeats: int) -> dict[str, float]:
    teacher, source = model.teacher, model._ema_source()
    decay = 0.999
    pairs = list(zip(teacher.model.parameters(), source.parameters()))

    def fused():
        teacher.update(source)

    skip = torch.zeros((), dtype=torch.bool, device=device)  # the trainer's: decided on the device, never read back

    def fused_skip():
        teacher.update(source, skip=skip)

    @torch.no_grad()
    def loop():
        for t, s in pairs:
            t.mul_(decay).add_(s, alpha=1 - decay)

    @torch.no_grad()
    def state_dict_copy():
        student = source.state_dict()
        blended = {k: decay * v + (1 - decay) * student[k] for k, v in teacher.model.state_dict().items()}
        teacher.model.load_state_dict(blended)

    return time_alternating({"foreach_lerp": fused, "foreach_lerp_device_skip": fused_skip, "per_tensor_loop": loop,
                             "state_dict_copy": state_dict_copy}, device, repeats)


def peak_memory(args, modality: str, kind: str) -> float:
    """MiB: CUDA max allocated in this process; CPU: the peak RSS that two steps of `kind` add to a fresh process
    holding the built model (the teacher's weights count for the full step: it is built on first use)."""
    if args.device == "cuda":
        model, batch = build(modality, args.size, args.device)
        steps = dict(zip(("student", "full"), make_steps(model, batch, autocaster(args))))
        torch.cuda.reset_peak_memory_stats()
        steps[kind]()
        return torch.cuda.max_memory_allocated() / 2**20
    cmd = [sys.executable, __file__, "--size", args.size, "--modality", modality, "--_memory_child", kind]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])


def autocaster(args):
    if args.dtype == "fp32":
        return lambda: torch.autocast(args.device, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    return lambda: torch.autocast(args.device, dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--modality", choices=["text", "vision", "audio", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="the device's peak for --dtype (e.g. 989 for an H100 SXM in bf16): prints MFU")
    parser.add_argument("--_memory_child", choices=["student", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modalities = ["text", "vision", "audio"] if args.modality == "all" else [args.modality]

    if args._memory_child:  # a fresh process: build, run two steps of one kind, report the peak RSS they add
        model, batch = build(modalities[0], args.size, "cpu")
        steps = dict(zip(("student", "full"), make_steps(model, batch, autocaster(args))))
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * resource.getpagesize() / 2**20
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS: building the model peaked higher
        for _ in range(2):
            steps[args._memory_child]()
        with open("/proc/self/status") as f:
            peak = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024
        print(json.dumps(peak - resident))
        return

    print(f"size={args.size} device={args.device} dtype={args.dtype} threads={args.threads} "
          f"torch={torch.__version__}")
    ratios = []
    for modality in modalities:
        model, batch = build(modality, args.size, args.device)
        student_step, full_step = make_steps(model, batch, autocaster(args))
        t = time_alternating({"student": student_step, "full": full_step}, args.device, args.repeats)
        ratio = t["full"] / t["student"]
        ratios.append(ratio)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        shape = {k: tuple(v.shape) for k, v in batch.items() if k in ("input_ids", "pixel_values", "input_values")}
        print(f"[{modality}] {params:.1f}M params, batch {shape}: student step {t['student'] * 1e3:.1f} ms, "
              f"full step {t['full'] * 1e3:.1f} ms, ratio {ratio:.3f}")
        samples = len(next(iter(batch.values())))
        flops = encoder_flops_per_step(model, batch)
        mfu = f", MFU {flops / t['full'] / (args.peak_tflops * 1e12):.1%}" if args.peak_tflops else ""
        print(f"[{modality}] full step: {samples / t['full']:.2f} samples/s, encoder model FLOPs "
              f"{flops / t['full'] / 1e12:.3f} TFLOP/s{mfu}")
        ema = bench_ema(model, args.device, args.repeats)
        print(f"[{modality}] EMA update of {sum(p.numel() for p in model.teacher.parameters()) / 1e6:.1f}M params: "
              + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in ema.items())
              + f"; device skip / fused {ema['foreach_lerp_device_skip'] / ema['foreach_lerp']:.2f}x"
              + f"; loop / fused {ema['per_tensor_loop'] / ema['foreach_lerp']:.2f}x, "
              f"state_dict / fused {ema['state_dict_copy'] / ema['foreach_lerp']:.2f}x")
        mem = {kind: peak_memory(args, modality, kind) for kind in ("student", "full")}
        what = "max allocated" if args.device == "cuda" else "peak RSS added by the steps"
        print(f"[{modality}] {what}: student step {mem['student']:.0f} MiB, full step {mem['full']:.0f} MiB, "
              f"ratio {mem['full'] / mem['student']:.3f}")
    print(f"overhead_ratio={max(ratios):.3f}")


if __name__ == "__main__":
    main()
