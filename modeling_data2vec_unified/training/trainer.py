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

`--probe_steps N` runs the linear probe on a fixed subset of the probe data every N steps (main process; it draws no
random number the run sees, so the weights are those of a run without it); at the end `output_dir/curves.png` and
`curves.json` hold the loss, target_var / pred_var and the probe against step and wall-clock.

Data order and masks are pure functions of (seed, epoch, step, rank) (`EpochBatchSampler` + `SeededBatch`), so a
run resumed from a checkpoint continues exactly: same batches, same masks, same dropout (every process's RNG states are
restored), same teacher (weights and update count). Nothing in a checkpoint is unpickled on resume: accelerate saves
and loads the model (safetensors) and the optimizer (loaded with `torch.load(weights_only=True)`); the teacher and the
RNG states are safetensors files, the loop position and the learning-rate schedule JSON.

`--fsdp` (or an accelerate FSDP config) shards the student and the EMA teacher alike with FSDP2's `fully_shard` (per
transformer layer, one mesh over all processes): the EMA is a lerp of local shards, checkpoints are one safetensors
file of shards per process (resumed only on as many processes, with --fsdp), and the end gathers the full student for
`save_pretrained`. What FSDP cannot do (layer drop, --probe_steps, fp16, a single process) is refused at start-up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, set_seed
from transformers import HfArgumentParser, get_scheduler

from ..configuration_data2vec import Data2VecConfig
from ..masking import DataCollatorForData2VecPretraining, SeededBatch
from ..modalities import MODALITY_INFO
from ..modeling_data2vec_pretraining import Data2VecCollapseError, Data2VecForPreTraining
from ..optimization import parameter_groups
from .arguments import launcher_processes, parse_overrides, precision_source, PretrainingArguments
from .checkpointing import Checkpointer, torch_optimizer, TRAINER_STATE, TrainerState
from .evaluation import Evaluation, HealthCheck
from .metrics import console_has_live_bar, MetricsReporter, StepTally
from ..sharing import create_hub_repo, push_folder
from .parallel import (
    apply_compile,
    apply_fsdp,
    check_fsdp,
    fsdp_grad_norm,
    gather_full_model,
    take_accelerate_dynamo,
)
from .recipes import BUILTIN_FIELDS, MODEL_SIZES, TINY_RECIPES, TINY_RECIPES_V2
from .stopping import resume_command, Stopper

# every module of training/ logs as "modeling_data2vec_unified.trainer": the one name users filter the run's log by
logger = logging.getLogger("modeling_data2vec_unified.trainer")


def _fit_tokenizer_length(processor, config) -> None:
    """A text tokenizer saved with the run says how many tokens the model takes (`model_max_length`, which
    `truncation=True` cuts to); a tokenizer trained here would otherwise say 1e30 and let longer inputs reach the
    position table."""
    if MODALITY_INFO[config.modality].processor == "tokenizer" and hasattr(processor, "model_max_length"):
        capacity = config.max_position_embeddings - (config.pad_token_id or 0) - 1
        processor.model_max_length = min(processor.model_max_length, capacity)


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


def build_config(args: PretrainingArguments) -> Data2VecConfig:
    """A fresh model's config: --config, or --model_size and --algorithm (+ the tiny recipe, + the built-in digits'
    geometry); then --config_overrides and the EMA flags."""
    if args.config:
        config = Data2VecConfig.from_json_file(args.config)
    else:
        fields = {**MODEL_SIZES[args.model_size]}
        v2 = args.algorithm == "data2vec2"
        if v2:
            fields.pop("average_top_k_layers", None)  # 2.0's share of the layers (default_top_k), unless the recipe
        if args.model_size == "tiny":
            fields.update((TINY_RECIPES_V2 if v2 else TINY_RECIPES)[args.modality])
        if args.dataset == "builtin":
            fields.update(BUILTIN_FIELDS.get(args.modality, {}))
        config = Data2VecConfig(modality=args.modality, algorithm=args.algorithm, **fields)
    _check_modality(args, config)
    apply_config_updates(config, {**parse_overrides(args.config_overrides), **_ema_fields(args)})
    return config


def _check_modality(args: PretrainingArguments, config: Data2VecConfig) -> None:
    source = args.config or args.init_from or "the model passed in"
    if config.modality != args.modality:
        raise ValueError(
            f"--modality is {args.modality} but {source} is a {config.modality} model: pass --modality "
            f"{config.modality}, or a {args.modality} --config / --init_from"
        )
    if config.algorithm != args.algorithm:
        raise ValueError(
            f"--algorithm is {args.algorithm} but {source} is a {config.algorithm} model (the two have different "
            f"heads and, for vision, different blocks): pass --algorithm {config.algorithm} (or leave it out), or "
            f"a {args.algorithm} --config / --init_from"
        )


def _check_init_from(path: str) -> None:
    """--init_from takes a model (a run's output_dir, a released checkpoint), not a training checkpoint folder."""
    if (Path(path) / TRAINER_STATE).is_file():
        raise ValueError(
            f"--init_from {path} is a training checkpoint (it holds {TRAINER_STATE}): to continue that run exactly, "
            f"pass --resume_from_checkpoint {path} with the run's --output_dir; to start a new run from a finished "
            f"run's model, pass --init_from <that run's output_dir>"
        )


def _ema_fields(args: PretrainingArguments, loaded: Data2VecConfig | None = None) -> dict:
    """The EMA flags given; tiny runs anneal over the whole run; a run continued from `loaded` (--init_from) anneals
    within this run (at most --max_steps), not over what the earlier run had left."""
    fields = {k: getattr(args, k) for k in ("ema_decay", "ema_end_decay", "ema_anneal_end_step")
              if getattr(args, k) is not None}
    if "ema_anneal_end_step" not in fields and args.model_size == "tiny" and not (args.config or args.init_from):
        fields["ema_anneal_end_step"] = args.max_steps  # tiny runs anneal over the whole run
    if "ema_anneal_end_step" not in fields and loaded is not None:
        fields["ema_anneal_end_step"] = min(loaded.ema_anneal_end_step, args.max_steps)
    return fields


def apply_config_updates(config: Data2VecConfig, updates: dict) -> None:
    """Sets config fields by name, then re-checks the config."""
    for name, value in updates.items():
        if name not in Data2VecConfig.__dataclass_fields__:
            raise ValueError(f"{name!r} is not a Data2VecConfig field (see docs/pretraining.md)")
        setattr(config, name, value)
    config.validate_architecture()


def build_accelerator(args: PretrainingArguments, ddp: DistributedDataParallelKwargs) -> Accelerator:
    """The run's `Accelerator` (precision, CPU or not, trackers), checked against how the processes were launched."""
    trackers = [] if args.report_to in ("none", "") else args.report_to.split(",")
    # accelerate keeps one global state per process: let a second trainer in the same process (a notebook, the
    # tests) choose another precision; the distributed setup (PartialState) is kept
    AcceleratorState._reset_state(reset_partial_state=False)
    # several processes launched on a machine without an accelerator: accelerate sets up a distributed CPU run
    # only when told `cpu` (else each process would train alone, as rank 0, into the same output_dir)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    acc = Accelerator(mixed_precision=args.mixed_precision,
                      cpu=args.cpu or (launched > 1 and not torch.accelerator.is_available()),
                      project_dir=args.output_dir, log_with=trackers or None, kwargs_handlers=[ddp])
    if launched != acc.num_processes:
        raise RuntimeError(f"launched as {launched} processes (WORLD_SIZE) but accelerate set up "
                           f"{acc.num_processes}: check the launcher's settings (accelerate config)")
    asked = launcher_processes()
    if asked and asked > acc.num_processes:
        logger.warning(
            f"`accelerate launch` was asked for {asked} processes but started {acc.num_processes}: on "
            "a machine without GPUs it starts one (its MULTI_CPU mode needs MPI). For several CPU processes use "
            "`torchrun --nproc_per_node N -m modeling_data2vec_unified.trainer ...` (docs/training.md)")
    return acc


def load_init_from(args: PretrainingArguments) -> Data2VecForPreTraining:
    """--init_from: a model (ours or transformers' checkpoints), checked to be of this modality and algorithm, with
    --config_overrides and the EMA flags applied."""
    _check_init_from(args.init_from)
    model = Data2VecForPreTraining.from_pretrained(args.init_from)
    _check_modality(args, model.config)
    apply_config_updates(model.config, {**parse_overrides(args.config_overrides), **_ema_fields(args, model.config)})
    return model


def load_data(args: PretrainingArguments, config: Data2VecConfig, accelerator: Accelerator):
    """The pretraining data --dataset names (a `PretrainingData`): streamed with --streaming (this process's share
    of the shards), else loaded once (the main process first: downloads and `datasets` caches are shared)."""
    # a text checkpoint's tokenizer
    text_processor = args.init_from if MODALITY_INFO[args.modality].processor == "tokenizer" else None
    common = dict(dataset_config_name=args.dataset_config_name, split=args.dataset_split,
                  processor=args.processor or text_processor, column=args.column, max_seq_length=args.max_seq_length,
                  tokenizer_vocab_size=args.tokenizer_vocab_size, skip_bad_examples=args.skip_bad_examples,
                  seed=args.seed, resample_audio=args.resample_audio, min_audio_seconds=args.min_audio_seconds)
    if args.streaming:
        from ..data.streaming import load_streaming_data

        return load_streaming_data(
            config, args.dataset, **common, tokenizer_examples=args.streaming_tokenizer_examples,
            batch_size=args.per_device_train_batch_size, buffer_size=args.shuffle_buffer_size,
            rank=accelerator.process_index, world_size=accelerator.num_processes)
    from ..data import load_pretraining_data

    with accelerator.main_process_first():
        return load_pretraining_data(config, args.dataset, **common, label_column=args.label_column,
                                     max_examples=args.max_examples, probe=args.probe or bool(args.probe_steps))


def split_validation(args: PretrainingArguments, config: Data2VecConfig, data, accelerator: Accelerator):
    """(the training data, the held-out examples or None): --validation_split_percentage of the training examples,
    or --validation_split prepared by the training data's processor (text: its tokenizer); at most
    --max_eval_examples."""
    validation = None
    if args.validation_split_percentage:
        data, validation = _split_validation(data, args.validation_split_percentage, args.seed)
    elif args.validation_split is not None:
        from ..data import load_pretraining_data

        with accelerator.main_process_first():
            validation = load_pretraining_data(
                config, args.dataset, dataset_config_name=args.dataset_config_name, split=args.validation_split,
                processor=data.processor, column=args.column, max_seq_length=args.max_seq_length,
                max_examples=args.max_eval_examples, resample_audio=args.resample_audio,
                min_audio_seconds=args.min_audio_seconds, seed=args.seed,
                probe=False, skip_bad_examples=args.skip_bad_examples,
            ).train
    if validation is not None and args.max_eval_examples is not None:
        validation = torch.utils.data.Subset(validation, range(min(args.max_eval_examples, len(validation))))
    return data, validation


def build_collator(args: PretrainingArguments, config: Data2VecConfig) -> DataCollatorForData2VecPretraining:
    """The collator that pads, crops, augments and masks the run's batches (masks drawn from each batch's seed)."""
    return DataCollatorForData2VecPretraining(
        config, seed=args.seed, audio_crop=args.audio_crop,
        max_audio_samples=None if args.max_audio_seconds is None
        else int(args.max_audio_seconds * config.sampling_rate),
        image_augment=args.image_augment if config.modality == "vision" else None,
        bucket_lengths=args.torch_compile if args.bucket_lengths is None else args.bucket_lengths,
    )


def build_optimizer(model, args: PretrainingArguments) -> tuple[torch.optim.Optimizer, bool]:
    """AdamW without weight decay on biases, norms, tokens (CLS, mask) and position tables, and whether it is fused.
    Fused when the device has it: a fused AdamW takes `found_inf`, which skips a step on the device without a host
    sync."""
    groups = parameter_groups(model, args.learning_rate, args.weight_decay)
    kwargs = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs), True
    except RuntimeError:  # no fused kernel for this device: skip steps with a host-side check instead
        return torch.optim.AdamW(groups, foreach=True, **kwargs), False


def _check_fits(config: Data2VecConfig, updates: dict) -> None:
    """A given / loaded model must fit the data's processor (text: the same vocabulary and special tokens)."""
    wrong = {k: (getattr(config, k), v) for k, v in updates.items()
             if (getattr(config, k) < v if k == "max_position_embeddings" else getattr(config, k) != v)}
    if wrong:
        raise ValueError(
            "the data's processor does not fit the model: "
            + ", ".join(f"{k} model={m} data={d}" for k, (m, d) in wrong.items())
            + ". Use the model's own tokenizer (--processor <the checkpoint>) or a shorter --max_seq_length."
        )


class Data2VecPretrainer:
    """data2vec pretraining on `accelerate`: `Data2VecPretrainer(args).train()`.

    `model` (a `Data2VecForPreTraining`) and `data` (a `data.PretrainingData`) may be passed in; otherwise they are
    built from `args` (the config from --model_size / --config / --init_from, the data from --dataset). Builds and
    checks everything (data, model, checkpoint to resume) before the first step, so bad input fails early. The parts
    it calls: `Checkpointer` (checkpoints), `StepTally` / `MetricsReporter` (metrics), `Evaluation` / `HealthCheck`
    (held-out loss, probes, health), `apply_fsdp` / `apply_compile` (parallelism).
    """

    def __init__(self, args: PretrainingArguments, model: Data2VecForPreTraining | None = None, data=None):
        if model is not None and args.algorithm is None:  # a model passed in brings its algorithm
            args = dataclasses.replace(args, algorithm=model.config.algorithm)
        self.precision_from = precision_source(args)
        self.args = args = args.resolve()
        if model is not None:
            _check_modality(args, model.config)
        self._ddp = DistributedDataParallelKwargs()  # find_unused_parameters is set once the model is known
        self.accelerator = acc = build_accelerator(args, self._ddp)
        take_accelerate_dynamo(acc, args)
        set_seed(args.seed)  # the same initial weights on every process
        model = load_init_from(args) if model is None and args.init_from else model
        config = model.config if model is not None else build_config(args)
        self.data = data = data if data is not None else load_data(args, config, acc)
        self.data, self.validation = split_validation(args, config, data, acc)
        self.model = model = self._model(model, config)
        self.config = model.config
        # layer drop skips whole layers, whose parameters then get no gradient: DDP must expect that
        self._ddp.find_unused_parameters = self.config.layerdrop > 0
        self.fsdp = args.fsdp or acc.distributed_type == DistributedType.FSDP
        if self.fsdp:
            check_fsdp(args, self.config)
        self.collator = build_collator(args, self.config)
        self.state = TrainerState()
        self.optimizer = self.lr_scheduler = None  # made by `train`
        self._fused = False
        self._seconds_before = 0.0  # training seconds of the run before this session (resume)
        self._loop_start = time.perf_counter()
        self.reporter = MetricsReporter(acc, self._seconds, args.max_steps, console_has_live_bar(args.disable_tqdm))
        self.evaluation = Evaluation(acc, args, self.data, self.validation, self.collator, self.reporter)
        self.stream_positions: dict = {}  # --streaming: each DataLoader worker's position after its last batch used
        if args.probe_steps and self.data.probe is None:
            logger.warning("--probe_steps %d: the data has no labels (no label column), so there is nothing to probe",
                           args.probe_steps)
        self.health = HealthCheck(acc, args, self.data.train, self.streaming, self.fsdp, self.reporter)
        self.checkpointer = Checkpointer(acc, args, self.fsdp, self.streaming)
        self.resume_from = self._resume_target()
        self.stopper = Stopper(acc, args.max_train_time)  # --max_train_time counts from here
        self.command: list[str] | None = None  # the CLI flags of this run (set by `cli`), for the resume hint
        self._check_first_batch()
        self.hub_repo_id = self._check_hub() if args.push_to_hub else None
        if acc.is_main_process:
            logger.info("%s", self.summary())

    def _model(self, model: Data2VecForPreTraining | None, config: Data2VecConfig) -> Data2VecForPreTraining:
        """The model passed in / loaded (checked to fit the data's processor), or a fresh one from `config` (with what
        the data's processor sets, e.g. the vocabulary), from the seed."""
        if model is not None:
            _check_fits(model.config, self.data.config_updates)
            return model
        apply_config_updates(config, self.data.config_updates)
        set_seed(self.args.seed)
        return Data2VecForPreTraining(config)

    def _resume_target(self) -> Path | None:
        """The checkpoint to resume, checked now; a fresh run checks its output_dir instead."""
        if not self.args.resume_from_checkpoint:
            self.checkpointer.check_output_dir()
            path = None
        else:
            path = self.checkpointer.find()
            if path is None:
                logger.warning("--resume_from_checkpoint latest: no checkpoint in %s; starting from scratch",
                               self.args.output_dir)
            else:
                self.checkpointer.check(path, self.config, self.model.num_parameters())
        if self.fsdp and not torch.distributed.is_initialized():
            raise ValueError("--fsdp shards over several processes: launch with `python -m torch.distributed.run "
                             "--nproc_per_node N -m modeling_data2vec_unified.trainer --fsdp ...` (CPUs) or "
                             "`accelerate launch --config_file examples/fsdp.yaml ...` (GPUs), or drop --fsdp")
        return path

    @property
    def log_history(self) -> list[dict]:
        """Every logged step's metrics and every evaluation / probe, as transformers' Trainer keeps them (restored on
        resume: the curves cover the whole run)."""
        return self.reporter.history

    @log_history.setter
    def log_history(self, history: list[dict]) -> None:
        self.reporter.history = history

    @property
    def health_start(self) -> dict[str, float] | None:
        """The health check at the run's start (saved in checkpoints)."""
        return self.health.start

    def summary(self) -> str:
        """The run in a few lines, logged at start-up (`describe_run`)."""
        return describe_run(self)

    def _check_hub(self) -> str:
        """--push_to_hub: the token and the repo are checked (the repo created) at start-up, on the main process."""
        args = self.args
        name = args.hub_model_id or Path(args.output_dir).resolve().name
        if not self.accelerator.is_main_process:
            return name
        return create_hub_repo(name, args.hub_token, args.hub_private_repo)

    @property
    def streaming(self) -> bool:
        return isinstance(self.data.train, torch.utils.data.IterableDataset)

    def _check_first_batch(self) -> None:
        """One batch through the collator before anything trains: data errors surface here, with their fix."""
        if self.streaming:
            first = getattr(self.data.train, "first_batch", None)
            self.collator(first if first is not None else next(iter(self.data.train))[0])
            return
        n = min(len(self.data.train), self.args.per_device_train_batch_size)
        if n == 0:
            raise ValueError(f"the dataset {self.args.dataset!r} has no examples")
        self.collator(SeededBatch([self.data.train[i] for i in range(n)], (self.args.seed,)))

    def dataloader(self, start: int) -> torch.utils.data.DataLoader:
        """This process's batches from data position `start` (micro-batches already consumed)."""
        acc, args = self.accelerator, self.args
        if self.streaming:
            from ..data.streaming import stream_batches

            return stream_batches(self.data.train, self.collator, args.dataloader_num_workers, start,
                                  self.stream_positions, args.seed, pin_memory=acc.device.type == "cuda")
        sampler = EpochBatchSampler(len(self.data.train), args.per_device_train_batch_size, args.seed,
                                    acc.num_processes, acc.process_index, start)
        return torch.utils.data.DataLoader(
            _Batched(self.data.train), batch_sampler=sampler, collate_fn=self.collator,
            num_workers=args.dataloader_num_workers, pin_memory=acc.device.type == "cuda",
            persistent_workers=args.dataloader_num_workers > 0,
            generator=torch.Generator().manual_seed(args.seed),  # iterating never draws from the global RNG
        )

    @property
    def unwrapped(self) -> Data2VecForPreTraining:
        return self.accelerator.unwrap_model(self.model)

    # ---- checkpoints (`Checkpointer`) ----------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """checkpoint-N of this step (written atomically; see `Checkpointer.save`)."""
        run_state = {**self.state.state_dict(), "elapsed_seconds": self._seconds(), "log_history": self.log_history,
                     "health_start": self.health.start}
        return self.checkpointer.save(self.state.global_step, self.model, self.unwrapped, self.optimizer,
                                      self.lr_scheduler, run_state, self.stream_positions)

    def load_checkpoint(self, path: Path) -> None:
        """Restores checkpoint `path` (after `Checkpointer.check`): weights, teacher, optimizer, schedule, RNGs, stream
        positions, the loop position and the run's record."""
        state = self.checkpointer.load(path, self.model, self.unwrapped, self.optimizer, self.lr_scheduler)
        if self.streaming:
            self.stream_positions = self.checkpointer.load_stream_positions(path)
        self.state.load_state_dict({k: int(state[k]) for k in self.state.state_dict()})
        self.log_history = state.get("log_history", [])  # older checkpoints: none
        self.health.start = state.get("health_start")  # older checkpoints: none (measured again from here)
        self._seconds_before = state.get("elapsed_seconds", 0.0)

    # ---- the loop ------------------------------------------------------------------------------------------------

    def train(self, stop_at_step: int | None = None) -> dict:
        """Pretrain to `max_steps` (or stop after `stop_at_step` with the schedule unchanged, e.g. a job with a time
        budget; resume later). Returns the last logged metrics, and the probe's results when it ran."""
        args, acc = self.args, self.accelerator
        if args.torch_compile:  # before sharding / DDP (in place: their hooks still run)
            apply_compile(self.model, args.torch_compile_backend, args.torch_compile_mode)
        if self.fsdp:  # sharded here, not by accelerate (whose FSDP plugin is GPU-only): the teacher alike
            self.model = apply_fsdp(self.model, acc)
        optimizer, self._fused = build_optimizer(self.model, args)
        # stepped here once per optimizer step (accelerate's wrapper would step it per process), saved as JSON
        self.lr_scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps,
                                          num_training_steps=args.max_steps)
        if self.fsdp:
            self.model, self.optimizer = self.model.train(), optimizer
        else:
            self.model, self.optimizer = acc.prepare(self.model.train(), optimizer)
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
            logger.info("resumed from %s at step %d", self.resume_from, self.state.global_step)
        acc.init_trackers("logs", config=_tracker_config(args))
        try:
            with self.stopper.catching_signals(lambda: self.state.global_step + 1):
                metrics = self._loop(min(args.max_steps, stop_at_step or args.max_steps))
            if self.state.global_step >= args.max_steps:
                metrics.update(self.finish())
        finally:
            acc.end_training()
        return metrics

    def _loop(self, end: int) -> dict:
        batches = iter(self.dataloader(self.state.micro_batches))
        tally = StepTally(self.accelerator.device)  # since the last logging step
        self._loop_start, self.reporter.aside_seconds = time.perf_counter(), 0.0
        self.health.begin(self.unwrapped, self.state.global_step)
        progress = _progress(self.accelerator, self.args, self.state.global_step)
        with _logging_beside(progress):
            metrics = self._steps(end, progress, batches, tally)
        progress.close()
        return metrics

    def _steps(self, end: int, progress, batches, tally: StepTally) -> dict:
        args, acc = self.args, self.accelerator
        input_name = MODALITY_INFO[self.config.modality].input_name
        samples, clock, metrics = 0, self._loop_start, {}
        while self.state.global_step < end:
            step = self.state.global_step + 1
            micro_batches = [self._next_batch(batches) for _ in range(args.gradient_accumulation_steps)]
            samples += sum(len(batch[input_name]) for batch in micro_batches) * acc.num_processes
            decay = self._train_step(micro_batches, step, tally)
            self.state.global_step, self.state.micro_batches = step, self.state.micro_batches + len(micro_batches)
            progress.update(1)
            logged = step % args.logging_steps == 0 or step == end
            if logged:
                elapsed, clock = time.perf_counter() - clock, time.perf_counter()
                metrics = self._log(tally, samples / elapsed, elapsed, decay, step)
                progress.set_postfix(loss=f"{metrics['loss']:.4f}", target_var=f"{metrics['target_var']:.3f}")
                samples = 0
            clock += self._measure(step, end, logged, metrics)  # not counted in the throughput
            stop = self.stopper.reason(logged=step % args.logging_steps == 0)
            if step % args.save_steps == 0 or step == end or stop:
                path = self.save_checkpoint()
            if stop and step < end:
                progress.close()
                if acc.is_main_process:
                    print(f"data2vec-pretrain: stopped at step {step} of {args.max_steps} ({stop}); saved {path}. "
                          f"Resume with: {resume_command(self.command)}", file=sys.stderr)
                break
        return metrics

    def _measure(self, step: int, end: int, logged: bool, metrics: dict) -> float:
        """The health check (at logging steps, into `metrics` too), the held-out loss and the periodic probe that are
        due after `step`; returns the seconds they took."""
        args, seconds = self.args, 0.0
        if logged and self.health.due(step, end):
            seconds += self.monitor_health(step)
            metrics.update({k: v for k, v in self.log_history[-1].items() if k.startswith("health/")})
        if self.validation is not None and (step % args.eval_steps == 0 or step == end):
            seconds += self.evaluate(step)
        if args.probe_steps and step % args.probe_steps == 0 and self.data.probe is not None:
            seconds += self.periodic_probe(step)
        return seconds

    def _next_batch(self, batches) -> dict:
        item = next(batches)
        if not self.streaming:
            return item
        batch, worker, position = item
        self.stream_positions[worker] = position  # used: a checkpoint from here on resumes after it
        return batch

    def _train_step(self, micro_batches: list[dict], step: int, tally: StepTally) -> float:
        """Optimizer step number `step` on this process's `micro_batches` (host tensors): forward and backward of each
        (DDP syncs the gradients on the last), clip, AdamW, learning-rate step, EMA teacher step; returns the decay.

        Nothing here reads a device value back to the host: the loss, variances, token counts and gradient norm are
        added to `tally`, and a step whose loss or gradients are not finite is skipped on the device (AdamW's
        `found_inf`, the teacher's `skip`) and recorded in the tally."""
        args, acc, device = self.args, self.accelerator, self.accelerator.device
        accumulate, step_loss = len(micro_batches), torch.zeros((), device=device)
        for micro, batch in enumerate(micro_batches):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if self.fsdp and accumulate > 1:  # FSDP2's no_sync: gradients reduce-scattered once, after the last
                self.model.set_requires_gradient_sync(micro == accumulate - 1)
            with acc.no_sync(self.model) if micro < accumulate - 1 and not self.fsdp else contextlib.nullcontext(), \
                    acc.autocast() if self.fsdp else contextlib.nullcontext():  # (a prepared model autocasts itself)
                out = self.model(**batch, check_inputs=False)
                acc.backward(out.loss / accumulate)
            step_loss += out.loss.detach() / accumulate
            tally.add_micro_batch(out, _count_tokens(self.config, batch))
        max_norm = args.max_grad_norm or float("inf")
        grad_norm = (fsdp_grad_norm(self.model, max_norm) if self.fsdp
                     else acc.clip_grad_norm_(self.model.parameters(), max_norm))
        finite = torch.isfinite(step_loss) & torch.isfinite(grad_norm)
        # fp16 gradients overflow now and then by design (the scaler skips those steps): only the loss counts
        tally.add_step(step, grad_norm, finite, ~torch.isfinite(step_loss) if args.mixed_precision == "fp16"
                       else ~finite)
        if self._fused:  # skip on the device: a fused AdamW reads `found_inf` (GradScaler's mechanism)
            torch_optimizer(self.optimizer).found_inf = (~finite).float()
            self.optimizer.step()
        elif bool(finite):  # only where the device has no fused AdamW: one host check per step
            self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.unwrapped.update_teacher(skip=~finite)  # after the optimizer step, once per step

    def _log(self, tally: StepTally, samples_per_s: float, elapsed: float, decay: float, step: int) -> dict:
        """The interval's metrics (`StepTally.read`, the interval's one host sync) to `MetricsReporter`, then the
        non-finite and collapse checks."""
        acc, args = self.accelerator, self.args
        averages, n_bad, first_bad = tally.read(acc)
        metrics = {k: averages[k] for k in ("loss", "target_var", "pred_var", "masked_fraction", "grad_norm")}
        metrics.update({
            "lr": self.lr_scheduler.get_last_lr()[0], "ema_decay": decay, "samples_per_second": samples_per_s,
            "masked_copies": float(self.config.clone_batch),  # per sample (data2vec 2.0's clone_batch; 1.0: 1)
            "tokens_per_second": averages["tokens"] * acc.num_processes / elapsed,  # the mean over processes x them
            "nonfinite_steps": n_bad,
        })
        if args.torch_compile:  # graphs compiled so far in this process: flat once every shape has been seen
            from ..compiling import compiled_graphs

            metrics["compiled_graphs"] = float(compiled_graphs())
        self.reporter.training_step(step, metrics)
        if n_bad and not args.skip_nonfinite:
            raise NonFiniteLossError(
                f"the loss or its gradients became NaN/inf at step {first_bad} (the update was skipped: the student "
                f"and teacher are intact). Lower --learning_rate, raise --warmup_steps, use --mixed_precision bf16 "
                f"instead of fp16, check the data for extreme values, or pass --skip_nonfinite to skip such steps."
            )
        if step >= args.collapse_check_after and averages["masked_micro_batches"]:
            self.unwrapped.check_collapse(metrics["target_var"], metrics["pred_var"])
        return metrics

    def _seconds(self) -> float:
        """Training seconds so far, over resumes; evaluations, probes and checks not counted."""
        return self._seconds_before + time.perf_counter() - self._loop_start - self.reporter.aside_seconds

    # ---- measuring (`Evaluation`, `HealthCheck`), each returning the seconds it took -------------------------------

    def evaluate(self, step: int) -> float:
        """The held-out data2vec loss (`Evaluation.eval_loss`)."""
        return self.reporter.timed_aside(lambda: self.evaluation.eval_loss(self.unwrapped, step))

    def periodic_probe(self, step: int) -> float:
        """The linear probe of --probe_steps (`Evaluation.periodic_probe`)."""
        return self.reporter.timed_aside(lambda: self.evaluation.periodic_probe(self.unwrapped, step))

    def monitor_health(self, step: int) -> float:
        """The label-free health check at logging step `step` (`HealthCheck.check`)."""
        return self.reporter.timed_aside(lambda: self.health.check(self.unwrapped, step))

    def run_probe(self, model: Data2VecForPreTraining | None = None) -> dict:
        """The final linear probe of `model` (default: the unwrapped student), random init and raw inputs."""
        return self.evaluation.final_probe(model if model is not None else self.unwrapped, self.state.global_step)

    # ---- the end -------------------------------------------------------------------------------------------------

    def finish(self) -> dict:
        """End of training: the student (+ head) and the processor into output_dir, the probe, the Hub."""
        acc, args = self.accelerator, self.args
        acc.wait_for_everyone()
        results: dict = {}
        model = self.gathered_student()  # --fsdp: every process takes part in the gathering
        if acc.is_main_process:
            if args.probe and self.data.probe is not None:
                results = self.run_probe(model)
            elif args.probe:
                print("no linear probe: the data has no labels (a folder of class subfolders, or --label_column, gives "
                      "one). Without labels, judge the run by the health panels of curves.png (pooled spread and "
                      "effective rank; docs/training.md, 'What to watch in curves.png')", file=sys.stderr)
            from ..curves import write_curves

            write_curves(self.log_history, args.output_dir, title=self.data.description)
            # what the run was travels with the config: the model card
            model.config.pretraining_info = pretraining_info(args, self.data.description, self.state.global_step,
                                                             acc.num_processes, results)
            model.save_pretrained(args.output_dir)
            if self.data.processor is not None:
                _fit_tokenizer_length(self.data.processor, model.config)
                self.data.processor.save_pretrained(args.output_dir)
            if args.push_to_hub:
                self.push_to_hub()
            out = Path(args.output_dir).resolve()
            print(f"data2vec-pretrain: done. Model: {out} (AutoModel.from_pretrained); "
                  + ("probe: probe.json; " if results else "") + "curves: curves.png; checkpoints: checkpoint-*/"
                  + ("; logs: logs/" if (out / "logs").exists() else ""))
        acc.wait_for_everyone()
        return results

    def gathered_student(self) -> Data2VecForPreTraining | None:
        """The student as a plain model: the unwrapped one; with --fsdp, gathered from all shards (a collective:
        every process calls this; the main process gets the model, the others None)."""
        return gather_full_model(self.model, self.accelerator) if self.fsdp else self.unwrapped

    def push_to_hub(self) -> str:
        """Uploads output_dir's result in one commit: the model (safetensors + config), the processor, probe.json and
        the curves; not the checkpoints or the logs."""
        args = self.args
        repo_id = self.hub_repo_id or self._check_hub()
        n = push_folder(args.output_dir, repo_id, token=args.hub_token,
                        message=f"data2vec-pretrain: {self.config.modality}, {self.state.global_step} steps")
        logger.info("pushed %d files to %s", n, repo_id)
        return repo_id


def describe_run(trainer: Data2VecPretrainer) -> str:
    """The run in a few lines: data, model, optimisation, where the results go."""
    args, acc, c = trainer.args, trainer.accelerator, trainer.config
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * acc.num_processes
    start = (f"resuming {trainer.resume_from}" if trainer.resume_from else
             f"from {args.init_from}" if args.init_from else "from random initialisation")
    return "\n".join([
        f"data2vec-pretrain: {c.modality}, {c.algorithm}" + (f" ({c.clone_batch} masked copies per sample)"
                                                             if c.clone_batch > 1 else ""),
        f"  data:   {trainer.data.description}; "
        + (f"{trainer.data.train.n_shards} shard(s) for this process" if trainer.streaming else
           f"{len(trainer.data.train)} examples")
        + ("" if trainer.data.probe is None else
           f"; probe {len(trainer.data.probe.train)} / {len(trainer.data.probe.test)} (train / held out)")
        + ("" if trainer.validation is None else
           f"; validation {len(trainer.validation)} (" + (f"split {args.validation_split}" if args.validation_split
                                                       else f"{args.validation_split_percentage:g}% held out")
           + f", eval_loss every {args.eval_steps} steps)"),
        f"  model:  {args.model_size if not (args.config or args.init_from) else 'as loaded'}, hidden "
        f"{c.hidden_size} x {c.num_hidden_layers} layers, {trainer.model.num_parameters() / 1e6:.2f}M parameters, "
        f"{start}",
        f"  train:  {args.max_steps} steps x {batch} examples ({args.per_device_train_batch_size} per device x "
        f"{args.gradient_accumulation_steps} accumulation x {acc.num_processes} processes), lr "
        f"{args.learning_rate:g} ({args.lr_scheduler_type}, {args.warmup_steps} warm-up steps), precision "
        f"{args.mixed_precision} ({trainer.precision_from}), {acc.device}"
        + (f", FSDP (student, teacher and AdamW sharded over {acc.num_processes} processes)" if trainer.fsdp else "")
        + (f", torch.compile ({args.torch_compile_backend})" if args.torch_compile else ""),
        f"  output: {Path(args.output_dir).resolve()} (checkpoints every {args.save_steps} steps)",
    ])


def pretraining_info(args: PretrainingArguments, dataset: str, steps: int, num_processes: int, probe: dict) -> dict:
    """What the run was, for the model card and for whoever fine-tunes the result (`probe`: the final probe's
    probe_* metrics, or empty)."""
    info = {
        "dataset": dataset,
        "steps": steps,
        "batch size": args.per_device_train_batch_size * args.gradient_accumulation_steps * num_processes,
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


def _split_validation(data, percentage: float, seed: int):
    """(data with the training examples, the held-out examples): `percentage` % of the examples, drawn with `seed`."""
    from ..data import PretrainingData

    n = len(data.train)
    held = int(round(n * percentage / 100))
    if held < 1 or held >= n:
        raise ValueError(f"--validation_split_percentage {percentage:g} of {n} examples holds out {held}: use a "
                         f"percentage that leaves at least one example on each side")
    order = np.random.default_rng(seed).permutation(n).tolist()
    train = torch.utils.data.Subset(data.train, sorted(order[held:]))
    validation = torch.utils.data.Subset(data.train, sorted(order[:held]))
    return PretrainingData(train, data.processor, data.config_updates, data.probe, data.description), validation


def _count_tokens(config: Data2VecConfig, batch: dict) -> torch.Tensor:
    """Positions the student encodes in a batch (text tokens, image patches, audio frames; data2vec 2.0: the visible
    ones of every copy): a float on the batch's device, summed there (reading it would be a host sync). Padding is
    not counted where the attention mask is per position (text); audio's is per sample, its frames all count."""
    mask = batch[MODALITY_INFO[config.modality].mask_input]
    if config.algorithm == "data2vec2":
        return (~mask.bool()).sum().float()
    attention = batch.get("attention_mask")
    if attention is not None and attention.shape == mask.shape:
        return attention.sum().float()
    return torch.full((), float(mask.numel()), device=mask.device)


def _tracker_config(args: PretrainingArguments) -> dict:
    return {k: v for k, v in dataclasses.asdict(args).items() if isinstance(v, (int, float, str, bool))}


def _progress(acc: Accelerator, args: PretrainingArguments, start: int):
    from tqdm.auto import tqdm

    return tqdm(total=args.max_steps, initial=start, desc="data2vec", dynamic_ncols=True,
                disable=args.disable_tqdm or not acc.is_local_main_process)


def _logging_beside(progress):
    """While the progress bar is live, log records are written above it (tqdm.write) instead of after the bar's text
    on its own line."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    return contextlib.nullcontext() if progress.disable else logging_redirect_tqdm(tqdm_class=type(progress))


def cli(argv: list[str] | None = None) -> dict:
    """`data2vec-pretrain` with `argv` (default: sys.argv); returns the final metrics. Bad input exits with code 2
    and the error's message."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for name in ("accelerate.accelerator", "accelerate.checkpointing"):  # per-file lines of every save: ours says one
        logging.getLogger(name).setLevel(logging.WARNING)
    (args,) = HfArgumentParser(PretrainingArguments).parse_args_into_dataclasses(args=argv)
    try:
        trainer = Data2VecPretrainer(args)
        trainer.command = list(sys.argv[1:] if argv is None else argv)
        metrics = trainer.train()
    except (ValueError, FileNotFoundError, NonFiniteLossError, Data2VecCollapseError) as error:
        print(f"data2vec-pretrain: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    if trainer.stopper.interrupted is not None:  # saved and stopped: the shell's code for death by that signal
        raise SystemExit(128 + trainer.stopper.interrupted)
    return metrics


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point."""
    cli(argv)
    exit_after_gloo_run()


def exit_after_gloo_run() -> None:
    """A process of a finished multi-process CPU (gloo) run exits here without C++ static teardown: there, now and
    then (about 1 launch in 30 of 2-process --fsdp runs on a loaded 2-core machine), destroying what is left of the
    process groups and FSDP's device mesh aborted with "terminate called without an active exception" (faulthandler:
    no Python frame left), so the launcher reported a failed run although every output was written. Logs and
    streams are flushed first; the process group was destroyed by `end_training`. GPU runs exit normally."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
