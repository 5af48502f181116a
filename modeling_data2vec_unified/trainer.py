"""`Data2VecPretrainer` and `data2vec-pretrain`: data2vec pretraining driven by `accelerate`.

    data2vec-pretrain                                    # tiny vision model on built-in digits, then a linear probe
    data2vec-pretrain --modality audio --dataset ./wavs --model_size base --mixed_precision bf16
    accelerate launch -m modeling_data2vec_unified.trainer --modality text --dataset wikitext ...
    data2vec-pretrain ... --resume_from_checkpoint latest

One optimizer step = `gradient_accumulation_steps` micro-batches (forward, backward; DDP syncs on the last), one
clip, one fused AdamW step, one learning-rate step, one EMA teacher step. The step has no host sync: losses and
variances are summed on the device and read at `--logging_steps`; a step whose loss or gradients are not finite is
skipped on the device (AdamW's `found_inf`, the teacher's `skip`), so it can never reach the weights or the teacher,
and is reported (and stops the run, unless `--skip_nonfinite`) at the next logging step.

Data order and masks are pure functions of (seed, epoch, step, rank) (`EpochBatchSampler` + `SeededBatch`), so a
run resumed from a checkpoint continues exactly: same batches, same masks, same dropout (accelerate restores the
RNGs), same teacher (a registered checkpoint object with its update count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import HfArgumentParser, get_scheduler

from .configuration_data2vec import MODALITIES, Data2VecConfig
from .masking import MODALITY_INPUT, DataCollatorForData2VecPretraining, SeededBatch
from .modeling_data2vec import Data2VecCollapseError, Data2VecForPreTraining
from .optimization import parameter_groups

logger = logging.getLogger(__name__)

# encoder sizes; "base" is data2vec's base model of the modality (the config's defaults)
MODEL_SIZES: dict[str, dict] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                 average_top_k_layers=3),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                  average_top_k_layers=8),
    "base": {},
}
# tiny models learn in a few thousand steps with a fast teacher (EMA 0.99 -> 0.999 over the run: 0.999 -> 0.9999
# lags far behind) and, for images, uniformly random masks over a small grid, FFN targets instance-normed over
# patches and learned absolute positions (measured on digits: ../docs/training.md)
TINY_RECIPES: dict[str, dict] = {
    "vision": dict(mask_type="random", mask_prob=0.6, target_layer_output="ffn", target_layer_norm="instance",
                   target_final_norm="none", relative_position_bias="none", use_absolute_position_embeddings=True,
                   layer_scale_init_value=0.0, drop_path_rate=0.0, ema_decay=0.99, ema_end_decay=0.999),
    # text: instance-normed targets (as data2vec 2.0); per-position layer norm collapsed within 200 tiny steps
    "text": dict(target_layer_norm="instance", ema_decay=0.99, ema_end_decay=0.999),
    "audio": dict(conv_dim=[128] * 6, conv_stride=[5, 2, 2, 2, 2, 2], conv_kernel=[10, 3, 3, 3, 3, 2],
                  num_conv_pos_embeddings=2, conv_pos_kernel_size=19, num_conv_pos_embedding_groups=4, layerdrop=0.0,
                  ema_decay=0.99, ema_end_decay=0.999),
}
# the built-in digits are 8x8 grey images, upsampled to 16x16 and cut into 4x4 patches
BUILTIN_VISION = dict(image_size=16, patch_size=4, num_channels=1)

# training defaults that depend on the size: (learning rate, per-device batch, max steps) per modality;
# base learning rates are data2vec's (text 2e-4, vision 2e-3 at batch 2048, audio 5e-4)
TRAINING_DEFAULTS: dict[str, dict[str, tuple[float, int, int]]] = {
    "tiny": {"vision": (3e-3, 128, 1680), "text": (1e-3, 32, 300), "audio": (1e-3, 16, 300)},
    "small": {"vision": (1.5e-3, 64, 400_000), "text": (5e-4, 32, 400_000), "audio": (5e-4, 8, 400_000)},
    "base": {"vision": (1.5e-3, 64, 400_000), "text": (2e-4, 16, 1_000_000), "audio": (5e-4, 8, 400_000)},
}

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


@dataclass
class PretrainingArguments:
    """Every flag of `data2vec-pretrain` (documented in docs/training.md). `None` means: the default for the
    modality and model size (see `resolve`)."""

    # ---- what to train on --------------------------------------------------------------------------------------
    modality: str = field(default="vision", metadata={"help": "text | vision | audio", "choices": MODALITIES})
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
    max_audio_seconds: float | None = field(default=None, metadata={"help": "audio: longer clips are cropped at "
                                                                            "random (data2vec: 15.6 s)"})
    # ---- the model ---------------------------------------------------------------------------------------------
    model_size: str = field(default="tiny", metadata={"help": "tiny | small | base", "choices": tuple(MODEL_SIZES)})
    config: str | None = field(default=None, metadata={"help": "a Data2VecConfig JSON file (replaces --model_size)"})
    config_overrides: str | None = field(default=None, metadata={"help": "comma-separated config fields, e.g. "
                                                                         "'mask_prob=0.5,average_top_k_layers=6'"})
    init_from: str | None = field(default=None, metadata={"help": "continue pretraining from a checkpoint: ours, or "
                                                                  "transformers' (facebook/data2vec-audio-base)"})
    # ---- optimisation --------------------------------------------------------------------------------------------
    output_dir: str | None = field(default=None, metadata={"help": "default: runs/data2vec-<modality>"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps"})
    per_device_train_batch_size: int | None = field(default=None)
    gradient_accumulation_steps: int = field(default=1)
    learning_rate: float | None = field(default=None, metadata={"help": "peak learning rate of AdamW"})
    weight_decay: float = field(default=0.05)
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.98)
    adam_epsilon: float = field(default=1e-6)
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "any transformers.get_scheduler name"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "warm-up steps as a fraction of max_steps"})
    warmup_steps: int | None = field(default=None, metadata={"help": "overrides --warmup_ratio"})
    max_grad_norm: float = field(default=3.0, metadata={"help": "gradient clipping (0: none)"})
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (teacher weights, targets and "
                                                                 "loss stay fp32)", "choices": ("no", "bf16", "fp16")})
    ema_decay: float | None = field(default=None, metadata={"help": "teacher EMA decay at step 0"})
    ema_end_decay: float | None = field(default=None)
    ema_anneal_end_step: int | None = field(default=None, metadata={"help": "tiny: max_steps"})
    seed: int = field(default=0)
    dataloader_num_workers: int = field(default=0)
    cpu: bool = field(default=False, metadata={"help": "train on the CPU even if an accelerator is present"})
    # ---- watching it -----------------------------------------------------------------------------------------
    logging_steps: int = field(default=50)
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard | wandb | all | none, or a "
                                                                    "comma-separated list of accelerate trackers"})
    collapse_check_after: int | None = field(default=None, metadata={"help": "steps before the collapse check "
                                                                             "(default: the warm-up, >= 100)"})
    skip_nonfinite: bool = field(default=False, metadata={"help": "skip steps with a NaN/inf loss or gradient "
                                                                  "instead of stopping"})
    disable_tqdm: bool = field(default=False)
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
        lr, batch, steps = TRAINING_DEFAULTS[args.model_size][args.modality]
        args.learning_rate = lr if args.learning_rate is None else args.learning_rate
        args.per_device_train_batch_size = args.per_device_train_batch_size or batch
        args.max_steps = args.max_steps or steps
        args.output_dir = args.output_dir or f"runs/data2vec-{args.modality}"
        if args.image_augment is None:
            args.image_augment = "affine" if args.modality == "vision" and args.dataset == "builtin" else "none"
        if args.warmup_steps is None:
            args.warmup_steps = int(args.warmup_ratio * args.max_steps)
        if args.collapse_check_after is None:  # an untrained head predicts near-constants: not a collapse yet
            args.collapse_check_after = max(args.warmup_steps, 100)
        for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps",
                     "save_steps"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name} must be >= 1; got {getattr(args, name)}")
        return args


class TrainerState:
    """The loop's position, saved with every checkpoint (an accelerate checkpointing object)."""

    def __init__(self):
        self.global_step = 0  # optimizer steps done
        self.micro_batches = 0  # data position: micro-batches consumed (per process)

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class EpochBatchSampler:
    """Batches of dataset indices for one process, forever, from a data position.

    Each epoch is a permutation drawn from (seed, epoch), cut into global batches of `batch_size *
    num_processes` (the remainder is dropped); process r takes the r-th slice. Batch i of the run is a
    `SeededBatch` whose seed is (seed, epoch, batch in epoch, rank), which the collator draws its masks from.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int = 0, num_processes: int = 1,
                 process_index: int = 0, start: int = 0):
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.num_processes, self.process_index, self.start = num_processes, process_index, start
        self.batches_per_epoch = num_examples // (batch_size * num_processes)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the dataset has {num_examples} examples, fewer than one batch of {batch_size} x {num_processes} "
                f"process(es): lower --per_device_train_batch_size or use more data"
            )

    def __iter__(self):
        position, perm, perm_epoch = self.start, None, -1
        while True:
            epoch, batch = divmod(position, self.batches_per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples), epoch
            first = (batch * self.num_processes + self.process_index) * self.batch_size
            indices = perm[first : first + self.batch_size].tolist()
            yield SeededBatch(indices, (self.seed, epoch, batch, self.process_index))
            position += 1


class _Batched(torch.utils.data.Dataset):
    """A map-style dataset fetched a batch at a time, the batch keeping its `SeededBatch` seed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]

    def __getitems__(self, indices):
        fetch = getattr(self.dataset, "__getitems__", None)
        examples = fetch(list(indices)) if fetch else [self.dataset[i] for i in indices]
        return SeededBatch(examples, indices.seed) if isinstance(indices, SeededBatch) else examples


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients were NaN / inf (the update was skipped; nothing was poisoned)."""


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


def build_config(args: PretrainingArguments) -> Data2VecConfig:
    """A fresh model's config: --config, or --model_size (+ the tiny recipe, + the built-in digits' geometry); then
    --config_overrides and the EMA flags."""
    if args.config:
        config = Data2VecConfig.from_json_file(args.config)
    else:
        fields = {**MODEL_SIZES[args.model_size]}
        if args.model_size == "tiny":
            fields.update(TINY_RECIPES[args.modality])
        if args.modality == "vision" and args.dataset == "builtin":
            fields.update(BUILTIN_VISION)
        config = Data2VecConfig(modality=args.modality, **fields)
    _check_modality(args, config)
    apply_config_updates(config, {**parse_overrides(args.config_overrides), **_ema_fields(args)})
    return config


def _check_modality(args: PretrainingArguments, config: Data2VecConfig) -> None:
    if config.modality != args.modality:
        source = args.config or args.init_from
        raise ValueError(
            f"--modality is {args.modality} but {source} is a {config.modality} model: pass --modality "
            f"{config.modality}, or a {args.modality} --config / --init_from"
        )


def _ema_fields(args: PretrainingArguments) -> dict:
    fields = {k: getattr(args, k) for k in ("ema_decay", "ema_end_decay", "ema_anneal_end_step")
              if getattr(args, k) is not None}
    if "ema_anneal_end_step" not in fields and args.model_size == "tiny" and not (args.config or args.init_from):
        fields["ema_anneal_end_step"] = args.max_steps  # tiny runs anneal over the whole run
    return fields


def apply_config_updates(config: Data2VecConfig, updates: dict) -> None:
    """Sets config fields by name, then re-checks the config."""
    for name, value in updates.items():
        if name not in Data2VecConfig.__dataclass_fields__:
            raise ValueError(f"{name!r} is not a Data2VecConfig field (see docs/pretraining.md)")
        setattr(config, name, value)
    config.validate_architecture()


def find_checkpoint(output_dir: str | os.PathLike, which: str) -> Path | None:
    """'latest' -> the newest complete checkpoint in `output_dir` (None if there is none); a path -> that folder,
    checked to be one of our checkpoints."""
    if which == "latest":
        found = [(int(m.group(1)), p) for p in Path(output_dir).glob("checkpoint-*")
                 if (m := CHECKPOINT_PATTERN.match(p.name)) and (p / TRAINER_STATE).is_file()]
        return max(found)[1] if found else None
    path = Path(which)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {which}: no such folder (or pass 'latest')")
    if not (path / TRAINER_STATE).is_file():
        raise ValueError(
            f"--resume_from_checkpoint {which} is not a data2vec-pretrain checkpoint (no {TRAINER_STATE}); pass a "
            f"checkpoint-N folder from a run's output_dir, or 'latest'"
        )
    return path


class Data2VecPretrainer:
    """data2vec pretraining on `accelerate`: `Data2VecPretrainer(args).train()`.

    `model` (a `Data2VecForPreTraining`) and `data` (a `data.PretrainingData`) may be passed in; otherwise they are
    built from `args` (the config from --model_size / --config / --init_from, the data from --dataset). Builds and
    checks everything (data, model, checkpoint to resume) before the first step, so bad input fails early.
    """

    def __init__(self, args: PretrainingArguments, model: Data2VecForPreTraining | None = None, data=None):
        self.args = args = args.resolve()
        trackers = [] if args.report_to in ("none", "") else args.report_to.split(",")
        self._ddp = DistributedDataParallelKwargs()  # find_unused_parameters is set once the model is known
        # accelerate keeps one global state per process: let a second trainer in the same process (a notebook, the
        # tests) choose another precision; the distributed setup (PartialState) is kept
        AcceleratorState._reset_state(reset_partial_state=False)
        self.accelerator = Accelerator(
            mixed_precision=args.mixed_precision, cpu=args.cpu, project_dir=args.output_dir,
            log_with=trackers or None, kwargs_handlers=[self._ddp],
        )
        set_seed(args.seed)  # the same initial weights on every process
        if model is None and args.init_from:
            model = Data2VecForPreTraining.from_pretrained(args.init_from)  # ours or transformers' checkpoints
            _check_modality(args, model.config)
            apply_config_updates(model.config, {**parse_overrides(args.config_overrides), **_ema_fields(args)})
        config = model.config if model is not None else build_config(args)
        if data is None:
            from .data import load_pretraining_data

            text_processor = args.init_from if args.modality == "text" else None  # a text checkpoint's tokenizer
            with self.accelerator.main_process_first():  # downloads and `datasets` caches once, then shared
                data = load_pretraining_data(
                    config, args.dataset, dataset_config_name=args.dataset_config_name, split=args.dataset_split,
                    processor=args.processor or text_processor, column=args.column, label_column=args.label_column,
                    max_seq_length=args.max_seq_length, max_examples=args.max_examples,
                    resample_audio=args.resample_audio, tokenizer_vocab_size=args.tokenizer_vocab_size,
                    seed=args.seed,
                )
        self.data = data
        if model is None:
            apply_config_updates(config, data.config_updates)
            set_seed(args.seed)
            model = Data2VecForPreTraining(config)
        else:
            self._check_fits(model.config, data.config_updates)
        self.model = model
        self.config = model.config
        # layer drop skips whole layers, whose parameters then get no gradient: DDP must expect that
        self._ddp.find_unused_parameters = self.config.layerdrop > 0
        self.collator = DataCollatorForData2VecPretraining(
            self.config, seed=args.seed, audio_crop=args.audio_crop,
            max_audio_samples=None if args.max_audio_seconds is None
            else int(args.max_audio_seconds * self.config.sampling_rate),
            image_augment=args.image_augment if self.config.modality == "vision" else None,
        )
        self.state = TrainerState()
        self.log_history: list[dict] = []  # every logged step's metrics, as transformers' Trainer keeps them
        self.resume_from = None
        if args.resume_from_checkpoint:
            self.resume_from = find_checkpoint(args.output_dir, args.resume_from_checkpoint)
            if self.resume_from is None:
                logger.warning("--resume_from_checkpoint latest: no checkpoint in %s; starting from scratch",
                               args.output_dir)
            else:
                self._check_checkpoint(self.resume_from)
        self._check_first_batch()

    # ---- building ----------------------------------------------------------------------------------------------

    def _check_fits(self, config: Data2VecConfig, updates: dict) -> None:
        """A given / loaded model must fit the data's processor (text: the same vocabulary and special tokens)."""
        wrong = {k: (getattr(config, k), v) for k, v in updates.items()
                 if (getattr(config, k) < v if k == "max_position_embeddings" else getattr(config, k) != v)}
        if wrong:
            raise ValueError(
                "the data's processor does not fit the model: "
                + ", ".join(f"{k} model={m} data={d}" for k, (m, d) in wrong.items())
                + ". Use the model's own tokenizer (--processor <the checkpoint>) or a shorter --max_seq_length."
            )

    def _check_checkpoint(self, path: Path) -> None:
        state = json.loads((path / TRAINER_STATE).read_text())
        if state.get("modality") != self.config.modality or state.get("num_parameters") != self.model.num_parameters():
            raise ValueError(
                f"checkpoint {path} is of another model ({state.get('modality')}, {state.get('num_parameters')} "
                f"parameters) than this run ({self.config.modality}, {self.model.num_parameters()}): resume with the "
                f"same --modality / --model_size / --config, or start a new --output_dir"
            )

    def _check_first_batch(self) -> None:
        """One batch through the collator before anything trains: data errors surface here, with their fix."""
        n = min(len(self.data.train), self.args.per_device_train_batch_size)
        if n == 0:
            raise ValueError(f"the dataset {self.args.dataset!r} has no examples")
        self.collator(SeededBatch([self.data.train[i] for i in range(n)], (self.args.seed,)))

    def dataloader(self, start: int) -> torch.utils.data.DataLoader:
        """This process's batches from data position `start` (micro-batches already consumed)."""
        acc = self.accelerator
        sampler = EpochBatchSampler(len(self.data.train), self.args.per_device_train_batch_size, self.args.seed,
                                    acc.num_processes, acc.process_index, start)
        return torch.utils.data.DataLoader(
            _Batched(self.data.train), batch_sampler=sampler, collate_fn=self.collator,
            num_workers=self.args.dataloader_num_workers, pin_memory=acc.device.type == "cuda",
            persistent_workers=self.args.dataloader_num_workers > 0,
            generator=torch.Generator().manual_seed(self.args.seed),  # iterating never draws from the global RNG
        )

    def _optimizer(self, model) -> tuple[torch.optim.Optimizer, bool]:
        """AdamW without weight decay on biases, norms, tokens (CLS, mask) and position tables. Fused when the device
        has it: a fused AdamW takes `found_inf`, which skips a step on the device without a host sync."""
        a = self.args
        groups = parameter_groups(model, a.learning_rate, a.weight_decay)
        kwargs = dict(lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2), eps=a.adam_epsilon)
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs), True
        except RuntimeError:  # no fused kernel for this device: skip steps with a host-side check instead
            return torch.optim.AdamW(groups, foreach=True, **kwargs), False

    # ---- checkpoints ---------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """`accelerator.save_state` into checkpoint-N.tmp, then renamed to checkpoint-N: a run killed mid-save
        leaves the previous checkpoint intact. Keeps the newest `save_total_limit`."""
        acc, out = self.accelerator, Path(self.args.output_dir)
        final = out / f"checkpoint-{self.state.global_step}"
        tmp = out / f"checkpoint-{self.state.global_step}.tmp"
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / TRAINER_STATE).write_text(json.dumps({
                **self.state.state_dict(), "modality": self.config.modality,
                "num_parameters": self.unwrapped.num_parameters(), "num_processes": acc.num_processes,
                "args": dataclasses.asdict(self.args),
            }, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune_checkpoints()
        acc.wait_for_everyone()
        return final

    def _prune_checkpoints(self) -> None:
        limit = self.args.save_total_limit
        if limit is None:
            return
        found = sorted((int(m.group(1)), p) for p in Path(self.args.output_dir).glob("checkpoint-*")
                       if (m := CHECKPOINT_PATTERN.match(p.name)))
        for _, path in found[: max(len(found) - limit, 0)]:
            shutil.rmtree(path)

    @property
    def unwrapped(self) -> Data2VecForPreTraining:
        return self.accelerator.unwrap_model(self.model)

    # ---- the loop ------------------------------------------------------------------------------------------------

    def train(self, stop_at_step: int | None = None) -> dict:
        """Pretrain to `max_steps` (or stop after `stop_at_step` with the schedule unchanged, e.g. a job with a time
        budget; resume later). Returns the last logged metrics, and the probe's results when it ran."""
        args, acc = self.args, self.accelerator
        optimizer, fused = self._optimizer(self.model)
        scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps,
                                  num_training_steps=args.max_steps)
        # the scheduler is stepped here once per optimizer step (accelerate's wrapper would step it per process)
        self.model, optimizer = acc.prepare(self.model.train(), optimizer)
        teacher = self.unwrapped.teacher  # built now, on the student's device, so that it can be checkpointed
        for obj in (teacher, scheduler, self.state):
            acc.register_for_checkpointing(obj)
        if self.resume_from is not None:
            acc.load_state(str(self.resume_from))
            logger.info("resumed from %s at step %d", self.resume_from, self.state.global_step)
        acc.init_trackers("logs", config=_tracker_config(args))
        try:
            metrics = self._loop(optimizer, scheduler, fused, min(args.max_steps, stop_at_step or args.max_steps))
            if self.state.global_step >= args.max_steps:
                metrics.update(self.finish())
        finally:
            acc.end_training()
        return metrics

    def _loop(self, optimizer, scheduler, fused: bool, end: int) -> dict:
        args, acc, device = self.args, self.accelerator, self.accelerator.device
        accumulate = args.gradient_accumulation_steps
        batches = iter(self.dataloader(self.state.micro_batches))
        sums = torch.zeros(6, device=device)  # loss, target_var, pred_var, masked_fraction, grad_norm, micro-batches
        bad_step = torch.full((), -1, dtype=torch.long, device=device)  # first step with a NaN/inf loss or gradient
        bad_count = torch.zeros((), dtype=torch.long, device=device)
        samples = tokens = 0
        clock, metrics = time.perf_counter(), {}
        progress = _progress(acc, args, self.state.global_step)
        while self.state.global_step < end:
            step = self.state.global_step + 1
            step_loss = torch.zeros((), device=device)
            for micro in range(accumulate):
                batch = next(batches)
                samples += len(batch[MODALITY_INPUT[self.config.modality]]) * acc.num_processes
                tokens += _count_tokens(self.config, batch) * acc.num_processes
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with acc.no_sync(self.model) if micro < accumulate - 1 else contextlib.nullcontext():
                    out = self.model(**batch, check_inputs=False)
                    acc.backward(out.loss / accumulate)
                step_loss += out.loss.detach() / accumulate
                sums += torch.stack([out.loss.detach(), out.target_var, out.pred_var, out.masked_fraction,
                                     torch.zeros((), device=device), torch.ones((), device=device)])
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), args.max_grad_norm or float("inf"))
            finite = torch.isfinite(step_loss) & torch.isfinite(grad_norm)
            sums[4] += torch.where(finite, grad_norm, 0.0) * accumulate  # averaged over micro-batches below
            # fp16 gradients overflow now and then by design (the scaler skips those steps): only the loss counts
            bad = ~torch.isfinite(step_loss) if args.mixed_precision == "fp16" else ~finite
            bad_step = torch.where((bad_step < 0) & bad, step, bad_step)
            bad_count += bad
            if fused:  # skip on the device: a fused AdamW reads `found_inf` (GradScaler's mechanism)
                optimizer.optimizer.found_inf = (~finite).float()
                optimizer.step()
            elif bool(finite):  # no fused AdamW for this device: one host check per step
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            decay = self.unwrapped.update_teacher(skip=~finite)  # after the optimizer step, once per step
            self.state.global_step = step
            self.state.micro_batches += accumulate
            progress.update(1)
            if step % args.logging_steps == 0 or step == end:
                elapsed, clock = time.perf_counter() - clock, time.perf_counter()
                metrics = self._log(sums, bad_step, bad_count, samples / elapsed, tokens / elapsed,
                                    scheduler.get_last_lr()[0], decay, step)
                progress.set_postfix(loss=f"{metrics['loss']:.4f}", target_var=f"{metrics['target_var']:.3f}")
                sums.zero_()
                samples = tokens = 0
            if step % args.save_steps == 0 or step == end:
                self.save_checkpoint()
        progress.close()
        return metrics

    def _log(self, sums, bad_step, bad_count, samples_per_s, tokens_per_s, lr, decay, step) -> dict:
        """Averages the interval's sums over processes (the interval's one host sync), logs them, and runs the
        non-finite and collapse checks."""
        acc, args = self.accelerator, self.args
        values = acc.reduce(sums.clone(), reduction="mean").tolist()
        flags = acc.gather(torch.stack([bad_step, bad_count])[None]).view(-1, 2)
        n_bad = int(flags[:, 1].max())
        first_bad = int(flags[:, 0].max())
        n = max(values[5], 1)
        metrics = {
            "loss": values[0] / n, "target_var": values[1] / n, "pred_var": values[2] / n,
            "masked_fraction": values[3] / n, "grad_norm": values[4] / n, "lr": lr,
            "ema_decay": decay, "samples_per_second": samples_per_s, "tokens_per_second": tokens_per_s,
            "nonfinite_steps": n_bad,
        }
        acc.log(metrics, step=step)
        self.log_history.append({"step": step, **metrics})
        if acc.is_main_process and (args.disable_tqdm or not sys.stderr.isatty()):  # no live bar: a log line
            logger.info("step %d/%d: %s", step, args.max_steps,
                        " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
        if n_bad and not args.skip_nonfinite:
            raise NonFiniteLossError(
                f"the loss or its gradients became NaN/inf at step {first_bad} (the update was skipped: the student "
                f"and teacher are intact). Lower --learning_rate, raise --warmup_steps, use --mixed_precision bf16 "
                f"instead of fp16, check the data for extreme values, or pass --skip_nonfinite to skip such steps."
            )
        if step >= args.collapse_check_after:
            self.unwrapped.check_collapse(metrics["target_var"], metrics["pred_var"])
        return metrics

    def finish(self) -> dict:
        """End of training: the student (+ head) and the processor into output_dir, the probe, the Hub."""
        acc, args = self.accelerator, self.args
        acc.wait_for_everyone()
        results: dict = {}
        if acc.is_main_process:
            model = self.unwrapped
            if args.probe and self.data.probe is not None:
                results = self.run_probe()
            model.config.pretraining_info = self.pretraining_info(results)  # travels with the config: the card
            model.save_pretrained(args.output_dir)
            if self.data.processor is not None:
                self.data.processor.save_pretrained(args.output_dir)
            if args.push_to_hub:
                self.push_to_hub()
        acc.wait_for_everyone()
        return results

    def pretraining_info(self, probe: dict) -> dict:
        """What the run was, for the model card and for whoever fine-tunes the result."""
        args, acc = self.args, self.accelerator
        info = {
            "dataset": self.data.description,
            "steps": self.state.global_step,
            "batch size": args.per_device_train_batch_size * args.gradient_accumulation_steps * acc.num_processes,
            "optimizer": f"AdamW lr {args.learning_rate:g} ({args.lr_scheduler_type}, {args.warmup_steps} warm-up "
                         f"steps), betas ({args.adam_beta1:g}, {args.adam_beta2:g}), weight decay "
                         f"{args.weight_decay:g}, clip {args.max_grad_norm:g}",
            "precision": args.mixed_precision,
            "made with": "data2vec-pretrain (modeling_data2vec_unified)",
        }
        if args.dataset != "builtin" and not Path(args.dataset).exists():
            info["dataset_id"] = args.dataset  # a Hub dataset: the card's metadata names it
        if args.init_from:
            info["continued from"] = args.init_from
        if "probe_pretrained" in probe:
            info["linear probe (held out)"] = (f"pretrained {probe['probe_pretrained']:.1%}, random init "
                                               f"{probe['probe_random_init']:.1%}")
        return info

    def run_probe(self) -> dict:
        """Linear probe (held-out accuracy) of the pretrained student, the same architecture at its random
        initialisation, and the raw inputs; printed and written to output_dir/probe.json."""
        from .probe import linear_probe, raw_input_probe

        args, probe = self.args, self.data.probe
        student = self.unwrapped.data2vec
        set_seed(args.seed)  # as in __init__
        initial = Data2VecForPreTraining(self.config).data2vec.to(student.device)  # the run's initial weights
        pretrained = linear_probe(student, probe.train, probe.test, top_layers=(2, 1))
        random_init = linear_probe(initial, probe.train, probe.test, top_layers=(2, 1))
        results = {
            "pretrained": pretrained[2],
            "random_init": random_init[2],
            "raw_inputs": raw_input_probe(probe.train, probe.test, MODALITY_INPUT[self.config.modality]),
            "pretrained_last_layer": pretrained[1],
            "random_init_last_layer": random_init[1],
            "features": "mean of the top 2 layers' outputs, mean-pooled; *_last_layer: the last layer only",
            "train_examples": len(probe.train), "test_examples": len(probe.test), "steps": self.state.global_step,
            "dataset": self.data.description,
        }
        if args.init_from:
            results["random_init_note"] = "random_init: the architecture freshly initialised (not --init_from)"
        Path(args.output_dir, "probe.json").write_text(json.dumps(results, indent=2))
        print(
            f"linear probe, held-out accuracy ({len(probe.test)} examples): pretrained {results['pretrained']:.1%}  "
            f"random init {results['random_init']:.1%}  raw inputs "
            + ("n/a" if results["raw_inputs"] is None else f"{results['raw_inputs']:.1%}")
            + f"  -> {Path(args.output_dir, 'probe.json')}"
        )
        return {f"probe_{k}": v for k, v in results.items() if isinstance(v, float)}

    def push_to_hub(self) -> str:
        """Uploads output_dir's result in one commit: the model (safetensors + config), the processor and probe.json;
        not the checkpoints or the logs."""
        from huggingface_hub import CommitOperationAdd, HfApi

        args, out = self.args, Path(self.args.output_dir)
        api = HfApi(token=args.hub_token)
        repo_id = api.create_repo(args.hub_model_id or out.resolve().name, private=args.hub_private_repo,
                                  exist_ok=True).repo_id
        files = [p for p in sorted(out.iterdir()) if p.is_file()]  # top level only: no checkpoint-*/, logs/
        api.create_commit(repo_id, operations=[CommitOperationAdd(p.name, str(p)) for p in files],
                          commit_message=f"data2vec-pretrain: {self.config.modality}, {self.state.global_step} steps")
        logger.info("pushed %d files to %s", len(files), repo_id)
        return repo_id


def _count_tokens(config: Data2VecConfig, batch: dict) -> int:
    """Positions the student encodes in a (CPU) batch: text tokens, image patches, audio frames."""
    if config.modality == "text":
        return int(batch["attention_mask"].sum())
    if config.modality == "vision":
        return int(batch["bool_masked_pos"].numel())
    return int(batch["mask_time_indices"].numel())


def _tracker_config(args: PretrainingArguments) -> dict:
    return {k: v for k, v in dataclasses.asdict(args).items() if isinstance(v, (int, float, str, bool))}


def _progress(acc: Accelerator, args: PretrainingArguments, start: int):
    from tqdm.auto import tqdm

    return tqdm(total=args.max_steps, initial=start, desc="data2vec", dynamic_ncols=True,
                disable=args.disable_tqdm or not acc.is_local_main_process)


def cli(argv: list[str] | None = None) -> dict:
    """`data2vec-pretrain` with `argv` (default: sys.argv); returns the final metrics. Bad input exits with code 2
    and the error's message."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (args,) = HfArgumentParser(PretrainingArguments).parse_args_into_dataclasses(args=argv)
    try:
        return Data2VecPretrainer(args).train()
    except (ValueError, FileNotFoundError, NonFiniteLossError, Data2VecCollapseError) as error:
        print(f"data2vec-pretrain: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point."""
    cli(argv)


if __name__ == "__main__":
    main()
