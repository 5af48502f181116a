"""Finding a saved model and reading its files: what `from_pretrained` needs before it knows whether a checkpoint is
ours or one of transformers' Data2Vec* checkpoints (which `conversion.py` converts).

A local path that does not exist, weights safetensors cannot read and a checkpoint of another model type are
refused with errors that name the path and the fix. Imports no model (the modeling file imports this module).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import PreTrainedConfig
from transformers.utils import cached_file

from .configuration_data2vec import Data2VecConfig

# config.json's model_type of transformers' Data2Vec* checkpoints -> our modality
TRANSFORMERS_MODEL_TYPES = {"data2vec-text": "text", "data2vec-vision": "vision", "data2vec-audio": "audio"}

HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


def hub_kwargs(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}


def check_local_path(pretrained_model_name_or_path) -> None:
    """A name that cannot be a Hub id (e.g. "./models/run1", "/tmp/a/b/c") must be an existing folder: refuse a
    missing one naming the path, where the Hub would answer "Repo id must be in the form ...". A name that looks
    like a Hub id ("owner/name") and is no local folder goes on to the Hub."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if pretrained_model_name_or_path is None:  # weights passed directly (state_dict=...): nothing to find
        return
    name = os.fspath(pretrained_model_name_or_path)
    if os.path.exists(name):
        return
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise FileNotFoundError(
            f"no folder {name!r} (resolved to {Path(name).expanduser().resolve()}): check the path (a relative one "
            f"starts from the current directory, {os.getcwd()}); a Hub model is named like 'owner/name'"
        ) from None


def _unreadable_safetensors(pretrained_model_name_or_path, **kwargs) -> list[str]:
    """The safetensors files of a local folder, or already in the Hub cache, that cannot be opened."""
    from safetensors import safe_open

    hub = hub_kwargs(kwargs)
    folder = Path(pretrained_model_name_or_path, hub.get("subfolder") or "")
    if folder.is_dir():
        files = sorted(str(f) for f in folder.glob("*.safetensors"))
    else:
        files, local = [], {**hub, "local_files_only": True}
        for filename in ("model.safetensors", "model.safetensors.index.json"):
            try:
                path = cached_file(pretrained_model_name_or_path, filename, _raise_exceptions_for_missing_entries=False,
                                   **local)
                if path is not None and filename.endswith(".index.json"):
                    shards = sorted(set(json.loads(Path(path).read_text())["weight_map"].values()))
                    files += [cached_file(pretrained_model_name_or_path, shard, **local) for shard in shards]
                elif path is not None:
                    files.append(path)
            except Exception:  # only naming the file is at stake here: the caller raises either way
                continue
    bad = []
    for f in files:
        try:
            with safe_open(f, framework="pt") as weights:
                weights.keys()  # opening parses the header: what a truncated or empty file fails
        except Exception:
            bad.append(f)
    return bad


def unreadable_weights_error(pretrained_model_name_or_path, error: Exception, **kwargs) -> OSError:
    """The error for weights safetensors cannot read (a truncated or empty file): it names the file and the fix."""
    bad = _unreadable_safetensors(pretrained_model_name_or_path, **kwargs)
    where = ", ".join(bad) if bad else f"a weights file of {os.fspath(pretrained_model_name_or_path)}"
    return OSError(
        f"{where} cannot be read ({error}): the file is truncated or corrupt, e.g. by an interrupted save or "
        f"download. Save the model again (model.save_pretrained(...)), or download it again "
        f"(from_pretrained(..., force_download=True))."
    )


def read_config_dict(pretrained_model_name_or_path, **kwargs) -> dict:
    """config.json of a local folder or Hub repo, whatever model it describes."""
    check_local_path(pretrained_model_name_or_path)
    config_dict, _ = PreTrainedConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs(kwargs))
    return config_dict


def checkpoint_modality(pretrained_model_name_or_path, **kwargs) -> str:
    """The modality of a checkpoint of ours or of transformers' Data2Vec models; an error for anything else."""
    config_dict = read_config_dict(pretrained_model_name_or_path, **kwargs)
    model_type = config_dict.get("model_type")
    if model_type == Data2VecConfig.model_type:
        return config_dict.get("modality", "vision")
    if model_type in TRANSFORMERS_MODEL_TYPES:
        return TRANSFORMERS_MODEL_TYPES[model_type]
    raise ValueError(
        f"{pretrained_model_name_or_path} holds a model of type {model_type!r}, not a data2vec model "
        f"(accepted: data2vec, {', '.join(TRANSFORMERS_MODEL_TYPES)})"
    )


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def read_state_dict(pretrained_model_name_or_path, **kwargs) -> dict[str, torch.Tensor]:
    """All weights of a local folder or Hub repo (safetensors, sharded or not; else pytorch_model.bin)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    hub = hub_kwargs(kwargs)
    for filename in _WEIGHT_FILES:
        path = cached_file(
            pretrained_model_name_or_path, filename, _raise_exceptions_for_missing_entries=False, **hub
        )
        if path is None:
            continue
        if filename.endswith(".index.json"):
            shards = sorted(set(json.loads(Path(path).read_text())["weight_map"].values()))
            files = [cached_file(pretrained_model_name_or_path, s, **hub) for s in shards]
        else:
            files = [path]
        state = {}
        for f in files:
            if f.endswith(".safetensors"):
                try:
                    state.update(load_file(f))
                except SafetensorError as error:
                    raise unreadable_weights_error(pretrained_model_name_or_path, error, **kwargs) from error
            else:
                state.update(torch.load(f, map_location="cpu", weights_only=True))
        return state
    raise FileNotFoundError(f"no weights ({', '.join(_WEIGHT_FILES)}) found in {pretrained_model_name_or_path}")


__all__ = ["TRANSFORMERS_MODEL_TYPES", "check_local_path", "checkpoint_modality", "read_config_dict", "read_state_dict",
           "unreadable_weights_error"]


# what turns a transformers Data2Vec* checkpoint into one of this package's models: `conversion` registers its loader
# here when it is imported (`import modeling_data2vec_unified` imports it), so that the models do not import the
# conversion's rename tables themselves
TRANSFORMERS_LOADER: dict[str, Callable] = {}


def register_transformers_loader(loader: Callable) -> Callable:
    """Makes `loader(cls, path, config_dict, *model_args, **kwargs)` the one `load_transformers_checkpoint` calls."""
    TRANSFORMERS_LOADER["load"] = loader
    return loader


def load_transformers_checkpoint(cls, pretrained_model_name_or_path, config_dict: dict, *model_args, **kwargs):
    """`cls.from_pretrained` of a transformers Data2Vec* checkpoint (its `config_dict` read already), converted to
    this package's layout by the registered loader (`conversion.load_from_transformers`)."""
    if "load" not in TRANSFORMERS_LOADER:
        raise ValueError(
            f"{pretrained_model_name_or_path} is a transformers Data2Vec checkpoint ({config_dict.get('model_type')}): "
            "converting it needs the modeling_data2vec_unified package (`pip install modeling_data2vec_unified`, then "
            "`import modeling_data2vec_unified`), which a folder saved with its code does not carry"
        )
    return TRANSFORMERS_LOADER["load"](cls, pretrained_model_name_or_path, config_dict, *model_args, **kwargs)
