"""data2vec pretraining, one concern per module (docs/architecture.md, "The package, module by module"):

- `arguments`: `PretrainingArguments`, every flag of `data2vec-pretrain`, its defaults and the checks of its values;
- `recipes`: the per-modality tables (sizes, tiny recipes, schedules, optimiser settings, default algorithm);
- `trainer`: `Data2VecPretrainer` (build, train, stop, finish), `cli` and `main`;
- `checkpointing`: `Checkpointer` (find / check / save / load / prune checkpoint-N folders), RNG states;
- `metrics`: `StepTally` (device-side sums of a logging interval) and `MetricsReporter` (the one writer of metrics);
- `evaluation`: `Evaluation` (held-out loss, periodic and final linear probes) and `HealthCheck` (collapse watch);
- `parallel`: `apply_fsdp` / `apply_compile` and FSDP's checks and gathering;
- `stopping`: `Stopper` (signals, --max_train_time) and the resume command.

`modeling_data2vec_unified.trainer` re-exports the public names and is what `python -m` runs."""
