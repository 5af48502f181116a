"""Fine-tuning with transformers' `Trainer`: `Data2VecTrainer` is a `Trainer` with data2vec's layer-wise
learning-rate decay and a model card that records the data2vec pretraining settings.

    trainer = Data2VecTrainer(model=model, args=TrainingArguments(...), layer_decay=0.65,
                              train_dataset=..., eval_dataset=..., compute_metrics=d2v.metrics.accuracy)
    trainer.train(); trainer.push_to_hub()

A plain `Trainer` works as well: `optimizers=(layer_decay_optimizer(model, args, 0.65), None)` gives it the same
optimizer, and its card carries the data2vec tags (from `model.model_tags`), datasets and metrics. `ctc_processor`
builds a CTC model's character vocabulary and processor from transcripts. (What the example scripts share beyond
these lives with them, in examples/example_utils.py.)
"""

from __future__ import annotations

from pathlib import Path

from transformers import Trainer

from .optimization import parameter_groups


class Data2VecTrainer(Trainer):
    """`transformers.Trainer` plus `layer_decay` (0 < layer_decay <= 1; data2vec vision fine-tunes with 0.65): layer
    l of L gets `learning_rate * layer_decay ** (L + 1 - l)`, the front end the least, the head the full rate."""

    def __init__(self, *args, layer_decay: float = 1.0, **kwargs):
        self.layer_decay = layer_decay
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.layer_decay < 1.0:
            model = model if model is not None else self.model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k != "params"}
            groups = parameter_groups(model, self.args.learning_rate, self.args.weight_decay, self.layer_decay)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            return self.optimizer
        return super().create_optimizer(model)

    def create_model_card(self, *args, **kwargs):
        """transformers' card (training results, hyperparameters), then the data2vec section and metadata. The task
        defaults to the head's (transformers cannot infer it for classes outside its own mappings), so the card's
        model-index holds the eval results."""
        from .sharing import PIPELINE_TAGS, add_data2vec_section

        if PIPELINE_TAGS.get(type(self.model).__name__):
            kwargs.setdefault("tasks", PIPELINE_TAGS[type(self.model).__name__])
        super().create_model_card(*args, **kwargs)
        if self.is_world_process_zero():
            readme = Path(self.args.output_dir, "README.md")
            # transformers 5 reads a model built from a config (no name) as "a fine-tuned version of []()"
            text = readme.read_text(encoding="utf-8")
            readme.write_text(text.replace("This model is a fine-tuned version of [](https://huggingface.co/) on",
                                           "This model was trained from scratch on"), encoding="utf-8")
            add_data2vec_section(readme, self.model.config, datasets=kwargs.get("dataset_tags"))


def ctc_processor(texts, folder: str | Path, sampling_rate: int = 16000, lowercase: bool = True):
    """A `Wav2Vec2Processor` for CTC fine-tuning, its character vocabulary built from `texts` (transcripts) as
    transformers' wav2vec2 / data2vec recipes build it: `<pad>` (id 0, the CTC blank), `<unk>`, `|` for the space,
    then every character seen. The vocabulary is written to `folder`/vocab.json; the processor saves with the model.
    Use it with `Data2VecForCTC.from_pretrained(..., vocab_size=len(processor.tokenizer), pad_token_id=0)`."""
    import json

    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    chars = sorted({c for text in texts for c in (text.lower() if lowercase else text)} - {" "})
    if not chars:
        raise ValueError("ctc_processor needs transcripts with at least one non-space character")
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    Path(folder).mkdir(parents=True, exist_ok=True)
    vocab_file = Path(folder, "vocab.json")
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|",
                                     bos_token=None, eos_token=None, do_lower_case=False)  # CTC needs no <s> / </s>
    features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sampling_rate, padding_value=0.0,
                                        do_normalize=True, return_attention_mask=True)
    return Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer)
