"""Loading transformers' Data2Vec* checkpoints: task-class checkpoints, the converter function and console
script, unknown weights and foreign checkpoints refused with an error that names them."""

import subprocess
import sys

import modeling_data2vec_unified as d2v
import pytest
import torch
import transformers
from modeling_data2vec_unified.conversion import example_inputs, max_output_difference
from modeling_data2vec_unified.conversion_cli import convert_checkpoint
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from conftest import tiny_transformers_model

TASK_CLASSES = {
    "text": "Data2VecTextForSequenceClassification",
    "vision": "Data2VecVisionForImageClassification",
    "audio": "Data2VecAudioForCTC",
}


def test_task_checkpoints_load_their_base_weights(modality, tmp_path):
    theirs = tiny_transformers_model(modality, TASK_CLASSES[modality])
    theirs.save_pretrained(tmp_path)
    ours = d2v.MODEL_CLASSES[modality].from_pretrained(tmp_path)
    base = getattr(theirs, f"data2vec_{modality}")
    assert max_output_difference(ours, base, example_inputs(ours.config)) <= 1e-4


def test_converter_function_writes_our_format(modality, tmp_path):
    tiny_transformers_model(modality).save_pretrained(tmp_path / "src")
    convert_checkpoint(tmp_path / "src", tmp_path / "dst")
    loaded = AutoModel.from_pretrained(tmp_path / "dst")
    assert type(loaded) is d2v.MODEL_CLASSES[modality]
    assert loaded.config.model_type == "data2vec"
    reference = transformers.AutoModel.from_pretrained(tmp_path / "src")
    assert max_output_difference(loaded, reference, example_inputs(loaded.config)) <= 1e-4


def test_converter_refuses_to_write_a_wrong_conversion(tmp_path, monkeypatch):
    tiny_transformers_model("text").save_pretrained(tmp_path / "src")
    from modeling_data2vec_unified import conversion

    real = conversion.convert_state_dict

    def swap_two_layers(modality, state_dict):
        ours, head = real(modality, state_dict)
        a, b = "encoder.layers.0.fc1.weight", "encoder.layers.1.fc1.weight"
        ours[a], ours[b] = ours[b], ours[a]
        return ours, head

    monkeypatch.setattr(conversion, "convert_state_dict", swap_two_layers)
    with pytest.raises(RuntimeError, match="differs from transformers"):
        convert_checkpoint(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


@pytest.mark.slow
def test_console_script(tmp_path):
    tiny_transformers_model("audio").save_pretrained(tmp_path / "src")
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "modeling_data2vec_unified.conversion_cli",
         str(tmp_path / "src"), str(tmp_path / "dst")],  # no runpy warning: the package does not import the module
        capture_output=True, text=True, check=True,
    )
    assert "wrote Data2VecAudioModel (audio)" in result.stdout
    assert type(AutoModel.from_pretrained(tmp_path / "dst")) is d2v.Data2VecAudioModel


def test_unknown_weight_is_an_error_naming_it(tmp_path):
    tiny_transformers_model("vision").save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["encoder.layer.0.attention.attention.rotary.weight"] = torch.zeros(3)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"encoder\.layer\.0\.attention\.attention\.rotary\.weight"):
        d2v.Data2VecVisionModel.from_pretrained(tmp_path)


def test_checkpoint_of_another_model_type_is_refused(tmp_path):
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                  vocab_size=99)
    transformers.BertModel(cfg).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="type 'bert', not a data2vec model"):
        d2v.Data2VecTextModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="type 'bert', not a data2vec model"):
        d2v.Data2VecModel.from_pretrained(tmp_path)


def test_transformers_checkpoint_of_another_modality_is_refused(tmp_path):
    tiny_transformers_model("audio").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is a audio checkpoint.*Data2VecAudioModel"):
        d2v.Data2VecTextModel.from_pretrained(tmp_path)
    assert type(d2v.Data2VecModel.from_pretrained(tmp_path)) is d2v.Data2VecAudioModel


def test_pytorch_bin_checkpoints_load(tmp_path):
    """Older Hub repos (e.g. facebook/data2vec-*) ship pytorch_model.bin only."""
    theirs = tiny_transformers_model("text")
    theirs.config.save_pretrained(tmp_path)
    torch.save(theirs.state_dict(), tmp_path / "pytorch_model.bin")
    ours = d2v.Data2VecTextModel.from_pretrained(tmp_path)
    assert max_output_difference(ours, theirs, example_inputs(ours.config)) <= 1e-4


def test_the_conversion_tables_do_not_import_the_models():
    """No import circle: the models import `conversion` (in from_pretrained), `conversion` imports none of the models,
    not even inside a function; `data2vec-convert` (conversion_cli) is the one place that needs both."""
    import ast
    from pathlib import Path

    import modeling_data2vec_unified.conversion as conversion

    tree = ast.parse(Path(conversion.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
    assert imported == {"configuration_data2vec", "checkpoint_files"}, imported


HEADS = [("text", "Data2VecTextForSequenceClassification", "AutoModelForSequenceClassification"),
         ("text", "Data2VecTextForTokenClassification", "AutoModelForTokenClassification"),
         ("text", "Data2VecTextForQuestionAnswering", "AutoModelForQuestionAnswering"),
         ("vision", "Data2VecVisionForImageClassification", "AutoModelForImageClassification"),
         ("audio", "Data2VecAudioForCTC", "AutoModelForCTC"),
         ("audio", "Data2VecAudioForSequenceClassification", "AutoModelForAudioClassification")]


@pytest.mark.parametrize("modality, cls_name, auto_name", HEADS)
def test_converter_keeps_a_task_checkpoints_head(tmp_path, modality, cls_name, auto_name):
    """A fine-tuned transformers checkpoint converts to our task class with its head (vision: the pooler norm too),
    and the Auto class of its task loads the result with the source's logits."""
    kw = {"num_labels": 3} if "Classification" in cls_name else {}
    if modality == "vision":
        kw["use_mean_pooling"] = True  # the pooler LayerNorm the new user saw dropped
    theirs = tiny_transformers_model(modality, cls_name, **kw).eval()
    theirs.save_pretrained(tmp_path / "src")
    convert_checkpoint(tmp_path / "src", tmp_path / "dst")
    loaded = getattr(transformers, auto_name).from_pretrained(tmp_path / "dst")
    assert loaded.config.model_type == "data2vec" and type(loaded).__module__.startswith("modeling_data2vec_unified")
    assert max_output_difference(loaded, theirs, example_inputs(loaded.config)) <= 1e-4
    with torch.no_grad():
        a, b = loaded(**example_inputs(loaded.config)), theirs(**example_inputs(loaded.config))
    name = "start_logits" if "QuestionAnswering" in cls_name else "logits"
    torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-4)


def test_converter_refuses_a_head_it_cannot_keep(tmp_path):
    tiny_transformers_model("text", "Data2VecTextForMaskedLM").save_pretrained(tmp_path / "src")
    with pytest.raises(ValueError, match="Data2VecTextForMaskedLM, whose head has no counterpart.*--encoder_only"):
        convert_checkpoint(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    convert_checkpoint(tmp_path / "src", tmp_path / "dst", encoder_only=True)
    assert type(AutoModel.from_pretrained(tmp_path / "dst")) is d2v.Data2VecTextModel


def test_transformers_checkpoints_reach_the_models_through_the_registered_conversion(tmp_path, monkeypatch):
    """The models do not import the conversion: `conversion` registers its loader in `checkpoint_files` (the package
    imports it). Without it (a folder saved with its code, without the package) the error names what to install."""
    from modeling_data2vec_unified import checkpoint_files
    from modeling_data2vec_unified.conversion import load_from_transformers

    assert checkpoint_files.TRANSFORMERS_LOADER["load"] is load_from_transformers
    tiny_transformers_model("text").save_pretrained(tmp_path)
    assert isinstance(d2v.Data2VecTextModel.from_pretrained(tmp_path), d2v.Data2VecTextModel)
    monkeypatch.setattr(checkpoint_files, "TRANSFORMERS_LOADER", {})
    with pytest.raises(ValueError, match=r"\(data2vec-text\): converting it needs the modeling_data2vec_unified"):
        d2v.Data2VecTextModel.from_pretrained(tmp_path)
