"""Pretrain data2vec on images, then probe the encoder.

    python examples/pretrain_vision.py                              # built-in digits, tiny ViT, ~2 CPU minutes
    python examples/pretrain_vision.py --dataset ./my_images --model_size small --config_overrides image_size=64,patch_size=8

`--dataset` takes a folder of images (one subfolder per class gives labels, and so a linear probe at the end), an
image dataset on the Hub, or `builtin`. Every `data2vec-pretrain` flag works here (docs/training.md); this script
only changes a few defaults and then uses the model it trained.
"""

import torch
from transformers import AutoImageProcessor, AutoModel, HfArgumentParser

from modeling_data2vec_unified import Data2VecPretrainer, PretrainingArguments


def main(argv=None) -> dict:
    parser = HfArgumentParser(PretrainingArguments)
    parser.set_defaults(modality="vision", output_dir="runs/example-vision", logging_steps=100)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    metrics = Data2VecPretrainer(args).train()
    print(f"pretrained {metrics.get('probe_pretrained', float('nan')):.1%} vs random init "
          f"{metrics.get('probe_random_init', float('nan')):.1%} (linear probe, held out)")

    # the result is a plain transformers checkpoint: an image processor and an encoder
    processor = AutoImageProcessor.from_pretrained(args.output_dir)
    model = AutoModel.from_pretrained(args.output_dir).eval()
    image = (torch.rand(model.config.num_channels, 8, 8) * 255).to(torch.uint8)
    with torch.no_grad():
        patches = model(**processor(image, return_tensors="pt")).last_hidden_state[:, 1:]  # after the CLS token
    features = patches.mean(1)
    print(f"{type(model).__name__}: one image -> features {tuple(features.shape)}")
    return metrics


if __name__ == "__main__":
    main()
