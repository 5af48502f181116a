"""data2vec self-supervised models for text, images and speech, in the HuggingFace ecosystem."""

from transformers import AutoConfig, AutoModel

from .configuration_data2vec import MODALITIES, MODALITY_DEFAULTS, Data2VecConfig
from .conversion import config_from_transformers, convert_checkpoint, convert_state_dict
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

__version__ = "0.1.0"

AutoConfig.register(Data2VecConfig.model_type, Data2VecConfig, exist_ok=True)
AutoModel.register(Data2VecConfig, Data2VecModel, exist_ok=True)

__all__ = [
    "MODALITIES",
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
    "config_from_transformers",
    "convert_checkpoint",
    "convert_state_dict",
]
