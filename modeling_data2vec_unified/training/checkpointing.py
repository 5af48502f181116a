"""Checkpoints: what a checkpoint-N folder holds and the `Checkpointer` that finds, checks, saves, loads and prunes
them (torchtitan's `components/checkpoint.py`): the model and the optimizer (through accelerate, or this process's
FSDP shards), the EMA teacher, every process's RNG states, the stream positions of a --streaming run and the trainer
state (loop position, learning-rate schedule, the run's record). Nothing in a checkpoint is unpickled on resume, and
a checkpoint is written to checkpoint-N.tmp and renamed, so a run killed mid-save keeps the previous one."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..ema import local_tensor
from ..modeling_data2vec_pretraining import TEACHER_WEIGHTS
from .arguments import RATIO_NOTE, SCHEDULE_FLAGS, read_json

logger = logging.getLogger("modeling_data2vec_unified.trainer")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# a checkpoint-N folder: accelerate's model.safetensors + optimizer.bin (+ scaler.pt with fp16), and these
TRAINER_STATE = "trainer_state.json"  # loop position, learning-rate schedule, what the run was
RNG_STATE = "rng_state_{}.safetensors"  # one per process: Python, NumPy, torch CPU and accelerator RNGs
# --fsdp checkpoints: one file per process with its shards of the student, the teacher and the AdamW state
FSDP_SHARDS = "fsdp_shards_{}.safetensors"
STREAM_STATE = "stream_state_{}.json"  # --streaming: one per process, each DataLoader worker's stream position
# pickles accelerate's load_state would read that our checkpoints never hold: its registered objects (unpickled with
# weights_only=False: any code runs) and its RNG states (which we write as safetensors instead)
FOREIGN_PICKLES = re.compile(r"^(custom_checkpoint_\d+\.pkl|random_states_\d+\.pkl)$")
def damaged_safetensors(folder: Path) -> list[str]:
    """The .safetensors files of `folder` that cannot be opened and are not another format put in their place (a
    pickle or a torch zip, which `load_checkpoint` reports as files the trainer did not write): truncated or damaged."""
    damaged = []
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt") as opened:  # reading the header is the check
                opened.keys()
        except Exception:  # noqa: BLE001 - any failure to open is a damaged or foreign file
            head = file.read_bytes()[:2]
            if head[:1] != b"\x80" and head != b"PK":  # not a pickle, not a torch zip
                damaged.append(file.name)
    return damaged


class TrainerState:
    """The loop's position, saved with every checkpoint (in trainer_state.json)."""

    def __init__(self):
        self.global_step = 0  # optimizer steps done
        self.micro_batches = 0  # data position: micro-batches consumed (per process)

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


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


def rng_states(device: torch.device) -> dict:
    """This process's RNG states: Python's, NumPy's, torch's CPU one and `device`'s (one per device, where it has any)."""
    accelerator = _accelerator_rng(device)
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "accelerator": accelerator.get_rng_state_all() if accelerator else []}


def set_rng_states(states: dict, device: torch.device) -> None:
    """Sets the states `rng_states` returned."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    accelerator = _accelerator_rng(device)
    if accelerator and states["accelerator"]:
        accelerator.set_rng_state_all(states["accelerator"])


@contextlib.contextmanager
def rng_untouched(device: torch.device):
    """Restores this process's RNG states (`rng_states`) on exit."""
    states = rng_states(device)
    try:
        yield
    finally:
        set_rng_states(states, device)


def save_rng_state(path: Path, device: torch.device) -> None:
    """This process's RNG states (`rng_states`) as a safetensors file: the tensors, with the few scalars as metadata."""
    states = rng_states(device)
    version, python_state, gauss = states["python"]
    kind, numpy_keys, position, has_gauss, cached = states["numpy"]
    tensors = {"python": torch.tensor(python_state, dtype=torch.int64),
               "numpy": torch.from_numpy(numpy_keys.astype(np.int64)), "torch": states["torch"]}
    tensors.update({f"{device.type}.{i}": state for i, state in enumerate(states["accelerator"])})
    save_file(tensors, str(path), metadata={
        "python": json.dumps([version, gauss]), "numpy": json.dumps([kind, int(position), int(has_gauss), cached]),
    })


def load_rng_state(path: Path, device: torch.device) -> None:
    """Sets the RNG states that `save_rng_state` wrote."""
    with safe_open(str(path), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    version, gauss = json.loads(metadata["python"])
    kind, position, has_gauss, cached = json.loads(metadata["numpy"])
    accelerator = sorted((k for k in tensors if k.startswith(f"{device.type}.")), key=lambda k: int(k.split(".")[1]))
    set_rng_states({
        "python": (version, tuple(tensors["python"].tolist()), gauss),
        "numpy": (kind, tensors["numpy"].numpy().astype(np.uint32), position, has_gauss, cached),
        "torch": tensors["torch"], "accelerator": [tensors[k] for k in accelerator],
    }, device)


def _accelerator_rng(device: torch.device):
    """The torch module holding `device`'s RNG states (torch.cuda, torch.xpu, ...), None on the CPU."""
    if device.type == "cpu":
        return None
    module = torch.get_device_module(device)
    return module if hasattr(module, "get_rng_state_all") else None




class Checkpointer:
    """The checkpoints of one run in `args.output_dir`, for this process of `accelerator`: `find`, `check` (before
    anything trains), `save`, `load`, `prune` (--save_total_limit). `fsdp`: one safetensors file of shards per
    process instead of accelerate's full copy; `streaming`: each DataLoader worker's stream position too."""

    def __init__(self, accelerator, args, fsdp: bool, streaming: bool):
        self.accelerator, self.args, self.fsdp, self.streaming = accelerator, args, fsdp, streaming
        self.output_dir = Path(args.output_dir)

    def find(self) -> Path | None:
        """The checkpoint --resume_from_checkpoint names (None: 'latest' and there is none yet)."""
        return find_checkpoint(self.output_dir, self.args.resume_from_checkpoint)

    # ---- before training ---------------------------------------------------------------------------------------

    def check(self, path: Path, config, num_parameters: int) -> None:
        """A checkpoint to resume must be ours, of this model (`config`, `num_parameters`), saved as this run is
        set up (FSDP, processes, schedule flags), complete, and hold no pickle that resuming would read."""
        fix = "resume from another checkpoint-N of the run, or start a new --output_dir"
        state = read_json(path / TRAINER_STATE, "the checkpoint's", f"the {TRAINER_STATE} data2vec-pretrain writes "
                                                                        f"(a damaged copy?); {fix}")
        lacking = [k for k in ("global_step", "micro_batches", "modality") if k not in state]
        if lacking:
            raise ValueError(f"checkpoint {path}: {TRAINER_STATE} lacks {', '.join(lacking)} (not written by "
                             f"data2vec-pretrain, or edited): {fix}")
        algorithm = state.get("algorithm", "data2vec")
        if (state.get("modality") != config.modality or algorithm != config.algorithm
                or state.get("num_parameters") != num_parameters):
            raise ValueError(
                f"checkpoint {path} is of another model ({state.get('modality')} {algorithm}, "
                f"{state.get('num_parameters')} parameters) than this run ({config.modality} "
                f"{config.algorithm}, {num_parameters}): resume with the same --modality / "
                f"--algorithm / --model_size / --config, or start a new --output_dir"
            )
        self._check_layout(path, state)
        pickles = sorted(p.name for p in path.iterdir() if FOREIGN_PICKLES.match(p.name))
        if pickles:
            raise ValueError(
                f"checkpoint {path} holds {', '.join(pickles)}: pickled state that data2vec-pretrain neither writes "
                f"nor loads (unpickling runs whatever code the file names), left by an older version or another "
                f"program. Resume it with the version that wrote it, or start a new --output_dir"
            )
        self._check_schedule(path, state.get("args", {}))
        self._check_complete(path, state)

    def _check_layout(self, path: Path, state: dict) -> None:
        """Sharded (--fsdp) checkpoints resume only sharded, on as many processes; DDP ones only without --fsdp."""
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

    def _check_schedule(self, path: Path, saved: dict) -> None:
        """A resume continues the saved run exactly: the flags that shape its schedule must be the same."""
        changed = {k: (saved[k], getattr(self.args, k)) for k in SCHEDULE_FLAGS
                   if k in saved and saved[k] != getattr(self.args, k)}
        if changed:
            raise ValueError(
                f"checkpoint {path} was saved by a run with other schedule flags: "
                + ", ".join(f"--{k} {old} (now {new}{RATIO_NOTE if k == 'warmup_steps' else ''})"
                            for k, (old, new) in changed.items())
                + ". A resume continues the saved run exactly: pass its values again. To train on with new ones, start "
                  "a new run from its weights: --init_from <the run's output_dir> (after it finished) in another "
                  "--output_dir"
            )

    def _check_complete(self, path: Path, state: dict) -> None:
        if self.fsdp:
            files = [FSDP_SHARDS.format(r) for r in range(state.get("num_processes"))]
            missing = [name for name in files if not (path / name).is_file()]
            if missing:
                raise ValueError(f"checkpoint {path} lacks {', '.join(missing)} (an incomplete copy?): resume from "
                                 f"another checkpoint-N of the run, or start a new --output_dir")
        elif not (path / TEACHER_WEIGHTS).is_file() or "lr_scheduler" not in state:
            raise ValueError(
                f"checkpoint {path} has no {TEACHER_WEIGHTS} or no lr_scheduler in {TRAINER_STATE} (written by an "
                f"older version?): resume from a checkpoint of this version, or start a new --output_dir"
            )

    def check_output_dir(self) -> None:
        """A fresh run must not land among another run's checkpoints (its own would be pruned as older, `latest` would
        resume the other run, and model.safetensors would be overwritten): refused, or with --overwrite_output_dir
        those checkpoints (and the earlier run's logs) are deleted first."""
        old = sorted(p.name for p in self.output_dir.glob("checkpoint-*") if CHECKPOINT_PATTERN.match(p.name))
        if not old:
            return
        if not self.args.overwrite_output_dir:
            raise ValueError(
                f"--output_dir {self.args.output_dir} holds another run's checkpoints ({', '.join(old[-3:])}): pass "
                f"--resume_from_checkpoint latest to continue that run, --overwrite_output_dir to delete them and "
                f"start afresh, or another --output_dir"
            )
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            for name in old:
                path = self.output_dir / name
                path.unlink() if path.is_symlink() else shutil.rmtree(path)  # a link: not what it points to
            logs = self.output_dir / "logs"  # the earlier run's tracker files would mix into this run's
            if logs.is_dir() and not logs.is_symlink():
                shutil.rmtree(logs)
            logger.warning("--overwrite_output_dir: deleted %d checkpoint(s) and the logs of an earlier run in %s",
                           len(old), self.args.output_dir)
        acc.wait_for_everyone()

    # ---- saving ------------------------------------------------------------------------------------------------

    def save(self, step: int, model, objective, optimizer, lr_scheduler, run_state: dict,
             stream_positions: dict) -> Path:
        """Everything a resume needs into checkpoint-`step`.tmp, then renamed to checkpoint-`step`; keeps the newest
        --save_total_limit. `model`: the (prepared or sharded) student; `objective`: the plain
        `Data2VecForPreTraining` (its teacher); `run_state`: the trainer's JSON-able state (loop position, record).
        No pickle is written that a resume would unpickle: `accelerator.save_state` saves the model (safetensors) and
        the optimizer (read back with weights_only=True); its pickled RNG file is replaced by `RNG_STATE`."""
        acc = self.accelerator
        final, tmp = self.output_dir / f"checkpoint-{step}", self.output_dir / f"checkpoint-{step}.tmp"
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        if self.fsdp:
            tmp.mkdir(parents=True, exist_ok=True)
            self._save_shards(tmp / FSDP_SHARDS.format(acc.process_index), model, objective, optimizer)
        else:
            acc.save_state(str(tmp))
            (tmp / f"random_states_{acc.process_index}.pkl").unlink(missing_ok=True)  # pickled: ours is safetensors
        save_rng_state(tmp / RNG_STATE.format(acc.process_index), acc.device)
        if self.streaming:
            (tmp / STREAM_STATE.format(acc.process_index)).write_text(json.dumps({
                "num_workers": self.args.dataloader_num_workers, "num_processes": acc.num_processes,
                "positions": {str(k): dataclasses.asdict(v) for k, v in sorted(stream_positions.items())}}))
        acc.wait_for_everyone()
        if acc.is_main_process:
            if not self.fsdp:
                objective.teacher.save(tmp / TEACHER_WEIGHTS)
            (tmp / TRAINER_STATE).write_text(json.dumps({
                "fsdp": self.fsdp, **run_state, "lr_scheduler": lr_scheduler.state_dict(),
                "modality": objective.config.modality, "algorithm": objective.config.algorithm,
                "num_parameters": objective.num_parameters(), "num_processes": acc.num_processes,
                "args": dataclasses.asdict(self.args),
            }, indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self.prune()
            logger.info("saved %s", final)
        acc.wait_for_everyone()
        return final

    def _save_shards(self, path: Path, model, objective, optimizer) -> None:
        """--fsdp: this process's shards (local tensors of the DTensors) of the student, the teacher and the AdamW
        state in one safetensors file; AdamW's hyper-parameters and the teacher's update count as its metadata."""
        teacher, optimizer = objective.teacher, torch_optimizer(optimizer)
        tensors = {f"model.{k}": local_tensor(v) for k, v in model.state_dict().items()}
        tensors.update({f"teacher.{k}": v for k, v in teacher.local_state().items()})
        state = optimizer.state_dict()
        for index, values in state["state"].items():
            tensors.update({f"optimizer.{index}.{k}": local_tensor(torch.as_tensor(v)) for k, v in values.items()})
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata={
            "param_groups": json.dumps(state["param_groups"]), "teacher_updates": str(teacher.num_updates),
            "num_processes": str(self.accelerator.num_processes), "rank": str(self.accelerator.process_index)})

    def prune(self) -> None:
        """Deletes all but the newest --save_total_limit checkpoints."""
        limit = self.args.save_total_limit
        if limit is None:
            return
        found = sorted((int(m.group(1)), p) for p in self.output_dir.glob("checkpoint-*")
                       if (m := CHECKPOINT_PATTERN.match(p.name)))
        for _, path in found[: max(len(found) - limit, 0)]:
            shutil.rmtree(path)

    # ---- loading -----------------------------------------------------------------------------------------------

    def load(self, path: Path, model, objective, optimizer, lr_scheduler) -> dict:
        """Restores what `save` wrote (after `check`), unpickling nothing, into `model` / `objective`'s teacher /
        `optimizer` / `lr_scheduler` and this process's RNGs; returns the saved trainer state (the loop position and
        the run's record)."""
        acc = self.accelerator
        state = json.loads((path / TRAINER_STATE).read_text())
        rng = path / RNG_STATE.format(acc.process_index)
        try:
            if self.fsdp:
                self._load_shards(path / FSDP_SHARDS.format(acc.process_index), model, objective, optimizer)
            else:
                acc.load_state(str(path))
                try:
                    objective.teacher.load(path / TEACHER_WEIGHTS)
                except (KeyError, RuntimeError, ValueError) as error:  # another model's teacher: names or shapes
                    raise ValueError(f"checkpoint {path}: {TEACHER_WEIGHTS} is not this model's teacher "
                                     f"({type(error).__name__}: {str(error)[:300]}). Resume from another checkpoint-N "
                                     "of the run, or start a new --output_dir") from error
            if rng.is_file():
                load_rng_state(rng, acc.device)
        except (pickle.UnpicklingError, SafetensorError) as error:  # weights_only refused a file that names code
            damaged = damaged_safetensors(path)
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
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        if not rng.is_file():
            logger.warning("checkpoint %s has no RNG state for process %d (it was saved by %s processes): dropout "
                           "and layer drop will not continue as in an uninterrupted run", path, acc.process_index,
                           state.get("num_processes"))
        return state

    @torch.no_grad()
    def _load_shards(self, path: Path, model, objective, optimizer) -> None:
        """Restores what `_save_shards` wrote: the local shards are copied into the student's and the teacher's
        DTensors in place; the AdamW state is rebuilt as DTensors on the parameters' mesh."""
        from torch.distributed.tensor import DTensor

        with safe_open(str(path), "pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        own = model.state_dict()
        saved = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        if saved.keys() != own.keys():
            raise ValueError(f"{path} does not hold this model's model shards (missing "
                             f"{sorted(own.keys() - saved.keys())[:3]}, extra {sorted(saved.keys() - own.keys())[:3]})")
        for name, value in own.items():
            local_tensor(value).copy_(saved[name])
        try:
            objective.teacher.load_local_state({k[len("teacher."):]: v for k, v in tensors.items()
                                                if k.startswith("teacher.")}, int(metadata["teacher_updates"]))
        except ValueError as error:
            raise ValueError(f"{path} does not hold this model's teacher shards: {error}") from error
        optimizer = torch_optimizer(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        state = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                param = params[int(index)]
                if isinstance(param, DTensor) and name != "step":
                    value = DTensor.from_local(value.to(param.device), param.device_mesh, param.placements,
                                               shape=param.shape, stride=param.stride())
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})

    def load_stream_positions(self, path: Path) -> dict:
        """--streaming: each worker's stream position, saved by the same number of processes and workers."""
        acc, file = self.accelerator, path / STREAM_STATE.format(self.accelerator.process_index)
        if not file.is_file():
            raise ValueError(f"checkpoint {path} has no {file.name}: it was not saved by a --streaming run with "
                             f"{acc.num_processes} process(es); resume it as it was run, or start a new --output_dir")
        saved = json.loads(file.read_text())
        workers = self.args.dataloader_num_workers
        if (saved["num_workers"], saved["num_processes"]) != (workers, acc.num_processes):
            raise ValueError(
                f"checkpoint {path} was saved by a --streaming run with {saved['num_processes']} process(es) x "
                f"{saved['num_workers']} --dataloader_num_workers; this run has {acc.num_processes} x "
                f"{workers}: each worker's stream position is exact only for the same "
                f"split. Resume with --dataloader_num_workers {saved['num_workers']} on {saved['num_processes']} "
                "process(es)")
        from ..data.streaming import StreamPosition

        return {int(k): StreamPosition(**v) for k, v in saved["positions"].items()}


def torch_optimizer(optimizer):
    """The torch optimizer inside accelerate's wrapper (or the optimizer itself)."""
    return getattr(optimizer, "optimizer", optimizer)
