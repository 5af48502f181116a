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
import json
import logging
import math
import os
import pickle
import shlex
import shutil
import sys
import time

from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, set_seed
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import HfArgumentParser, get_scheduler

from .configuration_data2vec import MODALITIES, Data2VecConfig  # noqa: F401  (MODALITIES: re-exported)
from .masking import MASK_INPUT, MODALITY_INPUT, DataCollatorForData2VecPretraining, SeededBatch
from .modeling_data2vec_pretraining import TEACHER_WEIGHTS, Data2VecCollapseError, Data2VecForPreTraining, _eval_mode
from .optimization import parameter_groups
from .training.arguments import (  # noqa: F401  (re-exported: the trainer's public names stay here)
    _check_compile,
    _check_optimizer_values,
    _check_streaming,
    _launcher_processes,
    _RATIO_NOTE,
    _read_json,
    _source_algorithm,
    COMPILE_MODES,
    CONFIG_EXPECTED,
    DURATION_UNITS,
    parse_duration,
    parse_overrides,
    precision_source,
    PRECISIONS,
    PretrainingArguments,
    SCHEDULE_FLAGS,
)
from .training.checkpointing import (  # noqa: F401
    _accelerator_rng,
    _damaged_safetensors,
    _rng_untouched,
    CHECKPOINT_PATTERN,
    find_checkpoint,
    FOREIGN_PICKLES,
    FSDP_SHARDS,
    load_rng_state,
    RNG_STATE,
    rng_states,
    save_rng_state,
    set_rng_states,
    STREAM_STATE,
    TRAINER_STATE,
    TrainerState,
)
from .training.recipes import (  # noqa: F401
    ALGORITHMS,
    BUILTIN_VISION,
    COLLAPSE_REMEDIES,
    DEFAULT_ALGORITHM,
    MODEL_SIZES,
    OPTIMIZER_DEFAULTS,
    OPTIMIZER_DEFAULTS_V2,
    TINY_OPTIMIZER,
    TINY_RECIPES,
    TINY_RECIPES_V2,
    TRAINING_DEFAULTS,
    TRAINING_DEFAULTS_V2,
)

# named after the package even when this module runs as __main__ (python -m modeling_data2vec_unified.trainer)
logger = logging.getLogger("modeling_data2vec_unified.trainer")

SUMS = ("loss", "target_var", "pred_var", "masked_fraction", "micro_batches", "masked_micro_batches", "tokens",
        "grad_norm", "finite_steps")
PER_MICRO_BATCH = SUMS.index("grad_norm")  # the first PER_MICRO_BATCH sums grow per micro-batch, the rest per step
# the probe run every --probe_steps: at most this many train / held-out examples (the first of the probe's splits)
PERIODIC_PROBE_EXAMPLES = (500, 300)


def _fit_tokenizer_length(processor, config) -> None:
    """A text tokenizer saved with the run says how many tokens the model takes (`model_max_length`, which
    `truncation=True` cuts to); a tokenizer trained here would otherwise say 1e30 and let longer inputs reach the
    position table."""
    if config.modality == "text" and hasattr(processor, "model_max_length"):
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
        if args.modality == "vision" and args.dataset == "builtin":
            fields.update(BUILTIN_VISION)
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


class Data2VecPretrainer:
    """data2vec pretraining on `accelerate`: `Data2VecPretrainer(args).train()`.

    `model` (a `Data2VecForPreTraining`) and `data` (a `data.PretrainingData`) may be passed in; otherwise they are
    built from `args` (the config from --model_size / --config / --init_from, the data from --dataset). Builds and
    checks everything (data, model, checkpoint to resume) before the first step, so bad input fails early.
    """

    def __init__(self, args: PretrainingArguments, model: Data2VecForPreTraining | None = None, data=None):
        if model is not None and args.algorithm is None:  # a model passed in brings its algorithm
            args = dataclasses.replace(args, algorithm=model.config.algorithm)
        self._precision_from = precision_source(args)
        self.args = args = args.resolve()
        if model is not None:
            _check_modality(args, model.config)
        trackers = [] if args.report_to in ("none", "") else args.report_to.split(",")
        self._ddp = DistributedDataParallelKwargs()  # find_unused_parameters is set once the model is known
        # accelerate keeps one global state per process: let a second trainer in the same process (a notebook, the
        # tests) choose another precision; the distributed setup (PartialState) is kept
        AcceleratorState._reset_state(reset_partial_state=False)
        # several processes launched on a machine without an accelerator: accelerate sets up a distributed CPU run
        # only when told `cpu` (else each process would train alone, as rank 0, into the same output_dir)
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        cpu = args.cpu or (launched > 1 and not torch.accelerator.is_available())
        self.accelerator = Accelerator(
            mixed_precision=args.mixed_precision, cpu=cpu, project_dir=args.output_dir,
            log_with=trackers or None, kwargs_handlers=[self._ddp],
        )
        if launched != self.accelerator.num_processes:
            raise RuntimeError(f"launched as {launched} processes (WORLD_SIZE) but accelerate set up "
                               f"{self.accelerator.num_processes}: check the launcher's settings (accelerate config)")
        asked = _launcher_processes()
        if asked and asked > self.accelerator.num_processes:
            logger.warning(
                f"`accelerate launch` was asked for {asked} processes but started {self.accelerator.num_processes}: on "
                "a machine without GPUs it starts one (its MULTI_CPU mode needs MPI). For several CPU processes use "
                "`torchrun --nproc_per_node N -m modeling_data2vec_unified.trainer ...` (docs/training.md)")
        self._take_accelerate_dynamo()
        set_seed(args.seed)  # the same initial weights on every process
        if model is None and args.init_from:
            _check_init_from(args.init_from)
            model = Data2VecForPreTraining.from_pretrained(args.init_from)  # ours or transformers' checkpoints
            _check_modality(args, model.config)
            apply_config_updates(model.config, {**parse_overrides(args.config_overrides),
                                                 **_ema_fields(args, model.config)})
        config = model.config if model is not None else build_config(args)
        if data is None and args.streaming:
            from .streaming import load_streaming_data

            data = load_streaming_data(
                config, args.dataset, dataset_config_name=args.dataset_config_name, split=args.dataset_split,
                processor=args.processor or (args.init_from if args.modality == "text" else None),
                column=args.column, max_seq_length=args.max_seq_length,
                tokenizer_vocab_size=args.tokenizer_vocab_size, tokenizer_examples=args.streaming_tokenizer_examples,
                skip_bad_examples=args.skip_bad_examples, batch_size=args.per_device_train_batch_size,
                seed=args.seed, buffer_size=args.shuffle_buffer_size,
                rank=self.accelerator.process_index, world_size=self.accelerator.num_processes,
                resample_audio=args.resample_audio, min_audio_seconds=args.min_audio_seconds,
            )
        if data is None:
            from .data import load_pretraining_data

            text_processor = args.init_from if args.modality == "text" else None  # a text checkpoint's tokenizer
            with self.accelerator.main_process_first():  # downloads and `datasets` caches once, then shared
                data = load_pretraining_data(
                    config, args.dataset, dataset_config_name=args.dataset_config_name, split=args.dataset_split,
                    processor=args.processor or text_processor, column=args.column, label_column=args.label_column,
                    max_seq_length=args.max_seq_length, max_examples=args.max_examples,
                    resample_audio=args.resample_audio, min_audio_seconds=args.min_audio_seconds,
                    tokenizer_vocab_size=args.tokenizer_vocab_size,
                    seed=args.seed, probe=args.probe or bool(args.probe_steps),
                    skip_bad_examples=args.skip_bad_examples,
                )
        self.validation = None
        if args.validation_split_percentage:
            data, self.validation = _split_validation(data, args.validation_split_percentage, args.seed)
        elif args.validation_split is not None:  # prepared by the training data's processor (text: its tokenizer)
            from .data import load_pretraining_data

            with self.accelerator.main_process_first():
                self.validation = load_pretraining_data(
                    config, args.dataset, dataset_config_name=args.dataset_config_name, split=args.validation_split,
                    processor=data.processor, column=args.column, max_seq_length=args.max_seq_length,
                    max_examples=args.max_eval_examples, resample_audio=args.resample_audio,
                    min_audio_seconds=args.min_audio_seconds, seed=args.seed,
                    probe=False, skip_bad_examples=args.skip_bad_examples,
                ).train
        if self.validation is not None and args.max_eval_examples is not None:
            self.validation = torch.utils.data.Subset(
                self.validation, range(min(args.max_eval_examples, len(self.validation))))
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
        self.fsdp = args.fsdp or self.accelerator.distributed_type == DistributedType.FSDP
        if self.fsdp:
            self._check_fsdp()
        self.collator = DataCollatorForData2VecPretraining(
            self.config, seed=args.seed, audio_crop=args.audio_crop,
            max_audio_samples=None if args.max_audio_seconds is None
            else int(args.max_audio_seconds * self.config.sampling_rate),
            image_augment=args.image_augment if self.config.modality == "vision" else None,
            bucket_lengths=args.torch_compile if args.bucket_lengths is None else args.bucket_lengths,
        )
        self.state = TrainerState()
        self.optimizer = self.lr_scheduler = None  # made by `train`
        self._fused = False
        # every logged step's metrics and every --probe_steps probe, as transformers' Trainer keeps them (restored on
        # resume: the curves cover the whole run)
        self.log_history: list[dict] = []
        self._seconds_before = 0.0  # training seconds of the run before this session (resume)
        self._loop_start, self._probe_seconds = time.perf_counter(), 0.0
        self.stream_positions: dict = {}  # --streaming: each DataLoader worker's position after its last batch used
        if args.probe_steps and data.probe is None:
            logger.warning("--probe_steps %d: the data has no labels (no label column), so there is nothing to probe",
                           args.probe_steps)
        self._monitor_examples, self._collapse_warned = self._health_examples(), set()
        self.health_start: dict[str, float] | None = None  # the health check at the run's start (in checkpoints)
        self.resume_from = None
        if args.resume_from_checkpoint:
            self.resume_from = find_checkpoint(args.output_dir, args.resume_from_checkpoint)
            if self.resume_from is None:
                logger.warning("--resume_from_checkpoint latest: no checkpoint in %s; starting from scratch",
                               args.output_dir)
            else:
                self._check_checkpoint(self.resume_from)
        else:
            self._check_output_dir()
        if self.fsdp and not torch.distributed.is_initialized():
            raise ValueError("--fsdp shards over several processes: launch with `python -m torch.distributed.run "
                             "--nproc_per_node N -m modeling_data2vec_unified.trainer --fsdp ...` (CPUs) or "
                             "`accelerate launch --config_file examples/fsdp.yaml ...` (GPUs), or drop --fsdp")
        self.interrupted: int | None = None  # the signal that stopped the run early, if one did
        self.command: list[str] | None = None  # the CLI flags of this run (set by `cli`), for the resume hint
        self._started = time.perf_counter()  # --max_train_time counts from here
        self._check_first_batch()
        self.hub_repo_id = self._check_hub() if args.push_to_hub else None
        if self.accelerator.is_main_process:
            logger.info("%s", self.summary())

    def summary(self) -> str:
        """The run in a few lines, logged at start-up: data, model, optimisation, where the results go."""
        args, acc, c = self.args, self.accelerator, self.config
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * acc.num_processes
        start = (f"resuming {self.resume_from}" if self.resume_from else
                 f"from {args.init_from}" if args.init_from else "from random initialisation")
        return "\n".join([
            f"data2vec-pretrain: {c.modality}, {c.algorithm}" + (f" ({c.clone_batch} masked copies per sample)"
                                                                 if c.clone_batch > 1 else ""),
            f"  data:   {self.data.description}; "
            + (f"{self.data.train.n_shards} shard(s) for this process" if self.streaming else
               f"{len(self.data.train)} examples")
            + ("" if self.data.probe is None else
               f"; probe {len(self.data.probe.train)} / {len(self.data.probe.test)} (train / held out)")
            + ("" if self.validation is None else
               f"; validation {len(self.validation)} (" + (f"split {args.validation_split}" if args.validation_split
                                                           else f"{args.validation_split_percentage:g}% held out")
               + f", eval_loss every {args.eval_steps} steps)"),
            f"  model:  {args.model_size if not (args.config or args.init_from) else 'as loaded'}, hidden "
            f"{c.hidden_size} x {c.num_hidden_layers} layers, {self.model.num_parameters() / 1e6:.2f}M parameters, "
            f"{start}",
            f"  train:  {args.max_steps} steps x {batch} examples ({args.per_device_train_batch_size} per device x "
            f"{args.gradient_accumulation_steps} accumulation x {acc.num_processes} processes), lr "
            f"{args.learning_rate:g} ({args.lr_scheduler_type}, {args.warmup_steps} warm-up steps), precision "
            f"{args.mixed_precision} ({self._precision_from}), {acc.device}"
            + (f", FSDP (student, teacher and AdamW sharded over {acc.num_processes} processes)" if self.fsdp else "")
            + (f", torch.compile ({args.torch_compile_backend})" if args.torch_compile else ""),
            f"  output: {Path(args.output_dir).resolve()} (checkpoints every {args.save_steps} steps)",
        ])

    def _check_hub(self) -> str:
        """--push_to_hub: the token and the repo are checked at start-up (the repo is created, as transformers' Trainer
        does), not after the run; the local save still comes first at the end."""
        from huggingface_hub import HfApi

        args = self.args
        if not self.accelerator.is_main_process:
            return args.hub_model_id or Path(args.output_dir).resolve().name
        try:
            return HfApi(token=args.hub_token).create_repo(
                args.hub_model_id or Path(args.output_dir).resolve().name, private=args.hub_private_repo,
                exist_ok=True).repo_id
        except Exception as error:  # no token, no network, no rights: say so before training, not after
            raise ValueError(
                f"--push_to_hub: cannot create or reach the Hub repo {args.hub_model_id or Path(args.output_dir).name!r} "
                f"({type(error).__name__}: {error}). Log in (`hf auth login`) or pass --hub_token, check "
                f"--hub_model_id, or drop --push_to_hub (push later with model.push_to_hub)"
            ) from error

    # ---- building ----------------------------------------------------------------------------------------------

    def _take_accelerate_dynamo(self) -> None:
        """`accelerate launch --dynamo_backend X` (or a config with one) means --torch_compile with that backend and
        mode: compiled here, by region and with bucketed shapes, not by accelerate's `prepare` (whole model)."""
        from accelerate.utils import DynamoBackend

        plugin, args = self.accelerator.state.dynamo_plugin, self.args
        if plugin.backend == DynamoBackend.NO:
            return
        args.torch_compile = True
        args.torch_compile_backend = plugin.backend.value.lower()
        args.torch_compile_mode = args.torch_compile_mode or (plugin.mode if plugin.mode != "default" else None)
        plugin.backend = DynamoBackend.NO

    def _compile(self) -> None:
        from .compiling import compile_regions

        n = compile_regions(self.model, self.args.torch_compile_backend, self.args.torch_compile_mode)
        logger.info("--torch_compile: %d modules compiled (backend %s%s); each new input shape compiles once", n,
                    self.args.torch_compile_backend,
                    f", mode {self.args.torch_compile_mode}" if self.args.torch_compile_mode else "")

    def _check_fsdp(self) -> None:
        """--fsdp: the options it cannot support are refused here, naming the fix."""
        args, c = self.args, self.config
        if c.layerdrop > 0:
            raise ValueError(
                f"--fsdp with layer drop (layerdrop={c.layerdrop:g}): each process would skip other layers, and FSDP "
                "gathers every layer's shards on all processes together (it would hang). Pass --config_overrides "
                "layerdrop=0, or train without --fsdp (DDP)")
        if args.probe_steps:
            raise ValueError(
                "--fsdp with --probe_steps: the periodic probe runs the student on the main process alone, which a "
                "sharded student cannot do (every forward gathers shards from all processes). Drop --probe_steps (the "
                "probe at the end runs on the gathered model), or train without --fsdp")
        if args.mixed_precision == "fp16":
            raise ValueError("--fsdp with --mixed_precision fp16 is not supported (the gradient scaler is not "
                             "sharded here): use --mixed_precision bf16 or no")

    def _shard(self) -> None:
        """--fsdp: `fully_shard` the student and the EMA teacher alike on one mesh over all processes: each
        transformer layer (every `GradientCheckpointingLayer`) is its own unit, then the root. Parameters become
        DTensors sharded on dim 0, so the teacher's local shards line up with the student's (the EMA is local)."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
        from transformers.modeling_layers import GradientCheckpointingLayer

        if self.accelerator.is_main_process:  # said once, before torch's warning on every process
            print("data2vec-pretrain: --fsdp: torch warns that the sharded Data2VecLayer 'returned a view tensor'. "
                  "Harmless here: that view is the layer's FFN output, read only by the teacher's targets under "
                  "no_grad and never changed in place (docs/training.md, FSDP)", file=sys.stderr)

        acc = self.accelerator
        mesh = init_device_mesh(acc.device.type, (acc.num_processes,))
        plugin = getattr(acc.state, "fsdp_plugin", None)
        reshard = getattr(plugin, "reshard_after_forward", True)
        reshard = reshard if isinstance(reshard, bool) else True
        model = self.model.to(acc.device)
        teacher = model.teacher  # a copy of the unsharded student, built before it is sharded
        for root in (model, teacher.model):
            for module in list(root.modules()):
                if isinstance(module, GradientCheckpointingLayer):
                    fully_shard(module, mesh=mesh, reshard_after_forward=reshard)
            fully_shard(root, mesh=mesh, reshard_after_forward=reshard)
        # the teacher of teacher_scope "model" runs through these methods, not forward: FSDP hooks them too
        for method in ("embed", "contextualize", "encode"):
            if callable(getattr(teacher.model, method, None)):
                register_fsdp_forward_method(teacher.model, method)
        teacher.forget_pairs()  # fully_shard replaced the parameters: pair the new shards at the first update
        self._mesh = mesh

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
        """A checkpoint to resume must be ours, of this model, and hold no pickle that resuming would read."""
        fix = "resume from another checkpoint-N of the run, or start a new --output_dir"
        state = _read_json(path / TRAINER_STATE, "the checkpoint's", f"the {TRAINER_STATE} data2vec-pretrain writes "
                                                                        f"(a damaged copy?); {fix}")
        lacking = [k for k in ("global_step", "micro_batches", "modality") if k not in state]
        if lacking:
            raise ValueError(f"checkpoint {path}: {TRAINER_STATE} lacks {', '.join(lacking)} (not written by "
                             f"data2vec-pretrain, or edited): {fix}")
        algorithm = state.get("algorithm", "data2vec")
        if (state.get("modality") != self.config.modality or algorithm != self.config.algorithm
                or state.get("num_parameters") != self.model.num_parameters()):
            raise ValueError(
                f"checkpoint {path} is of another model ({state.get('modality')} {algorithm}, "
                f"{state.get('num_parameters')} parameters) than this run ({self.config.modality} "
                f"{self.config.algorithm}, {self.model.num_parameters()}): resume with the same --modality / "
                f"--algorithm / --model_size / --config, or start a new --output_dir"
            )
        saved_fsdp, n = bool(state.get("fsdp", False)), state.get("num_processes")
        if saved_fsdp != self.fsdp:
            raise ValueError(
                f"checkpoint {path} was saved " + ("with --fsdp (sharded: one fsdp_shards_<rank>.safetensors per "
                                                   "process)" if saved_fsdp else "without --fsdp (DDP: one full copy)")
                + f" and this run is {'with' if self.fsdp else 'without'} it: resume it "
                + ("with --fsdp" if saved_fsdp else "without --fsdp") + f" on {n} process(es), or start a new "
                "--output_dir (--init_from <the run's output_dir> after it finished)")
        if saved_fsdp and n != self.accelerator.num_processes:
            raise ValueError(
                f"checkpoint {path} holds the shards of {n} processes (--fsdp) and this run has "
                f"{self.accelerator.num_processes}: resume it on {n} processes (torch.distributed.run / accelerate "
                f"launch --num_processes {n}), or start a new --output_dir")
        pickles = sorted(p.name for p in path.iterdir() if FOREIGN_PICKLES.match(p.name))
        if pickles:
            raise ValueError(
                f"checkpoint {path} holds {', '.join(pickles)}: pickled state that data2vec-pretrain neither writes "
                f"nor loads (unpickling runs whatever code the file names), left by an older version or another "
                f"program. Resume it with the version that wrote it, or start a new --output_dir"
            )
        saved = state.get("args", {})
        changed = {k: (saved[k], getattr(self.args, k)) for k in SCHEDULE_FLAGS
                   if k in saved and saved[k] != getattr(self.args, k)}
        if changed:
            raise ValueError(
                f"checkpoint {path} was saved by a run with other schedule flags: "
                + ", ".join(f"--{k} {old} (now {new}{_RATIO_NOTE if k == 'warmup_steps' else ''})"
                            for k, (old, new) in changed.items())
                + ". A resume continues the saved run exactly: pass its values again. To train on with new ones, start "
                  "a new run from its weights: --init_from <the run's output_dir> (after it finished) in another "
                  "--output_dir"
            )
        if self.fsdp:
            missing = [FSDP_SHARDS.format(r) for r in range(n) if not (path / FSDP_SHARDS.format(r)).is_file()]
            if missing:
                raise ValueError(f"checkpoint {path} lacks {', '.join(missing)} (an incomplete copy?): resume from "
                                 f"another checkpoint-N of the run, or start a new --output_dir")
        elif not (path / TEACHER_WEIGHTS).is_file() or "lr_scheduler" not in state:
            raise ValueError(
                f"checkpoint {path} has no {TEACHER_WEIGHTS} or no lr_scheduler in {TRAINER_STATE} (written by an "
                f"older version?): resume from a checkpoint of this version, or start a new --output_dir"
            )

    def _check_output_dir(self) -> None:
        """A fresh run must not land among another run's checkpoints (its own would be pruned as older, `latest` would
        resume the other run, and model.safetensors would be overwritten): refused, or with --overwrite_output_dir
        those checkpoints are deleted first."""
        old = sorted(p.name for p in Path(self.args.output_dir).glob("checkpoint-*") if CHECKPOINT_PATTERN.match(p.name))
        if not old:
            return
        if not self.args.overwrite_output_dir:
            raise ValueError(
                f"--output_dir {self.args.output_dir} holds another run's checkpoints ({', '.join(old[-3:])}): pass "
                f"--resume_from_checkpoint latest to continue that run, --overwrite_output_dir to delete them and "
                f"start afresh, or another --output_dir"
            )
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            for name in old:
                path = Path(self.args.output_dir) / name
                path.unlink() if path.is_symlink() else shutil.rmtree(path)  # a link: not what it points to
            logs = Path(self.args.output_dir) / "logs"  # the earlier run's tracker files would mix into this run's
            if logs.is_dir() and not logs.is_symlink():
                shutil.rmtree(logs)
            logger.warning("--overwrite_output_dir: deleted %d checkpoint(s) and the logs of an earlier run in %s",
                           len(old), self.args.output_dir)
        self.accelerator.wait_for_everyone()

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
        acc = self.accelerator
        if self.streaming:
            from .streaming import stream_batches

            return stream_batches(self.data.train, self.collator, self.args.dataloader_num_workers, start,
                                  self.stream_positions, self.args.seed, pin_memory=acc.device.type == "cuda")
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
        """Everything a resume needs into checkpoint-N.tmp, then renamed to checkpoint-N: a run killed mid-save
        leaves the previous checkpoint intact. Keeps the newest `save_total_limit`. No pickle is written that a resume
        would unpickle: `accelerator.save_state` saves the model (safetensors; sharded, where a plugin shards it) and
        the optimizer (read back with weights_only=True); its pickled RNG file is replaced by `RNG_STATE`; the teacher,
        the learning-rate schedule and the loop position are written here (safetensors, JSON)."""
        acc, out = self.accelerator, Path(self.args.output_dir)
        final = out / f"checkpoint-{self.state.global_step}"
        tmp = out / f"checkpoint-{self.state.global_step}.tmp"
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        if self.fsdp:
            tmp.mkdir(parents=True, exist_ok=True)
            self._save_shards(tmp / FSDP_SHARDS.format(acc.process_index))
        else:
            acc.save_state(str(tmp))
            (tmp / f"random_states_{acc.process_index}.pkl").unlink(missing_ok=True)  # pickled: ours is safetensors
        save_rng_state(tmp / RNG_STATE.format(acc.process_index), acc.device)
        if self.streaming:
            (tmp / STREAM_STATE.format(acc.process_index)).write_text(json.dumps({
                "num_workers": self.args.dataloader_num_workers, "num_processes": acc.num_processes,
                "positions": {str(k): dataclasses.asdict(v) for k, v in sorted(self.stream_positions.items())}}))
        acc.wait_for_everyone()
        if acc.is_main_process:
            if not self.fsdp:
                self.unwrapped.teacher.save(tmp / TEACHER_WEIGHTS)
            (tmp / TRAINER_STATE).write_text(json.dumps({
                "fsdp": self.fsdp,
                **self.state.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
                "modality": self.config.modality, "algorithm": self.config.algorithm,
                "num_parameters": self.unwrapped.num_parameters(),
                "num_processes": acc.num_processes, "args": dataclasses.asdict(self.args),
                "elapsed_seconds": self._seconds(), "log_history": self.log_history,
                "health_start": self.health_start,
            }, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune_checkpoints()
            logger.info("saved %s", final)
        acc.wait_for_everyone()
        return final

    def _optimizer_params(self) -> list[torch.Tensor]:
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        return [p for group in optimizer.param_groups for p in group["params"]]

    def _save_shards(self, path: Path) -> None:
        """--fsdp: this process's shards (local tensors of the DTensors) of the student, the teacher and the AdamW
        state in one safetensors file; AdamW's hyper-parameters and the teacher's update count as its metadata."""
        from .ema import _local

        teacher = self.unwrapped.teacher
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        tensors = {f"model.{k}": _local(v) for k, v in self.model.state_dict().items()}
        tensors.update({f"teacher.{k}": _local(v) for k, v in teacher.model.state_dict().items()})
        state = optimizer.state_dict()
        for index, values in state["state"].items():
            tensors.update({f"optimizer.{index}.{k}": _local(torch.as_tensor(v)) for k, v in values.items()})
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata={
            "param_groups": json.dumps(state["param_groups"]), "teacher_updates": str(teacher.num_updates),
            "num_processes": str(self.accelerator.num_processes), "rank": str(self.accelerator.process_index)})

    @torch.no_grad()
    def _load_shards(self, path: Path) -> None:
        """Restores what `_save_shards` wrote: the local shards are copied into the student's and the teacher's
        DTensors in place; the AdamW state is rebuilt as DTensors on the parameters' mesh."""
        from torch.distributed.tensor import DTensor

        from .ema import _local

        with safe_open(str(path), "pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        teacher = self.unwrapped.teacher
        for prefix, module in (("model.", self.model), ("teacher.", teacher.model)):
            own = module.state_dict()
            saved = {k[len(prefix):] for k in tensors if k.startswith(prefix)}
            if saved != own.keys():
                raise ValueError(f"{path} does not hold this model's {prefix[:-1]} shards (missing "
                                 f"{sorted(own.keys() - saved)[:3]}, extra {sorted(saved - own.keys())[:3]})")
            for name, value in own.items():
                _local(value).copy_(tensors[prefix + name])
        teacher.num_updates = int(metadata["teacher_updates"])
        params, state = self._optimizer_params(), {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                param = params[int(index)]
                if isinstance(param, DTensor) and name != "step":
                    value = DTensor.from_local(value.to(param.device), param.device_mesh, param.placements,
                                               shape=param.shape, stride=param.stride())
                state.setdefault(int(index), {})[name] = value
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})

    def _prune_checkpoints(self) -> None:
        limit = self.args.save_total_limit
        if limit is None:
            return
        found = sorted((int(m.group(1)), p) for p in Path(self.args.output_dir).glob("checkpoint-*")
                       if (m := CHECKPOINT_PATTERN.match(p.name)))
        for _, path in found[: max(len(found) - limit, 0)]:
            shutil.rmtree(path)

    def load_checkpoint(self, path: Path) -> None:
        """Restores what `save_checkpoint` wrote (after `_check_checkpoint`), unpickling nothing: the model and the
        optimizer through `accelerator.load_state` (safetensors; `torch.load(weights_only=True)`), the rest here."""
        acc = self.accelerator
        state = json.loads((path / TRAINER_STATE).read_text())
        rng = path / RNG_STATE.format(acc.process_index)
        try:
            if self.fsdp:
                self._load_shards(path / FSDP_SHARDS.format(acc.process_index))
            else:
                acc.load_state(str(path))
                try:
                    self.unwrapped.teacher.load(path / TEACHER_WEIGHTS)
                except (KeyError, RuntimeError, ValueError) as error:  # another model's teacher: names or shapes
                    raise ValueError(f"checkpoint {path}: {TEACHER_WEIGHTS} is not this model's teacher "
                                     f"({type(error).__name__}: {str(error)[:300]}). Resume from another checkpoint-N "
                                     "of the run, or start a new --output_dir") from error
            if rng.is_file():
                load_rng_state(rng, acc.device)
        except (pickle.UnpicklingError, SafetensorError) as error:  # weights_only refused a file that names code
            damaged = _damaged_safetensors(path)
            if damaged:
                raise ValueError(
                    f"checkpoint {path}: {', '.join(damaged)} cannot be read (truncated or damaged, e.g. by a copy cut "
                    f"short: {error}). Resume from another checkpoint-N of the run, or start a new --output_dir"
                ) from error
            raise ValueError(
                f"checkpoint {path} holds a file that data2vec-pretrain did not write (refused: {error}). Resume from "
                f"another checkpoint-N of the run, or start a new --output_dir"
            ) from error
        except (EOFError, RuntimeError, OSError) as error:  # a truncated optimizer.bin / model file
            files = ", ".join(sorted(f.name for f in path.iterdir() if f.is_file()))
            raise ValueError(
                f"checkpoint {path} could not be read ({type(error).__name__}: {str(error)[:300]}): one of its files "
                f"({files}) is truncated or damaged, e.g. by a copy cut short. Resume from another checkpoint-N of "
                f"the run, or start a new --output_dir"
            ) from error
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.streaming:
            self._load_stream_state(path)
        self.state.load_state_dict({k: int(state[k]) for k in self.state.state_dict()})
        self.log_history = state.get("log_history", [])  # older checkpoints: none
        self.health_start = state.get("health_start")  # older checkpoints: none (measured again from here)
        self._seconds_before = state.get("elapsed_seconds", 0.0)
        if not rng.is_file():
            logger.warning("checkpoint %s has no RNG state for process %d (it was saved by %s processes): dropout "
                           "and layer drop will not continue as in an uninterrupted run", path, acc.process_index,
                           state.get("num_processes"))

    def _load_stream_state(self, path: Path) -> None:
        """--streaming: each worker's stream position, saved by the same number of processes and workers."""
        acc, file = self.accelerator, path / STREAM_STATE.format(self.accelerator.process_index)
        if not file.is_file():
            raise ValueError(f"checkpoint {path} has no {file.name}: it was not saved by a --streaming run with "
                             f"{acc.num_processes} process(es); resume it as it was run, or start a new --output_dir")
        saved = json.loads(file.read_text())
        if (saved["num_workers"], saved["num_processes"]) != (self.args.dataloader_num_workers, acc.num_processes):
            raise ValueError(
                f"checkpoint {path} was saved by a --streaming run with {saved['num_processes']} process(es) x "
                f"{saved['num_workers']} --dataloader_num_workers; this run has {acc.num_processes} x "
                f"{self.args.dataloader_num_workers}: each worker's stream position is exact only for the same "
                f"split. Resume with --dataloader_num_workers {saved['num_workers']} on {saved['num_processes']} "
                "process(es)")
        from .streaming import StreamPosition

        self.stream_positions = {int(k): StreamPosition(**v) for k, v in saved["positions"].items()}

    @property
    def unwrapped(self) -> Data2VecForPreTraining:
        return self.accelerator.unwrap_model(self.model)

    # ---- the loop ------------------------------------------------------------------------------------------------

    def train(self, stop_at_step: int | None = None) -> dict:
        """Pretrain to `max_steps` (or stop after `stop_at_step` with the schedule unchanged, e.g. a job with a time
        budget; resume later). Returns the last logged metrics, and the probe's results when it ran."""
        args, acc = self.args, self.accelerator
        if args.torch_compile:  # before sharding / DDP (in place: their hooks still run)
            self._compile()
        if self.fsdp:  # sharded here, not by accelerate (whose FSDP plugin is GPU-only): the teacher alike
            self._shard()
        optimizer, self._fused = self._optimizer(self.model)
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
            with self._stop_on_signals():
                metrics = self._loop(min(args.max_steps, stop_at_step or args.max_steps))
            if self.state.global_step >= args.max_steps:
                metrics.update(self.finish())
        finally:
            acc.end_training()
        return metrics

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGTERM (a cluster's pre-emption) and SIGINT (Ctrl-C) let the current step finish; the loop then saves a
        checkpoint and stops. A second Ctrl-C stops at once. Handlers are installed only in the main thread."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.interrupted is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.interrupted = signum
            logger.warning("received %s: finishing step %d, then saving a checkpoint",
                           signal.Signals(signum).name, self.state.global_step + 1)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def resume_command(self) -> str:
        """The command that continues this run: its own flags (when started by `cli`) + --resume_from_checkpoint."""
        flags, skip = [], False
        for item in self.command or ["<the same flags>"]:
            if skip or item.startswith("--resume_from_checkpoint"):
                skip = item == "--resume_from_checkpoint"
                continue
            flags.append(shlex.quote(item) if item != "<the same flags>" else item)
        return " ".join(["data2vec-pretrain", *flags, "--resume_from_checkpoint", "latest"])

    def _should_stop(self, step: int, logged: bool) -> str | None:
        """Why the loop stops early after `step`, if it does: a signal, or --max_train_time. Several processes agree at
        logging steps (where the loop syncs anyway), so that they all save the same step."""
        reason = None
        if self.interrupted is not None:
            import signal

            reason = f"{signal.Signals(self.interrupted).name}"
        elif self.args.max_train_time and time.perf_counter() - self._started >= float(self.args.max_train_time):
            reason = f"--max_train_time {float(self.args.max_train_time):g} s"
        acc = self.accelerator
        if acc.num_processes > 1:
            if not logged:
                return None
            flag = acc.reduce(torch.tensor(float(reason is not None), device=acc.device), reduction="sum")
            if float(flag) == 0:
                return None
            reason = reason or "another process's stop"
        return reason

    def _loop(self, end: int) -> dict:
        args, acc = self.args, self.accelerator
        batches = iter(self.dataloader(self.state.micro_batches))
        tallies = {
            "sums": torch.zeros(len(SUMS), device=acc.device),  # SUMS, since the last logging step
            # the first step whose loss or gradients were NaN / inf (-1: none yet), and how many there were
            "bad_step": torch.full((), -1, dtype=torch.long, device=acc.device),
            "bad_count": torch.zeros((), dtype=torch.long, device=acc.device),
        }
        self._loop_start, self._probe_seconds = time.perf_counter(), 0.0
        self._last_monitor = self.state.global_step
        if self._monitor_examples and self.health_start is None:  # what the later checks compare with
            with _rng_untouched(acc.device):
                self.health_start = {**self._health(), "step": self.state.global_step}
        progress = _progress(acc, args, self.state.global_step)
        with _logging_beside(progress):
            metrics = self._steps(end, progress, batches, tallies)
        progress.close()
        return metrics

    def _steps(self, end: int, progress, batches, tallies: dict[str, torch.Tensor]) -> dict:
        args, acc = self.args, self.accelerator
        input_name = MODALITY_INPUT[self.config.modality]
        samples, clock, metrics = 0, self._loop_start, {}
        while self.state.global_step < end:
            step = self.state.global_step + 1
            micro_batches = [self._next_batch(batches) for _ in range(args.gradient_accumulation_steps)]
            samples += sum(len(batch[input_name]) for batch in micro_batches) * acc.num_processes
            decay = self._train_step(micro_batches, step, tallies)
            self.state.global_step = step
            self.state.micro_batches += len(micro_batches)
            progress.update(1)
            if step % args.logging_steps == 0 or step == end:
                elapsed, clock = time.perf_counter() - clock, time.perf_counter()
                metrics = self._log(tallies, samples / elapsed, elapsed, self.lr_scheduler.get_last_lr()[0], decay,
                                    step)
                progress.set_postfix(loss=f"{metrics['loss']:.4f}", target_var=f"{metrics['target_var']:.3f}")
                tallies["sums"].zero_()
                samples = 0
                if self._monitor_examples and (step - self._last_monitor >= args.monitor_steps or step == end):
                    clock += self.monitor_health(step)  # into this step's log entry; not counted in the throughput
                    metrics.update({k: v for k, v in self.log_history[-1].items() if k.startswith("health/")})
            if self.validation is not None and (step % args.eval_steps == 0 or step == end):
                clock += self.evaluate(step)  # not counted in the throughput
            if args.probe_steps and step % args.probe_steps == 0 and self.data.probe is not None:
                clock += self.periodic_probe(step)  # not counted in the throughput
            stop = self._should_stop(step, step % args.logging_steps == 0)
            if step % args.save_steps == 0 or step == end or stop:
                path = self.save_checkpoint()
            if stop and step < end:
                progress.close()
                if acc.is_main_process:
                    print(f"data2vec-pretrain: stopped at step {step} of {args.max_steps} ({stop}); saved {path}. "
                          f"Resume with: {self.resume_command()}", file=sys.stderr)
                break
        return metrics

    def _next_batch(self, batches) -> dict:
        item = next(batches)
        if not self.streaming:
            return item
        batch, worker, position = item
        self.stream_positions[worker] = position  # used: a checkpoint from here on resumes after it
        return batch

    def _train_step(self, micro_batches: list[dict], step: int, tallies: dict[str, torch.Tensor]) -> float:
        """Optimizer step number `step` on this process's `micro_batches` (host tensors): forward and backward of each
        (DDP syncs the gradients on the last), clip, AdamW, learning-rate step, EMA teacher step; returns the decay.

        Nothing here reads a device value back to the host: the loss, variances, token counts and gradient norm are
        added to `tallies["sums"]`, and a step whose loss or gradients are not finite is skipped on the device (AdamW's
        `found_inf`, the teacher's `skip`) and recorded in `tallies["bad_step"]` / `["bad_count"]`."""
        args, acc, device = self.args, self.accelerator, self.accelerator.device
        accumulate, sums = len(micro_batches), tallies["sums"]
        zero, one = torch.zeros((), device=device), torch.ones((), device=device)
        step_loss = torch.zeros((), device=device)
        for micro, batch in enumerate(micro_batches):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if self.fsdp and accumulate > 1:  # FSDP2's no_sync: gradients reduce-scattered once, after the last
                self.model.set_requires_gradient_sync(micro == accumulate - 1)
            with acc.no_sync(self.model) if micro < accumulate - 1 and not self.fsdp else contextlib.nullcontext(), \
                    acc.autocast() if self.fsdp else contextlib.nullcontext():  # (a prepared model autocasts itself)
                out = self.model(**batch, check_inputs=False)
                acc.backward(out.loss / accumulate)
            loss = out.loss.detach()
            step_loss += loss / accumulate
            # a micro-batch that masks nothing has no spread of targets / predictions to average in (its ~0 would
            # read as collapse): counted apart
            masked = out.num_masked > 0
            sums[:PER_MICRO_BATCH] += torch.stack([
                loss, torch.where(masked, out.target_var, zero), torch.where(masked, out.pred_var, zero),
                out.masked_fraction.float(), one, masked.float(), _count_tokens(self.config, batch),
            ])
        if self.fsdp:  # the norm over all shards (a DTensor reduced over the mesh), as a plain replicated tensor
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), args.max_grad_norm or float("inf"))
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        else:
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), args.max_grad_norm or float("inf"))
        finite = torch.isfinite(step_loss) & torch.isfinite(grad_norm)
        sums[PER_MICRO_BATCH:] += torch.stack([torch.where(finite, grad_norm, zero), finite.float()])
        # fp16 gradients overflow now and then by design (the scaler skips those steps): only the loss counts
        bad = ~torch.isfinite(step_loss) if args.mixed_precision == "fp16" else ~finite
        tallies["bad_step"].copy_(torch.where((tallies["bad_step"] < 0) & bad, step, tallies["bad_step"]))
        tallies["bad_count"] += bad
        if self._fused:  # skip on the device: a fused AdamW reads `found_inf` (GradScaler's mechanism)
            getattr(self.optimizer, "optimizer", self.optimizer).found_inf = (~finite).float()
            self.optimizer.step()
        elif bool(finite):  # only where the device has no fused AdamW: one host check per step
            self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.unwrapped.update_teacher(skip=~finite)  # after the optimizer step, once per step

    def _log(self, tallies, samples_per_s, elapsed, lr, decay, step) -> dict:
        """Averages the interval's sums over processes (the interval's one host sync), logs them, and runs the
        non-finite and collapse checks."""
        acc, args = self.accelerator, self.args
        sums = dict(zip(SUMS, acc.reduce(tallies["sums"].clone(), reduction="mean").tolist()))
        flags = acc.gather(torch.stack([tallies["bad_step"], tallies["bad_count"]])[None]).view(-1, 2)
        n_bad = int(flags[:, 1].max())
        first_bad = int(flags[:, 0].max())
        n, n_masked = max(sums["micro_batches"], 1), sums["masked_micro_batches"]
        metrics = {
            "loss": sums["loss"] / n,
            # no micro-batch masked anything: no spread was measured
            "target_var": sums["target_var"] / n_masked if n_masked else float("nan"),
            "pred_var": sums["pred_var"] / n_masked if n_masked else float("nan"),
            "masked_fraction": sums["masked_fraction"] / n,
            "grad_norm": sums["grad_norm"] / max(sums["finite_steps"], 1),  # over the steps that were applied
            "lr": lr, "ema_decay": decay, "samples_per_second": samples_per_s,
            "masked_copies": float(self.config.clone_batch),  # per sample (data2vec 2.0's clone_batch; 1.0: 1)
            "tokens_per_second": sums["tokens"] * acc.num_processes / elapsed,  # the mean over processes, times them
            "nonfinite_steps": n_bad,
        }
        if args.torch_compile:  # graphs compiled so far in this process: flat once every shape has been seen
            from .compiling import compiled_graphs

            metrics["compiled_graphs"] = float(compiled_graphs())
        acc.log(metrics, step=step)
        self.log_history.append({"step": step, "elapsed_seconds": self._seconds(), **metrics})
        if acc.is_main_process and (args.disable_tqdm or not sys.stderr.isatty()):  # no live bar: a log line
            logger.info("step %d/%d: %s", step, args.max_steps,
                        " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
        if n_bad and not args.skip_nonfinite:
            raise NonFiniteLossError(
                f"the loss or its gradients became NaN/inf at step {first_bad} (the update was skipped: the student "
                f"and teacher are intact). Lower --learning_rate, raise --warmup_steps, use --mixed_precision bf16 "
                f"instead of fp16, check the data for extreme values, or pass --skip_nonfinite to skip such steps."
            )
        if step >= args.collapse_check_after and n_masked:
            self.unwrapped.check_collapse(metrics["target_var"], metrics["pred_var"])
        return metrics

    def finish(self) -> dict:
        """End of training: the student (+ head) and the processor into output_dir, the probe, the Hub."""
        acc, args = self.accelerator, self.args
        acc.wait_for_everyone()
        results: dict = {}
        full = self.gathered_student()  # --fsdp: every process takes part in the gathering
        if acc.is_main_process:
            model = full
            if args.probe and self.data.probe is not None:
                results = self.run_probe(model)
            elif args.probe and acc.is_main_process:
                print("no linear probe: the data has no labels (a folder of class subfolders, or --label_column, gives "
                      "one). Without labels, judge the run by the health panels of curves.png (pooled spread and "
                      "effective rank; docs/training.md, 'What to watch in curves.png')", file=sys.stderr)
            from .curves import write_curves

            write_curves(self.log_history, args.output_dir, title=self.data.description)
            model.config.pretraining_info = self.pretraining_info(results)  # travels with the config: the card
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

    def gathered_student(self) -> Data2VecForPreTraining | None:
        """The student as a plain model: the unwrapped one; with --fsdp, a copy built from the full state dict
        gathered from all shards (a collective: every process calls this; the main process gets the model, the
        others None)."""
        if not self.fsdp:
            return self.unwrapped
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.accelerator.is_main_process:
            return None
        with _rng_untouched(self.accelerator.device):  # building the copy draws initial weights: not the run's RNG
            model = Data2VecForPreTraining(self.config)
        model.load_state_dict(full, strict=True)
        return model.to(self.accelerator.device).train(self.model.training)

    def run_probe(self, model: Data2VecForPreTraining | None = None) -> dict:
        """Linear probe (held-out accuracy) of the pretrained student (`model`, default the unwrapped one), the same
        architecture at its random initialisation, and the raw inputs; printed and written to output_dir/probe.json."""
        from .probe import RAW_FEATURES, describe_features, linear_probe, raw_input_probe

        args, probe, modality = self.args, self.data.probe, self.config.modality
        model = model if model is not None else self.unwrapped
        pretrained = linear_probe(model.data2vec, probe.train, probe.test, top_layers=(2, 1))
        random_init = linear_probe(self._initial_encoder(), probe.train, probe.test, top_layers=(2, 1))
        results = {
            "pretrained": pretrained[2],
            "random_init": random_init[2],
            "raw_inputs": raw_input_probe(probe.train, probe.test, modality, self.config.sampling_rate),
            "pretrained_last_layer": pretrained[1],
            "random_init_last_layer": random_init[1],
            "features": describe_features(modality, (2, 1)),
            "raw_inputs_features": RAW_FEATURES[modality],
            "train_examples": len(probe.train), "test_examples": len(probe.test), "steps": self.state.global_step,
            "dataset": self.data.description,
        }
        if args.init_from:
            results["random_init_note"] = "random_init: the architecture freshly initialised (not --init_from)"
            start = Data2VecForPreTraining.from_pretrained(args.init_from).data2vec.to(model.device)
            results["starting_checkpoint"] = linear_probe(start, probe.train, probe.test, top_layers=(2,))[2]
        Path(args.output_dir, "probe.json").write_text(json.dumps(results, indent=2))
        print(
            f"linear probe, held-out accuracy ({len(probe.test)} examples): pretrained {results['pretrained']:.1%}  "
            f"random init {results['random_init']:.1%}  raw inputs "
            + ("n/a" if results["raw_inputs"] is None else f"{results['raw_inputs']:.1%}")
            + (f"  --init_from {results['starting_checkpoint']:.1%}" if "starting_checkpoint" in results else "")
            + f"  -> {Path(args.output_dir, 'probe.json')}"
        )
        if len(probe.test) < 100:  # a small held-out set: say how far apart two runs can be by chance
            margin = 1.96 * math.sqrt(max(results["pretrained"] * (1 - results["pretrained"]), 0.25 / len(probe.test))
                                      / len(probe.test))
            print(f"  note: {len(probe.test)} held-out examples: one example is {1 / len(probe.test):.1%}, and the "
                  f"accuracies are uncertain by about +-{margin:.0%} (95%); differences smaller than that are noise. "
                  "More labelled examples give a sharper probe.")
        return {f"probe_{k}": v for k, v in results.items() if isinstance(v, float)}

    def _initial_encoder(self):
        """The run's initial weights (a fresh architecture after --init_from): built again from the seed, as in
        `__init__` (this draws from the global RNGs)."""
        set_seed(self.args.seed)
        return Data2VecForPreTraining(self.config).data2vec.to(self.accelerator.device)

    def _seconds(self) -> float:
        """Training seconds so far, over resumes; the probes of --probe_steps not counted."""
        return self._seconds_before + time.perf_counter() - self._loop_start - self._probe_seconds

    @torch.no_grad()
    def evaluate(self, step: int) -> float:
        """The data2vec loss on the held-out examples (--validation_split / --validation_split_percentage): the student in eval mode, the
        current teacher, the same masks at every evaluation (drawn from the seed), RNGs untouched; logged as eval_loss
        (and eval_target_var / eval_pred_var). Returns the seconds it took (not counted as training time)."""
        acc, began, model = self.accelerator, time.perf_counter(), self.unwrapped
        size = self.args.per_device_train_batch_size
        total, weights, target_var, pred_var = 0.0, 0, 0.0, 0.0
        with _rng_untouched(acc.device), _eval_mode(model):
            for i, start in enumerate(range(0, len(self.validation), size)):
                indices = list(range(start, min(start + size, len(self.validation))))
                batch = self.collator(SeededBatch(self.validation.__getitems__(indices), (self.args.seed, 10**6, i)))
                batch = {k: v.to(acc.device) for k, v in batch.items()}
                with acc.autocast():
                    out = model(**batch, check_inputs=False)
                n = int(out.num_masked)
                total += float(out.loss) * n
                target_var += float(out.target_var) * n
                pred_var += float(out.pred_var) * n
                weights += n
        metrics = {"eval_loss": total / max(weights, 1), "eval_target_var": target_var / max(weights, 1),
                   "eval_pred_var": pred_var / max(weights, 1)}
        acc.log(metrics, step=step)
        self.log_history.append({"step": step, "elapsed_seconds": self._seconds(), **metrics})
        if acc.is_main_process:
            logger.info("step %d: eval_loss %.4g (%d held-out examples)", step, metrics["eval_loss"],
                        len(self.validation))
        seconds = time.perf_counter() - began
        self._probe_seconds += seconds
        return seconds

    def periodic_probe(self, step: int) -> float:
        """The linear probe of `--probe_steps` at `step`: on the main process (the others wait), on the first
        PERIODIC_PROBE_EXAMPLES train / held-out examples of the probe data, features as the final probe's (top 2
        layers). Logs probe/pretrained (and once per run the references: probe/random_init, the run's initial weights,
        and probe/raw_inputs) to the trackers and log_history. Every RNG state is restored after (building the initial
        weights reseeds), and the student goes back to train mode: a run with probes trains the same weights as one
        without. Returns the seconds it took."""
        from .probe import linear_probe, raw_input_probe

        acc, began = self.accelerator, time.perf_counter()
        if acc.is_main_process:
            elapsed = self._seconds()
            train, test = (split[:n] for split, n in zip((self.data.probe.train, self.data.probe.test),
                                                         PERIODIC_PROBE_EXAMPLES))
            with _rng_untouched(acc.device):
                metrics = {"probe/pretrained": linear_probe(self.unwrapped.data2vec, train, test)[2]}
                if not any("probe/random_init" in h for h in self.log_history):  # once per run (also over resumes)
                    metrics["probe/random_init"] = linear_probe(self._initial_encoder(), train, test)[2]
                    raw = raw_input_probe(train, test, self.config.modality, self.config.sampling_rate)
                    metrics["probe/raw_inputs"] = float("nan") if raw is None else raw
            acc.log(metrics, step=step)
            self.log_history.append({"step": step, "elapsed_seconds": elapsed, **metrics,
                                     "probe/train_examples": len(train), "probe/test_examples": len(test)})
            logger.info("step %d: linear probe (%d held out) %s", step, len(test),
                        " ".join(f"{k.removeprefix('probe/')} {v:.1%}" for k, v in metrics.items()))
        acc.wait_for_everyone()
        seconds = time.perf_counter() - began
        self._probe_seconds += seconds
        return seconds

    def _health(self) -> dict[str, float]:
        from .monitor import representation_health

        from .compiling import eager_regions

        # eager: the check's padded eval-mode shapes would add graphs to --torch_compile's regions for no gain
        with eager_regions(self.unwrapped, self.unwrapped.teacher):
            return representation_health(self.unwrapped, self._monitor_examples)

    def _health_examples(self) -> list[dict] | None:
        """The first --monitor_examples training examples (inputs only), or None where the check is off: no
        --monitor_steps, a stream (no examples held in memory), FSDP (the check runs on the main process alone)."""
        args = self.args
        if not args.monitor_steps:
            return None
        if self.streaming or self.fsdp:
            logger.info("the representation health check (--monitor_steps) is off with %s",
                        "--streaming" if self.streaming else "--fsdp")
            return None
        key = MODALITY_INPUT[self.config.modality]
        n = min(args.monitor_examples, len(self.data.train))
        keep = (key, "attention_mask")
        return [{k: v for k, v in self.data.train[i].items() if k in keep} for i in range(n)]

    def monitor_health(self, step: int) -> float:
        """The label-free health check (`monitor.representation_health`) at logging step `step` on the main process:
        logged as health/* (and each pooled spread relative to the run's start) to the trackers and into the step's
        log_history entry, and a warning, once per representation, naming what collapsed and what to try when its
        pooled spread fell below `monitor.COLLAPSE_RATIO` of the start. Draws no random number; returns the seconds
        it took."""

        from .monitor import REPRESENTATIONS, collapsed

        acc, began = self.accelerator, time.perf_counter()
        self._last_monitor = step
        if acc.is_main_process:
            with _rng_untouched(acc.device):
                health = self._health()
            start = self.health_start
            metrics = {f"health/{k}": v for k, v in health.items()}
            metrics.update({f"health/{name}_spread_vs_start": health[f"{name}_spread"] / start[f"{name}_spread"]
                            for name in REPRESENTATIONS if start[f"{name}_spread"] > 0})
            acc.log(metrics, step=step)
            if not any("health/student_spread" in h for h in self.log_history):  # the first check: the start too
                metrics.update({f"health/start_{k}": v for k, v in start.items()})
            self.log_history[-1].update(metrics)  # this logging step's entry
            new = [what for what in collapsed(health, start) if what.split(" (")[0] not in self._collapse_warned]
            if new:
                self._collapse_warned.update(what.split(" (")[0] for what in new)
                logger.warning(
                    "step %d: collapse: %s. Every example's pooled features are becoming alike (the collapse check on "
                    "target_var / pred_var watches positions, not examples), so a probe or a fine-tuned classifier "
                    "has little to go on. What to try: %s; a lower --learning_rate; a slower teacher (ema_decay / "
                    "ema_end_decay closer to 1). See docs/training.md, 'What to watch in curves.png'.",
                    step, "; ".join(new), COLLAPSE_REMEDIES[self.config.modality])
        acc.wait_for_everyone()
        seconds = time.perf_counter() - began
        self._probe_seconds += seconds
        return seconds

    def push_to_hub(self) -> str:
        """Uploads output_dir's result in one commit: the model (safetensors + config), the processor, probe.json and
        the curves; not the checkpoints or the logs."""
        from huggingface_hub import CommitOperationAdd, HfApi

        args, out = self.args, Path(self.args.output_dir)
        api = HfApi(token=args.hub_token)
        repo_id = self.hub_repo_id or api.create_repo(args.hub_model_id or out.resolve().name,
                                                      private=args.hub_private_repo, exist_ok=True).repo_id
        files = [p for p in sorted(out.iterdir()) if p.is_file()]  # top level only: no checkpoint-*/, logs/
        api.create_commit(repo_id, operations=[CommitOperationAdd(p.name, str(p)) for p in files],
                          commit_message=f"data2vec-pretrain: {self.config.modality}, {self.state.global_step} steps")
        logger.info("pushed %d files to %s", len(files), repo_id)
        return repo_id


def _split_validation(data, percentage: float, seed: int):
    """(data with the training examples, the held-out examples): `percentage` % of the examples, drawn with `seed`."""
    from .data import PretrainingData

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
    ones of every copy): a float on the batch's device, summed there (reading it would be a host sync)."""
    if config.algorithm == "data2vec2":
        return (~batch[MASK_INPUT[config.modality]].bool()).sum().float()
    if config.modality == "text":
        return batch["attention_mask"].sum().float()
    mask = batch["bool_masked_pos" if config.modality == "vision" else "mask_time_indices"]
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
    if trainer.interrupted is not None:  # saved and stopped: the shell's code for death by that signal
        raise SystemExit(128 + trainer.interrupted)
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
