"""data2vec self-supervised models for text, images and speech, in the HuggingFace ecosystem."""

import importlib

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from .configuration_data2vec import MODALITIES, MODALITY_DEFAULTS, Data2VecConfig
from .conversion import config_from_transformers, convert_state_dict
from .ema import EMATeacher, ema_decay_at
# the tokenizer class of a fairseq dictionary lacking some GPT-2 tokens, for AutoTokenizer (registered below); the
# module imports only the standard library and transformers' tokenizer base, `tokenizers` when a tokenizer is built
from .fairseq_text import FairseqDictionaryTokenizer
from .masking import (
    DataCollatorForData2VecPretraining,
    SeededBatch,
    block_mask,
    check_batch,
    random_affine,
    text_span_mask,
    time_span_mask,
)
from .modeling_data2vec import (
    MODEL_CLASSES,
    Data2VecAudioModel,
    Data2VecEncoder,
    Data2VecEncoderOutput,
    Data2VecModel,
    Data2VecModelOutput,
    Data2VecPreTrainedModel,
    Data2VecTextModel,
    Data2VecVisionModel,
)
from .modeling_data2vec_pretraining import (
    Data2VecCollapseError,
    Data2VecForPreTraining,
    Data2VecForPreTrainingOutput,
    data2vec_targets,
    normalize_targets,
)
from .modeling_data2vec_heads import (
    HEAD_CLASSES,
    Data2VecForAudioClassification,
    Data2VecForCTC,
    Data2VecForImageClassification,
    Data2VecForQuestionAnswering,
    Data2VecForSequenceClassification,
    Data2VecForTokenClassification,
    Data2VecModelForSequenceClassification,
)
from .optimization import layer_decay_optimizer, parameter_groups
from .probe import linear_probe
from .sharing import model_card

__version__ = "0.1.0"

# imported on first use. The pretraining loop and the converter: `python -m modeling_data2vec_unified.trainer` (and
# `accelerate launch -m ...`, `python -m modeling_data2vec_unified.conversion_cli`) runs that module as __main__, and a copy imported here first would be a second module (runpy warns). The
# data loading, fine-tuning and metrics modules: they import `datasets` / transformers' Trainer / evaluate, which
# `import modeling_data2vec_unified` (what makes AutoModel know our checkpoints) does not need.
_LAZY = {
    "Data2VecPretrainer": "training.trainer", "PretrainingArguments": "training.arguments",
    "PretrainingData": "data", "ProbeData": "data", "load_pretraining_data": "data",
    "Data2VecTrainer": "finetuning", "ctc_processor": "finetuning", "metrics": None,
    "tokenizer_from_fairseq": "fairseq_text", "convert_checkpoint": "conversion_cli",
}


def __getattr__(name: str):
    if name in _LAZY:
        if _LAZY[name] is None:  # a submodule
            value = importlib.import_module(f".{name}", __name__)
        else:
            value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


AutoConfig.register(Data2VecConfig.model_type, Data2VecConfig, exist_ok=True)
AutoModel.register(Data2VecConfig, Data2VecModel, exist_ok=True)
AutoModelForPreTraining.register(Data2VecConfig, Data2VecForPreTraining, exist_ok=True)
# text and audio checkpoints both answer AutoModelForSequenceClassification, each with its own head
AutoModelForSequenceClassification.register(Data2VecConfig, Data2VecModelForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(Data2VecConfig, Data2VecForTokenClassification, exist_ok=True)
AutoModelForQuestionAnswering.register(Data2VecConfig, Data2VecForQuestionAnswering, exist_ok=True)
AutoModelForImageClassification.register(Data2VecConfig, Data2VecForImageClassification, exist_ok=True)
AutoModelForCTC.register(Data2VecConfig, Data2VecForCTC, exist_ok=True)
AutoModelForAudioClassification.register(Data2VecConfig, Data2VecForAudioClassification, exist_ok=True)
# AutoTokenizer finds the class a saved fairseq-dictionary tokenizer names (fairseq_text.py); for a data2vec folder
# naming no class it stands in for the base fast tokenizer, and without fairseq_dictionary_size it changes nothing
AutoTokenizer.register(Data2VecConfig, tokenizer_class=FairseqDictionaryTokenizer, exist_ok=True)

__all__ = [
    "Data2VecPretrainer",
    "Data2VecTrainer",
    "ctc_processor",
    "FairseqDictionaryTokenizer",
    "tokenizer_from_fairseq",
    "layer_decay_optimizer",
    "metrics",
    "model_card",
    "parameter_groups",
    "HEAD_CLASSES",
    "Data2VecForAudioClassification",
    "Data2VecForCTC",
    "Data2VecForImageClassification",
    "Data2VecForQuestionAnswering",
    "Data2VecForSequenceClassification",
    "Data2VecForTokenClassification",
    "Data2VecModelForSequenceClassification",
    "PretrainingArguments",
    "PretrainingData",
    "ProbeData",
    "SeededBatch",
    "linear_probe",
    "load_pretraining_data",
    "random_affine",
    "DataCollatorForData2VecPretraining",
    "Data2VecCollapseError",
    "Data2VecForPreTraining",
    "Data2VecForPreTrainingOutput",
    "EMATeacher",
    "MODALITIES",
    "MODEL_CLASSES",
    "MODALITY_DEFAULTS",
    "Data2VecAudioModel",
    "Data2VecConfig",
    "Data2VecEncoder",
    "Data2VecEncoderOutput",
    "Data2VecModel",
    "Data2VecModelOutput",
    "Data2VecPreTrainedModel",
    "Data2VecTextModel",
    "Data2VecVisionModel",
    "block_mask",
    "check_batch",
    "config_from_transformers",
    "convert_checkpoint",
    "convert_state_dict",
    "data2vec_targets",
    "ema_decay_at",
    "normalize_targets",
    "text_span_mask",
    "time_span_mask",
]
