"""`python -m modeling_data2vec_unified.trainer` (and `accelerate launch -m modeling_data2vec_unified.trainer`,
`torchrun ... -m modeling_data2vec_unified.trainer`): runs `data2vec-pretrain`. The trainer itself lives in the
`training` package, one module per concern (docs/architecture.md); its public names are importable from here too."""

from .training.arguments import parse_duration, parse_overrides, PretrainingArguments
from .training.checkpointing import Checkpointer, find_checkpoint, TrainerState
from .training.evaluation import Evaluation, HealthCheck, PERIODIC_PROBE_EXAMPLES
from .training.metrics import MetricsReporter, StepTally
from .training.parallel import apply_compile, apply_fsdp
from .training.recipes import (
    MODEL_SIZES,
    OPTIMIZER_DEFAULTS,
    OPTIMIZER_DEFAULTS_V2,
    TINY_OPTIMIZER,
    TINY_RECIPES,
    TINY_RECIPES_V2,
    TRAINING_DEFAULTS,
    TRAINING_DEFAULTS_V2,
)
from .training.trainer import (
    apply_config_updates,
    build_config,
    cli,
    Data2VecPretrainer,
    EpochBatchSampler,
    exit_after_gloo_run,
    main,
    NonFiniteLossError,
)

__all__ = [
    "apply_compile", "apply_config_updates", "apply_fsdp", "build_config", "Checkpointer", "cli", "Data2VecPretrainer",
    "EpochBatchSampler", "Evaluation", "exit_after_gloo_run", "find_checkpoint", "HealthCheck", "main",
    "MetricsReporter", "MODEL_SIZES", "NonFiniteLossError", "OPTIMIZER_DEFAULTS", "OPTIMIZER_DEFAULTS_V2",
    "parse_duration", "parse_overrides", "PERIODIC_PROBE_EXAMPLES", "PretrainingArguments", "StepTally",
    "TINY_OPTIMIZER", "TINY_RECIPES", "TINY_RECIPES_V2", "TRAINING_DEFAULTS", "TRAINING_DEFAULTS_V2", "TrainerState",
]

if __name__ == "__main__":
    main()
