"""`PretrainingArguments`: every flag of `data2vec-pretrain`, its defaults resolved per modality and size
(`recipes`), and the checks of their values, each refusal naming the fix."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..configuration_data2vec import MODALITIES
from .recipes import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    MODEL_SIZES,
    OPTIMIZER_DEFAULTS,
    OPTIMIZER_DEFAULTS_V2,
    TINY_OPTIMIZER,
    TRAINING_DEFAULTS,
    TRAINING_DEFAULTS_V2,
)

PRECISIONS = ("no", "bf16", "fp16")


def precision_source(args: PretrainingArguments) -> str:
    """Where the run's precision comes from: the flag, else `accelerate launch`'s setting (its flag or config file,
    which it passes on as ACCELERATE_MIXED_PRECISION), else the default."""
    if args.mixed_precision is not None:
        return "--mixed_precision"
    return "accelerate launch's config" if os.environ.get("ACCELERATE_MIXED_PRECISION") in PRECISIONS else "default"


@dataclass
class PretrainingArguments:
    """Every flag of `data2vec-pretrain` (documented in docs/training.md). `None` means: the default for the
    modality and model size (see `resolve`)."""

    # ---- what to train on --------------------------------------------------------------------------------------
    modality: str = field(default="vision", metadata={"help": "text | vision | audio", "choices": MODALITIES})
    algorithm: str | None = field(default=None, metadata={
        "help": "data2vec (1.0) | data2vec2 (2.0: several masks per sample, the student encodes only the visible "
                "tokens); default: that of --init_from / --config, else the modality's (DEFAULT_ALGORITHM: "
                "data2vec2 for audio, data2vec for text and vision)", "choices": ALGORITHMS})
    dataset: str = field(default="builtin", metadata={"help": "'builtin' (offline), a local folder / file, or a "
                                                              "datasets Hub id"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "the Hub dataset's configuration"})
    dataset_split: str = field(default="train", metadata={"help": "the split to pretrain on"})
    column: str | None = field(default=None, metadata={"help": "the column holding the text / image / audio"})
    label_column: str | None = field(default=None, metadata={"help": "labels for the linear probe at the end"})
    processor: str | None = field(default=None, metadata={"help": "a transformers tokenizer / image processor / "
                                                                  "feature extractor (path or Hub id)"})
    max_examples: int | None = field(default=None, metadata={"help": "use only the first N examples"})
    max_seq_length: int = field(default=128, metadata={"help": "text: tokens per example, with <s> and </s>"})
    tokenizer_vocab_size: int = field(default=2048, metadata={"help": "text: vocabulary of a tokenizer trained "
                                                                      "on the data when no --processor is given"})
    resample_audio: bool = field(default=True, metadata={"help": "audio at another rate than the model's is "
                                                                 "resampled (--no_resample_audio: refused)"})
    audio_crop: str = field(default="shortest", metadata={"help": "audio batches: 'shortest' crops every clip "
                                                                  "to the shortest (data2vec), 'pad' pads",
                                                          "choices": ("shortest", "pad")})
    image_augment: str | None = field(default=None, metadata={"help": "vision: 'affine' (small random rotation, "
                                                                       "scale, shift) or 'none'; default: affine "
                                                                       "for the built-in digits, else none"})
    skip_bad_examples: float | None = field(default=None, metadata={
        "help": "skip images / clips that cannot be decoded (logged), stopping once more than this fraction of the "
                "data is bad; default: stop at the first, naming its file"})
    streaming: bool = field(default=False, metadata={
        "help": "read --dataset as a datasets IterableDataset (local json / jsonl / csv / parquet / txt / webdataset .tar "
                "shards or a "
                "Hub id): shuffled with a buffer, split across processes and workers, prepared per batch; resumes "
                "exactly (text needs --processor, else a tokenizer is trained on the first "
                "--streaming_tokenizer_examples texts)"})
    shuffle_buffer_size: int = field(default=1000, metadata={"help": "--streaming: the shuffle buffer (rows)"})
    streaming_tokenizer_examples: int = field(default=10_000, metadata={
        "help": "--streaming text without --processor: the tokenizer is trained on this many first texts"})
    max_audio_seconds: float | None = field(default=None, metadata={"help": "audio: longer clips are cropped at "
                                                                            "random (data2vec: 15.6 s)"})
    min_audio_seconds: float = field(default=1.0, metadata={
        "help": "audio: shorter clips are dropped (counted in a warning), so that one short clip does not crop its "
                "whole batch (--audio_crop shortest); fairseq's data2vec recipe: 2 (min_sample_size 32000)"})
    # ---- the model ---------------------------------------------------------------------------------------------
    model_size: str = field(default="tiny", metadata={"help": "tiny | small | base", "choices": tuple(MODEL_SIZES)})
    config: str | None = field(default=None, metadata={"help": "a Data2VecConfig JSON file (replaces --model_size)"})
    config_overrides: str | None = field(default=None, metadata={"help": "comma-separated config fields, e.g. "
                                                                         "'mask_prob=0.5,average_top_k_layers=6'"})
    init_from: str | None = field(default=None, metadata={"help": "continue pretraining from a checkpoint: ours, or "
                                                                  "transformers' (facebook/data2vec-audio-base)"})
    # ---- optimisation --------------------------------------------------------------------------------------------
    output_dir: str | None = field(default=None, metadata={"help": "default: runs/data2vec-<modality>"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start afresh in an output_dir that holds another run's checkpoints (they are deleted first)"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps"})
    per_device_train_batch_size: int | None = field(default=None)
    gradient_accumulation_steps: int = field(default=1)
    learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate of AdamW"})
    weight_decay: float | None = field(default=None, metadata={"help": "default: the modality's recipe"})
    adam_beta1: float = field(default=0.9)
    adam_beta2: float | None = field(default=None, metadata={"help": "default: the modality's recipe"})
    adam_epsilon: float | None = field(default=None, metadata={"help": "default: the modality's recipe"})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "any transformers.get_scheduler name"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "warm-up steps as a fraction of max_steps"})
    warmup_steps: int | None = field(default=None, metadata={"help": "overrides --warmup_ratio"})
    max_grad_norm: float | None = field(default=None, metadata={"help": "gradient clipping (0: none); default: the "
                                                                        "modality's recipe (vision 3, text 5, "
                                                                        "audio none)"})
    mixed_precision: str | None = field(default=None, metadata={
        "help": "no | bf16 | fp16 (teacher weights, targets and loss stay fp32); default: what `accelerate launch` "
                "was given (its --mixed_precision or config file), else no", "choices": PRECISIONS})
    ema_decay: float | None = field(default=None, metadata={"help": "teacher EMA decay at step 0"})
    ema_end_decay: float | None = field(default=None)
    ema_anneal_end_step: int | None = field(default=None, metadata={"help": "tiny: max_steps"})
    seed: int = field(default=0)
    max_train_time: str | None = field(default=None, metadata={
        "help": "stop with a checkpoint once this much wall-clock has passed: seconds, or e.g. '90m', '12h', '2d' "
                "(a job's time limit; resume with --resume_from_checkpoint latest)"})
    dataloader_num_workers: int = field(default=0)
    cpu: bool = field(default=False, metadata={"help": "train on the CPU even if an accelerator is present"})
    fsdp: bool = field(default=False, metadata={
        "help": "shard the student, its gradients, the AdamW state and the EMA teacher over the processes (PyTorch "
                "FSDP2 `fully_shard`, per transformer layer); also on when accelerate launches with an FSDP config "
                "(examples/fsdp.yaml). See docs/training.md"})
    torch_compile: bool = field(default=False, metadata={
        "help": "torch.compile the student's and the teacher's transformer layers, the audio conv feature encoder "
                "and the 2.0 decoder (regional compilation, static shapes); text and audio lengths are brought to a "
                "few buckets so that recompiles stay bounded. Also on when accelerate launches with a dynamo backend. "
                "See docs/training.md"})
    bucket_lengths: bool | None = field(default=None, metadata={
        "help": "pad text to one of 4 lengths, crop audio to one of 4 lengths per doubling (default: with "
                "--torch_compile); `--bucket_lengths true` without it gives an eager run the batches of a compiled one"})
    torch_compile_backend: str = field(default="inductor", metadata={
        "help": "--torch_compile: the torch.compile backend (inductor; aot_eager compiles fast, for checks)"})
    torch_compile_mode: str | None = field(default=None, metadata={
        "help": "--torch_compile: the torch.compile mode (default | reduce-overhead | max-autotune)"})
    # ---- watching it -----------------------------------------------------------------------------------------
    logging_steps: int = field(default=50)
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard | wandb | all | none, or a "
                                                                    "comma-separated list of accelerate trackers"})
    collapse_check_after: int | None = field(default=None, metadata={"help": "steps before the collapse check "
                                                                             "(default: the warm-up, >= 100)"})
    skip_nonfinite: bool = field(default=False, metadata={"help": "skip steps with a NaN/inf loss or gradient "
                                                                  "instead of stopping"})
    disable_tqdm: bool = field(default=False)
    validation_split_percentage: float | None = field(default=None, metadata={
        "help": "hold out this percentage of the examples (chosen with --seed) and report the data2vec loss on them "
                "every --eval_steps (eval_loss), with fixed masks"})
    validation_split: str | None = field(default=None, metadata={
        "help": "the dataset's own held-out split (e.g. validation: a Hub dataset's split, or a folder's files / "
                "subfolders named by split) instead of --validation_split_percentage"})
    max_eval_examples: int | None = field(default=None, metadata={"help": "evaluate on the first N held-out "
                                                                          "examples only"})
    eval_steps: int | None = field(default=None, metadata={"help": "default: --logging_steps"})
    probe_steps: int | None = field(default=None, metadata={"help": "linear probe on a fixed subset of the probe "
                                                                    "data every N steps, logged as probe/pretrained "
                                                                    "(0 or None: off)"})
    monitor_steps: int | None = field(default=None, metadata={
        "help": "label-free health of the representations every N steps (pooled spread across examples and "
                "effective rank of the front end, the student's top layers and the teacher's; warns on a collapse; "
                "drawn in curves.png); default: a tenth of the run; 0: off"})
    monitor_examples: int = field(default=64, metadata={"help": "training examples the health check pools"})
    # ---- checkpoints and the result -------------------------------------------------------------------------------
    save_steps: int = field(default=500)
    save_total_limit: int | None = field(default=2, metadata={"help": "checkpoints kept (None: all)"})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder"})
    probe: bool = field(default=True, metadata={"help": "linear probe at the end when the data has labels"})
    push_to_hub: bool = field(default=False)
    hub_model_id: str | None = field(default=None, metadata={"help": "default: the output folder's name"})
    hub_private_repo: bool = field(default=False)
    hub_token: str | None = field(default=None)

    def resolve(self) -> PretrainingArguments:
        """A copy with every `None` default filled in for the modality and size, checked."""
        args = dataclasses.replace(self)
        if args.modality not in MODALITIES:
            raise ValueError(f"--modality must be one of {MODALITIES}; got {args.modality!r}")
        if args.algorithm is None:
            args.algorithm = _source_algorithm(args) or DEFAULT_ALGORITHM[args.modality]
        if args.algorithm not in ALGORITHMS:
            raise ValueError(f"--algorithm must be one of {ALGORITHMS}; got {args.algorithm!r}")
        if args.torch_compile:
            _check_compile(args)
        if args.mixed_precision is None:  # an explicit flag wins over accelerate's config, as accelerate's own flags do
            args.mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
            if args.mixed_precision not in PRECISIONS:
                raise ValueError(f"accelerate's mixed precision {args.mixed_precision!r} (ACCELERATE_MIXED_PRECISION, "
                                 f"from `accelerate launch` or its config) is not one of {PRECISIONS}: fix the config "
                                 f"or pass --mixed_precision")
        v2 = args.algorithm == "data2vec2"
        lr, batch, steps = TRAINING_DEFAULTS[args.model_size][args.modality]
        if v2 and args.model_size == "tiny":
            lr, batch, steps = TRAINING_DEFAULTS_V2[args.modality]
        args.learning_rate = lr if args.learning_rate is None else args.learning_rate
        if args.per_device_train_batch_size is None:
            args.per_device_train_batch_size = batch
        if args.max_steps is None:
            args.max_steps = steps
        args.output_dir = args.output_dir or f"runs/data2vec-{args.modality}"
        if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
            raise ValueError(f"--output_dir {args.output_dir} is a file, not a folder: give a folder (created if "
                             "missing)")
        if args.config:
            read_json(args.config, "--config", CONFIG_EXPECTED)
        recipe = {**(OPTIMIZER_DEFAULTS_V2 if v2 else OPTIMIZER_DEFAULTS)[args.modality],
                  **(TINY_OPTIMIZER.get(args.modality, {}) if args.model_size == "tiny" and not v2 else {})}
        for name, value in recipe.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        if args.image_augment is None:
            args.image_augment = "affine" if args.modality == "vision" and args.dataset == "builtin" else "none"
        _check_optimizer_values(args)
        if args.warmup_steps is None:
            args.warmup_steps = int(args.warmup_ratio * args.max_steps)
        elif args.warmup_steps > args.max_steps:
            raise ValueError(f"--warmup_steps {args.warmup_steps} is longer than the run (--max_steps "
                             f"{args.max_steps}): lower it, or use --warmup_ratio (a fraction of --max_steps)")
        if args.collapse_check_after is None:  # an untrained head predicts near-constants: not a collapse yet
            args.collapse_check_after = max(args.warmup_steps, 100)
        for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps",
                     "save_steps"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name} must be >= 1; got {getattr(args, name)}")
        for name in ("dataloader_num_workers", "warmup_steps", "min_audio_seconds"):
            if getattr(args, name) < 0:
                raise ValueError(f"--{name} must be >= 0; got {getattr(args, name)}")
        if args.save_total_limit is not None and args.save_total_limit < 1:
            raise ValueError(f"--save_total_limit must be >= 1 (or unset: keep all); got {args.save_total_limit}")
        if args.max_train_time is not None:
            args.max_train_time = str(parse_duration(args.max_train_time))
        if args.validation_split_percentage is not None and not 0 <= args.validation_split_percentage < 100:
            raise ValueError(f"--validation_split_percentage must be in [0, 100); got {args.validation_split_percentage}")
        if args.validation_split is not None and args.validation_split_percentage:
            raise ValueError("give --validation_split (the dataset's own held-out split) or "
                             "--validation_split_percentage (held out of the training split), not both")
        if args.validation_split is not None and args.dataset == "builtin":
            raise ValueError("--validation_split: the built-in data has no splits; use --validation_split_percentage")
        if args.validation_split == args.dataset_split:
            raise ValueError(f"--validation_split {args.validation_split} is the training split (--dataset_split): "
                             "name another split, or use --validation_split_percentage")
        if args.max_eval_examples is not None and args.max_eval_examples < 1:
            raise ValueError(f"--max_eval_examples must be >= 1 (or unset: all); got {args.max_eval_examples}")
        if args.eval_steps is None:
            args.eval_steps = args.logging_steps
        if args.eval_steps < 1:
            raise ValueError(f"--eval_steps must be >= 1; got {args.eval_steps}")
        if args.probe_steps is not None and args.probe_steps < 0:
            raise ValueError(f"--probe_steps must be >= 1 (or 0: no probes during training); got {args.probe_steps}")
        args.probe_steps = args.probe_steps or None
        if args.monitor_steps is None:
            args.monitor_steps = max(1, args.max_steps // 10)
        if args.monitor_steps < 0 or args.monitor_examples < 2:
            raise ValueError(f"--monitor_steps must be >= 1 (or 0: off) and --monitor_examples >= 2; got "
                             f"{args.monitor_steps}, {args.monitor_examples}")
        args.monitor_steps = args.monitor_steps or None
        if args.streaming:
            _check_streaming(args)
        return args


CONFIG_EXPECTED = "a config.json written by save_pretrained (or Data2VecConfig.to_json_file)"


def read_json(path, what: str, expected: str) -> dict:
    """A JSON object from `path`, or a ValueError naming the file, what it was given as and what it should be."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist: give {expected}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{what} {path} is not JSON ({type(error).__name__}: {error}): give {expected}") from error
    if not isinstance(value, dict):
        raise ValueError(f"{what} {path} holds a JSON {type(value).__name__}, not an object: give {expected}")
    return value


def launcher_processes() -> int | None:
    """The process count `accelerate launch` was asked for (its --num_processes, read from the parent process's
    command line: accelerate does not pass it on when it starts a single process), or None when not known."""
    if "ACCELERATE_MIXED_PRECISION" not in os.environ or "WORLD_SIZE" in os.environ:
        return None  # not started by `accelerate launch`'s single-process path
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--num_processes=") else (
            argv[i + 1] if arg in ("--num_processes", "--num-processes") and i + 1 < len(argv) else None)
        if value is not None and value.isdigit():
            return int(value)
    return None


def _check_optimizer_values(args: PretrainingArguments) -> None:
    """Ratios, fractions and optimizer values in their ranges, each refusal naming the flag and what it takes."""
    checks = (  # flag, allowed, what it takes
        ("warmup_ratio", 0 <= args.warmup_ratio <= 1, "a fraction of --max_steps in [0, 1], e.g. 0.1"),
        ("max_grad_norm", args.max_grad_norm >= 0, "the clipping norm, > 0, or 0 for no clipping (a negative bound "
                                                   "would flip every gradient)"),
        ("skip_bad_examples", args.skip_bad_examples is None or 0 <= args.skip_bad_examples < 1,
         "the fraction of bad examples tolerated, in [0, 1), e.g. 0.01"),
        ("learning_rate", args.learning_rate > 0, "a positive number, e.g. 1e-3"),
        ("weight_decay", args.weight_decay >= 0, "a number >= 0, e.g. 0.01"),
        ("adam_beta1", 0 <= args.adam_beta1 < 1, "a number in [0, 1), e.g. 0.9"),
        ("adam_beta2", 0 <= args.adam_beta2 < 1, "a number in [0, 1), e.g. 0.98"),
        ("adam_epsilon", args.adam_epsilon > 0, "a positive number, e.g. 1e-6"),
    )
    for name, ok, takes in checks:
        if not ok:
            raise ValueError(f"--{name} must be {takes}; got {getattr(args, name)}")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _check_compile(args: PretrainingArguments) -> None:
    """--torch_compile's backend and mode, checked before any data is read."""
    import torch._dynamo

    backends = torch._dynamo.list_backends(exclude_tags=())
    if args.torch_compile_backend not in backends:
        raise ValueError(f"--torch_compile_backend {args.torch_compile_backend!r} is not a torch.compile backend here; "
                         f"use inductor (the default) or one of: {', '.join(backends)}")
    if args.torch_compile_mode not in (None, *COMPILE_MODES):
        raise ValueError(f"--torch_compile_mode must be one of {', '.join(COMPILE_MODES)}; got "
                         f"{args.torch_compile_mode!r}")


def _check_streaming(args: PretrainingArguments) -> None:
    """--streaming refuses what needs the data's length or a labelled held-out set, naming the fix."""
    if args.dataset == "builtin":
        raise ValueError("--streaming reads a --dataset (local shards or a Hub id); the built-in data is in memory: "
                         "drop --streaming or pass --dataset")
    if args.validation_split_percentage:
        raise ValueError("--validation_split_percentage needs the data's length, which a stream has not: drop it "
                         "with --streaming (or drop --streaming)")
    if args.validation_split is not None:
        raise ValueError("--validation_split is not read as a stream: drop it with --streaming (or drop --streaming)")
    if args.max_examples is not None:
        raise ValueError("--max_examples is not supported with --streaming: stream fewer shards instead")
    if args.probe_steps:
        raise ValueError("--probe_steps needs labelled examples held in memory; a stream has no probe: drop it with "
                         "--streaming")
    if args.shuffle_buffer_size < 1:
        raise ValueError(f"--shuffle_buffer_size must be >= 1; got {args.shuffle_buffer_size}")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# flags that shape the run a checkpoint continues: resuming with other values would not continue it exactly
SCHEDULE_FLAGS = ("max_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "per_device_train_batch_size",
                  "gradient_accumulation_steps", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "seed")


# the warm-up a resume compares is in steps; a run that never set --warmup_steps got it from --warmup_ratio
RATIO_NOTE = "; without --warmup_steps it is --warmup_ratio x --max_steps"


def parse_duration(text: str | float) -> float:
    """'3600', '90s', '90m', '12h', '2d' -> seconds (> 0)."""
    value = str(text).strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([smhd]?)", value)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"--max_train_time must be a positive duration: seconds or e.g. '90m', '12h', '2d'; got {text!r}")
    return float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=0.5,c=ffn,d=[1,2]' -> {'a': 1, 'b': 0.5, 'c': 'ffn', 'd': [1, 2]} (JSON values where they parse)."""
    out = {}
    for item in filter(None, re.split(r",(?![^\[]*\])", text or "")):
        if "=" not in item:
            raise ValueError(f"--config_overrides items are name=value; got {item!r}")
        name, value = (s.strip() for s in item.split("=", 1))
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def _source_algorithm(args: PretrainingArguments) -> str | None:
    """The algorithm of --init_from's checkpoint or of the --config file, if either is given."""
    if args.init_from:
        from ..conversion import read_config_dict

        return read_config_dict(args.init_from).get("algorithm", "data2vec")
    if args.config:
        return read_json(args.config, "--config", CONFIG_EXPECTED).get("algorithm", "data2vec")
    return None


