"""`--torch_compile`: regional compilation of the pretraining model (https://pytorch.org/tutorials/recipes/
regional_compilation.html, accelerate's `compile_regions`).

What is compiled, in place (`nn.Module.compile`, so state-dict keys, `unwrap_model`, DDP and FSDP2 hooks are as
without it): every transformer layer of the student and of the EMA teacher, the audio conv feature encoder and
data2vec 2.0's decoder. The layers share one code object, so one compiled graph serves all of them (per input
shape, and per mode: the student trains with gradients, the teacher runs in eval mode without). Left eager: the
front ends' small ops, the masking, the targets and the loss, and layer drop's per-layer coin (a Python branch
between compiled layers, so a run with layer drop compiles as one without).

Shapes are static (`dynamic=False`): each new input shape compiles once. Vision has one shape; data2vec 2.0 has a
fixed number of visible tokens; text and audio lengths vary, so the trainer's collator brings them to a few
(`DataCollatorForData2VecPretraining(bucket_lengths=True)`): at most 4 text lengths, and 4 audio lengths per doubling
of the clip length.
"""

from __future__ import annotations

import contextlib

import torch
import torch._dynamo
from torch import nn

from .modeling_data2vec import Data2VecAudioFeatureEncoder, Data2VecLayer
from .modeling_data2vec_pretraining import Data2VecDecoder

COMPILED_REGIONS = (Data2VecLayer, Data2VecAudioFeatureEncoder, Data2VecDecoder)
# per code object: a layer's graphs are (train, teacher, eval) x its input shapes; audio has ~4 per doubling of length
RECOMPILE_LIMIT = 64


def compile_regions(model: nn.Module, backend: str = "inductor", mode: str | None = None) -> int:
    """Compiles `model`'s (a `Data2VecForPreTraining`) regions in place, its teacher's too; returns how many modules.

    The teacher is built first: it is a deep copy of the student, and a deep copy of a compiled module is not
    compiled."""
    modules = list(model.modules())
    if hasattr(model, "teacher"):
        modules += list(model.teacher.modules())
    regions = [m for m in modules if isinstance(m, COMPILED_REGIONS)]
    if not regions:
        raise ValueError(f"{type(model).__name__} has no module to compile (looked for "
                         f"{', '.join(c.__name__ for c in COMPILED_REGIONS)})")
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    for module in regions:
        module.compile(backend=backend, mode=mode, dynamic=False)
    return len(regions)


@contextlib.contextmanager
def eager_regions(*models: torch.nn.Module):
    """Runs the compiled regions of `models` (e.g. the student and its teacher) eagerly inside the block (a side
    computation, e.g. the representation health check, whose shapes would otherwise add graphs), then restores them.
    `nn.Module.compile` keeps the compiled call in `_compiled_call_impl`, which `__call__` prefers; it is set aside
    here, not rebuilt."""
    compiled = [(m, m._compiled_call_impl) for model in models for m in model.modules()
                if getattr(m, "_compiled_call_impl", None)]
    for module, _ in compiled:
        module._compiled_call_impl = None
    try:
        yield
    finally:
        for module, call in compiled:
            module._compiled_call_impl = call


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (each a compile or a recompile)."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


__all__ = ["compile_regions", "compiled_graphs", "eager_regions"]
