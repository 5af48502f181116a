"""What the loop measures and the one place that reports it (torchtitan's `components/metrics.py`).

`StepTally` adds up, on the device, what each micro-batch and each optimizer step produce between two logging steps:
nothing is read back to the host inside a step. At a logging step `StepTally.read` averages the interval over
processes (the interval's one host sync) into named metrics. `MetricsReporter` is the only writer of metrics: the
trackers (`accelerator.log`), `log_history` (the run's record, saved in checkpoints and drawn in curves.png) and the
console.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import torch
from accelerate import Accelerator

logger = logging.getLogger("modeling_data2vec_unified.trainer")

# summed once per micro-batch
MICRO_BATCH_SUMS = ("loss", "target_var", "pred_var", "masked_fraction", "micro_batches", "masked_micro_batches",
                    "tokens")
# summed once per optimizer step
STEP_SUMS = ("grad_norm", "finite_steps")


class StepTally:
    """The device-side sums of one logging interval, by name, and the first / number of non-finite steps."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(len(MICRO_BATCH_SUMS) + len(STEP_SUMS), device=device)
        # the first step whose loss or gradients were NaN / inf (-1: none yet), and how many there were
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_count = torch.zeros((), dtype=torch.long, device=device)
        self._zero, self._one = torch.zeros((), device=device), torch.ones((), device=device)

    def add_micro_batch(self, out, tokens: torch.Tensor) -> None:
        """A micro-batch's loss and spreads (`out`: a `Data2VecForPreTrainingOutput`). One that masks nothing has no
        spread of targets / predictions to average in (its ~0 would read as collapse): counted apart."""
        masked = out.num_masked > 0
        zero = self._zero
        self.sums[: len(MICRO_BATCH_SUMS)] += torch.stack([
            out.loss.detach(), torch.where(masked, out.target_var, zero), torch.where(masked, out.pred_var, zero),
            out.masked_fraction.float(), self._one, masked.float(), tokens,
        ])

    def add_step(self, step: int, grad_norm: torch.Tensor, finite: torch.Tensor, bad: torch.Tensor) -> None:
        """An optimizer step: its gradient norm where it was `finite` (applied), and whether it was `bad`."""
        self.sums[len(MICRO_BATCH_SUMS):] += torch.stack([torch.where(finite, grad_norm, self._zero), finite.float()])
        self.bad_step.copy_(torch.where((self.bad_step < 0) & bad, step, self.bad_step))
        self.bad_count += bad

    def read(self, accelerator: Accelerator) -> tuple[dict[str, float], int, int]:
        """The interval's averages over micro-batches (spreads: over those that masked something), steps and
        processes, the number of non-finite steps and the first of them (over all processes, since the run's start);
        the sums start again from zero."""
        sums = dict(zip(MICRO_BATCH_SUMS + STEP_SUMS,
                        accelerator.reduce(self.sums.clone(), reduction="mean").tolist()))
        flags = accelerator.gather(torch.stack([self.bad_step, self.bad_count])[None]).view(-1, 2)
        n_bad, first_bad = int(flags[:, 1].max()), int(flags[:, 0].max())
        self.sums.zero_()
        n, n_masked = max(sums["micro_batches"], 1), sums["masked_micro_batches"]
        averages = {
            "loss": sums["loss"] / n,
            # no micro-batch masked anything: no spread was measured
            "target_var": sums["target_var"] / n_masked if n_masked else float("nan"),
            "pred_var": sums["pred_var"] / n_masked if n_masked else float("nan"),
            "masked_fraction": sums["masked_fraction"] / n,
            "grad_norm": sums["grad_norm"] / max(sums["finite_steps"], 1),  # over the steps that were applied
            "tokens": sums["tokens"],
            "masked_micro_batches": n_masked,
        }
        return averages, n_bad, first_bad


class MetricsReporter:
    """The run's record (`history`, transformers' `log_history`: every logged step, evaluation and probe) and the one
    writer of metrics to the trackers, the record and the console. `seconds` gives the run's training seconds so far
    (stamped on every record as `elapsed_seconds`)."""

    def __init__(self, accelerator: Accelerator, seconds: Callable[[], float], max_steps: int, quiet_console: bool):
        self.accelerator, self.seconds, self.max_steps = accelerator, seconds, max_steps
        self.quiet_console = quiet_console  # a live progress bar shows the training metrics: no log line for them
        self.history: list[dict] = []
        self.aside_seconds = 0.0  # seconds spent on evaluation, probes and checks: not training time

    def training_step(self, step: int, metrics: dict) -> None:
        """A logging step's training metrics: trackers, record, and a log line where no progress bar is live."""
        self.record(step, metrics)
        if self.accelerator.is_main_process and not self.quiet_console:
            logger.info("step %d/%d: %s", step, self.max_steps,
                        " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))

    def record(self, step: int, metrics: dict, elapsed: float | None = None, extra: dict | None = None,
               line: str | None = None) -> None:
        """`metrics` to the trackers and, with `extra` (facts that are no curve), as a new entry of the record;
        `line` to the console (main process)."""
        self.accelerator.log(metrics, step=step)
        self.history.append({"step": step, "elapsed_seconds": self.seconds() if elapsed is None else elapsed,
                             **metrics, **(extra or {})})
        if line and self.accelerator.is_main_process:
            logger.info("%s", line)

    def add_to_last(self, step: int, metrics: dict, extra: dict | None = None) -> None:
        """`metrics` of the step the record's last entry is (the health check at a logging step): trackers and that
        entry."""
        self.accelerator.log(metrics, step=step)
        self.history[-1].update({**metrics, **(extra or {})})

    def ever_logged(self, name: str) -> bool:
        """Whether some entry of the record (over resumes) holds `name`."""
        return any(name in entry for entry in self.history)

    def timed_aside(self, work: Callable[[], None]) -> float:
        """Runs `work` (an evaluation, a probe, a check) as time not spent training; returns its seconds."""
        began = time.perf_counter()
        work()
        seconds = time.perf_counter() - began
        self.aside_seconds += seconds
        return seconds


def console_has_live_bar(disable_tqdm: bool) -> bool:
    """Whether the progress bar is drawn live (a terminal), so that per-step log lines would be noise."""
    return not disable_tqdm and sys.stderr.isatty()
