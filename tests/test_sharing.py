"""Sharing: what a push uploads (captured offline at the Hub client), and loading a saved folder with
`trust_remote_code=True` in a process where this package cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import modeling_data2vec_unified as d2v
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from modeling_data2vec_unified import metrics
from modeling_data2vec_unified.conversion import example_inputs
from transformers import AutoModelForImageClassification, BeitImageProcessor, Trainer, TrainingArguments

from conftest import tiny_config

CODE = {"configuration_data2vec.py", "modeling_data2vec.py", "modeling_data2vec_heads.py",
        "modeling_data2vec_pretraining.py", "ema.py", "masking.py", "sharing.py",
        "mask_types.py", "input_checks.py", "checkpoint_files.py", "modalities.py"}


# (class, auto class name, config overrides)
MODELS = {
    "text-pretraining": (d2v.Data2VecForPreTraining, "AutoModelForPreTraining", "text", {}),
    "text-seq": (d2v.Data2VecForSequenceClassification, "AutoModelForSequenceClassification", "text",
                 dict(num_labels=3)),
    "text-qa": (d2v.Data2VecForQuestionAnswering, "AutoModelForQuestionAnswering", "text", {}),
    "vision-base": (d2v.Data2VecVisionModel, "AutoModel", "vision", {}),
    "vision-cls": (d2v.Data2VecForImageClassification, "AutoModelForImageClassification", "vision",
                   dict(num_labels=4)),
    "audio-ctc": (d2v.Data2VecForCTC, "AutoModelForCTC", "audio", dict(vocab_size=9)),
    "audio-cls": (d2v.Data2VecForAudioClassification, "AutoModelForAudioClassification", "audio",
                  dict(num_labels=2)),
}


LOADER = textwrap.dedent("""
    import importlib.abc, json, sys

    class Blocked(importlib.abc.MetaPathFinder):  # this package is not installed here
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "modeling_data2vec_unified":
                raise ImportError("modeling_data2vec_unified is not installed")

    sys.meta_path.insert(0, Blocked())
    import torch
    import transformers

    jobs = json.loads(sys.argv[1])
    for folder, auto in jobs:
        model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        with torch.no_grad():
            out = model(**torch.load(folder + "/inputs.pt"))
        torch.save({k: v for k, v in out.items() if isinstance(v, torch.Tensor)}, folder + "/remote_outputs.pt")
    try:
        import modeling_data2vec_unified  # noqa: F401
    except ImportError:
        print("package unavailable: ok")
""")


def _outputs(model, inputs: dict) -> dict:
    with torch.no_grad():
        out = model.eval()(**inputs)
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


@pytest.mark.slow
def test_saved_folders_load_with_remote_code_without_the_package(tmp_path):
    jobs, expected = [], {}
    for name, (cls, auto, modality, overrides) in MODELS.items():
        torch.manual_seed(0)
        model = cls(tiny_config(modality, **overrides))
        folder = tmp_path / name
        model.save_pretrained(folder)
        inputs = example_inputs(model.config)
        if cls is d2v.Data2VecForPreTraining:
            mask = torch.zeros(inputs["input_ids"].shape, dtype=torch.bool)
            mask[:, 1:4] = True  # a fixed mask: the forward draws none
            inputs = {**inputs, "bool_masked_pos": mask}
        torch.save(inputs, folder / "inputs.pt")
        expected[name] = _outputs(model, inputs)
        assert CODE <= {p.name for p in folder.iterdir()}
        config = json.loads((folder / "config.json").read_text())
        assert config["auto_map"][auto].split(".")[0] in {"modeling_data2vec", "modeling_data2vec_heads",
                                                                  "modeling_data2vec_pretraining"}
        assert config["auto_map"]["AutoConfig"] == "configuration_data2vec.Data2VecConfig"
        jobs.append((str(folder), auto))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", LOADER, json.dumps(jobs)], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "package unavailable: ok" in result.stdout
    for name in MODELS:
        remote = torch.load(tmp_path / name / "remote_outputs.pt")
        assert remote.keys() == expected[name].keys() and remote, name
        for key, value in expected[name].items():
            assert torch.equal(remote[key], value), (name, key)


class HubRecorder:
    """Stands in for the Hub: records create_repo, create_commit and upload_folder calls and what they upload."""

    def __init__(self, monkeypatch):
        self.repos, self.files = [], {}
        recorder = self

        def create_repo(api, repo_id, **kwargs):
            recorder.repos.append((repo_id, kwargs))
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_commit(api, repo_id, operations, **kwargs):
            for op in operations:
                recorder.files[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
            return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/1",
                                              commit_message=kwargs.get("commit_message", ""),
                                              commit_description="", oid="1", pr_url=None)

        def upload_folder(api, repo_id, folder_path, ignore_patterns=(), **kwargs):
            import fnmatch

            for p in Path(folder_path).rglob("*"):
                rel = p.relative_to(folder_path).as_posix()
                if p.is_file() and not any(fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel.split("/")[0], pat)
                                           for pat in ignore_patterns):
                    recorder.files[rel] = p.read_bytes()
            return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/1",
                                              commit_message="", commit_description="", oid="1", pr_url=None)

        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)

    def card(self) -> tuple[dict, str]:
        text = self.files["README.md"].decode()
        _, meta, body = text.split("---\n", 2)
        return yaml.safe_load(meta), body


def test_model_push_to_hub_uploads_weights_code_processor_and_card(monkeypatch, tmp_path):
    hub = HubRecorder(monkeypatch)
    pretraining_info = {"dataset": "builtin digits", "steps": 1680}
    model = d2v.Data2VecForImageClassification(tiny_config("vision", num_labels=4, pretraining_info=pretraining_info))
    processor = BeitImageProcessor(size={"height": 32, "width": 32})
    model.push_to_hub("me/tiny-d2v", processor=processor, datasets=["digits"], metrics={"accuracy": 0.93},
                      private=True)
    assert hub.repos == [("me/tiny-d2v", {"private": True, "exist_ok": True})]
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} | CODE == set(hub.files)
    config = json.loads(hub.files["config.json"])
    assert config["auto_map"]["AutoModelForImageClassification"] == (
        "modeling_data2vec_heads.Data2VecForImageClassification")
    assert config["pretraining_info"] == pretraining_info
    meta, body = hub.card()
    assert meta["library_name"] == "transformers"
    assert {"data2vec", "self-supervised", "vision"} <= set(meta["tags"])
    assert meta["datasets"] == ["digits"] and meta["metrics"] == ["accuracy"]
    assert meta["pipeline_tag"] == "image-classification"
    assert "| accuracy | 0.93 |" in body
    assert "### Pretraining settings" in body and "| steps | 1680 |" in body and "| dataset | builtin digits |" in body
    assert "No `data2vec-pretrain` run is recorded" not in body
    assert "average of the teacher's top 2 block outputs" in body
    assert "trust_remote_code=True" in body


def test_save_pretrained_with_push_to_hub(monkeypatch, tmp_path):
    hub = HubRecorder(monkeypatch)
    d2v.Data2VecVisionModel(tiny_config("vision")).save_pretrained(tmp_path, push_to_hub=True, repo_id="me/enc")
    assert hub.repos[0][0] == "me/enc"
    assert {"model.safetensors", "config.json", "README.md"} | CODE == set(hub.files)


def test_save_pretrained_keeps_a_card_it_did_not_write(tmp_path):
    model = d2v.Data2VecVisionModel(tiny_config("vision"))
    model.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "### Pretraining settings" in card and "No `data2vec-pretrain` run is recorded" in card
    (tmp_path / "README.md").write_text("my own card")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "my own card"


def _digits_like(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    return [{"pixel_values": torch.randn(3, 32, 32, generator=g) + y, "labels": int(y), "unused": "dropped"}
            for y in labels]


@pytest.mark.parametrize("trainer_cls", [Trainer, d2v.Data2VecTrainer])
def test_trainer_push_to_hub(monkeypatch, tmp_path, trainer_cls):
    """transformers' Trainer and ours: the upload holds the weights, the code and a card with the data2vec tags;
    ours also carries the pretraining settings."""
    hub = HubRecorder(monkeypatch)
    import datasets

    rows = datasets.Dataset.from_list([{**e, "pixel_values": e["pixel_values"].numpy()} for e in _digits_like(24, 0)])
    rows.set_format("torch")
    model = d2v.Data2VecForImageClassification(tiny_config("vision", num_labels=4))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, report_to="none",
                             push_to_hub=True, hub_model_id="me/finetuned", use_cpu=True, save_strategy="no")
    processor = BeitImageProcessor(size={"height": 32, "width": 32})
    trainer = trainer_cls(model=model, args=args, train_dataset=rows, eval_dataset=rows, processing_class=processor,
                          compute_metrics=metrics.accuracy)
    trainer.train()
    trainer.evaluate()
    trainer.push_to_hub(dataset_tags="digits")
    assert hub.repos[0][0] == "me/finetuned"
    assert {"model.safetensors", "config.json", "README.md", "preprocessor_config.json"} | CODE <= set(hub.files)
    meta, body = hub.card()
    assert meta["library_name"] == "transformers"
    assert {"data2vec", "self-supervised", "vision"} <= set(meta["tags"])
    assert meta["datasets"] == ["digits"]
    assert "accuracy" in meta["metrics"]  # from the eval results
    ours = trainer_cls is d2v.Data2VecTrainer
    assert ("### Pretraining settings" in body) == ours
    if ours:  # the head's task: the eval results go into the model-index; no empty "fine-tuned from" link
        assert "[](https://huggingface.co/)" not in body and "trained from scratch" in body
        results = meta["model-index"][0]["results"]
        assert results[0]["task"]["type"] == "image-classification"
        assert results[0]["metrics"][0]["type"] == "accuracy"
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    batch = torch.stack([rows[i]["pixel_values"] for i in range(4)])
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(batch).logits, trainer.model.eval()(batch).logits)
    card = ModelCard.load(tmp_path / "README.md")
    assert "generated_from_trainer" in card.data.tags
