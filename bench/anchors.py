"""data2vec against the method a user would pick instead, side by side on the built-in data (issue 23, item 1).

    OMP_NUM_THREADS=2 python bench/anchors.py --modality text                 # 1x the default steps
    OMP_NUM_THREADS=2 python bench/anchors.py --modality text --scales 1,5    # and 5x
    OMP_NUM_THREADS=2 python bench/anchors.py --modality text --methods data2vec,anchor --seed 1
    OMP_NUM_THREADS=2 python bench/anchors.py --modality vision               # against MAE

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
  Every method gets the data2vec 1.0 default run's steps (vision: 1680, where 2.0's own default is 800).

Every model is probed with the package's probe (`probe.pool` + `probe.probe_accuracy`: the mean of the top 2
layers, pooled as `probe.POOLING` says, logistic regression on the same train / held-out examples) at its initial
weights and every `steps / --probes` steps; time is training wall-clock, probes not counted. Printed: a table per
budget (final probe, best probe, random init, training seconds) and one PNG per modality of probe accuracy against
training seconds for every method and budget, with each method's random init and the raw-input probe as lines
(`--plot`, the points in the .json next to it).
"""

from __future__ import annotations

import argparse
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
from modeling_data2vec_unified.configuration_data2vec import Data2VecConfig  # noqa: E402
from modeling_data2vec_unified.data import load_pretraining_data  # noqa: E402
from modeling_data2vec_unified.optimization import parameter_groups  # noqa: E402
from modeling_data2vec_unified.probe import POOLING, RAW_FEATURES, pool, probe_accuracy  # noqa: E402

METHODS = ("data2vec", "data2vec2", "anchor")


# ---- the anchors: what a user would train instead, from transformers -------------------------------------------------


class TextMaskedLM:
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

    @torch.no_grad()
    def features(self, examples: list[dict], pooling: str, batch_size: int = 64) -> np.ndarray:
        """The probe's features: the mean of the top 2 hidden states, pooled over the real tokens."""
        was = self.model.training
        self.model.eval()
        out = []
        for start in range(0, len(examples), batch_size):
            part = [{"input_ids": e["input_ids"].tolist()} for e in examples[start : start + batch_size]]
            batch = self.tokenizer.pad(part, return_tensors="pt")
            states = self.model.roberta(**batch, output_hidden_states=True).hidden_states
            out.append(pool(torch.stack(states[-2:]).mean(0).float(), batch["attention_mask"], pooling).numpy())
        self.model.train(was)
        return np.concatenate(out)


class VisionMAE:
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

    @torch.no_grad()
    def features(self, examples: list[dict], pooling: str, batch_size: int = 256) -> np.ndarray:
        """The mean of the top 2 hidden states over the patches (not CLS), with nothing masked (mask_ratio 0 keeps
        every patch; their order is shuffled, which a mean does not see)."""
        was, vit = self.model.training, self.model.vit
        ratio = vit.config.mask_ratio
        self.model.eval()
        vit.config.mask_ratio = 0.0
        out = []
        try:
            for start in range(0, len(examples), batch_size):
                batch = self.plain.collate_inputs(examples[start : start + batch_size])
                states = vit(**batch, output_hidden_states=True).hidden_states
                hidden = torch.stack(states[-2:]).mean(0).float()[:, 1:]
                out.append(pool(hidden, torch.ones(hidden.shape[:2]), pooling).numpy())
        finally:
            vit.config.mask_ratio = ratio
            self.model.train(was)
        return np.concatenate(out)


ANCHORS = {"text": TextMaskedLM, "vision": VisionMAE}


def run_anchor(modality: str, reference_dir: Path, steps: int, probe_every: int, seed: int) -> dict:
    """The anchor trained for `steps` with the data, tokenizer, sizes and recipe of the data2vec 1.0 run saved in
    `reference_dir`; its points as `time_to_quality.run` gives them."""
    config = Data2VecConfig.from_pretrained(reference_dir)
    args = trainer.PretrainingArguments(modality=modality, output_dir=str(reference_dir))
    processor = None
    if modality == "text":
        from transformers import AutoTokenizer

        processor = AutoTokenizer.from_pretrained(reference_dir)
    data = load_pretraining_data(config, "builtin", processor=processor, max_seq_length=args.max_seq_length,
                                 tokenizer_vocab_size=args.tokenizer_vocab_size, seed=seed)
    lr, batch_size, _ = trainer.TRAINING_DEFAULTS["tiny"][modality]
    opt = {**trainer.OPTIMIZER_DEFAULTS[modality], **trainer.TINY_OPTIMIZER.get(modality, {})}  # the tiny run's
    torch.manual_seed(seed)
    anchor = ANCHORS[modality](config, data.processor)
    model = anchor.model
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
    return {"algorithm": "anchor", "name": anchor.name, "steps": steps, "training_seconds": elapsed, "points": points,
            "final_accuracy": points[-1]["accuracy"], "random_init": random_init,
            "losses": torch.stack(losses).tolist()}


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
                  "| method | final probe | best probe (step) | random init | training s |", "|---|---|---|---|---|"]
        for method, run in runs.items():
            b = best(run)
            lines.append(f"| {label(method, runs)} | {ttq.pct(run['final_accuracy'])} | {ttq.pct(b['accuracy'])} "
                         f"({b['step']}) | {ttq.pct(run['random_init'])} | {run['training_seconds']:.1f} |")
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
    parser.add_argument("--plot", default="docs/images/anchors-{modality}.png")
    parser.add_argument("--runs_dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--extra", default="", help="more data2vec-pretrain flags for the data2vec runs, one string "
                        "(an ablation: the anchor keeps its recipe)")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if set(methods) - set(METHODS):
        parser.error(f"--methods: choose from {METHODS}")
    trainer.PERIODIC_PROBE_EXAMPLES = (10**9, 10**9)  # every periodic probe on all the probe data, as the final one
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
                    run = ttq.run(args.modality, method, every, ["--max_steps", str(steps), *shlex.split(args.extra)],
                                  args.seed, out)
                    if method in methods:
                        runs[method] = run
                    results["raw_inputs"] = run["raw_inputs"]
            if "anchor" in methods:
                runs["anchor"] = run_anchor(args.modality, reference, steps, every, args.seed)
            results["budgets"][scale] = runs
    text = report(args.modality, results)
    print("\n" + text)
    path = Path(args.plot.format(modality=args.modality))
    plot(args.modality, results, path)
    path.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(f"plot: {path}; points: {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
