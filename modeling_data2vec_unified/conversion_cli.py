"""`data2vec-convert`: a transformers Data2VecText / Data2VecVision / Data2VecAudio checkpoint written in this package's
format, after checking that both models give the same outputs (`convert_checkpoint`). The mapping itself (config,
rename table, qkv fusion) is `conversion`, which the models import; this module imports the models, so the two stay
out of each other's way.
"""

from __future__ import annotations

import argparse
import logging

from transformers import AutoModel

import os
import sys

from .configuration_data2vec import Data2VecConfig
from .conversion import _hub_kwargs, checkpoint_modality, example_inputs, max_output_difference, read_config_dict
from .modeling_data2vec import MODEL_CLASSES

logger = logging.getLogger(__name__)


def convert_checkpoint(source, destination, check: bool = True, atol: float = 1e-4, **kwargs):
    """Write a transformers Data2Vec* checkpoint in our format, after checking that both give the same outputs."""
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
    model = MODEL_CLASSES[modality].from_pretrained(source, **kwargs)
    if check:
        reference = AutoModel.from_pretrained(source, **_hub_kwargs(kwargs)).float()
        diff = max_output_difference(model.float(), reference, example_inputs(model.config))
        if diff > atol:
            raise RuntimeError(f"converted model differs from transformers' by {diff:.2e} > {atol}; nothing written")
        logger.info("outputs match transformers' within %.2e", diff)
    model.save_pretrained(destination)
    return model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="data2vec-convert",
        description="Convert a transformers Data2VecText/Vision/Audio checkpoint (folder or Hub id) to this "
        "package's format, after checking that both give the same outputs.",
    )
    parser.add_argument("source", help="folder or Hub id, e.g. facebook/data2vec-audio-base")
    parser.add_argument("destination", help="output folder")
    parser.add_argument("--no-check", action="store_true", help="skip the output comparison with transformers")
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model = convert_checkpoint(args.source, args.destination, check=not args.no_check, atol=args.atol)
    except (FileNotFoundError, ValueError) as error:
        print(f"data2vec-convert: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    print(f"wrote {type(model).__name__} ({model.config.modality}) to {args.destination}")


if __name__ == "__main__":
    main()
