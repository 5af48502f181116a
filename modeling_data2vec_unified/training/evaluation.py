"""What a run measures besides its training loss: the held-out data2vec loss, the linear probes (every
--probe_steps and at the end) and the label-free representation health check (--monitor_steps).

Each draws no random number the run sees (every RNG state is restored after) and leaves the student in the mode it
found it in, so a run that measures trains the same weights as one that does not. The loop calls them at its
logging / evaluation steps through `MetricsReporter.timed_aside` (not counted as training time); they write through
the same reporter."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from ..masking import SeededBatch
from ..modalities import MODALITY_INFO
from ..modeling_data2vec_pretraining import Data2VecForPreTraining, eval_mode
from .arguments import PretrainingArguments
from .checkpointing import rng_untouched
from .metrics import MetricsReporter

logger = logging.getLogger("modeling_data2vec_unified.trainer")

# the probe run every --probe_steps: at most this many train / held-out examples (the first of the probe's splits)
PERIODIC_PROBE_EXAMPLES = (500, 300)


class Evaluation:
    """The measurements of one run (`data`: its `PretrainingData`, whose `probe` may be None; `validation`: held-out
    examples or None). `initial_encoder()` builds the run's initial weights again (the random-init reference)."""

    def __init__(self, accelerator: Accelerator, args: PretrainingArguments, data, validation, collator,
                 reporter: MetricsReporter):
        self.accelerator, self.args, self.data, self.validation = accelerator, args, data, validation
        self.collator, self.reporter = collator, reporter

    def initial_encoder(self, config):
        """The run's initial weights (a fresh architecture after --init_from): built again from the seed, as the
        trainer built them (this draws from the global RNGs: call it where they are restored after)."""
        set_seed(self.args.seed)
        return Data2VecForPreTraining(config).data2vec.to(self.accelerator.device)

    @torch.no_grad()
    def eval_loss(self, model: Data2VecForPreTraining, step: int) -> None:
        """The data2vec loss on the held-out examples (--validation_split / --validation_split_percentage): the
        student in eval mode, the current teacher, the same masks at every evaluation (drawn from the seed); logged as
        eval_loss (and eval_target_var / eval_pred_var)."""
        acc, size = self.accelerator, self.args.per_device_train_batch_size
        total, weights, target_var, pred_var = 0.0, 0, 0.0, 0.0
        with rng_untouched(acc.device), eval_mode(model):
            for i, start in enumerate(range(0, len(self.validation), size)):
                indices = list(range(start, min(start + size, len(self.validation))))
                batch = self.collator(SeededBatch(self.validation.__getitems__(indices), (self.args.seed, 10**6, i)))
                batch = {k: v.to(acc.device) for k, v in batch.items()}
                with acc.autocast():
                    out = model(**batch, check_inputs=False)
                n = int(out.num_masked)
                total += float(out.loss) * n
                target_var += float(out.target_var) * n
                pred_var += float(out.pred_var) * n
                weights += n
        metrics = {"eval_loss": total / max(weights, 1), "eval_target_var": target_var / max(weights, 1),
                   "eval_pred_var": pred_var / max(weights, 1)}
        self.reporter.record(step, metrics, line=f"step {step}: eval_loss {metrics['eval_loss']:.4g} "
                                                 f"({len(self.validation)} held-out examples)")

    def periodic_probe(self, model: Data2VecForPreTraining, step: int) -> None:
        """The linear probe of `--probe_steps` at `step`: on the main process (the others wait), on the first
        PERIODIC_PROBE_EXAMPLES train / held-out examples of the probe data, features as the final probe's (top 2
        layers). Logs probe/pretrained (and once per run the references: probe/random_init, the run's initial
        weights, and probe/raw_inputs)."""
        from ..probe import linear_probe, raw_input_probe

        acc, config = self.accelerator, model.config
        if acc.is_main_process:
            elapsed = self.reporter.seconds()
            train, test = (split[:n] for split, n in zip((self.data.probe.train, self.data.probe.test),
                                                         PERIODIC_PROBE_EXAMPLES))
            with rng_untouched(acc.device):
                metrics = {"probe/pretrained": linear_probe(model.data2vec, train, test)[2]}
                if not self.reporter.ever_logged("probe/random_init"):  # once per run (also over resumes)
                    metrics["probe/random_init"] = linear_probe(self.initial_encoder(config), train, test)[2]
                    raw = raw_input_probe(train, test, config.modality, config.sampling_rate)
                    metrics["probe/raw_inputs"] = float("nan") if raw is None else raw
            self.reporter.record(
                step, metrics, elapsed=elapsed,
                extra={"probe/train_examples": len(train), "probe/test_examples": len(test)},
                line=f"step {step}: linear probe ({len(test)} held out) "
                     + " ".join(f"{k.removeprefix('probe/')} {v:.1%}" for k, v in metrics.items()))
        acc.wait_for_everyone()

    def final_probe(self, model: Data2VecForPreTraining, steps: int) -> dict:
        """Linear probe (held-out accuracy) of the pretrained student `model`, the same architecture at its random
        initialisation, and the raw inputs; printed and written to output_dir/probe.json. Returns the accuracies as
        probe_* metrics."""
        from ..probe import describe_features, linear_probe, raw_input_probe

        args, probe, config = self.args, self.data.probe, model.config
        pretrained = linear_probe(model.data2vec, probe.train, probe.test, top_layers=(2, 1))
        random_init = linear_probe(self.initial_encoder(config), probe.train, probe.test, top_layers=(2, 1))
        results = {
            "pretrained": pretrained[2],
            "random_init": random_init[2],
            "raw_inputs": raw_input_probe(probe.train, probe.test, config.modality, config.sampling_rate),
            "pretrained_last_layer": pretrained[1],
            "random_init_last_layer": random_init[1],
            "features": describe_features(config.modality, (2, 1)),
            "raw_inputs_features": MODALITY_INFO[config.modality].raw_features,
            "train_examples": len(probe.train), "test_examples": len(probe.test), "steps": steps,
            "dataset": self.data.description,
        }
        if args.init_from:
            results["random_init_note"] = "random_init: the architecture freshly initialised (not --init_from)"
            start = Data2VecForPreTraining.from_pretrained(args.init_from).data2vec.to(model.device)
            results["starting_checkpoint"] = linear_probe(start, probe.train, probe.test, top_layers=(2,))[2]
        Path(args.output_dir, "probe.json").write_text(json.dumps(results, indent=2))
        print(
            f"linear probe, held-out accuracy ({len(probe.test)} examples): pretrained {results['pretrained']:.1%}  "
            f"random init {results['random_init']:.1%}  raw inputs "
            + ("n/a" if results["raw_inputs"] is None else f"{results['raw_inputs']:.1%}")
            + (f"  --init_from {results['starting_checkpoint']:.1%}" if "starting_checkpoint" in results else "")
            + f"  -> {Path(args.output_dir, 'probe.json')}"
        )
        if len(probe.test) < 100:  # a small held-out set: say how far apart two runs can be by chance
            margin = 1.96 * math.sqrt(max(results["pretrained"] * (1 - results["pretrained"]),
                                          0.25 / len(probe.test)) / len(probe.test))
            print(f"  note: {len(probe.test)} held-out examples: one example is {1 / len(probe.test):.1%}, and the "
                  f"accuracies are uncertain by about +-{margin:.0%} (95%); differences smaller than that are noise. "
                  "More labelled examples give a sharper probe.")
        return {f"probe_{k}": v for k, v in results.items() if isinstance(v, float)}


class HealthCheck:
    """The label-free health check (`monitor.representation_health`) on the first --monitor_examples training
    examples; off (`examples` None) without --monitor_steps, with a stream (no examples held in memory) or FSDP (it
    runs on the main process alone). `start` is the check at the run's start (saved in checkpoints), which the later
    ones are compared with."""

    def __init__(self, accelerator: Accelerator, args: PretrainingArguments, train, streaming: bool, fsdp: bool,
                 reporter: MetricsReporter):
        self.accelerator, self.args, self.reporter = accelerator, args, reporter
        self.examples = self._examples(train, streaming, fsdp)
        self.start: dict[str, float] | None = None
        self.last_step = 0
        self._warned: set[str] = set()

    def _examples(self, train, streaming: bool, fsdp: bool) -> list[dict] | None:
        args = self.args
        if not args.monitor_steps:
            return None
        if streaming or fsdp:
            logger.info("the representation health check (--monitor_steps) is off with %s",
                        "--streaming" if streaming else "--fsdp")
            return None
        keep = (MODALITY_INFO[args.modality].input_name, "attention_mask")
        return [{k: v for k, v in train[i].items() if k in keep} for i in range(min(args.monitor_examples, len(train)))]

    def due(self, step: int, end: int) -> bool:
        """Whether logging step `step` runs the check (every --monitor_steps, and at the end)."""
        return bool(self.examples) and (step - self.last_step >= self.args.monitor_steps or step == end)

    def measure(self, model: Data2VecForPreTraining) -> dict[str, float]:
        from ..compiling import eager_regions
        from ..monitor import representation_health

        # eager: the check's padded eval-mode shapes would add graphs to --torch_compile's regions for no gain
        with rng_untouched(self.accelerator.device), eager_regions(model, model.teacher):
            return representation_health(model, self.examples)

    def begin(self, model: Data2VecForPreTraining, step: int) -> None:
        """At the loop's start: the reference the later checks compare with (kept from the checkpoint on resume)."""
        self.last_step = step
        if self.examples and self.start is None:
            self.start = {**self.measure(model), "step": step}

    def check(self, model: Data2VecForPreTraining, step: int) -> None:
        """The check at logging step `step` on the main process: health/* (and each pooled spread relative to the
        run's start) into the trackers and the step's record, and a warning, once per representation, naming what
        collapsed and what to try when its pooled spread fell below `monitor.COLLAPSE_RATIO` of the start."""
        from ..monitor import REPRESENTATIONS, collapsed

        acc = self.accelerator
        self.last_step = step
        if acc.is_main_process:
            health, start = self.measure(model), self.start
            metrics = {f"health/{k}": v for k, v in health.items()}
            metrics.update({f"health/{name}_spread_vs_start": health[f"{name}_spread"] / start[f"{name}_spread"]
                            for name in REPRESENTATIONS if start[f"{name}_spread"] > 0})
            first = not self.reporter.ever_logged("health/student_spread")  # the first check: the start too
            self.reporter.add_to_last(step, metrics, extra={f"health/start_{k}": v for k, v in start.items()}
                                      if first else None)
            new = [what for what in collapsed(health, start) if what.split(" (")[0] not in self._warned]
            if new:
                self._warned.update(what.split(" (")[0] for what in new)
                logger.warning(
                    "step %d: collapse: %s. Every example's pooled features are becoming alike (the collapse check on "
                    "target_var / pred_var watches positions, not examples), so a probe or a fine-tuned classifier "
                    "has little to go on. What to try: %s; a lower --learning_rate; a slower teacher (ema_decay / "
                    "ema_end_decay closer to 1). See docs/training.md, 'What to watch in curves.png'.",
                    step, "; ".join(new), MODALITY_INFO[model.config.modality].collapse_remedy)
        acc.wait_for_everyone()
