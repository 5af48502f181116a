"""Our models reproduce transformers' Data2Vec* models on the same weights (fp32, eval, padding in the batch)."""

import pytest
import torch
import transformers

import modeling_data2vec_unified as d2v
from modeling_data2vec_unified.conversion import example_inputs, max_output_difference

from conftest import tiny_transformers_model

VISION_VARIANTS = {
    "shared_bias": dict(use_shared_relative_position_bias=True),
    "per_layer_bias": dict(use_relative_position_bias=True),
    "absolute_cls_pool": dict(use_absolute_position_embeddings=True, use_mean_pooling=False),
}


def _load_ours(theirs, tmp_path, cls):
    theirs.save_pretrained(tmp_path / "theirs")
    return cls.from_pretrained(tmp_path / "theirs")


@pytest.mark.parametrize(
    "modality, overrides",
    [("text", {}), ("audio", {}), *[("vision", v) for v in VISION_VARIANTS.values()]],
    ids=["text", "audio", *[f"vision-{k}" for k in VISION_VARIANTS]],
)
def test_outputs_equal_transformers(modality, overrides, tmp_path):
    theirs = tiny_transformers_model(modality, **overrides)
    ours = _load_ours(theirs, tmp_path, d2v.MODEL_CLASSES[modality])
    inputs = example_inputs(ours.config)
    assert max_output_difference(ours, theirs, inputs) <= 1e-4
    # the comparison is not vacuous: a perturbed weight is detected
    with torch.no_grad():
        ours.encoder.layers[-1].fc2.weight.add_(0.1 * torch.randn_like(ours.encoder.layers[-1].fc2.weight))
    assert max_output_difference(ours, theirs, inputs) > 1e-3
