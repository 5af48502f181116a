"""`data2vec-convert`: a transformers Data2VecText / Data2VecVision / Data2VecAudio checkpoint written in this package's
format, after checking that both models give the same outputs (`convert_checkpoint`); or one of Meta's released
fairseq / data2vec_vision checkpoint files, with its processor and EMA teacher (`convert_fairseq`). The mappings
themselves are `conversion` (transformers') and `conversion_fairseq`; this module imports the models, so the mappings
stay out of their way.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForCTC, AutoModelForImageClassification, AutoModelForPreTraining

from .configuration_data2vec import Data2VecConfig
from .conversion import hub_kwargs, checkpoint_modality, example_inputs, max_output_difference, read_config_dict
from .modeling_data2vec import MODEL_CLASSES
from .modeling_data2vec_pretraining import TEACHER_WEIGHTS

logger = logging.getLogger(__name__)


def convert_checkpoint(source, destination, check: bool = True, atol: float = 1e-4, encoder_only: bool = False,
                       **kwargs):
    """Write a transformers Data2Vec* checkpoint in our format, after checking that both give the same outputs (a
    task checkpoint keeps its head: the logits are compared too). `encoder_only`: convert the encoder alone."""
    try:
        config_dict = read_config_dict(source, **kwargs)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        if os.path.exists(source):
            raise
        raise FileNotFoundError(
            f"{source} does not exist: no such folder here, and no Hub model of that id could be read ({error}). "
            f"Check the path, or the Hub id and your network"
        ) from error
    if config_dict.get("model_type") == Data2VecConfig.model_type:
        raise ValueError(
            f"{source} is already a modeling_data2vec_unified checkpoint: nothing to convert. Load it with "
            f"AutoModel.from_pretrained({str(source)!r}) (or Data2VecForPreTraining.from_pretrained)"
        )
    modality = checkpoint_modality(source, **kwargs)
    ours, theirs = _classes_for(source, config_dict, modality, encoder_only)
    model = ours.from_pretrained(source, **kwargs)
    if check:
        reference = theirs.from_pretrained(source, **hub_kwargs(kwargs)).float()
        diff = max_output_difference(model.float(), reference, example_inputs(model.config))
        if diff > atol:
            raise RuntimeError(f"converted model differs from transformers' by {diff:.2e} > {atol}; nothing written")
        logger.info("outputs match transformers' within %.2e", diff)
    model.save_pretrained(destination)
    return model


# transformers' Data2Vec* task classes -> ours, which load their heads (modeling_data2vec_heads)
HEAD_CLASSES = {
    "Data2VecTextForSequenceClassification": "Data2VecForSequenceClassification",
    "Data2VecTextForTokenClassification": "Data2VecForTokenClassification",
    "Data2VecTextForQuestionAnswering": "Data2VecForQuestionAnswering",
    "Data2VecVisionForImageClassification": "Data2VecForImageClassification",
    "Data2VecAudioForCTC": "Data2VecForCTC",
    "Data2VecAudioForSequenceClassification": "Data2VecForAudioClassification",
}


def _classes_for(source, config_dict: dict, modality: str, encoder_only: bool):
    """(our class, transformers' class) for the checkpoint's architecture: a task checkpoint keeps its head; one
    whose head has no counterpart here is refused (naming what keeps it) unless `encoder_only`."""
    import transformers

    from . import modeling_data2vec_heads

    architecture = (config_dict.get("architectures") or [None])[0]
    if encoder_only or architecture is None or architecture not in HEAD_CLASSES and architecture.endswith("Model"):
        return MODEL_CLASSES[modality], AutoModel
    if architecture not in HEAD_CLASSES:
        raise ValueError(
            f"{source} is a {architecture}, whose head has no counterpart in this package (its heads: "
            f"{', '.join(HEAD_CLASSES)}): keep using it with transformers' own class, or convert the encoder alone "
            f"with --encoder_only (the head is dropped)"
        )
    return getattr(modeling_data2vec_heads, HEAD_CLASSES[architecture]), getattr(transformers, architecture)


# fairseq's LibriSpeech letter dictionary (dict.ltr.txt of the wav2vec 2.0 / data2vec 960h, 100h and 10m
# fine-tunes, examples/wav2vec/README.md): after <s> <pad> </s> <unk>, by count; "|" is the word boundary
LIBRISPEECH_LETTERS = "| E T A O N I H S R D L U M W C F G Y P B V K ' X J Q Z".split()
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # the image recipes' normalisation
LICENCES = {"vision": "CC-BY-NC 4.0 (Meta's data2vec vision weights; fairseq examples/data2vec/README.md)",
            "audio": "MIT (fairseq)", "text": "MIT (fairseq)"}


def letter_tokenizer(folder: Path, num_rows: int, dict_ltr: str | None = None):
    """A `Wav2Vec2CTCTokenizer` whose ids are the rows of a fairseq CTC model's output layer: fairseq's letter
    dictionary (`dict_ltr`, default LibriSpeech's) after <s> <pad> </s> <unk>. fairseq's blank is row 0 (<s>); here it
    is named <pad>, the blank of transformers' CTC models, and row 1 (fairseq's <pad>) <s>, as transformers' wav2vec 2.0
    conversion swaps them."""
    import json

    from transformers import Wav2Vec2CTCTokenizer

    if dict_ltr is not None:
        letters = [line.split()[0] for line in Path(dict_ltr).read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        letters = LIBRISPEECH_LETTERS
    symbols = ["<pad>", "<s>", "</s>", "<unk>", *letters]
    if len(symbols) != num_rows:
        raise ValueError(
            f"the CTC output layer has {num_rows} rows but {dict_ltr or 'the LibriSpeech letter dictionary'} gives "
            f"{len(symbols)} symbols (4 specials + {len(letters)}): pass the fine-tune's own dict.ltr.txt with "
            "--fairseq_dict"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(symbols)}, ensure_ascii=False))
    return Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                eos_token="</s>", word_delimiter_token="|", do_lower_case=False)


def fairseq_processor(converted, destination: Path, fairseq_dict: str | None = None,
                      gpt2_bpe: tuple[str, str] | None = None):
    """The processor that prepares inputs as the checkpoint's recipe did, or None (text without its BPE files)."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    config = converted.config
    if config.modality == "vision":
        from .data import ImageProcessor

        normalization = {"image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, **converted.processor_settings}
        return ImageProcessor(size={"height": config.image_size, "width": config.image_size}, **normalization)
    if config.modality == "audio":
        features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=config.sampling_rate, padding_value=0.0,
                                            do_normalize=True, return_attention_mask=True)  # task.normalize: true
        if converted.model_class != "Data2VecForCTC":
            return features
        return Wav2Vec2Processor(feature_extractor=features,
                                 tokenizer=letter_tokenizer(destination, config.vocab_size, fairseq_dict))
    if fairseq_dict is None or gpt2_bpe is None:
        return None
    from .fairseq_text import tokenizer_from_fairseq

    return tokenizer_from_fairseq(fairseq_dict, *gpt2_bpe, num_embeddings=config.vocab_size)


def convert_fairseq(source, destination, fairseq_dict: str | None = None, gpt2_bpe: tuple[str, str] | None = None):
    """Write a released fairseq / data2vec_vision data2vec checkpoint in our format: the model (pretrained: student +
    decoder or head, with the EMA teacher in teacher.safetensors; fine-tuned: the matching head), its processor, and
    a card naming the source and the licence. The written folder is reloaded and must give the built model's outputs."""
    from .conversion import example_inputs
    from .conversion_fairseq import KINDS, convert_fairseq_checkpoint

    destination = Path(destination)
    converted = convert_fairseq_checkpoint(source)
    model = converted.build()
    model.config.pretraining_info = {"converted from": f"{Path(source).name}: {KINDS[converted.kind]}",
                                     "licence of the weights": LICENCES[model.config.modality]}
    processor = fairseq_processor(converted, destination, fairseq_dict, gpt2_bpe)
    model.save_pretrained(destination)
    if converted.teacher is not None:
        model.teacher.save(destination / TEACHER_WEIGHTS)
    if processor is not None:
        processor.save_pretrained(destination)
    auto = {"Data2VecForPreTraining": AutoModelForPreTraining, "Data2VecForCTC": AutoModelForCTC,
            "Data2VecForImageClassification": AutoModelForImageClassification}[converted.model_class]
    reloaded = auto.from_pretrained(destination).eval()
    inputs = example_inputs(model.config)
    with torch.no_grad():
        ours = model.data2vec(**inputs).last_hidden_state
        again = reloaded.data2vec(**inputs).last_hidden_state
        same_teacher = converted.teacher is None or all(
            torch.equal(a, b) for a, b in zip(model.teacher.model.state_dict().values(),
                                              reloaded.teacher.model.state_dict().values()))
    if not torch.allclose(ours, again, atol=1e-6) or not same_teacher:
        raise RuntimeError(f"the written folder {destination} does not reload to the converted model")
    for note in converted.notes + ([] if processor is not None else [
            "no tokenizer written: pass --fairseq_dict dict.txt --gpt2_bpe encoder.json vocab.bpe"]):
        logger.info("note: %s", note)
    if model.config.modality == "vision":
        logger.warning("licence: Meta's data2vec vision weights are CC-BY-NC 4.0 (non-commercial)")
    return model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="data2vec-convert",
        description="Convert a transformers Data2VecText/Vision/Audio checkpoint (folder or Hub id) to this "
        "package's format, after checking that both give the same outputs.",
    )
    parser.add_argument("source", help="folder or Hub id, e.g. facebook/data2vec-audio-base; or a released fairseq / "
                                       "data2vec_vision checkpoint file (base_imagenet.pt, nlp_base.pt, ...)")
    parser.add_argument("destination", help="output folder")
    parser.add_argument("--fairseq_dict", help="fairseq checkpoints: text's dict.txt, or a CTC fine-tune's "
                                               "dict.ltr.txt (default: LibriSpeech's letters)")
    parser.add_argument("--gpt2_bpe", nargs=2, metavar=("ENCODER_JSON", "VOCAB_BPE"),
                        help="fairseq text checkpoints: GPT-2's encoder.json and vocab.bpe")
    parser.add_argument("--no-check", action="store_true", help="skip the output comparison with transformers")
    parser.add_argument("--encoder_only", action="store_true", help="a transformers task checkpoint: convert its "
                                                                     "encoder alone, dropping the head")
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if Path(args.destination).exists() and not Path(args.destination).is_dir():
            raise ValueError(f"the destination {args.destination} is a file: give a folder (created if missing)")
        if Path(args.source).is_file():
            model = convert_fairseq(args.source, args.destination, args.fairseq_dict, args.gpt2_bpe)
        else:
            model = convert_checkpoint(args.source, args.destination, check=not args.no_check, atol=args.atol,
                                       encoder_only=args.encoder_only)
    except (FileNotFoundError, ValueError) as error:
        print(f"data2vec-convert: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    print(f"wrote {type(model).__name__} ({model.config.modality}) to {args.destination}")


if __name__ == "__main__":
    main()
