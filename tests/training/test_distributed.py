"""Two CPU processes (torch's launcher, gloo): losses synchronised, the teacher identical on every rank (never
DDP-wrapped, updated from identical students), and a resumed 2-process run equal to an uninterrupted one.

`accelerate launch --cpu --num_processes 2` starts one process on this machine (it wants MPI for MULTI_CPU);
`python -m torch.distributed.run` gives the environment `Accelerator()` reads."""

import pytest

from run_helpers import assert_same, launch, load


@pytest.mark.slow
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
