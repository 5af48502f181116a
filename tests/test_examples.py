"""The README's first command ends with examples/quickstart.py: it must run offline and report identical reloads."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_offline(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--output_dir", str(tmp_path)],
        capture_output=True, text=True, check=True, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    lines = [line for line in result.stdout.splitlines() if "identical outputs" in line]
    assert len(lines) == 3 and all(line.endswith("identical outputs: True") for line in lines)
    for modality in ("vision", "text", "audio"):
        assert (tmp_path / modality / "model.safetensors").exists()
