"""The fine-tuning examples run offline for a few steps on their built-in data (and on small local files), print the
eval line, and save a model that reloads with its Auto class and gives the logits of the model that was evaluated."""

import importlib.util
import re
import sys
import wave
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModelForAudioClassification,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

ROOT = Path(__file__).resolve().parents[1]
FEW_STEPS = ["--max_steps", "3", "--max_eval_examples", "16", "--per_device_train_batch_size", "8",
             "--per_device_eval_batch_size", "8", "--disable_tqdm", "true"]
SMALL = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,average_top_k_layers=2"
EXAMPLES = {  # name: (Auto model class, Auto processor class, extra flags)
    "image": (AutoModelForImageClassification, AutoImageProcessor, ["--config_overrides", SMALL]),
    "text": (AutoModelForSequenceClassification, AutoTokenizer, ["--config_overrides", SMALL,
                                                                 "--tokenizer_vocab_size", "300"]),
    "audio": (AutoModelForAudioClassification, AutoFeatureExtractor,
              ["--config_overrides", SMALL + ",conv_dim=[32,32,32,32,32,32],classifier_proj_size=16"]),
}
EVAL_LINE = re.compile(r"^eval accuracy (\d\.\d{4}) \((\d+) examples\)$", re.MULTILINE)


def load_example(name: str, monkeypatch):
    """examples/finetune_{name}_classification.py for the classification examples, else examples/finetune_{name}.py"""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # the examples import example_utils from their folder
    path = ROOT / "examples" / (f"finetune_{name}_classification.py" if name in EXAMPLES else f"finetune_{name}.py")
    spec = importlib.util.spec_from_file_location(f"finetune_{name}", path)
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, example)  # its dataclasses look their module up
    spec.loader.exec_module(example)
    return example


def run_example(name: str, argv: list[str], monkeypatch, capsys, eval_line: re.Pattern = EVAL_LINE):
    """Runs the example's main(argv); returns (its metrics, the printed eval line's match, its trainer)."""
    example = load_example(name, monkeypatch)
    trainers = []

    class Recorded(example.Data2VecTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    monkeypatch.setattr(example, "Data2VecTrainer", Recorded)
    result = example.main(argv)
    lines = eval_line.findall(capsys.readouterr().out)
    assert len(lines) == 1, "one final eval line"
    return result, lines[0], trainers[0]


def check_reload(trainer, auto_model, auto_processor, output_dir: Path, outputs: tuple[str, ...] = ("logits",)):
    """The saved model (and processor) reload with the Auto classes and give the evaluated model's `outputs` (for a
    classifier: logits (batch, num_labels)). Returns (the eval batch, the evaluated model's output, the reloaded
    processor)."""
    reloaded = auto_model.from_pretrained(output_dir).eval()
    assert type(reloaded) is type(trainer.model)
    assert reloaded.config.id2label == trainer.model.config.id2label
    processor = auto_processor.from_pretrained(output_dir)
    batch = next(iter(trainer.get_eval_dataloader()))  # through the Trainer's collator and column removal
    batch = {k: v for k, v in batch.items() if k not in ("labels", "start_positions", "end_positions")}
    trainer.model.eval()
    with torch.no_grad():
        expected, got = trainer.model(**batch), reloaded(**batch)
    if outputs == ("logits",) and expected.logits.ndim == 2:
        assert expected.logits.shape == (len(next(iter(batch.values()))), trainer.model.config.num_labels)
    for name in outputs:
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=1e-5, atol=1e-5)
    return batch, expected, processor


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_finetuning_example_builtin(name, tmp_path, monkeypatch, capsys, offline):
    auto_model, auto_processor, flags = EXAMPLES[name]
    result, (accuracy, count), trainer = run_example(name, ["--output_dir", str(tmp_path), *FEW_STEPS, *flags],
                                                     monkeypatch, capsys)
    assert int(count) == 16 and accuracy == f"{result['eval_accuracy']:.4f}"
    assert trainer.state.global_step == 3
    # the reported accuracy, recomputed from the model's predictions on the evaluation set
    prediction = trainer.predict(trainer.eval_dataset)
    assert len(prediction.label_ids) == 16
    assert result["eval_accuracy"] == pytest.approx((prediction.predictions.argmax(-1) == prediction.label_ids).mean())
    assert trainer.args.report_to in ("none", [], ["none"]) and trainer.args.remove_unused_columns
    check_reload(trainer, auto_model, auto_processor, tmp_path)


def _local_dataset(name: str, root: Path) -> list[str]:
    """A small local dataset of two classes and the flags that point the example at it."""
    rng = np.random.default_rng(0)
    if name == "image":  # an image folder: one subfolder per class
        for label, value in (("dark", 40), ("light", 200)):
            (root / label).mkdir(parents=True)
            for i in range(10):
                pixels = np.clip(value + rng.normal(0, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
                PIL.Image.fromarray(pixels).save(root / label / f"{i}.png")
        return ["--dataset", str(root), "--config_overrides", f"{SMALL},num_channels=3"]
    if name == "text":  # a csv file with class names as labels
        rows = [f'"the {w} number {i} is large",numbers' for i, w in enumerate(["first", "next"] * 8)]
        rows += [f'"open the file {i} and read its {w}",files' for i, w in enumerate(["lines", "bytes"] * 8)]
        (root / "texts.csv").parent.mkdir(parents=True)
        (root / "texts.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
        return ["--dataset", str(root / "texts.csv"), "--config_overrides", SMALL, "--tokenizer_vocab_size", "300"]
    for label, freq in (("low", 220), ("high", 1760)):  # an audio folder of 8 kHz wav files (resampled to 16 kHz)
        (root / label).mkdir(parents=True)
        for i in range(10):
            t = np.arange(int(8000 * rng.uniform(0.5, 1.0))) / 8000
            samples = (0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
            with wave.open(str(root / label / f"{i}.wav"), "wb") as f:
                f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000), f.writeframes(samples.tobytes())
    return ["--dataset", str(root), "--config_overrides", SMALL + ",conv_dim=[32,32,32,32,32,32]"]


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_finetuning_example_local_data(name, tmp_path, monkeypatch, capsys, caplog, offline):
    flags = _local_dataset(name, tmp_path / "data")
    argv = ["--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--per_device_train_batch_size", "4",
            "--disable_tqdm", "true", *flags]
    result, (_, count), trainer = run_example(name, argv, monkeypatch, capsys)
    if name == "image":  # 12x12 images into the fresh model's 16x16: said, with the flag that keeps them
        assert "the images (12x12 colour, the first) are changed to what the model takes: 16x16 colour" in caplog.text
        assert "--config_overrides image_size=12,num_channels=3" in caplog.text
    assert int(count) == len(trainer.eval_dataset) > 0
    assert trainer.model.config.num_labels == 2
    check_reload(trainer, *EXAMPLES[name][:2], tmp_path / "out")


def test_image_example_from_transformers_checkpoint(tmp_path, monkeypatch, capsys, offline):
    """A transformers Data2VecVision checkpoint (another geometry, a 4-class head) fine-tunes on the digits: its config
    is converted, the digits are resized to its 32x32 RGB input and the head is replaced by a 10-class one."""
    from conftest import tiny_transformers_model

    tiny_transformers_model("vision", "Data2VecVisionForImageClassification", num_labels=4).save_pretrained(
        tmp_path / "theirs")
    argv = ["--model_name_or_path", str(tmp_path / "theirs"), "--output_dir", str(tmp_path / "out"), *FEW_STEPS]
    _, (_, count), trainer = run_example("image", argv, monkeypatch, capsys)
    assert int(count) == 16 and trainer.model.config.num_labels == 10 and trainer.model.config.image_size == 32
    check_reload(trainer, AutoModelForImageClassification, AutoImageProcessor, tmp_path / "out")
