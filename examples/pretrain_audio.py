"""Pretrain data2vec on speech or other audio, then extract frame features.

    python examples/pretrain_audio.py                                # words said by synthetic voices, tiny model
    python examples/pretrain_audio.py --dataset ./my_wavs --model_size base --max_audio_seconds 15.6 \
        --mixed_precision bf16 --per_device_train_batch_size 8 --gradient_accumulation_steps 8
    python examples/pretrain_audio.py --init_from facebook/data2vec-audio-base --dataset ./domain_audio \
        --ema_decay 0.999 --ema_end_decay 0.9999 --learning_rate 5e-5        # continued pretraining

A folder of .wav / .flac / .ogg files is read with soundfile; audio at another sampling rate than the model's (16 kHz)
is resampled (`--no_resample_audio` refuses it instead). Every `data2vec-pretrain` flag works here.
"""

import math

import torch
from transformers import AutoFeatureExtractor, AutoModel, HfArgumentParser

from modeling_data2vec_unified import Data2VecPretrainer, PretrainingArguments


def main(argv=None) -> dict:
    parser = HfArgumentParser(PretrainingArguments)
    parser.set_defaults(modality="audio", output_dir="runs/example-audio", logging_steps=50)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    metrics = Data2VecPretrainer(args).train()
    if "probe_pretrained" in metrics:
        print(f"sound classes, linear probe: pretrained {metrics['probe_pretrained']:.1%} vs random init "
              f"{metrics['probe_random_init']:.1%}")

    out = args.output_dir
    extractor, model = AutoFeatureExtractor.from_pretrained(out), AutoModel.from_pretrained(out).eval()
    rate = extractor.sampling_rate
    tone = torch.sin(2 * math.pi * 440 * torch.arange(rate) / rate)  # one second of A4
    inputs = extractor(tone.numpy(), sampling_rate=rate, return_tensors="pt")
    with torch.no_grad():
        frames = model(inputs["input_values"]).last_hidden_state
    print(f"{type(model).__name__}: 1 s of audio -> {tuple(frames.shape)} frame features")
    return metrics


if __name__ == "__main__":
    main()
