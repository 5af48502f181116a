"""One step of data2vec 1.0 vision, this package against data2vec_vision's own BEiT engine (issue 22, item 5).

    python bench/beit_engine_parity.py            # exit 0 only if every check matches

Two sides, in the style of the fairseq oracle (shared/fairseq-oracle):

A (data2vec_vision's code, in its own venv: Python 3.8, torch 1.7.1 / torchvision 0.8.2 as its beit/requirements.txt
  pins, timm 0.4.12 (its pin, 0.3.2, cannot build its models: timm 0.3.2's create_model passes num_classes /
  in_chans, which VisionTransformerForCyclicalTraining does not take, and modeling_cyclical.py:215 has the
  `kwargs.pop("num_classes")` commented out; timm 0.4's create_model passes only the given arguments), numpy
  1.23.5 (masking_generator.py:80 uses np.int); run as a subprocess of this file with `--beit-side WORK`)
  * parses run_cyclical.get_args() on the README's data2vec ViT-B pretraining command, shrunk (below), builds the
    model with run_cyclical.get_model (modeling_cyclical.VisionTransformerForCyclicalTraining, registered here at a
    tiny size exactly as beit_base_patch16_224 is), the EMA with timm's ModelEmaV2 as run_cyclical.main does,
    randomises both (the EMA apart from the student, as in a trained checkpoint), and saves checkpoint-9.pth with
    utils.save_model (model + model_ema + args: checkpoint-799.pth's layout);
  * draws one batch from datasets.build_beit_pretraining_dataset (its augmentation and masking_generator's block
    mask) over a few random images, through run_cyclical's DistributedSampler / DataLoader;
  * runs engine_for_cyclical.train_one_epoch on that one batch with the arguments run_cyclical.main passes (AdamW
    from optim_factory.create_optimizer, the cosine lr / wd schedules at the first step after warmup, EMA at decay
    0.5), and records the loss, every student gradient (p.grad after the step; no clipping, see below), the grad
    norm, the student after the AdamW step and the EMA after the step; step.pth = that student + the pre-step EMA.
B (this Python, with the package)
  * `data2vec-convert checkpoint-9.pth`, AutoModelForPreTraining, our loss on the same pixels and the same mask,
    backward; loss (relative) and every gradient (BEiT names mapped through the converter's own rename table and
    q/v bias fusion, so a fused qkv.bias gradient is compared with cat(q_bias.grad, 0, v_bias.grad));
  * `data2vec-convert step.pth` (moved student + pre-step EMA), update_teacher() at decay 0.5, and every teacher
    tensor against ModelEmaV2's after its step.

The README command, shrunk: 64 px images of 8 px patches (an 8 x 8 grid), width 64, depth 4, 4 heads, batch 2;
--target_layers [2,3] (the top half, as [6..11] of 12); --num_mask_patches 39 / --min_mask_patches_per_block 5 /
--max_mask_patches_per_block 64 (120, 16, 196 of 196 scaled to 64); every other structural flag as the README
(--layer_scale_init_value 1e-4, --layer_results end, --l1_beta 2.0, --post_target_layer_norm, shared relative
position bias, no absolute positions, --imagenet_default_mean_and_std, --ema_start_at 0, --loss_scale -1,
--mask_dropout_prob -1, --var_w0 0). Changed: --drop_path 0 and --attn_drop_rate 0 (0.25 / 0.05 in the README:
random, so off on both sides); --ema_decay 0.5 (so one step moves the teacher visibly); --clip_grad left at its
default None (3.0 in the README) so p.grad is the raw gradient; --device cpu, --num_workers 0, --no_pin_mem.

What data2vec_vision's code needs on CPU, done from here without touching its source:
  * engine_for_cyclical.py:152 `torch.cuda.synchronize()` raises without a GPU: torch.cuda.synchronize is made a
    no-op (it only waits for CUDA kernels);
  * engine_for_cyclical.py:141 `loss_scaler.state_dict()["scale"]`: utils.NativeScalerWithGradNormCount's
    torch.cuda.amp.GradScaler disables itself without CUDA and its state_dict() is then {}: the scaler passed in is
    a subclass of theirs whose state_dict() alone answers {"scale": 1.0} when disabled (the scale a disabled scaler
    applies); scale / backward / unscale / grad norm / optimizer.step are theirs;
  * engine_for_cyclical.py:101 `torch.cuda.amp.autocast()` disables itself without CUDA (torch 1.7.1 warns): the
    step runs in fp32 with no change.

Environment: BEIT_SRC (default /tmp/d2v-vision-src, made from the data2vec_vision git mirror BEIT_MIRROR, default
/*/.mirror/facebookresearch+data2vec_vision/repo, if absent), BEIT_VENV (default /tmp/beit-venv, created with a
Python 3.8 and pip if absent: about a minute and 1 GB the first time).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOSS_RTOL = 1e-5
TOL = 1e-4
BEIT_REQS = ["torch==1.7.1", "torchvision==0.8.2", "timm==0.4.12", "numpy==1.23.5", "tensorboardX", "einops", "scipy",
             "Pillow", "requests", "attrs"]  # see the docstring; requests / attrs: its dall_e package imports them

IMAGE, PATCH, DIM, DEPTH, HEADS, BATCH = 64, 8, 64, 4, 4, 2
EPOCH = 10  # the first epoch after --warmup_epochs 10 (one step per epoch here): lr = the peak --lr
FLAGS = [  # beit/README.md's data2vec ViT-B pretraining command, shrunk (see the docstring)
    "--num_mask_patches", "39", "--model", "beit_tiny_patch8_64", "--input_size", str(IMAGE), "--seed", "0",
    "--target_layers", "[2,3]",
    "--ema_decay", "0.5", "--ema_start_at", "0", "--ema_decay_init", "0.999",
    "--batch_size", str(BATCH), "--lr", "2e-3", "--warmup_epochs", "10", "--epochs", "800",
    "--drop_path", "0.0", "--layer_scale_init_value", "1e-4",
    "--layer_results", "end", "--var_w0", "0.0", "--var_w1", "0.0",
    "--max_mask_patches_per_block", "64", "--min_mask_patches_per_block", "5",
    "--l1_beta=2.0", "--weight_decay", "0.05",
    "--imagenet_default_mean_and_std", "--loss_scale", "-1", "--mask_dropout_prob", "-1.0",
    "--post_target_layer_norm", "--attn_drop_rate", "0.0",
    "--device", "cpu", "--num_workers", "0", "--no_pin_mem",
]


# ==== side A: data2vec_vision's code (Python 3.8 venv) ===============================================================


def beit_side(work: str) -> None:
    beit = os.path.join(os.environ["BEIT_SRC"], "beit")
    sys.path[:] = [beit] + [p for p in sys.path if os.path.abspath(p or ".") != HERE]
    import warnings

    warnings.filterwarnings("ignore")
    import random
    from ast import literal_eval
    from functools import partial

    import numpy as np
    import torch
    import torch.nn as nn
    from PIL import Image
    from timm.models.registry import register_model
    from timm.utils import ModelEmaV2, get_state_dict

    import engine_for_cyclical
    import modeling_cyclical
    import modeling_finetune
    import run_cyclical
    import utils
    from datasets import build_beit_pretraining_dataset
    from optim_factory import create_optimizer

    torch.set_num_threads(1)

    @register_model
    def beit_tiny_patch8_64(pretrained=False, **kwargs):  # modeling_cyclical.beit_base_patch16_224, shrunk
        model = modeling_cyclical.VisionTransformerForCyclicalTraining(
            img_size=IMAGE, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, mlp_ratio=4,
            qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)
        model.default_cfg = modeling_finetune._cfg()
        return model

    images = os.path.join(work, "images", "class0")
    os.makedirs(images)
    rng = np.random.RandomState(0)
    for i in range(BATCH):
        Image.fromarray(rng.randint(0, 256, (80, 80, 3), dtype=np.uint8)).save(os.path.join(images, "%d.png" % i))
    sys.argv = ["run_cyclical.py", "--data_path", os.path.dirname(images), "--output_dir", work] + FLAGS
    args = run_cyclical.get_args()

    # ---- run_cyclical.main, up to the training loop ----
    utils.init_distributed_mode(args)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)  # (main leaves it unseeded: masking_generator draws from it)
    model = run_cyclical.get_model(args)
    patch_size = model.patch_embed.patch_size
    args.window_size = (args.input_size // patch_size[0], args.input_size // patch_size[1])
    args.patch_size = patch_size

    # random weights, well away from the init (layer scale 1e-4 would hide every block from the gradients)
    g = torch.Generator().manual_seed(1)

    def randomise(module, spread):
        with torch.no_grad():
            for name, p in module.named_parameters():
                if "gamma_" in name:
                    p.copy_(0.3 + 0.7 * torch.rand(p.shape, generator=g))
                elif name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
                    p.copy_(1 + spread * torch.randn(p.shape, generator=g))
                elif "relative_position_bias_table" in name or name in ("cls_token", "mask_token"):
                    p.copy_(0.5 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(spread * torch.randn(p.shape, generator=g))

    randomise(model, 0.1)

    dataset_train = build_beit_pretraining_dataset(args)
    num_tasks, global_rank = utils.get_world_size(), utils.get_rank()
    num_training_steps_per_epoch = len(dataset_train) // args.batch_size // num_tasks
    sampler_train = torch.utils.data.DistributedSampler(dataset_train, num_replicas=num_tasks, rank=global_rank,
                                                        shuffle=True)
    data_loader_train = torch.utils.data.DataLoader(dataset_train, sampler=sampler_train, batch_size=args.batch_size,
                                                    num_workers=args.num_workers, pin_memory=args.pin_mem,
                                                    drop_last=True)
    model.to(device)
    model_without_ddp = model
    model_ema = ModelEmaV2(model, decay=args.ema_decay)
    with torch.no_grad():  # a trained run's EMA is not the student
        for p in model_ema.module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    optimizer = create_optimizer(args, model_without_ddp)

    class NativeScaler(utils.NativeScalerWithGradNormCount):
        """Theirs; only state_dict() answers the scale a disabled (CPU) GradScaler applies, 1.0, where torch returns
        {} (engine_for_cyclical.py:141 reads ["scale"])."""

        def state_dict(self):
            return super().state_dict() if self._scaler.is_enabled() else {"scale": 1.0}

    loss_scaler = NativeScaler()
    lr_schedule_values = utils.cosine_scheduler(args.lr, args.min_lr, args.epochs, num_training_steps_per_epoch,
                                                warmup_epochs=args.warmup_epochs, warmup_steps=args.warmup_steps)
    if args.weight_decay_end is None:
        args.weight_decay_end = args.weight_decay
    wd_schedule_values = utils.cosine_scheduler(args.weight_decay, args.weight_decay_end, args.epochs,
                                                num_training_steps_per_epoch)
    target_layers = literal_eval(args.target_layers)

    # the checkpoint this step resumes from, written as run_cyclical writes checkpoint-799.pth
    utils.save_model(args=args, model=model, model_without_ddp=model_without_ddp, optimizer=optimizer,
                     loss_scaler=loss_scaler, epoch=EPOCH - 1, model_ema=model_ema)
    ema_before = {k: v.clone() for k, v in get_state_dict(model_ema).items()}

    (samples, bool_masked_pos), labels = next(iter(data_loader_train))
    batch = [((samples, bool_masked_pos), labels)]  # the one batch train_one_epoch iterates

    torch.cuda.synchronize = lambda *a, **k: None  # engine_for_cyclical.py:152 (no CUDA here)
    start = time.time()
    stats = engine_for_cyclical.train_one_epoch(  # run_cyclical.py:575-603's call
        model, model_ema, args.ema_start_at, args.ema_decay_init, args.ema_decay, target_layers, batch, optimizer,
        device, EPOCH, loss_scaler, args.clip_grad, l1_beta=args.l1_beta, log_writer=None,
        start_steps=EPOCH * num_training_steps_per_epoch, lr_schedule_values=lr_schedule_values,
        wd_schedule_values=wd_schedule_values, l2_loss=args.l2_loss, layer_results=args.layer_results,
        var_w0=args.var_w0, var_w1=args.var_w1, var_margin0=args.var_margin0, var_margin1=args.var_margin1,
        start_lr_decay_at_step=-1, loss_scale=args.loss_scale, mask_dropout_prob=args.mask_dropout_prob,
        target_layer_norm_last=not args.no_target_layer_norm_last, target_batch_norm=args.target_batch_norm,
        target_instance_norm=args.target_instance_norm, post_target_instance_norm=args.post_target_instance_norm,
        post_target_layer_norm=args.post_target_layer_norm)
    step_s = time.time() - start

    torch.save({"model": model_without_ddp.state_dict(), "model_ema": ema_before, "args": args, "epoch": EPOCH},
               os.path.join(work, "step.pth"))
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    torch.save({"pixel_values": samples, "bool_masked_pos": bool_masked_pos, "grads": grads,
                "teacher_after": {k: v.clone() for k, v in get_state_dict(model_ema).items()}},
               os.path.join(work, "ref.pt"))
    commit = os.path.join(os.environ["BEIT_SRC"], ".d2v-vision-commit")
    meta = {"loss": stats["loss"], "grad_norm": stats["grad_norm"], "cur_decay": stats["cur_decay"],
            "lr": stats["lr"], "weight_decay": stats["weight_decay"], "no_grad": no_grad, "step_s": step_s,
            "masked": [int(m.sum()) for m in bool_masked_pos], "torch": torch.__version__,
            "timm": __import__("timm").__version__, "python": sys.version.split()[0],
            "commit": open(commit).read().strip() if os.path.exists(commit) else "unknown"}
    with open(os.path.join(work, "meta.json"), "w") as f:
        json.dump(meta, f)


# ==== set-up ==========================================================================================================


def setup() -> tuple[str, str]:
    """(BEIT_SRC, the venv's python), making either if absent. Exits 1 naming what is missing."""
    src = os.environ.get("BEIT_SRC", "/tmp/d2v-vision-src")
    venv = os.environ.get("BEIT_VENV", "/tmp/beit-venv")
    if not os.path.isfile(os.path.join(src, "beit", "engine_for_cyclical.py")):
        mirror = os.environ.get("BEIT_MIRROR") or next(iter(sorted(
            glob.glob("/*/.mirror/facebookresearch+data2vec_vision/repo"))), "")
        if not mirror or subprocess.call(["git", "--git-dir", mirror, "rev-parse", "HEAD"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            sys.exit(f"beit-engine-parity: no data2vec_vision source at {src} and no git mirror (BEIT_MIRROR)")
        os.makedirs(src, exist_ok=True)
        archive = subprocess.Popen(["git", "--git-dir", mirror, "archive", "HEAD"], stdout=subprocess.PIPE)
        subprocess.check_call(["tar", "-x", "-C", src], stdin=archive.stdout)
        if archive.wait():
            sys.exit(f"beit-engine-parity: git archive of {mirror} failed")
        with open(os.path.join(src, ".d2v-vision-commit"), "w") as f:
            f.write(subprocess.check_output(["git", "--git-dir", mirror, "rev-parse", "HEAD"], text=True))
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".beit-reqs-" + "-".join(r.replace("==", "") for r in BEIT_REQS[:3]))
    if not os.path.exists(stamp):
        if not os.path.exists(py):
            candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8.*/bin/python")))
            base = subprocess.run(["sh", "-c", "command -v python3.8"], capture_output=True, text=True).stdout.strip()
            base = base or (candidates[-1] if candidates else "")
            if not base:
                sys.exit("beit-engine-parity: no Python 3.8 (torch 1.7.1, data2vec_vision's pin, has wheels up to "
                         "3.8 only); point BEIT_VENV at a venv that imports its beit code")
            subprocess.check_call([base, "-m", "venv", venv])
        print(f"beit-engine-parity: installing {' '.join(BEIT_REQS)} into {venv} (once)", flush=True)
        log = os.path.join(venv, ".pip.log")
        with open(log, "w") as f:
            if subprocess.call([py, "-m", "pip", "install", "-q", *BEIT_REQS], stdout=f, stderr=f):
                sys.exit(f"beit-engine-parity: pip install into {venv} failed (log: {log})")
        open(stamp, "w").close()
    return src, py


# ==== side B: this package ===========================================================================================


class Table:
    def __init__(self):
        self.rows, self.ok = [], True

    def add(self, check, diff, ref, tol, note="", self_test=False):
        """self_test: a deliberately wrong variant, which must exceed `tol` (verdict "caught")."""
        ok = diff > tol if self_test else diff <= tol
        self.ok &= ok
        verdict = ("caught" if ok else "NOT CAUGHT") if self_test else ("ok" if ok else "MISMATCH")
        self.rows.append((check, f"{diff:.2e}", f"{ref:.3e}", verdict + f" (tol {tol:g})", note))

    def print(self):
        head = ("check", "max|diff|", "|ref| max", "verdict", "")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(4)]
        for r in [head, *self.rows]:
            print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + ("  " + r[4] if r[4] else ""))


def convert(ckpt: str, folder: str) -> None:
    import contextlib
    import io

    from modeling_data2vec_unified import conversion_cli

    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            conversion_cli.main([ckpt, folder])
    except BaseException:
        print(log.getvalue()[-3000:])
        raise


def beit_to_ours(state: dict, student: bool) -> dict:
    """BEiT names -> ours, through the converter's own rename table and q/v bias fusion (tensors it drops: gone)."""
    from modeling_data2vec_unified.conversion_fairseq_v1 import _beit_rules, _fuse_beit_bias
    from modeling_data2vec_unified.conversion_fairseq import RenameTable

    mapped, _ = RenameTable(_beit_rules("data2vec." if student else "", student)).apply(state, "beit")
    return _fuse_beit_bias(mapped)


def compare(work: str, meta: dict) -> bool:
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    import torch
    import transformers
    from transformers import AutoModelForPreTraining

    transformers.utils.logging.disable_progress_bar()

    import modeling_data2vec_unified  # noqa: F401  (registers the "data2vec" model type)

    torch.set_num_threads(1)
    ref = torch.load(os.path.join(work, "ref.pt"), map_location="cpu", weights_only=False)
    table = Table()

    # ---- loss and gradients: checkpoint-9.pth converted, the same pixels and mask ----
    convert(os.path.join(work, f"checkpoint-{EPOCH - 1}.pth"), os.path.join(work, "conv"))
    pt = AutoModelForPreTraining.from_pretrained(os.path.join(work, "conv")).float().train()
    c = pt.config
    print(f"converted config: average_top_k_layers {c.average_top_k_layers}, target_layer_norm "
          f"{c.target_layer_norm!r}, target_final_norm {c.target_final_norm!r}, loss_beta {c.loss_beta}, "
          f"loss_reduction {c.loss_reduction!r}, loss_scale {c.loss_scale}, drop_path {c.drop_path_rate}, "
          f"attention dropout {c.attention_probs_dropout_prob}")
    mask = ref["bool_masked_pos"].flatten(1).bool()
    out = pt(pixel_values=ref["pixel_values"], bool_masked_pos=mask)
    out.loss.backward()
    ours_loss, their_loss = out.loss.item(), meta["loss"]
    table.add("loss (relative)", abs(ours_loss - their_loss) / abs(their_loss), abs(their_loss), LOSS_RTOL,
              f"ours {ours_loss:.8f}, data2vec_vision {their_loss:.8f}")

    theirs = beit_to_ours(ref["grads"], student=True)
    ours = {n: p.grad for n, p in pt.named_parameters() if p.requires_grad}
    missing = sorted(set(theirs) - set(ours))
    extra = sorted(n for n in set(ours) - set(theirs) if ours[n] is not None and ours[n].abs().max() > 0)
    worst, worst_name, scale, per = 0.0, "", 0.0, []
    for name, g in theirs.items():
        if name not in ours:
            continue
        mine = ours[name] if ours[name] is not None else torch.zeros_like(g)
        d = (mine - g).abs().max().item() if mine.shape == g.shape else float("inf")
        per.append((d, name, g.abs().max().item()))
        scale = max(scale, g.abs().max().item())
        if d > worst:
            worst, worst_name = d, name
    note = f"worst: {worst_name}"
    if missing or extra:
        note += f"; unmatched: theirs {missing[:3]}, ours {extra[:3]}"
    table.add(f"gradients ({len(ref['grads'])} BEiT params -> {len(per)} ours)",
              worst if not (missing or extra) else float("inf"), scale, TOL, note)
    ours_norm = torch.norm(torch.stack([g.norm() for g in ours.values() if g is not None])).item()
    table.add("grad norm (utils.get_grad_norm_)", abs(ours_norm - meta["grad_norm"]), meta["grad_norm"], TOL,
              f"ours {ours_norm:.6f}")

    # self-test: the same step with targets from one layer more (top 3) must be caught by the loss check
    with torch.no_grad():
        c.average_top_k_layers += 1
        wrong = pt(pixel_values=ref["pixel_values"], bool_masked_pos=mask).loss.item()
        c.average_top_k_layers -= 1
    table.add("self-test: targets of the top 3 layers", abs(wrong - their_loss) / abs(their_loss), abs(their_loss),
              LOSS_RTOL, f"ours {wrong:.8f}", self_test=True)

    # ---- one EMA step at decay 0.5: step.pth (the moved student, the pre-step EMA) converted ----
    convert(os.path.join(work, "step.pth"), os.path.join(work, "conv-step"))
    pt2 = AutoModelForPreTraining.from_pretrained(os.path.join(work, "conv-step")).float()
    pt2.teacher.decay_start = pt2.teacher.decay_end = 0.5
    used = pt2.update_teacher()
    after = pt2.teacher.model.state_dict()
    expect = beit_to_ours(ref["teacher_after"], student=False)
    missing = sorted(set(expect) - set(after))
    worst, worst_name, scale = 0.0, "", 0.0
    for name, t in expect.items():
        if name in after and t.is_floating_point():
            d = (after[name].float() - t).abs().max().item()
            scale = max(scale, t.abs().max().item())
            if d > worst:
                worst, worst_name = d, name
    not_in_ref = sorted(n for n, t in after.items() if t.is_floating_point() and n not in expect)
    note = f"decay used {used} (theirs {meta['cur_decay']}); worst: {worst_name}"
    if missing or not_in_ref:
        note += f"; unmatched: theirs {missing[:3]}, ours {not_in_ref[:3]}"
    table.add(f"teacher after one EMA step ({len(expect)} tensors)",
              worst if not missing and not not_in_ref and used == meta["cur_decay"] else float("inf"), scale, TOL,
              note)
    table.print()
    if not table.ok:
        print("per-parameter gradient diffs over the tolerance:")
        for d, name, s in sorted(per, reverse=True):
            if d > TOL:
                print(f"  {name}: {d:.2e} (|ref| max {s:.2e})")
    return table.ok


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--beit-side":
        beit_side(sys.argv[2])
        return 0
    import tempfile

    start = time.time()
    src, py = setup()
    work = tempfile.mkdtemp(prefix="beit-engine-parity.")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(BEIT_SRC=src, OMP_NUM_THREADS="1")
    run = subprocess.run([py, os.path.abspath(__file__), "--beit-side", work], env=env, capture_output=True,
                         text=True)
    if run.returncode:
        print((run.stdout + run.stderr)[-4000:])
        print("beit-engine-parity: data2vec_vision's side failed (above)")
        return 1
    with open(os.path.join(work, "meta.json")) as f:
        meta = json.load(f)
    print(f"data2vec_vision {meta['commit'][:12]} (Python {meta['python']}, torch {meta['torch']}, timm "
          f"{meta['timm']}): engine_for_cyclical.train_one_epoch, one step in {meta['step_s']:.2f} s; masked "
          f"{meta['masked']} of {(IMAGE // PATCH) ** 2} patches (masking_generator); lr {meta['lr']:g}, "
          f"wd {meta['weight_decay']:g}, EMA decay {meta['cur_decay']:g}; params without grad: {meta['no_grad']}")
    ok = compare(work, meta)
    if ok:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(f"beit-engine-parity: {'all match' if ok else 'MISMATCH'} ({time.time() - start:.1f} s"
          + ("" if ok else f"; work dir kept: {work}") + ")")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
