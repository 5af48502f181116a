"""Two CPU processes (torch's launcher, gloo): losses synchronised, the teacher identical on every rank (never
DDP-wrapped, updated from identical students), and a resumed 2-process run equal to an uninterrupted one.

`accelerate launch --cpu --num_processes 2` starts one process on this machine (it wants MPI for MULTI_CPU);
`python -m torch.distributed.run` gives the environment `Accelerator()` reads."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

WORKER = textwrap.dedent('''
    import json, sys
    import torch
    import modeling_data2vec_unified as d2v
    from modeling_data2vec_unified.data import PretrainingData
    from modeling_data2vec_unified.trainer import Data2VecPretrainer, PretrainingArguments

    out, stop, resume, algorithm = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume", sys.argv[4]
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    examples = [{"input_ids": [0, *torch.randint(3, 97, (int(k),), generator=g).tolist(), 2]}
                for k in torch.randint(8, 20, (32,), generator=g)]
    config = d2v.Data2VecConfig(modality="text", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, average_top_k_layers=2, vocab_size=99,
                                max_position_embeddings=40, ema_decay=0.9, ema_end_decay=0.99,
                                ema_anneal_end_step=6, algorithm=algorithm,
                                **(dict(clone_batch=2, decoder_dim=32, decoder_layers=1, decoder_groups=4)
                                   if algorithm == "data2vec2" else {}))
    args = PretrainingArguments(modality="text", output_dir=out, max_steps=6, per_device_train_batch_size=4,
                                learning_rate=1e-3, logging_steps=1, save_steps=3, report_to="none",
                                disable_tqdm=True, probe=False, cpu=True, collapse_check_after=1000,
                                resume_from_checkpoint="latest" if resume else None)
    torch.manual_seed(0)  # the same initial weights in every launch
    trainer = Data2VecPretrainer(args, model=d2v.Data2VecForPreTraining(config),
                                 data=PretrainingData(examples, None, {}, None, "tiny"))
    trainer.train(stop_at_step=stop)
    rank = trainer.accelerator.process_index
    assert trainer.accelerator.num_processes == 2
    model = trainer.unwrapped
    torch.save({"teacher": model.teacher.state_dict(), "student": model.state_dict()}, f"{out}/rank{rank}.pt")
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"history": trainer.log_history}, f)
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path: Path, out: Path, stop: int, resume: bool = False, algorithm: str = "data2vec") -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(script), str(out), str(stop), "resume" if resume else "fresh", algorithm]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def load(out: Path, rank: int):
    return json.loads((out / f"rank{rank}.json").read_text()), torch.load(out / f"rank{rank}.pt")


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k


def test_two_processes_sync_and_resume(tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    launch(tmp_path, full, stop=6)
    (log0, w0), (log1, w1) = load(full, 0), load(full, 1)
    # the logged loss is the mean over both processes: the same number on each rank, every step
    assert [h["loss"] for h in log0["history"]] == [h["loss"] for h in log1["history"]]
    assert len(log0["history"]) == 6
    # DDP kept the students identical; the teachers, updated from them, are identical too
    assert_same(w0["student"], w1["student"])
    assert_same(w0["teacher"], w1["teacher"])
    assert w0["teacher"]["_extra_state"]["num_updates"] == 6
    # stop at 3, resume to 6 with two processes: same losses, same weights
    launch(tmp_path, split, stop=3)
    first = load(split, 0)[0]["history"]
    launch(tmp_path, split, stop=6, resume=True)
    second, ws = load(split, 0)
    # the resumed run's history starts with the checkpoint's
    assert [h["loss"] for h in first] == [h["loss"] for h in log0["history"][:3]]
    assert [h["loss"] for h in second["history"]] == [h["loss"] for h in log0["history"]]
    assert_same(ws["student"], w0["student"])
    assert_same(ws["teacher"], w0["teacher"])
