"""The pretraining trainer's parts, one concern per module (issue 24, in progress): `arguments` (the flags, their
defaults and checks), `recipes` (the per-modality tables) and `checkpointing` (checkpoint files, finding one, the
loop position, RNG states). The loop, the checkpoint methods, parallelism, metrics and evaluation are still in
`modeling_data2vec_unified.trainer`, which re-exports every name these modules define."""
