"""One training step of the package against fairseq's OWN data2vec code: the loss, the gradient of every student
parameter, and every teacher weight after one EMA step, for data2vec 1.0 and 2.0, every modality, fp32.

    python bench/fairseq_parity.py                      # image2 speech2 text2 speech1 text1
    python bench/fairseq_parity.py image2 speech1       # some kinds (also image2-large, speech2-large)

Not CI (CI has no fairseq): it needs the fairseq oracle of this workplace, ../shared/fairseq-oracle (FAIRSEQ_ORACLE
overrides the path). Its `setup.sh` makes the Python 3.10 venv that imports fairseq's data2vec code and its
`build_fairseq.py` builds the small models from the released recipes' yamls; this script reuses both and adds the
backward pass. Two sides:

fairseq side (run in that venv, `--fairseq-side WORK KIND...`), per kind: the model built from the recipe (shrunk),
  weights randomised and "trained" with fairseq's EMA as the oracle does, saved as a release-style checkpoint
  (`KIND.pt`, fp16 student + fp32 `_ema`), reloaded by fairseq (fp32, eval: no dropout or layer drop); one training
  forward with fairseq's own masks (2.0: mask noise 0 on both sides), `sum(losses) / sample_size` (ModelCriterion sums
  the losses, the trainer divides the gradients by sample_size) and its backward: every student gradient
  (`KIND.grad.pt`). Then continued pretraining's EMA step: the student moved, `KIND-step.pt` written before the step,
  fairseq's EMAModule step at decay 0.5 (skip_keys copied, the rest averaged), `KIND-stepped.pt` written after it.
package side (this Python): `data2vec-convert KIND.pt`, AutoModelForPreTraining, the same batch and masks, our loss and
  its backward. fairseq's gradients are mapped onto our parameter names by the converter itself (a checkpoint whose
  trainable tensors are fairseq's gradients, converted: renames, q/k/v fusion and slicing are linear, so they map
  gradients as they map weights). The EMA step: `KIND-step.pt` converted, one `update_teacher()` at decay 0.5, every
  teacher weight against the converted `_ema` of `KIND-stepped.pt`.

Prints one row per check; exits 1 if any is outside the tolerance (loss 1e-5 relative, gradients and teacher weights
1e-4 absolute). The table it printed is in docs/fidelity.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ORACLE = os.environ.get("FAIRSEQ_ORACLE", os.path.join(HERE, "..", "..", "shared", "fairseq-oracle"))
KINDS = ["image2", "speech2", "text2", "speech1", "text1"]
EXTRA_KINDS = ["image2-large", "speech2-large"]
# the training forward whose gradients are compared: unpadded where fairseq's padded batches differ by design
# (documented in docs/checkpoints.md: 2.0 masks and losses count padding; 1.0 speech targets are instance-normed over
# padded frames), the padded text 1.0 batch (its loss matches on padded batches)
GRAD_TAG = {"image2": "main", "speech2": "nopad", "text2": "nopad", "speech1": "nopad", "text1": "pad"}
LOSS_RTOL, GRAD_ATOL, TEACHER_ATOL = 1e-5, 1e-4, 1e-4


def family(kind: str) -> str:
    return kind.split("-")[0]


# ---- the fairseq side (Python 3.10 venv, fairseq's source on sys.path) ------------------------------------------------


def fairseq_side(work: str, kinds: list[str]) -> None:
    import numpy as np

    sys.path.insert(0, ORACLE)
    import build_fairseq as bf  # the oracle's builder: recipes, randomised weights, fairseq's masks and losses
    from fairseq import checkpoint_utils

    for kind in kinds:
        torch.manual_seed(0)
        np.random.seed(0)
        gen = torch.Generator().manual_seed(1234)
        data_dir = os.path.join(work, f"{kind}-data")
        os.makedirs(data_dir, exist_ok=True)
        cfg = bf.compose(kind, data_dir)
        fam = family(kind)
        task = bf.make_task(fam, cfg, data_dir)
        model = bf.build(fam, cfg, task)
        bf.simulate_training(fam, model, gen)
        ckpt = os.path.join(work, f"{kind}.pt")
        checkpoint_utils.torch_persistent_save(bf.checkpoint_dict(cfg, model), ckpt)
        model = bf.load_back(fam, ckpt, task)
        inputs = bf.make_inputs(fam, cfg, task, gen)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        model.zero_grad(set_to_none=True)
        # the oracle's training forward (fairseq's masks, make_targets, losses) with autograd on
        rec = bf.teacher_reference.__wrapped__(fam, model, inputs, gen, cfg.task)
        tag = GRAD_TAG[fam]
        losses = [v for k, v in rec.items() if k.startswith(f"loss.{tag}.") and not k.endswith(".sample_size")]
        loss = sum(losses) / rec[f"loss.{tag}.sample_size"]
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"tag": tag, "loss": float(loss), "mask": rec[f"teacher.{tag}.mask"], "grads": grads,
                    "trainable": trainable, "inputs": inputs}, os.path.join(work, f"{kind}.grad.pt"))
        model.zero_grad(set_to_none=True)
        with torch.no_grad():  # writes KIND-step.pt (before the step), then steps fairseq's EMA at decay 0.5
            bf.ema_step_reference(fam, model, cfg, inputs, gen, work, name=kind)
        checkpoint_utils.torch_persistent_save(bf.checkpoint_dict(cfg, model), os.path.join(work, f"{kind}-stepped.pt"))
        print(f"{kind}: fairseq loss {float(loss):.6f}, {len(grads)} gradients of {len(trainable)} trainable "
              "parameters; EMA step written", flush=True)


# ---- the package side ---------------------------------------------------------------------------------------------------


def _quiet(fn, *args):
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            return fn(*args)
    except BaseException:
        print(log.getvalue()[-3000:])
        raise


def _batch(fam: str, tag: str, inputs: dict) -> dict:
    if fam == "image2":
        return {"pixel_values": inputs["pixels"]}
    if fam.startswith("speech"):
        if tag == "nopad":
            return {"input_values": inputs["wav_nopad"]}
        return {"input_values": inputs["wav"], "attention_mask": (~inputs["wav_padding"]).long()}
    if tag == "nopad":
        return {"input_ids": inputs["tokens_nopad"]}
    return {"input_ids": inputs["tokens"], "attention_mask": (~inputs["tokens_padding"]).long()}


class Table:
    def __init__(self):
        self.rows, self.bad = [], []

    def add(self, kind, check, diff, scale, tol, where=""):
        ok = diff <= tol
        self.rows.append((kind, check, diff, scale, ok, where))
        if not ok:
            self.bad.append(f"{kind} {check}")

    def print(self):
        print("| kind | check | max abs diff (loss: rel) | scale (max abs fairseq) | verdict | worst |")
        print("|---|---|---|---|---|---|")
        for kind, check, diff, scale, ok, where in self.rows:
            print(f"| {kind} | {check} | {diff:.1e} | {scale:.3g} | {'ok' if ok else 'MISMATCH'} | {where} |")


def _gradients_as_weights(checkpoint: dict, ref: dict, key: str) -> dict:
    """The checkpoint with each trainable tensor of `checkpoint[key]` replaced by fairseq's gradient (zeros where it
    got none), fp32; the rest (buffers, fixed positions, the `_ema` teacher) unchanged."""
    state = dict(checkpoint[key])
    for name in ref["trainable"]:
        state[name] = ref["grads"].get(name, torch.zeros_like(state[name], dtype=torch.float32)).float()
    return {**checkpoint, key: state}


def package_side(work: str, kinds: list[str], table: Table) -> None:
    from transformers import AutoModelForPreTraining
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from modeling_data2vec_unified import conversion_cli
    from modeling_data2vec_unified.conversion_fairseq import convert_fairseq_checkpoint, load_checkpoint

    for kind in kinds:
        fam = family(kind)
        ref = torch.load(os.path.join(work, f"{kind}.grad.pt"))
        folder = os.path.join(work, f"conv-{kind}")
        _quiet(conversion_cli.main, [os.path.join(work, f"{kind}.pt"), folder])
        pt = AutoModelForPreTraining.from_pretrained(folder).float().eval()
        if pt.config.algorithm == "data2vec2":
            pt.config.mask_noise_std = 0.0  # fairseq's side ran with mask_noise_std 0
        key = "mask_time_indices" if fam.startswith("speech") else "bool_masked_pos"
        out = pt(**_batch(fam, ref["tag"], ref["inputs"]), **{key: ref["mask"]})
        out.loss.backward()
        rel = abs(out.loss.item() - ref["loss"]) / abs(ref["loss"])
        table.add(kind, f"loss [{ref['tag']}] ours {out.loss.item():.6f} fairseq {ref['loss']:.6f}", rel,
                  abs(ref["loss"]), LOSS_RTOL)

        # fairseq's gradients on our names, through the converter
        checkpoint = load_checkpoint(os.path.join(work, f"{kind}.pt"))
        theirs = _quiet(convert_fairseq_checkpoint, _gradients_as_weights(checkpoint, ref, "model")).state_dict
        ours = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in pt.named_parameters()}
        common = sorted(ours.keys() & theirs.keys())
        worst, worst_name, scale = 0.0, "", 0.0
        for name in common:
            d = (ours[name] - theirs[name]).abs().max().item()
            scale = max(scale, theirs[name].abs().max().item())
            if d > worst:
                worst, worst_name = d, name
        table.add(kind, f"gradients of {len(common)} student parameters", worst, scale, GRAD_ATOL, worst_name)
        only_ours = [n for n in ours.keys() - theirs.keys() if ours[n].abs().max() > 0]
        if only_ours:  # a trained parameter of ours fairseq does not have
            table.add(kind, f"parameters only ours trains: {', '.join(sorted(only_ours)[:4])}", float("inf"), 0.0,
                      GRAD_ATOL)

        # one EMA step of continued pretraining
        _quiet(conversion_cli.main, [os.path.join(work, f"{kind}-step.pt"), folder + "-step"])
        stepped = AutoModelForPreTraining.from_pretrained(folder + "-step").float().eval()
        teacher = stepped.teacher
        teacher.decay_start = teacher.decay_end = 0.5
        stepped.update_teacher()
        want = _quiet(convert_fairseq_checkpoint, os.path.join(work, f"{kind}-stepped.pt")).teacher
        got = teacher.model.state_dict()
        names = sorted(want)
        missing = [n for n in names if n not in got]
        worst, worst_name, scale = 0.0, "", 0.0
        for name in names:
            if name in got:
                d = (got[name].float() - want[name].float()).abs().max().item()
                scale = max(scale, want[name].float().abs().max().item())
                if d > worst:
                    worst, worst_name = d, name
        table.add(kind, f"teacher after one EMA step at 0.5: {len(names) - len(missing)} weights", worst, scale,
                  TEACHER_ATOL, worst_name)
        if missing:
            table.add(kind, f"teacher weights we lack: {', '.join(missing[:4])}", float("inf"), 0.0, TEACHER_ATOL)
        print(f"{kind}: compared", flush=True)


def fairseq_python() -> tuple[str, str]:
    """(the venv's python, fairseq's source) from the oracle's setup.sh (which builds them the first time)."""
    setup = os.path.join(ORACLE, "setup.sh")
    if not os.path.exists(setup):
        raise SystemExit(f"the fairseq oracle is not at {ORACLE}: set FAIRSEQ_ORACLE to its folder")
    out = subprocess.run(["bash", "-c", f'. "{setup}" >&2 && echo "$FS_PY" && echo "$FAIRSEQ_SRC"'],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:] + "\nfairseq side unavailable (see above)")
    fs_py, src = out.stdout.split()[-2:]
    return fs_py, src


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kinds", nargs="*", default=KINDS, help=f"of {KINDS + EXTRA_KINDS}")
    parser.add_argument("--fairseq-side", metavar="WORK", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [k for k in args.kinds if k not in KINDS + EXTRA_KINDS]
    if unknown:
        parser.error(f"unknown kinds {unknown}: choose from {KINDS + EXTRA_KINDS}")
    if args.fairseq_side:
        fairseq_side(args.fairseq_side, args.kinds)
        return 0
    fs_py, src = fairseq_python()
    with tempfile.TemporaryDirectory(prefix="fairseq-parity.") as work:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PYTHONPATH=src, FAIRSEQ_SRC=src, OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"))
        side = subprocess.run([fs_py, "-W", "ignore", os.path.abspath(__file__), "--fairseq-side", work, *args.kinds],
                              cwd=src, env=env, capture_output=True, text=True)
        print("\n".join(line for line in side.stdout.splitlines() if line.strip()))
        if side.returncode:
            print(side.stderr[-4000:])
            print("fairseq side failed")
            return 1
        table = Table()
        package_side(work, args.kinds, table)
        table.print()
        print("fairseq-parity: " + ("all match" if not table.bad else "MISMATCH in " + "; ".join(table.bad)))
        return 1 if table.bad else 0


if __name__ == "__main__":
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    sys.exit(main())
