"""When a run stops before --max_steps: a signal (SIGTERM, a cluster's pre-emption; SIGINT, Ctrl-C) or
--max_train_time. The loop asks `Stopper.reason` after every step; it then saves a checkpoint and prints the command
that resumes the run (`resume_command`)."""

from __future__ import annotations

import contextlib
import logging
import shlex
import signal
import threading
import time
from collections.abc import Callable

import torch

logger = logging.getLogger("modeling_data2vec_unified.trainer")


class Stopper:
    """Whether the loop should stop early. `interrupted` is the signal that asked, if one did; --max_train_time
    (`max_seconds`) counts from the Stopper's creation. Several processes agree at logging steps (where the loop syncs
    anyway), so that they all save the same step."""

    def __init__(self, accelerator, max_seconds: float | None):
        self.accelerator, self.max_seconds = accelerator, max_seconds
        self.interrupted: int | None = None
        self._started = time.perf_counter()

    @contextlib.contextmanager
    def catching_signals(self, next_step: Callable[[], int]):
        """SIGTERM and SIGINT let the current step (`next_step()`) finish; `reason` then says so. A second Ctrl-C
        stops at once. Handlers are installed only in the main thread, and the previous ones restored after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.interrupted is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.interrupted = signum
            logger.warning("received %s: finishing step %d, then saving a checkpoint", signal.Signals(signum).name,
                           next_step())

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def reason(self, logged: bool) -> str | None:
        """Why the loop stops after this step, if it does (`logged`: this is a logging step)."""
        reason = None
        if self.interrupted is not None:
            reason = f"{signal.Signals(self.interrupted).name}"
        elif self.max_seconds and time.perf_counter() - self._started >= float(self.max_seconds):
            reason = f"--max_train_time {float(self.max_seconds):g} s"
        acc = self.accelerator
        if acc.num_processes > 1:
            if not logged:
                return None
            flag = acc.reduce(torch.tensor(float(reason is not None), device=acc.device), reduction="sum")
            if float(flag) == 0:
                return None
            reason = reason or "another process's stop"
        return reason


def resume_command(command: list[str] | None) -> str:
    """The command that continues a run started with the CLI flags `command` (None: not started by the CLI)."""
    flags, skip = [], False
    for item in command or ["<the same flags>"]:
        if skip or item.startswith("--resume_from_checkpoint"):
            skip = item == "--resume_from_checkpoint"
            continue
        flags.append(shlex.quote(item) if item != "<the same flags>" else item)
    return " ".join(["data2vec-pretrain", *flags, "--resume_from_checkpoint", "latest"])
