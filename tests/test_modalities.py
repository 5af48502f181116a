"""The per-modality description (`modalities.MODALITY_INFO`) and the per-modality tables it names agree: every
modality has its entry everywhere, so adding one that misses a table fails here, not in a user's run."""

import modeling_data2vec_unified.data.builtin as builtin
import modeling_data2vec_unified.data.preparation as preparation
import modeling_data2vec_unified.input_checks as input_checks
import modeling_data2vec_unified.masking as masking
import modeling_data2vec_unified.modeling_data2vec as modeling
import pytest
from modeling_data2vec_unified.configuration_data2vec import MODALITIES as CONFIG_MODALITIES
from modeling_data2vec_unified.configuration_data2vec import MODALITY_DEFAULTS
from modeling_data2vec_unified.mask_types import MASK_TYPES
from modeling_data2vec_unified.modalities import MODALITIES, MODALITY_INFO, modality_info
from modeling_data2vec_unified.probe import POOLING, RAW_FEATURES
from modeling_data2vec_unified.training import recipes


def test_every_per_modality_table_covers_exactly_the_described_modalities():
    tables = {
        "config": CONFIG_MODALITIES, "MODALITY_DEFAULTS": MODALITY_DEFAULTS, "FRONT_ENDS": modeling.FRONT_ENDS,
        "PREPARATIONS": preparation.PREPARATIONS, "BUILTIN_SETS": builtin.BUILTIN_SETS,
        "MASK_LAYOUTS": masking.MASK_LAYOUTS, "VALUE_CHECKS": input_checks.VALUE_CHECKS,
        "NUM_POSITIONS": input_checks.NUM_POSITIONS, "EXAMPLE_CHECKS": input_checks.EXAMPLE_CHECKS,
        "MODALITY_INPUT": input_checks.MODALITY_INPUT, "MASK_INPUT": input_checks.MASK_INPUT, "POOLING": POOLING,
        "RAW_FEATURES": RAW_FEATURES, "TINY_RECIPES": recipes.TINY_RECIPES, "TINY_RECIPES_V2": recipes.TINY_RECIPES_V2,
        "OPTIMIZER_DEFAULTS": recipes.OPTIMIZER_DEFAULTS, "DEFAULT_ALGORITHM": recipes.DEFAULT_ALGORITHM,
        **{f"MASK_TYPES[{a}]": names for a, names in MASK_TYPES.items()},
    }
    wrong = {name: sorted(table) for name, table in tables.items() if set(table) != set(MODALITIES)}
    assert not wrong, f"tables whose modalities differ from modalities.MODALITIES {MODALITIES}: {wrong}"
    # every mask strategy a modality accepts is registered for it
    missing = [(a, m, t) for a, per in MASK_TYPES.items() for m, names in per.items() for t in names
               if (a, m, t) not in masking.MASKS]
    assert not missing


def test_the_description_names_what_the_models_take():
    """Each modality's input and mask arguments are parameters of its base model's / the pretraining model's
    forward (the collator builds its batches with these names)."""
    import inspect

    from modeling_data2vec_unified.modeling_data2vec_pretraining import Data2VecForPreTraining
    from modeling_data2vec_unified.sharing import BASE_CLASSES

    pretraining = inspect.signature(Data2VecForPreTraining.forward).parameters
    for name, info in MODALITY_INFO.items():
        assert info.name == name and modality_info(name) is info
        assert info.input_name in inspect.signature(getattr(modeling, BASE_CLASSES[name]).forward).parameters
        assert info.input_name in pretraining and info.mask_input in pretraining
    with pytest.raises(ValueError, match="unknown modality 'speech': use one of text, vision, audio"):
        modality_info("speech")
