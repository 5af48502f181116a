"""data2vec 2.0 against data2vec 1.0, one training step at a time: seconds per step and per sample, and masked tokens
predicted per second, for each modality at one model size (issue 12, item 6a).

    python bench/data2vec2_step.py                                     # base, vision,text,audio, CPU fp32
    python bench/data2vec2_step.py --device cuda --dtype bfloat16 --batch_size 32 --steps 20 --warmup 3 \
        --peak_tflops 989                                              # an H100/H200 in bf16: achieved TFLOP/s, MFU
    OMP_NUM_THREADS=1 python bench/data2vec2_step.py --model_size tiny --batch_size 2 --steps 3 --warmup 1 \
        --text_tokens 128 --audio_seconds 1                            # a quick check on a CPU

For each modality, both algorithms are built from `Data2VecConfig(modality=m, algorithm=a, **size)` (base: the
config's defaults, i.e. the papers' base recipes: 1.0 one masked copy per sample through the whole encoder, 2.0
`clone_batch` masked copies per sample, visible tokens only, a conv decoder, one teacher pass per sample). Both get the
same B unmasked samples (images `--image_size` px, `--text_tokens` random token ids, `--audio_seconds` of noise at
16 kHz), masked by `DataCollatorForData2VecPretraining` as in training. A step is what the trainer does: forward (under
autocast for bfloat16), backward, AdamW step (fused on CUDA), `update_teacher()`. Dropout, layer drop and drop path
stay as each recipe has them.

After `--warmup` untimed steps of each, `--steps` steps of each are timed one at a time, alternating 1.0 and 2.0
(order 1.0, 2.0, 2.0, 1.0, ...) in one process, so machine noise hits both. Reported per modality and algorithm:
the median seconds per step, that / B (seconds per sample), masked tokens predicted per second (every timed step's
`out.num_masked` summed, over the timed steps' summed seconds; for 2.0 every copy's masked tokens count), and the
ratio 2.0 / 1.0 of each. FLOPs of one step (forward, backward; what `torch.utils.flop_counter.FlopCounterMode`
counts: matmuls, convolutions, attention) are counted once, untimed; with them, the achieved TFLOP/s at the median
step time, and with `--peak_tflops` (the device's peak for `--dtype`) the MFU. On CUDA, also the peak memory one step
allocates above what is resident (both models, their optimizers and teachers stay resident through the run).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import modeling_data2vec_unified as d2v
from modeling_data2vec_unified.masking import MODALITY_INPUT
from modeling_data2vec_unified.optimization import parameter_groups

ALGORITHMS = ("data2vec", "data2vec2")
LABEL = {"data2vec": "1.0", "data2vec2": "2.0"}
# encoder (and 2.0 decoder) sizes; base = the config's defaults (data2vec base: 768 wide, 12 layers)
SIZES: dict[str, dict] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": {},
}
DECODER_SIZES: dict[str, dict] = {"tiny": dict(decoder_dim=64, decoder_layers=2, decoder_groups=4), "small": {},
                                  "base": {}}


def build_config(modality: str, algorithm: str, args) -> d2v.Data2VecConfig:
    fields = dict(SIZES[args.model_size])
    if algorithm == "data2vec2":
        fields.update(DECODER_SIZES[args.model_size])
    if modality == "vision":
        fields["image_size"] = args.image_size
    if modality == "text" and args.text_tokens + 2 > 514:
        fields["max_position_embeddings"] = args.text_tokens + 2
    return d2v.Data2VecConfig(modality=modality, algorithm=algorithm, **fields)


def make_examples(config, args) -> list[dict]:
    g = torch.Generator().manual_seed(args.seed)
    B, m = args.batch_size, config.modality
    if m == "text":
        n = args.text_tokens
        return [{"input_ids": [config.bos_token_id, *torch.randint(3, config.vocab_size - 1, (n - 2,),
                                                                    generator=g).tolist(), config.eos_token_id]}
                for _ in range(B)]
    if m == "vision":
        s = config.image_size
        return [{"pixel_values": torch.randn(config.num_channels, s, s, generator=g)} for _ in range(B)]
    samples = int(args.audio_seconds * config.sampling_rate)
    return [{"input_values": torch.randn(samples, generator=g)} for _ in range(B)]


class Setup:
    """One algorithm's model, optimizer and batch (on the device), and its training step."""

    def __init__(self, modality: str, algorithm: str, args):
        self.algorithm, self.device = algorithm, args.device
        self.config = build_config(modality, algorithm, args)
        torch.manual_seed(args.seed)
        self.model = d2v.Data2VecForPreTraining(self.config).to(args.device).train()
        collator = d2v.DataCollatorForData2VecPretraining(self.config, seed=args.seed)
        batch = collator(make_examples(self.config, args))
        self.batch = {k: v.to(args.device) for k, v in batch.items()}
        fused = args.device == "cuda"
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, 1e-4, 0.01), lr=1e-4, fused=fused,
                                           foreach=None if fused else True)
        self.bf16 = args.dtype == "bfloat16"
        self.model.teacher  # built now, not inside the first timed step
        self.num_masked = torch.zeros((), dtype=torch.long, device=args.device)  # summed over the timed steps
        self.times: list[float] = []

    def step(self) -> torch.Tensor:
        with torch.autocast(self.device, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext():
            out = self.model(**self.batch, check_inputs=False)
        out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.update_teacher()
        return out.num_masked.detach()

    def timed_step(self) -> None:
        sync(self.device)
        t0 = time.perf_counter()
        num_masked = self.step()
        sync(self.device)
        self.times.append(time.perf_counter() - t0)
        self.num_masked += num_masked

    def flops(self) -> int:
        """FLOPs of one step (untimed; it trains one step more)."""
        with TotalFlopCounter() as counter:
            self.step()
        return counter.get_total_flops()

    def step_memory(self) -> float:
        """CUDA: MiB one step allocates at its peak above what is allocated before it."""
        sync(self.device)
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        self.step()
        sync(self.device)
        return (torch.cuda.max_memory_allocated() - before) / 2**20


class _NoModuleTracker:
    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


class TotalFlopCounter(FlopCounterMode):
    """`FlopCounterMode`'s total only. Its per-module tracker is left out: the tracker's hooks fail on 2.0 audio's
    teacher forward (under no_grad it takes the student's conv features, which require grad, and the tracker asserts
    on views of them: "Expected gradient function to be set"); the counted ops and formulas are FlopCounterMode's."""

    def __init__(self):
        super().__init__(display=False)
        self.mod_tracker = _NoModuleTracker()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def describe(setup: Setup, args) -> str:
    c, batch = setup.config, setup.batch
    shape = tuple(batch[MODALITY_INPUT[c.modality]].shape)
    params = sum(p.numel() for p in setup.model.parameters()) / 1e6
    copies = f", {c.clone_batch} masked copies/sample, decoder {c.decoder_layers}x{c.decoder_dim}" \
        if c.algorithm == "data2vec2" else ""
    return (f"{LABEL[c.algorithm]}: {params:.1f}M trained params, input {shape}, mask {c.mask_type} "
            f"p={c.mask_prob:.2f}{copies}, teacher {c.teacher_scope}, top-{c.average_top_k_layers} targets")


def bench_modality(modality: str, args) -> dict:
    setups = {a: Setup(modality, a, args) for a in ALGORITHMS}
    for setup in setups.values():
        print(f"[{modality}] {describe(setup, args)}")
    for _ in range(args.warmup):
        for setup in setups.values():
            setup.step()
    sync(args.device)
    extra = {a: {} for a in ALGORITHMS}
    if args.flops:
        for a, setup in setups.items():
            extra[a]["flops"] = setup.flops()
    if args.device == "cuda":
        for a, setup in setups.items():
            extra[a]["step_mib"] = setup.step_memory()
    for i in range(args.steps):  # 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, ...
        for a in (ALGORITHMS if i % 2 == 0 else ALGORITHMS[::-1]):
            setups[a].timed_step()
    results = {}
    for a, setup in setups.items():
        total = sum(setup.times)
        median = statistics.median(setup.times)
        masked = int(setup.num_masked)
        results[a] = dict(s_per_step=median, s_per_sample=median / args.batch_size,
                          masked_per_step=masked / len(setup.times), masked_per_s=masked / total,
                          clone_batch=setup.config.clone_batch, **extra[a])
        if "flops" in extra[a]:
            results[a]["tflops"] = extra[a]["flops"] / median / 1e12
    return results


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_size", choices=tuple(SIZES), default="base",
                        help="tiny: 64 wide, 4 layers, 4 heads, FFN 256 (2.0 decoder 2x64, groups 4); small: 384 / "
                             "12 / 6 / 1536; base: the config's defaults")
    parser.add_argument("--modalities", default="vision,text,audio")
    parser.add_argument("--batch_size", type=int, default=8, help="samples per step (2.0: each in clone_batch copies)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per algorithm (CPU base: e.g. 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per algorithm first (CPU base: e.g. 1)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: autocast, as the trainer's --mixed_precision bf16 (weights stay fp32)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--text_tokens", type=int, default=512,
                        help="tokens per text sample, with <s> and </s> (512: data2vec 2.0's tokens_per_sample; "
                             "128: the trainer's --max_seq_length default)")
    parser.add_argument("--audio_seconds", type=float, default=5.0, help="seconds of 16 kHz audio per sample")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="the device's peak TFLOP/s for --dtype (e.g. 989 for an H100/H200 SXM in bf16): MFU")
    parser.add_argument("--no_flops", dest="flops", action="store_false", help="skip the FLOP count")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch_size must be >= 1, --warmup >= 0")
    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"model_size={args.model_size} batch_size={args.batch_size} steps={args.steps} warmup={args.warmup} "
          f"dtype={args.dtype} device={args.device} ({device_name}) threads={torch.get_num_threads()} "
          f"torch={torch.__version__}")
    all_results = {}
    for modality in modalities:
        all_results[modality] = bench_modality(modality, args)

    has_flops = args.flops
    has_mem = args.device == "cuda"
    head = ["modality", "algorithm", "s/step (median)", "s/sample", "masked tokens/step", "masked tokens/s"]
    if has_flops:
        head += ["GFLOP/step", "TFLOP/s"] + (["MFU"] if args.peak_tflops else [])
    if has_mem:
        head += ["step peak MiB"]
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for modality, results in all_results.items():
        for a in ALGORITHMS:
            r = results[a]
            row = [modality, f"{LABEL[a]} (x{r['clone_batch']})", fmt(r["s_per_step"]), fmt(r["s_per_sample"]),
                   fmt(r["masked_per_step"], 4), fmt(r["masked_per_s"])]
            if has_flops:
                row += [fmt(r["flops"] / 1e9, 4), fmt(r["tflops"])]
                if args.peak_tflops:
                    row += [f"{r['tflops'] / args.peak_tflops:.1%}"]
            if has_mem:
                row += [f"{r['step_mib']:.0f}"]
            print("| " + " | ".join(row) + " |")
        one, two = results["data2vec"], results["data2vec2"]
        row = [modality, "2.0 / 1.0", f"{two['s_per_step'] / one['s_per_step']:.2f}x",
               f"{two['s_per_sample'] / one['s_per_sample']:.2f}x",
               f"{two['masked_per_step'] / one['masked_per_step']:.2f}x",
               f"{two['masked_per_s'] / one['masked_per_s']:.2f}x"]
        if has_flops:
            row += [f"{two['flops'] / one['flops']:.2f}x", f"{two['tflops'] / one['tflops']:.2f}x"]
            if args.peak_tflops:
                row += [""]
        if has_mem:
            row += [f"{two['step_mib'] / one['step_mib']:.2f}x"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
