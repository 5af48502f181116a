"""The EMA teacher: an exponential moving average of (part of) the student, and its decay schedule.

data2vec (Baevski et al., 2022) builds its regression targets with a teacher whose weights follow the
student: after every optimizer step, teacher <- decay * teacher + (1 - decay) * student, with the decay
annealed linearly from `ema_decay` to `ema_end_decay` over `ema_anneal_end_step` updates and then held.
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn


def ema_decay_at(num_updates: int, start: float, end: float, anneal_end_step: int) -> float:
    """The decay used by update number `num_updates` (0-based): linear from `start` to `end` over
    `anneal_end_step` updates, then `end`. A pure function of the count, so a resumed run continues exactly."""
    if num_updates >= anneal_end_step:
        return end
    return start + (end - start) * num_updates / anneal_end_step


@contextlib.contextmanager
def _without(module: nn.Module, names: tuple[str, ...]):
    """`module` with the submodules at the dotted `names` set to None for the duration, then restored."""
    saved = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        saved.append((parent, child, getattr(parent, child)))
        setattr(parent, child, None)
    try:
        yield
    finally:
        for parent, child, value in saved:
            setattr(parent, child, value)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the dotted parameter `name` lies in one of the submodules `prefixes` names."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _has_submodule(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


class _Pairs(NamedTuple):
    """The teacher's parameters and the student's they follow: averaged (`ema` <- `student`) and copied."""

    ema: list[torch.Tensor]
    student: list[torch.Tensor]
    copy_ema: list[torch.Tensor]
    copy_student: list[torch.Tensor]


def _as(tensors: list[torch.Tensor], like: list[torch.Tensor]) -> list[torch.Tensor]:
    """`tensors` in the dtype of `like` (a half-precision student's parameters, cast for the fp32 teacher)."""
    if not tensors or tensors[0].dtype == like[0].dtype:
        return tensors
    return [t.to(like[0].dtype) for t in tensors]


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (a view of its storage), or the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


class EMATeacher(nn.Module):
    """A frozen fp32 copy of `source` that follows it by EMA.

    `exclude`: dotted names of submodules of `source` the teacher neither copies nor averages (data2vec 2.0 audio:
    the conv feature encoder, whose features the teacher takes from the student). `copied`: dotted names of submodules
    the teacher holds but copies from the student at every update instead of averaging (fairseq's EMA `skip_keys`:
    data2vec 1.0 audio's positional conv, `ema_layers_only`). The teacher never receives
    gradients and stays in eval mode (no dropout, no layer drop) whatever
    `train()` is called with. `update(source)` is one fused `torch._foreach_lerp_` over parameter lists
    built on the first update (no host sync, also when `skip` is a device tensor); the update count travels in
    `state_dict()` (as extra state) with the weights, and in the safetensors file of `save` / `load`.
    """

    def __init__(self, source: nn.Module, decay: float, end_decay: float, anneal_end_step: int,
                 exclude: tuple[str, ...] = (), copied: tuple[str, ...] = ()):
        super().__init__()
        self.exclude, self.copied = tuple(exclude), tuple(copied)
        with _without(source, self.exclude):  # the excluded submodules are neither copied nor averaged
            self.model = copy.deepcopy(source).float().requires_grad_(False)
        self.decay_start, self.decay_end, self.anneal_end_step = decay, end_decay, anneal_end_step
        self.num_updates = 0
        self._source_id: int | None = None
        self._pairs: _Pairs | None = None
        missing = [name for name in self.copied if not _has_submodule(self.model, name)]
        if missing:
            raise ValueError(f"copied names submodules the teacher does not hold: {missing}")
        self.train(False)

    def train(self, mode: bool = True) -> EMATeacher:
        return super().train(False)  # the teacher is always in eval mode

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    @property
    def decay(self) -> float:
        """The decay the next `update` uses."""
        return ema_decay_at(self.num_updates, self.decay_start, self.decay_end, self.anneal_end_step)

    def forget_pairs(self) -> None:
        """Drop the cached (teacher, student) parameter lists: the next update pairs the parameters anew (call it
        after something replaced them, e.g. FSDP's `fully_shard` of teacher and student)."""
        self._pairs = None

    def source_parameters(self, source: nn.Module) -> dict[str, nn.Parameter]:
        """The parameters of `source` the teacher follows (all but the excluded ones), by the teacher's names."""
        return {n: p for n, p in source.named_parameters() if not _under(n, self.exclude)}

    def _parameter_pairs(self, source: nn.Module) -> _Pairs:
        if self._pairs is None or self._source_id != id(source):
            ours = dict(self.model.named_parameters())
            theirs = self.source_parameters(source)
            if ours.keys() != theirs.keys():
                raise ValueError(
                    "the EMA source does not have the teacher's parameters: "
                    f"missing {sorted(ours.keys() - theirs.keys())[:5]}, extra {sorted(theirs.keys() - ours.keys())[:5]}"
                )
            # FSDP2 (`fully_shard`): teacher and student are sharded alike (DTensors on one mesh, the same placements),
            # so the EMA runs on this process's local shards (views of the shards' storage, kept), shard to shard,
            # with no communication
            averaged = [n for n in ours if not _under(n, self.copied)]
            copied = [n for n in ours if _under(n, self.copied)]
            local = lambda tensors, names: [local_tensor(tensors[n]) for n in names]  # noqa: E731
            self._pairs = _Pairs(local(ours, averaged), local(theirs, averaged), local(ours, copied),
                                 local(theirs, copied))
            self._source_id = id(source)
        return self._pairs

    @torch.no_grad()
    def update(self, source: nn.Module, skip: torch.Tensor | None = None) -> float:
        """One EMA step towards `source` at the scheduled decay; returns the decay used.

        `skip`: a bool tensor (on the parameters' device); where True the teacher is left unchanged, decided on
        the device without a host sync (the trainer skips a step whose gradients were not finite). The count
        advances either way, as the learning-rate schedule does."""
        decay = self.decay
        if decay < 1.0:
            pairs = self._parameter_pairs(source)
            ema, student = pairs.ema, _as(pairs.student, pairs.ema)  # a half-precision student: averaged in fp32
            copy_to, copy_from = pairs.copy_ema, _as(pairs.copy_student, pairs.copy_ema)
            if skip is None:
                torch._foreach_lerp_(ema, student, 1.0 - decay)  # ema += (1 - decay) * (student - ema)
                if copy_to:
                    torch._foreach_copy_(copy_to, copy_from)
            else:
                # the weight stays on the device: the Scalar overload would read a tensor weight back to the host
                # (`.item()`, a sync per step); the List overload takes tensor weights (one per parameter, here the
                # same 0-dim tensor) and reads none. lerp with weight 1 is an exact copy (torch computes
                # end - (end - start) * (1 - weight) for weights >= 0.5)
                keep = torch.where(skip, 0.0, 1.0).to(device=ema[0].device, dtype=ema[0].dtype)
                torch._foreach_lerp_(ema, student, [keep * (1.0 - decay)] * len(ema))
                if copy_to:
                    torch._foreach_lerp_(copy_to, copy_from, [keep] * len(copy_to))
        self.num_updates += 1
        return decay

    @torch.no_grad()
    def reset(self, source: nn.Module) -> None:
        """Copy `source` into the teacher and restart the schedule."""
        pairs = self._parameter_pairs(source)
        torch._foreach_copy_(pairs.ema + pairs.copy_ema, pairs.student + pairs.copy_student)
        self.num_updates = 0

    def save(self, path: str | os.PathLike) -> None:
        """The weights and the update count in one safetensors file (nothing in it is unpickled by `load`)."""
        save_model(self.model, str(path), metadata={"num_updates": str(self.num_updates)})

    def load(self, path: str | os.PathLike) -> None:
        """Weights and update count from a file written by `save`, onto the teacher's device."""
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        if "num_updates" not in metadata:
            raise ValueError(f"{path} has no num_updates: not a teacher saved by EMATeacher.save")
        load_model(self.model, str(path), strict=True, device=str(next(self.model.parameters()).device))
        self.num_updates = int(metadata["num_updates"])

    def local_state(self) -> dict[str, torch.Tensor]:
        """The weights as this process's local tensors (FSDP: its shards; otherwise the whole tensors), by name."""
        return {name: local_tensor(value) for name, value in self.model.state_dict().items()}

    @torch.no_grad()
    def load_local_state(self, tensors: dict[str, torch.Tensor], num_updates: int) -> None:
        """Copies what `local_state` returned (e.g. read back from a checkpoint) into the weights in place, and sets
        the update count; the names must be exactly the teacher's."""
        own = self.model.state_dict()
        if tensors.keys() != own.keys():
            raise ValueError(f"not this teacher's weights (missing {sorted(own.keys() - tensors.keys())[:3]}, extra "
                             f"{sorted(tensors.keys() - own.keys())[:3]})")
        for name, value in own.items():
            local_tensor(value).copy_(tensors[name])
        self.num_updates = int(num_updates)

    def get_extra_state(self) -> dict:
        return {"num_updates": self.num_updates}

    def set_extra_state(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])


__all__ = ["EMATeacher", "ema_decay_at", "local_tensor"]
