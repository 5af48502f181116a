"""The label-free representation health check (`monitor`): its measures against closed-form values, and the collapse
a new user met (steady tones and chirps, the default audio recipe) flagged during the run, with what to try."""

import json
import logging

import numpy as np
import pytest
import torch
from modeling_data2vec_unified.monitor import collapsed, effective_rank, pooled_spread
from modeling_data2vec_unified.trainer import cli

QUICK = ["--report_to", "none", "--disable_tqdm"]


def test_effective_rank_counts_the_directions_examples_differ_in():
    """RankMe of centred features, in closed form: 8 examples spread along r orthogonal directions with equal weight
    (rows of a Hadamard matrix: zero-mean, orthogonal) give exactly r; weights 2 : 1 give exp of the entropy of
    (2/3, 1/3); every example the same gives 0."""
    from scipy.linalg import hadamard

    H = torch.tensor(hadamard(8), dtype=torch.float64)[1:]  # 7 zero-mean, mutually orthogonal sign patterns
    basis = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    for r in (1, 3, 7):
        x = H[:r].T @ basis[:r] + 5.0  # (8, 16); the offset is what centring removes
        assert effective_rank(x) == pytest.approx(r, rel=1e-9)
    x = torch.stack([2 * H[0], H[1]]).T @ basis[:2]
    assert effective_rank(x) == pytest.approx(np.exp(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))), rel=1e-9)
    same = torch.randn(1, 16, generator=torch.Generator().manual_seed(1)).repeat(32, 1)
    assert effective_rank(same) == 0.0 and pooled_spread(same) == pytest.approx(0.0, abs=1e-7)


def test_pooled_spread_and_the_collapse_rule():
    x = torch.tensor([[0.0, 2.0], [2.0, 6.0]])
    assert pooled_spread(x) == pytest.approx((1.0 + 2.0) / 2)  # biased std per channel, averaged
    start = {"front_end_spread": 1.0, "front_end_rank": 20.0, "student_spread": 1.0, "student_rank": 20.0,
             "teacher_spread": 0.01, "teacher_rank": 20.0}
    now = {**start, "student_spread": 0.19, "student_rank": 3.0}
    assert len(collapsed(now, start)) == 1 and collapsed(now, start)[0].startswith("student (pooled spread 0.19, 19%")
    assert collapsed({**start, "student_spread": 0.21}, start) == []


def steady_sounds(folder, clips=100):
    """Steady tones and chirps in class folders, as the new user's set: 5 of the synthesised sound classes."""
    import soundfile
    from modeling_data2vec_unified.data import SOUND_CLASSES, synthesize_sounds

    waves, labels = synthesize_sounds(clips * 8 // 5 + 8, 16000, seed=5)
    keep = ("sine", "sawtooth", "whistle", "rising chirp", "falling chirp")
    count = 0
    for i, (wave, label) in enumerate(zip(waves, labels)):
        name = SOUND_CLASSES[int(label)]
        if name in keep and count < clips:
            (folder / name.replace(" ", "_")).mkdir(parents=True, exist_ok=True)
            soundfile.write(folder / name.replace(" ", "_") / f"{i}.wav", wave.astype(np.float32), 16000)
            count += 1
    return folder


@pytest.mark.slow
def test_the_steady_sounds_collapse_is_flagged_during_the_run(tmp_path, caplog):
    """The default audio run on 100 steady tones / chirps: the front end's and the student's pooled features become
    alike across clips within 30 steps (measured 2026-12-08: 12% and 10% of their spread at the start, effective
    rank 30 -> 15 / 13), which target_var / pred_var do not show; the check warns at its first look, naming what
    collapsed and the settings to try, and logs the health measures where curves.png reads them."""
    data = steady_sounds(tmp_path / "tones")
    with caplog.at_level(logging.WARNING, logger="modeling_data2vec_unified.trainer"):
        cli(["--modality", "audio", "--dataset", str(data), "--output_dir", str(tmp_path / "run"), "--max_steps", "30",
             "--monitor_steps", "30", "--logging_steps", "10", "--no_probe", "--save_steps", "100", *QUICK])
    warnings = [r.getMessage() for r in caplog.records if "collapse:" in r.getMessage()]
    assert len(warnings) == 1 and "step 30" in warnings[0], warnings
    assert "front end (pooled spread" in warnings[0] and "teacher_scope=model" in warnings[0]
    curves = json.loads((tmp_path / "run" / "curves.json").read_text())
    health = curves["health"]  # the start (step 0) and the check
    assert health["step"] == [0, 30] and health["front_end_spread_vs_start"][0] == 1.0
    assert health["front_end_spread_vs_start"][1] < 0.2 and health["front_end_rank"][1] < health["front_end_rank"][0]


def test_an_unlabelled_run_says_why_it_has_no_probe_and_still_gets_the_health_curves(tmp_path, capsys):
    import random

    rng = random.Random(0)
    words = ["data", "vector", "teacher", "student", "mask", "token", "layer", "target", "average", "norm"]
    (tmp_path / "notes.txt").write_text("\n".join(" ".join(rng.choices(words, k=40)) for _ in range(200)))
    cli(["--modality", "text", "--dataset", str(tmp_path / "notes.txt"), "--output_dir", str(tmp_path / "run"),
         "--max_steps", "4", "--max_seq_length", "32", "--per_device_train_batch_size", "8", "--logging_steps", "2",
         "--save_steps", "10", *QUICK])
    assert "no linear probe: the data has no labels" in capsys.readouterr().err
    assert not (tmp_path / "run" / "probe.json").exists()
    health = json.loads((tmp_path / "run" / "curves.json").read_text())["health"]
    assert health["step"] == [0, 2, 4] and all(r > 1 for r in health["student_rank"])
