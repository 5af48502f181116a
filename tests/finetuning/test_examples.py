"""The examples run offline: the quickstart (identical reloads) and the per-modality pretraining scripts, each for a
few steps on its built-in data, ending with the trained model in use."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_runs_offline(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--output_dir", str(tmp_path)],
        capture_output=True, text=True, check=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    lines = [line for line in result.stdout.splitlines() if "identical outputs" in line]
    assert len(lines) == 3 and all(line.endswith("identical outputs: True") for line in lines)
    for modality in ("vision", "text", "audio"):
        assert (tmp_path / modality / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("modality,expect", [
    ("vision", "Data2VecVisionModel: one image -> features (1, 32)"),
    ("text", "Data2VecTextModel: 2 sentences -> embeddings (2, 32)"),
    ("audio", "Data2VecAudioModel: 1 s of audio -> (1, 99, 32) frame features"),
])
def test_pretraining_example_runs(tmp_path, capsys, modality, expect):
    spec = importlib.util.spec_from_file_location(f"pretrain_{modality}", ROOT / "examples" / f"pretrain_{modality}.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    small = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,average_top_k_layers=2"
    example.main(["--output_dir", str(tmp_path), "--max_steps", "3", "--max_examples", "64",
                  "--per_device_train_batch_size", "8", "--report_to", "none", "--disable_tqdm", "--no_probe",
                  "--config_overrides", small])
    assert expect in capsys.readouterr().out
    # the 3 steps trained the saved weights (not the run's initial ones) and were logged where curves.png reads them
    import modeling_data2vec_unified as d2v
    import torch
    from transformers import AutoModel, set_seed

    trained = AutoModel.from_pretrained(tmp_path)
    set_seed(0)  # the run's seed: its initial weights
    initial = d2v.Data2VecForPreTraining(trained.config).data2vec
    moved = [k for k, v in initial.state_dict().items() if not torch.allclose(v, trained.state_dict()[k], atol=1e-5)]
    assert len(moved) > len(initial.state_dict()) // 2, moved
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert curves["step"][-1] == 3 and all(0 < x < 1e3 for x in curves["loss"])
