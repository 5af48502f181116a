"""What a checkpoint-N folder holds and the pieces that read and write it outside the trainer: file names, finding
a checkpoint, the loop position (`TrainerState`), every process's RNG states (saved as safetensors, restored
exactly), and naming damaged files. The trainer's save / load / check methods use these."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

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
# what `Data2VecPretrainer._train_step` sums on the device between two logging steps (read once, at the logging step)
def _damaged_safetensors(folder: Path) -> list[str]:
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
def _rng_untouched(device: torch.device):
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


