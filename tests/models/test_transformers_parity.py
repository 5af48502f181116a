"""Our models reproduce transformers' Data2Vec* models on the same weights (fp32, eval, padding in the batch)."""

import modeling_data2vec_unified as d2v
import pytest
import torch
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


@pytest.mark.parametrize("modality", ["vision", "audio"])
def test_masked_inputs_equal_transformers(modality, tmp_path):
    """The mask token (vision) and the masked-frame embedding (audio) are mapped and applied as transformers does."""
    theirs = tiny_transformers_model(modality, **({"use_shared_relative_position_bias": True}
                                                  if modality == "vision" else {}))
    ours = _load_ours(theirs, tmp_path, d2v.MODEL_CLASSES[modality])
    inputs = example_inputs(ours.config)
    g = torch.Generator().manual_seed(1)
    if modality == "vision":
        inputs["bool_masked_pos"] = torch.rand(2, 16, generator=g) < 0.5
    else:
        frames = ours.config.num_audio_frames(inputs["input_values"].shape[1])
        inputs["mask_time_indices"] = torch.rand(2, frames, generator=g) < 0.5
    assert max_output_difference(ours, theirs, inputs) <= 1e-4
    unmasked = {k: v for k, v in inputs.items() if k not in ("bool_masked_pos", "mask_time_indices")}
    with torch.no_grad():
        assert not torch.allclose(ours(**inputs).last_hidden_state, ours(**unmasked).last_hidden_state)
