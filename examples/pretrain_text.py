"""Pretrain data2vec on text, then embed a sentence with the result.

    python examples/pretrain_text.py                                 # help texts + stdlib docstrings, tiny model
    python examples/pretrain_text.py --dataset ./corpus.txt --max_seq_length 256 --tokenizer_vocab_size 8000
    python examples/pretrain_text.py --dataset wikitext --dataset_config_name wikitext-103-raw-v1 \
        --processor roberta-base --model_size base --mixed_precision bf16

Without `--processor` a byte-level BPE tokenizer is trained on the data (with `tokenizers`) and saved next to the
model. Every `data2vec-pretrain` flag works here (docs/training.md).
"""

import torch
from transformers import AutoModel, AutoTokenizer, HfArgumentParser

from modeling_data2vec_unified import Data2VecPretrainer, PretrainingArguments


def main(argv=None) -> dict:
    parser = HfArgumentParser(PretrainingArguments)
    parser.set_defaults(modality="text", output_dir="runs/example-text", logging_steps=50)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    metrics = Data2VecPretrainer(args).train()
    print(f"final loss {metrics['loss']:.4f}, target_var {metrics['target_var']:.3f}, pred_var {metrics['pred_var']:.3f}")

    out = args.output_dir
    tokenizer, model = AutoTokenizer.from_pretrained(out), AutoModel.from_pretrained(out).eval()
    batch = tokenizer(["The for statement iterates over a sequence.", "import this"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (2, tokens, hidden)
    mask = batch["attention_mask"][..., None]
    embeddings = (hidden * mask).sum(1) / mask.sum(1)
    print(f"{type(model).__name__}: 2 sentences -> embeddings {tuple(embeddings.shape)}, cosine "
          f"{torch.cosine_similarity(embeddings[0], embeddings[1], dim=0):.3f}")
    return metrics


if __name__ == "__main__":
    main()
