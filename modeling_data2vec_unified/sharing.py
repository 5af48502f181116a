"""What a saved data2vec model carries so that anyone can load it: the modeling code (`trust_remote_code=True`, no
need for this package), an `auto_map` for every Auto class of its modality, and a model card with the data2vec
metadata (library, tags, datasets, metrics) and the pretraining settings.

`Data2VecPreTrainedModel.save_pretrained` calls `prepare_for_saving` / `finish_saving`; `push_to_hub` (ours, the
pretrainer's and `Data2VecTrainer`'s) uploads that folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from huggingface_hub import ModelCard
from huggingface_hub import ModelCardData

CARD_MARKER = "<!-- data2vec model card: written by modeling_data2vec_unified -->"
SECTION_MARKER = "<!-- data2vec section -->"

BASE_CLASSES = {"text": "Data2VecTextModel", "vision": "Data2VecVisionModel", "audio": "Data2VecAudioModel"}
HEAD_AUTO_CLASSES = {
    "text": {
        "AutoModelForSequenceClassification": "Data2VecForSequenceClassification",
        "AutoModelForTokenClassification": "Data2VecForTokenClassification",
        "AutoModelForQuestionAnswering": "Data2VecForQuestionAnswering",
    },
    "vision": {"AutoModelForImageClassification": "Data2VecForImageClassification"},
    "audio": {
        "AutoModelForCTC": "Data2VecForCTC",
        "AutoModelForAudioClassification": "Data2VecForAudioClassification",
        "AutoModelForSequenceClassification": "Data2VecForAudioClassification",
    },
}
PIPELINE_TAGS = {
    "Data2VecForSequenceClassification": "text-classification",
    "Data2VecForTokenClassification": "token-classification",
    "Data2VecForQuestionAnswering": "question-answering",
    "Data2VecForImageClassification": "image-classification",
    "Data2VecForCTC": "automatic-speech-recognition",
    "Data2VecForAudioClassification": "audio-classification",
}
FEATURE_PIPELINES = {"text": "feature-extraction", "vision": "image-feature-extraction", "audio": "feature-extraction"}
# the code a checkpoint needs: the modules auto_map names classes of, and every module they reach by relative imports
CODE_ENTRIES = ("modeling_data2vec_heads.py", "modeling_data2vec_pretraining.py")


def model_tags(modality: str) -> list[str]:
    return ["data2vec", "self-supervised", modality]


def auto_map(modality: str) -> dict[str, str]:
    """Every Auto class a checkpoint of `modality` answers, as `module.Class` of the files saved beside it."""
    entries = {
        "AutoConfig": "configuration_data2vec.Data2VecConfig",
        "AutoModel": f"modeling_data2vec.{BASE_CLASSES[modality]}",
        "AutoModelForPreTraining": "modeling_data2vec_pretraining.Data2VecForPreTraining",
    }
    entries.update({auto: f"modeling_data2vec_heads.{cls}" for auto, cls in HEAD_AUTO_CLASSES[modality].items()})
    return entries


def code_files() -> list[Path]:
    """The source files a checkpoint carries (found next to this module: the package, or a remote-code folder)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    entries = [Path(__file__).with_name(name) for name in CODE_ENTRIES]
    imported = {Path(f) for entry in entries for f in get_relative_import_files(str(entry))}
    return [*entries, *sorted(imported - set(entries))]


def copy_code(folder: str | Path) -> list[str]:
    names = []
    for path in code_files():
        target = Path(folder, path.name)
        if path.resolve() != target.resolve():
            shutil.copyfile(path, target)
        names.append(path.name)
    return names


# ---- the model card -----------------------------------------------------------------------------------------------


def _describe_loss(config) -> str:
    kind = "L2" if not config.loss_beta else f"smooth L1 (beta {config.loss_beta:g})"
    return f"{kind}, scaled by {config.target_loss_scale:.4g}"


def pretraining_settings(config) -> dict[str, str]:
    """The data2vec objective this model was (or will be) pretrained with, from its config, plus what the pretrainer
    recorded in `config.pretraining_info` (data, steps, optimisation, probe)."""
    settings = {
        "modality": config.modality,
        "encoder": f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, {config.num_attention_heads} "
                   f"heads, FFN {config.intermediate_size}, {config.layer_norm_position}-LN",
        "targets": f"average of the teacher's top {config.average_top_k_layers} {config.target_layer_output} "
                   f"outputs, each {config.target_layer_norm}-normed, final norm {config.target_final_norm}",
        "loss": _describe_loss(config) + ", masked positions only",
        "teacher": f"EMA of the student, decay {config.ema_decay:g} -> {config.ema_end_decay:g} over "
                   f"{config.ema_anneal_end_step} updates",
        "masking": f"{config.mask_type}, mask_prob {config.mask_prob:.4g}, mask_length {config.mask_length}",
        "regression head": f"{config.head_layers} layer(s)",
    }
    for key, value in (getattr(config, "pretraining_info", None) or {}).items():
        settings[key] = value if isinstance(value, str) else json.dumps(value)
    return settings


def data2vec_section(config, class_name: str | None = None) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in pretraining_settings(config).items())
    auto = "AutoModel"
    for entries in HEAD_AUTO_CLASSES.values():
        for name, cls in entries.items():
            if cls == class_name:
                auto = name
    return (
        f"{SECTION_MARKER}\n## data2vec\n\n"
        f"A data2vec {config.modality} model ([Baevski et al., 2022](https://arxiv.org/abs/2202.03555)), made with "
        "the `modeling_data2vec_unified` package. Its modeling code is saved beside the weights, so it loads without "
        "that package:\n\n"
        f"```python\nfrom transformers import {auto}\n\n"
        f"model = {auto}.from_pretrained(\"<this repo>\", trust_remote_code=True)\n```\n\n"
        f"### Pretraining settings\n\n{_provenance(config)}| setting | value |\n|---|---|\n{rows}\n"
    )


def _provenance(config) -> str:
    if getattr(config, "pretraining_info", None):
        return ""
    return ("No `data2vec-pretrain` run is recorded in this config (`pretraining_info`): the table shows the data2vec "
            "objective the config sets, not a run these weights went through.\n\n")


def model_card(config, class_name: str, *, datasets=None, metrics: dict | None = None, tags=None,
               base_model: str | None = None) -> ModelCard:
    """A card with the Hub metadata (library transformers, tags data2vec / self-supervised / modality, datasets,
    metrics) and the data2vec section."""
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    info = getattr(config, "pretraining_info", None) or {}
    if not datasets and isinstance(info.get("dataset_id"), str):
        datasets = [info["dataset_id"]]
    data = ModelCardData(
        library_name="transformers",
        tags=list(dict.fromkeys([*model_tags(config.modality), *(tags or [])])),
        datasets=datasets or None,
        metrics=sorted(metrics) if metrics else None,
        pipeline_tag=PIPELINE_TAGS.get(class_name, FEATURE_PIPELINES[config.modality]),
        base_model=base_model,
    )
    results = ""
    if metrics:
        results = "\n## Results\n\n| metric | value |\n|---|---|\n" + "\n".join(
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()) + "\n"
    body = f"{CARD_MARKER}\n# {class_name} (data2vec {config.modality})\n{results}\n{data2vec_section(config, class_name)}"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def add_data2vec_section(readme: str | Path, config, datasets=None) -> None:
    """Adds the data2vec tags, datasets and section to a card another tool wrote (transformers' Trainer)."""
    readme = Path(readme)
    card = ModelCard.load(readme) if readme.exists() else ModelCard("---\n---\n")
    card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *model_tags(config.modality)]))
    card.data.library_name = card.data.library_name or "transformers"
    if datasets and not card.data.datasets:
        card.data.datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    if SECTION_MARKER not in card.text:
        card.text = card.text.rstrip() + "\n\n" + data2vec_section(config) + "\n"
    card.save(readme)


def write_model_card(folder: str | Path, model, overwrite: bool = False, **kwargs) -> bool:
    """README.md for `model` in `folder`, unless a card that this package did not write is already there."""
    readme = Path(folder, "README.md")
    if readme.exists() and not overwrite and CARD_MARKER not in readme.read_text(encoding="utf-8"):
        return False
    model_card(model.config, type(model).__name__, **kwargs).save(readme)
    return True


def create_hub_repo(repo_name: str, token: str | None = None, private: bool | None = None) -> str:
    """Creates (or finds) the Hub repo `repo_name` and returns its id; a missing token, no network or no rights is
    said now, naming the fix (the trainer calls this at start-up, as transformers' Trainer does, not after the run)."""
    from huggingface_hub import HfApi

    try:
        return HfApi(token=token).create_repo(repo_name, private=private, exist_ok=True).repo_id
    except Exception as error:  # no token, no network, no rights: say so before training, not after
        raise ValueError(
            f"--push_to_hub: cannot create or reach the Hub repo {repo_name!r} ({type(error).__name__}: {error}). Log "
            f"in (`hf auth login`) or pass --hub_token, check --hub_model_id, or drop --push_to_hub (push later with "
            f"model.push_to_hub)"
        ) from error


def push_folder(folder: str | Path, repo_id: str, message: str, token: str | None = None) -> int:
    """Uploads the files at the top of `folder` (the model, its processor, probe.json, the curves; not subfolders
    such as checkpoint-*/ or logs/) to `repo_id` in one commit; returns how many."""
    from huggingface_hub import CommitOperationAdd, HfApi

    files = [p for p in sorted(Path(folder).iterdir()) if p.is_file()]
    HfApi(token=token).create_commit(repo_id, operations=[CommitOperationAdd(p.name, str(p)) for p in files],
                                     commit_message=message)
    return len(files)
