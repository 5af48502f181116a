"""How the model is spread and sped up: FSDP2 sharding and regional compilation, as free functions of the model and
the run's settings (torchtitan's `apply_fsdp` / `apply_compile`), and the checks of what FSDP cannot do."""

from __future__ import annotations

import logging
import sys

import torch
from accelerate import Accelerator

from ..configuration_data2vec import Data2VecConfig
from ..modeling_data2vec_pretraining import Data2VecForPreTraining
from .arguments import PretrainingArguments

logger = logging.getLogger("modeling_data2vec_unified.trainer")


def take_accelerate_dynamo(accelerator: Accelerator, args: PretrainingArguments) -> None:
    """`accelerate launch --dynamo_backend X` (or a config with one) means --torch_compile with that backend and mode:
    compiled here, by region and with bucketed shapes, not by accelerate's `prepare` (whole model). Sets `args`."""
    from accelerate.utils import DynamoBackend

    plugin = accelerator.state.dynamo_plugin
    if plugin.backend == DynamoBackend.NO:
        return
    args.torch_compile = True
    args.torch_compile_backend = plugin.backend.value.lower()
    args.torch_compile_mode = args.torch_compile_mode or (plugin.mode if plugin.mode != "default" else None)
    plugin.backend = DynamoBackend.NO


def apply_compile(model: Data2VecForPreTraining, backend: str, mode: str | None) -> int:
    """--torch_compile: the student's and the teacher's regions compiled in place (`compiling.compile_regions`);
    returns how many modules."""
    from ..compiling import compile_regions

    n = compile_regions(model, backend, mode)
    logger.info("--torch_compile: %d modules compiled (backend %s%s); each new input shape compiles once", n, backend,
                f", mode {mode}" if mode else "")
    return n


def check_fsdp(args: PretrainingArguments, config: Data2VecConfig) -> None:
    """--fsdp: the options it cannot support are refused here, naming the fix."""
    if config.layerdrop > 0:
        raise ValueError(
            f"--fsdp with layer drop (layerdrop={config.layerdrop:g}): each process would skip other layers, and FSDP "
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


def apply_fsdp(model: Data2VecForPreTraining, accelerator: Accelerator) -> Data2VecForPreTraining:
    """--fsdp: `fully_shard` the student and the EMA teacher alike on one mesh over all processes: each transformer
    layer (every `GradientCheckpointingLayer`) is its own unit, then the root. Parameters become DTensors sharded on
    dim 0, so the teacher's local shards line up with the student's (the EMA is local). Returns the model, moved to
    the accelerator's device and sharded in place."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
    from transformers.modeling_layers import GradientCheckpointingLayer

    if accelerator.is_main_process:  # said once, before torch's warning on every process
        print("data2vec-pretrain: --fsdp: torch warns that the sharded Data2VecLayer 'returned a view tensor'. "
              "Harmless here: that view is the layer's FFN output, read only by the teacher's targets under "
              "no_grad and never changed in place (docs/training.md, FSDP)", file=sys.stderr)
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    reshard = getattr(plugin, "reshard_after_forward", True)
    reshard = reshard if isinstance(reshard, bool) else True
    model = model.to(accelerator.device)
    teacher = model.teacher  # a copy of the unsharded student, built before it is sharded
    for root in (model, teacher.model):
        for module in list(root.modules()):
            if isinstance(module, GradientCheckpointingLayer):
                fully_shard(module, mesh=mesh, reshard_after_forward=reshard)
        fully_shard(root, mesh=mesh, reshard_after_forward=reshard)
    # the teacher of teacher_scope "model" runs through these methods, not forward: FSDP hooks them too
    for method in model.teacher_entry_points:
        if callable(getattr(teacher.model, method, None)):
            register_fsdp_forward_method(teacher.model, method)
    teacher.forget_pairs()  # fully_shard replaced the parameters: pair the new shards at the first update
    return model


def fsdp_grad_norm(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clips the sharded gradients; returns their norm over all shards as a plain replicated tensor (FSDP2 gives a
    DTensor reduced over the mesh)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def gather_full_model(model, accelerator: Accelerator) -> Data2VecForPreTraining | None:
    """A plain `Data2VecForPreTraining` built from the full state dict gathered from the FSDP-sharded `model`'s
    shards, on the main process (the others get None; all must call this: it is a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from .checkpointing import rng_untouched

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not accelerator.is_main_process:
        return None
    with rng_untouched(accelerator.device):  # building the copy draws initial weights: not the run's RNG
        plain = Data2VecForPreTraining(model.config)
    plain.load_state_dict(full, strict=True)
    return plain.to(accelerator.device).train(model.training)
