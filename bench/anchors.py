"""data2vec against the method a user would pick instead, side by side on the built-in data (issue 23, item 1).

    OMP_NUM_THREADS=2 python bench/anchors.py --modality text                 # 1x the default steps
    OMP_NUM_THREADS=2 python bench/anchors.py --modality text --scales 1,5    # and 5x
    OMP_NUM_THREADS=2 python bench/anchors.py --modality text --methods data2vec,anchor --seed 1
    OMP_NUM_THREADS=2 python bench/anchors.py --modality vision               # against MAE
    OMP_NUM_THREADS=2 python bench/anchors.py --modality audio                # against wav2vec 2.0
    OMP_NUM_THREADS=2 python bench/anchors.py --modality vision --methods anchor --runs_dir runs/anchors \
        --anchor_steps 2400 --anchor_lr 1e-3 --anchor_beta2 0.95 --anchor_weight_decay 0.05   # a tuned MAE

Per modality and step budget (the default run's steps times each `--scales` factor), three pretraining runs on the
same data, with the same encoder size (hidden size, layers, heads, FFN), the same tokenizer, batch, steps, optimiser
(AdamW, betas, eps, weight decay, clipping), learning-rate schedule and seed:

- data2vec 1.0 and data2vec 2.0: `data2vec-pretrain --modality M [--algorithm data2vec2] --max_steps N`, through
  `bench/time_to_quality.run` (the periodic probe on all the probe's examples);
- the anchor (`ANCHORS`), from transformers as a user would call it. Text: `RobertaForMaskedLM` trained with
  `DataCollatorForLanguageModeling` (15% of the tokens, BERT's 80/10/10), on the 1.0 run's token blocks and
  tokenizer, with the 1.0 text recipe's optimiser and schedule (`trainer.OPTIMIZER_DEFAULTS`, `TRAINING_DEFAULTS`)
  and its dropout. Vision: `ViTMAEForPreTraining` (75% of the patches removed, normalised-pixel loss, a 2-layer decoder
  as wide as the encoder) on the same digits with the same augmentation, with the tiny vision recipe's optimiser.
  Audio: `Wav2Vec2ForPreTraining` (contrastive, Gumbel quantizer) with the data2vec run's conv front end, encoder,
  crops and span masks (`AudioWav2Vec2`). Every method gets the data2vec 1.0 default run's steps (vision: 1680, where
  2.0's own default is 800); `--anchor_steps` / `--anchor_lr` / `--anchor_beta2` / `--anchor_weight_decay` give the
  anchor its own budget and recipe instead (a tuned anchor, e.g. at equal wall-clock), and a data2vec 1.0 reference
  kept in `--runs_dir` is reused.

Every model is probed with the package's probe (`probe.pool` + `probe.probe_accuracy`: the mean of the top 2
layers, pooled as `probe.POOLING` says, logistic regression on the same train / held-out examples) at its initial
weights and every `steps / --probes` steps; time is training wall-clock, probes not counted. Printed: a table per
budget (final probe, best probe, random init, training seconds) and one PNG per modality of probe accuracy against
training seconds for every method and budget, with each method's random init and the raw-input probe as lines
(`--plot`, the points in the .json next to it).

Fine-tune scores (`--finetune_epochs`, default 10; 0 skips them): each pretrained model and its own initial weights
(same architecture, same seed) fine-tuned the same way, all weights, with a linear head on the probe's pooled
features, on the probe's training examples (`finetune`, `FINETUNE`), scored on its held-out ones.
"""

from __future__ import annotations

import abc
import argparse
import copy
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import time_to_quality as ttq  # noqa: E402

from modeling_data2vec_unified import trainer  # noqa: E402
from modeling_data2vec_unified.training import evaluation  # noqa: E402
from modeling_data2vec_unified.configuration_data2vec import Data2VecConfig  # noqa: E402
from modeling_data2vec_unified.data import load_pretraining_data  # noqa: E402
from modeling_data2vec_unified.optimization import parameter_groups  # noqa: E402
from modeling_data2vec_unified.probe import POOLING, RAW_FEATURES, pool, probe_accuracy  # noqa: E402

METHODS = ("data2vec", "data2vec2", "anchor")


# ---- the anchors: what a user would train instead, from transformers -------------------------------------------------


class Anchor(abc.ABC):
    """A pretraining method from transformers: `model` (what is trained), `collate` / `loss` (one step), `encoder`
    and `encode` (the top 2 layers' mean and the real positions, with gradients: the probe's and the fine-tune's
    input)."""

    model: torch.nn.Module
    encoder: torch.nn.Module

    @abc.abstractmethod
    def encode(self, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden (B, T, D), real (B, T)) of `examples`, with gradients."""

    @torch.no_grad()
    def features(self, examples: list[dict], pooling: str, batch_size: int = 64) -> np.ndarray:
        """The probe's features: `encode` in eval mode, pooled over the real positions."""
        was = self.model.training
        self.model.eval()
        try:
            return np.concatenate([pool(*(x.float() for x in self.encode(examples[i : i + batch_size])), pooling).numpy()
                                   for i in range(0, len(examples), batch_size)])
        finally:
            self.model.train(was)


class TextMaskedLM(Anchor):
    """RoBERTa masked language modelling (`RobertaForMaskedLM` + `DataCollatorForLanguageModeling`, 15%)."""

    name = "masked LM (RobertaForMaskedLM)"

    def __init__(self, config: Data2VecConfig, processor):
        from transformers import DataCollatorForLanguageModeling, RobertaConfig, RobertaForMaskedLM

        c = config
        self.tokenizer = processor
        self.model = RobertaForMaskedLM(RobertaConfig(
            vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size, hidden_act=c.hidden_act,
            hidden_dropout_prob=c.hidden_dropout_prob, attention_probs_dropout_prob=c.attention_probs_dropout_prob,
            max_position_embeddings=c.max_position_embeddings, type_vocab_size=1, layer_norm_eps=c.layer_norm_eps,
            pad_token_id=c.pad_token_id, bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id))
        self.mlm = DataCollatorForLanguageModeling(processor, mlm_probability=0.15)

    def collate(self, examples: list[dict]) -> dict:
        return self.mlm([{"input_ids": e["input_ids"].tolist()} for e in examples])

    def loss(self, batch: dict) -> torch.Tensor:
        return self.model(**batch).loss

    @property
    def encoder(self) -> torch.nn.Module:
        return self.model.roberta

    def encode(self, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean of the top 2 hidden states (B, T, D) and the real tokens (B, T)."""
        batch = self.tokenizer.pad([{"input_ids": e["input_ids"].tolist()} for e in examples], return_tensors="pt")
        states = self.encoder(**batch, output_hidden_states=True).hidden_states
        return torch.stack(states[-2:]).mean(0), batch["attention_mask"]


class VisionMAE(Anchor):
    """Masked autoencoding (`ViTMAEForPreTraining`: 75% of the patches removed, normalised-pixel targets, as the MAE
    recipe), with the data2vec run's image augmentation; the decoder shrunk with the encoder (its width, 2 layers)."""

    name = "MAE (ViTMAEForPreTraining)"

    def __init__(self, config: Data2VecConfig, processor):
        from transformers import ViTMAEConfig, ViTMAEForPreTraining

        from modeling_data2vec_unified.masking import DataCollatorForData2VecPretraining

        c = config
        self.model = ViTMAEForPreTraining(ViTMAEConfig(
            hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
            intermediate_size=c.intermediate_size, hidden_act=c.hidden_act, hidden_dropout_prob=c.hidden_dropout_prob,
            attention_probs_dropout_prob=c.attention_probs_dropout_prob, layer_norm_eps=c.layer_norm_eps,
            image_size=c.image_size, patch_size=c.patch_size, num_channels=c.num_channels, mask_ratio=0.75,
            norm_pix_loss=True, decoder_hidden_size=c.hidden_size, decoder_num_hidden_layers=2,
            decoder_num_attention_heads=c.num_attention_heads, decoder_intermediate_size=c.intermediate_size))
        self.augmented = DataCollatorForData2VecPretraining(config, image_augment="affine")  # the data2vec run's
        self.plain = DataCollatorForData2VecPretraining(config)

    def collate(self, examples: list[dict]) -> dict:
        return self.augmented.collate_inputs(examples)

    def loss(self, batch: dict) -> torch.Tensor:
        return self.model(**batch).loss

    @property
    def encoder(self) -> torch.nn.Module:
        return self.model.vit

    def encode(self, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean of the top 2 hidden states over the patches (not CLS), with nothing masked (mask_ratio 0 keeps
        every patch; their order is shuffled, which a mean does not see)."""
        vit = self.model.vit
        ratio, vit.config.mask_ratio = vit.config.mask_ratio, 0.0
        try:
            states = vit(**self.plain.collate_inputs(examples), output_hidden_states=True).hidden_states
        finally:
            vit.config.mask_ratio = ratio
        hidden = torch.stack(states[-2:]).mean(0)[:, 1:]
        return hidden, torch.ones(hidden.shape[:2])


class AudioWav2Vec2(Anchor):
    """wav2vec 2.0 (`Wav2Vec2ForPreTraining`: contrastive loss against 100 negatives from the same clip, with the Gumbel
    product quantizer and its diversity loss), called as transformers' run_wav2vec2_pretraining_no_trainer.py does:
    spans of 10 frames masked with probability 0.65 (`_compute_mask_indices`, the data2vec audio recipe's own), negatives
    drawn by `_sample_negative_indices`, the loss divided by the masked frames, the Gumbel temperature decayed from 2
    to 0.5 (per step, x 0.999995 in the example; here over the run, as the example's runs are 200k steps). Same conv
    feature encoder (layer norm, as data2vec's), encoder and crops as the data2vec run; one positional conv of the
    data2vec one's kernel (wav2vec 2.0 has one, data2vec audio a stack); the quantizer's codebooks as the example's
    (2 groups x 320), its width the encoder's."""

    name = "wav2vec 2.0 (Wav2Vec2ForPreTraining)"
    temperature = (2.0, 0.5)

    def __init__(self, config: Data2VecConfig, processor):
        from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

        from modeling_data2vec_unified.masking import DataCollatorForData2VecPretraining

        c = config
        self.config = c
        self.model = Wav2Vec2ForPreTraining(Wav2Vec2Config(
            hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
            intermediate_size=c.intermediate_size, hidden_act=c.hidden_act, hidden_dropout=c.hidden_dropout_prob,
            attention_dropout=c.attention_probs_dropout_prob, activation_dropout=c.activation_dropout,
            feat_proj_dropout=c.feat_proj_dropout, layerdrop=c.layerdrop, layer_norm_eps=c.layer_norm_eps,
            feat_extract_norm="layer", feat_extract_activation=c.feat_extract_activation, conv_dim=c.conv_dim,
            conv_stride=c.conv_stride, conv_kernel=c.conv_kernel, conv_bias=c.conv_bias,
            num_conv_pos_embeddings=c.conv_pos_kernel_size, num_conv_pos_embedding_groups=c.num_conv_pos_embedding_groups,
            mask_time_prob=c.mask_prob, mask_time_length=c.mask_length, num_negatives=100,
            codevector_dim=c.hidden_size, proj_codevector_dim=c.hidden_size, num_codevectors_per_group=320,
            num_codevector_groups=2, diversity_loss_weight=0.1, do_stable_layer_norm=False))
        self.collator = DataCollatorForData2VecPretraining(config)  # the data2vec run's crops
        self.plain = DataCollatorForData2VecPretraining(config, audio_crop="pad")  # the probe's
        self.steps, self.step = 1, 0

    def collate(self, examples: list[dict]) -> dict:
        from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

        batch = self.collator.collate_inputs(examples)
        frames = int(self.model._get_feat_extract_output_lengths(batch["input_values"].shape[1]))
        shape = (len(examples), frames)
        mask = _compute_mask_indices(shape, self.config.mask_prob, self.config.mask_length, min_masks=2)
        negatives = _sample_negative_indices(shape, self.model.config.num_negatives, mask)
        return {**batch, "mask_time_indices": torch.from_numpy(mask),
                "sampled_negative_indices": torch.from_numpy(negatives)}

    def loss(self, batch: dict) -> torch.Tensor:
        high, low = self.temperature
        self.model.set_gumbel_temperature(max(high * (low / high) ** (self.step / max(self.steps - 1, 1)), low))
        self.step += 1
        return self.model(**batch).loss / batch["mask_time_indices"].sum()

    @property
    def encoder(self) -> torch.nn.Module:
        return self.model.wav2vec2

    def encode(self, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean of the top 2 hidden states and the clip's real frames (nothing is masked in eval mode)."""
        batch = self.plain.collate_inputs(examples)
        states = self.encoder(**batch, output_hidden_states=True).hidden_states
        hidden = torch.stack(states[-2:]).mean(0)
        return hidden, self.encoder._get_feature_vector_attention_mask(hidden.shape[1], batch["attention_mask"])


ANCHORS = {"text": TextMaskedLM, "vision": VisionMAE, "audio": AudioWav2Vec2}


def reference_data(modality: str, reference_dir: Path, seed: int):
    """The data2vec 1.0 run's config and data (its tokenizer for text), with the probe's examples."""
    config = Data2VecConfig.from_pretrained(reference_dir)
    args = trainer.PretrainingArguments(modality=modality, output_dir=str(reference_dir))
    processor = None
    if modality == "text":
        from transformers import AutoTokenizer

        processor = AutoTokenizer.from_pretrained(reference_dir)
    data = load_pretraining_data(config, "builtin", processor=processor, max_seq_length=args.max_seq_length,
                                 tokenizer_vocab_size=args.tokenizer_vocab_size, seed=seed)
    return config, args, data


def run_anchor(modality: str, reference_dir: Path, steps: int, probe_every: int, seed: int,
               finetune_epochs: int = 0, recipe: dict | None = None) -> dict:
    """The anchor trained for `steps` with the data, tokenizer, sizes and recipe of the data2vec 1.0 run saved in
    `reference_dir`; its points as `time_to_quality.run` gives them, and (`finetune_epochs` > 0) the fine-tune scores
    of its pretrained and initial weights. `recipe` replaces the shared recipe's `lr` / `weight_decay` / `adam_beta2`
    (a tuned anchor)."""
    config, args, data = reference_data(modality, reference_dir, seed)
    lr, batch_size, _ = trainer.TRAINING_DEFAULTS["tiny"][modality]
    opt = {**trainer.OPTIMIZER_DEFAULTS[modality], **trainer.TINY_OPTIMIZER.get(modality, {})}  # the tiny run's
    opt.update({k: v for k, v in (recipe or {}).items() if k != "lr"})
    lr = (recipe or {}).get("lr", lr)
    torch.manual_seed(seed)
    anchor = ANCHORS[modality](config, data.processor)
    anchor.steps = steps
    model = anchor.model
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.AdamW(parameter_groups(model, lr, opt["weight_decay"]), lr=lr,
                                  betas=(0.9, opt["adam_beta2"]), eps=opt["adam_epsilon"])
    from transformers import get_scheduler

    warmup = int(args.warmup_ratio * steps)
    schedule = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    loader = torch.utils.data.DataLoader(data.train, batch_size=batch_size, shuffle=True, drop_last=True,
                                         collate_fn=anchor.collate, generator=torch.Generator().manual_seed(seed))
    pooling = POOLING[modality]
    train_y = np.array([e["labels"] for e in data.probe.train])
    test_y = np.array([e["labels"] for e in data.probe.test])

    def probe() -> float:
        return probe_accuracy(anchor.features(data.probe.train, pooling), train_y,
                              anchor.features(data.probe.test, pooling), test_y)

    random_init = probe()
    points = [{"step": 0, "seconds": 0.0, "accuracy": random_init, "source": "initial weights"}]
    losses, step, elapsed = [], 0, 0.0
    model.train()
    print(f"\n== {modality} {anchor.name}: {steps} steps x {batch_size}, lr {lr:g}, warm-up {warmup}", flush=True)
    while step < steps:
        for batch in loader:
            began = time.perf_counter()
            loss = anchor.loss(batch)
            loss.backward()
            if opt["max_grad_norm"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), opt["max_grad_norm"])
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            elapsed += time.perf_counter() - began
            step += 1
            losses.append(loss.detach())
            if step % probe_every == 0 or step == steps:
                points.append({"step": step, "seconds": elapsed, "accuracy": probe(), "source": "periodic probe"})
                recent = torch.stack(losses[-probe_every:]).mean().item()
                print(f"step {step}: loss {recent:.3f} probe {points[-1]['accuracy']:.3f}", flush=True)
            if step == steps:
                break
    run = {"algorithm": "anchor", "name": anchor.name, "steps": steps, "recipe": {"lr": lr, **opt}, "training_seconds": elapsed, "points": points,
           "final_accuracy": points[-1]["accuracy"], "random_init": random_init, "losses": torch.stack(losses).tolist()}
    if finetune_epochs:
        pretrained = copy.deepcopy(model.state_dict())
        run["finetune"] = finetune(anchor.encode, anchor.encoder, data.probe, modality, finetune_epochs, seed)
        model.load_state_dict(initial)
        run["finetune_scratch"] = finetune(anchor.encode, anchor.encoder, data.probe, modality, finetune_epochs, seed)
        model.load_state_dict(pretrained)
    return run


# ---- fine-tuning: the same head and recipe for every method ------------------------------------------------------

FINETUNE = dict(lr=5e-4, batch_size=32, weight_decay=0.01, warmup=0.1)


def finetune(encode, encoder: torch.nn.Module, probe, modality: str, epochs: int, seed: int) -> float:
    """Held-out accuracy after fine-tuning `encoder` (all its weights) with a LayerNorm and a linear head on the probe's
    features (the top 2 layers' mean, pooled as `POOLING`; the norm as BEiT / MAE / data2vec's `fc_norm`, so that the
    scale of one encoder's features does not decide how fast the head learns, as the probe's StandardScaler does),
    on the probe's training examples, for `epochs`: AdamW
    (`FINETUNE`), linear decay after a warm-up, the encoder's dropout on. `encode(examples)` gives (hidden (B, T, D),
    real (B, T)) with gradients. The encoder's weights are changed in place (callers restore them)."""
    pooling = POOLING[modality]
    train, test = probe.train, probe.test
    classes = 1 + max(int(e["labels"]) for e in [*train, *test])
    torch.manual_seed(seed)
    width = encode(train[:2])[0].shape[-1] * (2 if pooling == "mean_std" else 1)
    head = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, classes))
    params = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=FINETUNE["lr"], weight_decay=FINETUNE["weight_decay"])
    b = FINETUNE["batch_size"]
    total = epochs * (len(train) // b)
    warmup = max(1, int(FINETUNE["warmup"] * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min((i + 1) / warmup, max(0.0, (total - i) / max(1, total - warmup))))
    rng = np.random.default_rng(seed)
    encoder.train()
    for _ in range(epochs):
        order = rng.permutation(len(train))
        for start in range(0, len(order) - b + 1, b):
            part = [train[i] for i in order[start : start + b]]
            hidden, real = encode(part)
            logits = head(pool(hidden.float(), real, pooling))
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([int(e["labels"]) for e in part]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    encoder.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), 64):
            part = test[start : start + 64]
            hidden, real = encode(part)
            predicted = head(pool(hidden.float(), real, pooling)).argmax(-1)
            correct += int((predicted == torch.tensor([int(e["labels"]) for e in part])).sum())
    return correct / len(test)


def finetune_data2vec(modality: str, run_dir: Path, reference_dir: Path, epochs: int, seed: int) -> dict:
    """Fine-tune scores of a data2vec run's saved model (`AutoModel.from_pretrained`) and of the same architecture at
    random initialisation (seeded as the run)."""
    from transformers import AutoModel

    from modeling_data2vec_unified.masking import DataCollatorForData2VecPretraining
    from modeling_data2vec_unified.probe import real_positions

    _, _, data = reference_data(modality, reference_dir, seed)
    scores = {}
    for name in ("finetune", "finetune_scratch"):
        if name == "finetune":
            model = AutoModel.from_pretrained(run_dir)
        else:
            torch.manual_seed(seed)
            model = AutoModel.from_config(Data2VecConfig.from_pretrained(run_dir))
        collator = DataCollatorForData2VecPretraining(model.config, audio_crop="pad")

        def encode(examples, model=model, collator=collator):
            batch = collator.collate_inputs(examples)
            states = model(**batch, output_hidden_states=True).hidden_states
            hidden = torch.stack(states[-2:]).mean(0)
            return hidden, real_positions(model.config, batch, hidden.shape[1], hidden.device)

        scores[name] = finetune(encode, model, data.probe, modality, epochs, seed)
    return scores


# ---- the comparison ------------------------------------------------------------------------------------------------


def label(method: str, runs: dict) -> str:
    return runs[method].get("name") or ttq.LABEL[method]


def best(run: dict) -> dict:
    return max((p for p in run["points"] if p["step"] > 0), key=lambda p: p["accuracy"])


def report(modality: str, results: dict) -> str:
    lines = []
    for scale, runs in results["budgets"].items():
        steps = runs["data2vec"]["steps"] if "data2vec" in runs else next(iter(runs.values()))["steps"]
        lines += [f"### {modality}, {scale}x the default steps ({steps}), seed {results['seed']}", "",
                  "| method | final probe | best probe (step) | random init | fine-tuned: pretrained / from scratch "
                  "| training s |", "|---|---|---|---|---|---|"]
        for method, run in runs.items():
            b = best(run)
            tuned = (f"{ttq.pct(run['finetune'])} / {ttq.pct(run['finetune_scratch'])}" if "finetune" in run else "-")
            lines.append(f"| {label(method, runs)} | {ttq.pct(run['final_accuracy'])} | {ttq.pct(b['accuracy'])} "
                         f"({b['step']}) | {ttq.pct(run['random_init'])} | {tuned} | {run['training_seconds']:.1f} |")
        lines.append("")
        lines.append("| method | " + " | ".join(str(p["step"]) for p in next(iter(runs.values()))["points"]) + " |")
        lines.append("|---" * (1 + len(next(iter(runs.values()))["points"])) + "|")
        for method, run in runs.items():
            lines.append(f"| {label(method, runs)} | " + " | ".join(ttq.pct(p["accuracy"]) for p in run["points"]) + " |")
        lines.append("")
    if results.get("raw_inputs") is not None:
        lines.append(f"raw inputs ({RAW_FEATURES[modality]}): {ttq.pct(results['raw_inputs'])}")
    return "\n".join(lines)


def plot(modality: str, results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    colors = {"data2vec": "C0", "data2vec2": "C3", "anchor": "C2"}
    styles = ["o-", "s--", "^:"]
    for i, (scale, runs) in enumerate(results["budgets"].items()):
        for method, run in runs.items():
            pts = run["points"]
            ax.plot([p["seconds"] for p in pts], [100 * p["accuracy"] for p in pts], styles[i % 3], color=colors[method],
                    label=f"{label(method, runs)}, {run['steps']} steps (final {ttq.pct(run['final_accuracy'])})")
            if i == 0:
                ax.axhline(100 * run["random_init"], linestyle=":", color=colors[method], alpha=0.6,
                           label=f"{label(method, runs)} random init ({ttq.pct(run['random_init'])})")
    if results.get("raw_inputs") is not None:
        ax.axhline(100 * results["raw_inputs"], linestyle="-.", color="0.5",
                   label=f"raw inputs ({ttq.pct(results['raw_inputs'])})")
    ax.set_xlabel("training wall-clock, s (probes not counted)")
    ax.set_ylabel("linear probe, held out, %")
    ax.set_title(f"{modality}: data2vec against {ANCHORS[modality].name}, same data / size / budget, seed "
                 f"{results['seed']}", fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="x-small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modality", default="text", choices=sorted(ANCHORS))
    parser.add_argument("--scales", default="1", help="comma-separated multiples of the default steps, e.g. 1,5")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {METHODS}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probes", type=int, default=6, help="periodic probes per run")
    parser.add_argument("--steps", type=int, default=None, help="the 1x budget (default: the default run's steps); "
                        "a smaller one checks the script quickly")
    parser.add_argument("--finetune_epochs", type=int, default=10, help="fine-tune each pretrained model and its "
                        "initial weights for this many epochs on the probe's training examples (0: no fine-tuning)")
    parser.add_argument("--anchor_steps", type=int, default=None, help="the anchor's 1x budget, if not the data2vec "
                        "runs' (e.g. equal wall-clock)")
    parser.add_argument("--anchor_lr", type=float, default=None, help="a tuned anchor: its own learning rate")
    parser.add_argument("--anchor_beta2", type=float, default=None, help="a tuned anchor: its own AdamW beta2")
    parser.add_argument("--anchor_weight_decay", type=float, default=None, help="a tuned anchor: its own weight decay")
    parser.add_argument("--plot", default="docs/images/anchors-{modality}.png")
    parser.add_argument("--runs_dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--extra", default="", help="more data2vec-pretrain flags for the data2vec runs, one string "
                        "(an ablation: the anchor keeps its recipe)")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if set(methods) - set(METHODS):
        parser.error(f"--methods: choose from {METHODS}")
    evaluation.PERIODIC_PROBE_EXAMPLES = (10**9, 10**9)  # every periodic probe on all the probe data, as the final one
    # one budget for every method: the data2vec 1.0 default run's steps (2.0's default differs for vision)
    default_steps = args.steps or trainer.TRAINING_DEFAULTS["tiny"][args.modality][2]
    results = {"modality": args.modality, "seed": args.seed, "extra": args.extra, "budgets": {}, "raw_inputs": None}
    with tempfile.TemporaryDirectory(prefix="anchors.") as tmp:
        root = Path(args.runs_dir or tmp)
        for scale in (int(s) for s in args.scales.split(",")):
            steps = default_steps * scale
            every = max(1, math.ceil(steps / args.probes))
            runs = {}
            reference = root / f"{args.modality}-data2vec-{steps}"
            for method in ("data2vec", "data2vec2"):
                if method in methods or (method == "data2vec" and "anchor" in methods):
                    out = root / f"{args.modality}-{method}-{steps}"
                    if method not in methods and (out / "probe.json").exists():  # the anchor's reference, kept
                        results["raw_inputs"] = json.loads((out / "probe.json").read_text())["raw_inputs"]
                        continue
                    run = ttq.run(args.modality, method, every, ["--max_steps", str(steps), *shlex.split(args.extra)],
                                  args.seed, out)
                    if args.finetune_epochs and method in methods:
                        run.update(finetune_data2vec(args.modality, out, out, args.finetune_epochs, args.seed))
                    if method in methods:
                        runs[method] = run
                    results["raw_inputs"] = run["raw_inputs"]
            if "anchor" in methods:
                recipe = {k: v for k, v in (("lr", args.anchor_lr), ("adam_beta2", args.anchor_beta2),
                                            ("weight_decay", args.anchor_weight_decay)) if v is not None}
                anchor_steps = args.anchor_steps * scale if args.anchor_steps else steps
                runs["anchor"] = run_anchor(args.modality, reference, anchor_steps, max(1, anchor_steps // args.probes),
                                            args.seed, args.finetune_epochs, recipe)
            results["budgets"][scale] = runs
    text = report(args.modality, results)
    print("\n" + text)
    path = Path(args.plot.format(modality=args.modality))
    plot(args.modality, results, path)
    path.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(f"plot: {path}; points: {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
