"""What the fairseq converters share (`conversion_fairseq.py`: data2vec 2.0; `conversion_fairseq_v1.py`: data2vec 1.0
and data2vec_vision's BEiT): reading a checkpoint safely, telling its kind, rename tables whose rules each say why,
the converted result, helpers that read fairseq's stored cfg, and the registry of converters by kind.

A conversion reads the checkpoint safely (`load_checkpoint`: `torch.load(weights_only=True)` with only the types
those files hold allowed), tells its kind from what it holds (`checkpoint_kind`), rebuilds the architecture from the
checkpoint's own stored config (never a yaml's), and maps every tensor by a rename table (`RenameTable`). A key no
rule knows is an error naming it; a tensor with no place in our models (an optimizer-side buffer, a
pretraining-only head) is dropped only by a rule that says why.

The converter modules register their functions here (`@converter(kind)`). `conversion_fairseq_v1` takes nothing from
`conversion_fairseq`, which imports it so that `convert_fairseq_checkpoint` dispatches over every kind.
"""

from __future__ import annotations

import argparse
import ast
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .configuration_data2vec import Data2VecConfig


# ---- safe loading ---------------------------------------------------------------------------------------------


def _safe_globals() -> list:
    """What the released checkpoints hold beyond torch's default `weights_only` allow-list (tensors, dicts,
    OrderedDict, lists, tuples, str / int / float / bool / None): BEiT's `args` (an argparse.Namespace, whose
    unpickling only sets attributes) and numpy scalars that fairseq's meters may leave in `extra_state`."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    allowed = [argparse.Namespace, np.dtype, scalar, (scalar, "numpy.core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles a dtype's class too
    if dtypes is not None:
        allowed += [dtypes.Float64DType, dtypes.Float32DType, dtypes.Int64DType]
    return allowed


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint's contents, unpickled with `weights_only=True` and only `_safe_globals()` allowed: a file that
    needs anything else (arbitrary code on unpickling) is refused, naming the type."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {path} (resolved to {path.expanduser().resolve()})")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" not in str(error).lower():  # torch words it "Unsupported global" or "unsupported
            raise ValueError(  # GLOBAL ... is blocked" by version
                f"{path} is not a readable PyTorch checkpoint (truncated, or not written by torch.save: "
                f"{str(error).splitlines()[0][:200]}): download or copy it again") from error
        allowed = {f"{t.__module__}.{t.__qualname__}" if not isinstance(t, tuple) else t[1] for t in _safe_globals()}
        try:  # the full names, read from the pickle without running it
            names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path) if n not in allowed]
        except Exception:
            names = re.findall(r"GLOBAL ([\w.]+)", str(error))
        what = f"the type(s) {', '.join(names)}" if names else "a type outside the allow-list"
        raise ValueError(
            f"{path} needs {what} to be unpickled, which a data2vec checkpoint does not hold: refusing to run "
            f"arbitrary code from a pickle. If you trust the file, load it with torch.load(..., weights_only=False) "
            f"and pass the resulting dict to convert_fairseq_checkpoint"
        ) from error
    except (RuntimeError, EOFError, KeyError, OSError, ValueError) as error:  # truncated / not a torch file (a text
        raise ValueError(  # file: KeyError on its first byte)
            f"{path} is not a readable PyTorch checkpoint (truncated, or not written by torch.save: "
            f"{type(error).__name__}: {str(error)[:200]}): download or copy it again") from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


# ---- what a checkpoint is -----------------------------------------------------------------------------------

KINDS = {  # kind: what it is
    "d2v2_vision": "data2vec 2.0 image model (base/large/huge_imagenet.pt)",
    "d2v2_vision_ft": "data2vec 2.0 image classifier (*_imagenet_ft.pt)",
    "d2v2_audio": "data2vec 2.0 speech model (base_libri.pt, large_vox.pt)",
    "d2v2_audio_ctc": "data2vec 2.0 speech recogniser, CTC (*_960h.pt)",
    "d2v2_text": "data2vec 2.0 text model (nlp_base.pt)",
    "d2v1_audio": "data2vec 1.0 speech model (audio_base_ls.pt, vox_pretrained.pt)",
    "d2v1_audio_ctc": "data2vec 1.0 speech recogniser, CTC (audio_base_ls_*.pt, vox_*.pt fine-tunes)",
    "d2v1_text": "data2vec 1.0 text model (nlp_base.pt)",
    "beit_vision": "data2vec 1.0 image model from data2vec_vision (checkpoint-799.pth)",
}


def _model_cfg(checkpoint: dict) -> dict | None:
    cfg = checkpoint.get("cfg")
    return cfg.get("model") if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict) else None


def checkpoint_kind(checkpoint: dict) -> str:
    """The kind (a key of `KINDS`) of a loaded checkpoint, from its stored config and keys; a checkpoint of another
    kind is refused naming what was found."""
    model_cfg = _model_cfg(checkpoint)
    if model_cfg is not None:
        name = model_cfg.get("_name")
        if name == "data2vec_multi":
            return {"IMAGE": "d2v2_vision", "AUDIO": "d2v2_audio", "TEXT": "d2v2_text"}[_d2v2_modality(checkpoint)]
        if name == "mae_image_classification":
            inner = (model_cfg.get("pretrained_model_args") or {}).get("model", {}).get("_name")
            if inner != "data2vec_multi":
                raise ValueError(f"an image classifier fine-tuned from a {inner!r} model, not data2vec 2.0: only "
                                 "data2vec fine-tunes convert")
            return "d2v2_vision_ft"
        if name == "wav2vec_ctc":
            inner = (model_cfg.get("w2v_args") or {}).get("model", {}).get("_name")
            kinds = {"data2vec_multi": "d2v2_audio_ctc", "data2vec_audio": "d2v1_audio_ctc"}
            if inner not in kinds:
                raise ValueError(f"a CTC fine-tune of a {inner!r} model (e.g. wav2vec 2.0), not of data2vec: load it "
                                 "with transformers' wav2vec2 conversion instead")
            return kinds[inner]
        if name in ("data2vec_audio", "data2vec_text"):
            return {"data2vec_audio": "d2v1_audio", "data2vec_text": "d2v1_text"}[name]
        raise ValueError(f"a fairseq {name!r} model, not a data2vec one: convertible are {', '.join(KINDS.values())}")
    model = checkpoint.get("model")
    if isinstance(model, dict) and "cls_token" in model and "patch_embed.proj.weight" in model:
        if "rel_pos_bias.relative_position_bias_table" not in model:
            raise ValueError("a BEiT-style checkpoint without a shared relative position bias: data2vec_vision's "
                             "pretrained checkpoints have one (--rel_pos_bias); this one is not one of them")
        return "beit_vision"
    if "module" in checkpoint:
        raise ValueError("a DeepSpeed checkpoint (weights under 'module'), e.g. data2vec_vision's fine-tuned "
                         "mp_rank_00_model_states.pt: not supported; convert the pretrained checkpoint-799.pth and "
                         "fine-tune it here")
    raise ValueError(f"not a data2vec checkpoint: top-level keys {sorted(checkpoint)[:8]}; convertible are "
                     f"{', '.join(KINDS.values())}")


def _d2v2_modality(checkpoint: dict) -> str:
    model_cfg = _model_cfg(checkpoint)
    modality = model_cfg.get("supported_modality")
    if modality in ("IMAGE", "AUDIO", "TEXT"):
        return modality
    found = {k.split(".")[1] for k in checkpoint.get("model", {}) if k.startswith("modality_encoders.")}
    if len(found) != 1:
        raise ValueError(f"a data2vec 2.0 checkpoint with modality encoders {sorted(found)}: one of IMAGE / AUDIO / "
                         "TEXT was expected")
    return found.pop()


# ---- renaming -------------------------------------------------------------------------------------------------


@dataclass
class Rule:
    """fairseq key pattern (a full-match regex) -> our key (a `re` replacement; None: dropped), and why."""

    pattern: str
    target: str | Callable[[re.Match], str] | None
    why: str
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class RenameTable:
    rules: list[Rule]

    def apply(self, state: dict[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """(our keys -> fp32 tensors, dropped fairseq keys -> why). Every key must match exactly one rule."""
        compiled = [(re.compile(r.pattern), r) for r in self.rules]
        mapped, dropped, unknown = {}, {}, []
        for key, value in state.items():
            hits = [(p, r) for p, r in compiled if p.fullmatch(key)]
            if not hits:
                unknown.append(key)
                continue
            if len(hits) > 1:
                raise RuntimeError(f"{source}: {key} matches {len(hits)} rename rules: "
                                   + "; ".join(r.pattern for _, r in hits))
            pattern, rule = hits[0]
            if rule.target is None:
                dropped[key] = rule.why
                continue
            new = pattern.sub(rule.target, key)  # target: a replacement string or a function of the match
            if new in mapped:
                raise RuntimeError(f"{source}: two keys map to {new}")
            tensor = value.float() if value.is_floating_point() else value
            mapped[new] = rule.transform(tensor) if rule.transform else tensor
        if unknown:
            raise ValueError(f"{source}: {len(unknown)} tensor(s) this converter does not know, e.g. "
                             f"{', '.join(unknown[:5])}: nothing is dropped silently; the checkpoint has a layout "
                             "this version cannot map (please report it with the key names)")
        return mapped, dropped


def _sub_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _tensors(state: dict, nested: tuple[str, ...] = ("_ema",)) -> dict[str, torch.Tensor]:
    """The tensors of a state dict; the `nested` dicts (the EMA teacher) are left to their own table, and anything
    else is an error naming it (nothing is skipped silently)."""
    other = [k for k, v in state.items() if not isinstance(v, torch.Tensor) and k not in nested]
    if other:
        raise ValueError(f"entries that are not tensors in the model's state: {', '.join(other[:5])} (types "
                         f"{', '.join(sorted({type(state[k]).__name__ for k in other}))}): a layout this version "
                         "cannot map (please report it)")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


# ---- the result -------------------------------------------------------------------------------------------------


@dataclass
class ConvertedCheckpoint:
    """A converted checkpoint: the config, the weights of `model_class` (our key names, fp32), the teacher's weights
    (keys of `Data2VecForPreTraining.teacher.model`) where the checkpoint has a teacher, and what was dropped."""

    kind: str
    config: Data2VecConfig
    model_class: str  # a class name of this package
    state_dict: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor] | None = None
    dropped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what a user should know about this conversion
    # how the checkpoint's recipe prepared inputs, where it says (images: image_mean / image_std)
    processor_settings: dict = field(default_factory=dict)

    def build(self):
        """The model with the converted weights (every parameter and buffer loaded: strict), teacher included."""
        import modeling_data2vec_unified as d2v

        model = getattr(d2v, self.model_class)(self.config)
        missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"{self.kind}: the converted weights do not fit {self.model_class}: missing "
                               f"{missing[:5]}, unexpected {unexpected[:5]}")
        model.eval()
        if self.teacher is not None:
            teacher = model.teacher
            missing, unexpected = teacher.model.load_state_dict(self.teacher, strict=False)
            if missing or unexpected:
                raise RuntimeError(f"{self.kind}: the converted teacher does not fit: missing {missing[:5]}, "
                                   f"unexpected {unexpected[:5]}")
        return model


# ---- configs ------------------------------------------------------------------------------------------------------


def parse_conv_spec(spec: str) -> list[tuple[int, int, int]]:
    """fairseq's conv feature encoder spec, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2", evaluated
    without `eval`: lists of int tuples joined by + and repeated by *."""

    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported conv spec {spec!r}: expected lists of (dim, kernel, stride) joined by + / *")

    layers = value(ast.parse(spec, mode="eval"))
    if not (isinstance(layers, list) and all(isinstance(t, tuple) and len(t) == 3 for t in layers)):
        raise ValueError(f"unsupported conv spec {spec!r}: expected a list of (dim, kernel, stride)")
    return layers


def _conv_fields(spec: str, conv_bias: bool) -> dict:
    layers = parse_conv_spec(spec)
    return dict(conv_dim=tuple(d for d, _, _ in layers), conv_kernel=tuple(k for _, k, _ in layers),
                conv_stride=tuple(s for _, _, s in layers), conv_bias=conv_bias)


def _target_norms(cfg: dict) -> dict:
    """data2vec's target normalisation flags -> ours (the released recipes set at most one per stage). fairseq
    applies batch norm, then instance norm (which undoes a batch norm before it), then layer norm; where several are
    set, the first of instance, batch, layer is taken."""
    per_layer = ("instance" if cfg.get("instance_norm_target_layer") else
                 "batch" if cfg.get("batch_norm_target_layer") else
                 "layer" if cfg.get("layer_norm_target_layer") else "none")
    final = ("instance" if cfg.get("instance_norm_targets") else
             "layer" if cfg.get("layer_norm_targets") else "none")
    return dict(target_layer_norm=per_layer, target_final_norm=final)


def collapse_guard(cfg: dict | None) -> dict:
    """The recipe's collapse-check thresholds: fairseq's `min_target_var` / `min_pred_var` (data2vec_audio.py and
    data2vec2.py: 0.1 / 0.01 unless the recipe sets them; the 2.0 image recipes set both to 0). `None`: a recipe with
    no collapse check (data2vec_text, data2vec_vision's BEiT engine): both 0, so continued pretraining never stops
    where the original would not."""
    if cfg is None:
        return dict(min_target_var=0.0, min_pred_var=0.0)
    return dict(min_target_var=float(cfg.get("min_target_var", 0.1)), min_pred_var=float(cfg.get("min_pred_var", 0.01)))


def _unsupported(kind: str, what: str) -> ValueError:
    return ValueError(f"{KINDS[kind]}: {what}, which this package's models do not implement; nothing converted")


# ---- the registry -----------------------------------------------------------------------------------------------

# kind -> function(checkpoint dict) -> ConvertedCheckpoint; filled by the modules that know each layout
CONVERTERS: dict[str, Callable[[dict], ConvertedCheckpoint]] = {}


def converter(kind: str):
    def register(function):
        CONVERTERS[kind] = function
        return function

    return register


__all__ = ["CONVERTERS", "ConvertedCheckpoint", "KINDS", "RenameTable", "Rule", "checkpoint_kind", "collapse_guard",
           "converter", "load_checkpoint", "parse_conv_spec"]
