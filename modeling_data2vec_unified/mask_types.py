"""The names of data2vec's mask strategies, and what the package knows of them without drawing a mask.

The one source of `mask_type`'s allowed values: `MaskType` is the config's type hint, `MASK_TYPES` (which algorithm
and modality take which) its check, `masking.py` registers a strategy under each name (and refuses one not named
here), and tests/models/test_config.py checks that the docs name the same. A new strategy: its name here, its
function in `masking.py` registered under that name.

`num_visible` is data2vec 2.0's contract between the masks and the model: how many tokens every mask leaves
visible, read by the model, the input checks and the strategies alike. This module imports neither torch nor numpy
nor any other module of the package: the config imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .configuration_data2vec import Data2VecConfig

MaskType = Literal["span", "block", "random", "inverse_block"]

# the masking each modality accepts, per algorithm
MASK_TYPES: dict[str, dict[str, tuple[MaskType, ...]]] = {
    "data2vec": {"text": ("span",), "vision": ("block", "random"), "audio": ("span",)},
    "data2vec2": {"text": ("random",), "vision": ("inverse_block", "random"), "audio": ("block", "random")},
}


def num_visible(config: Data2VecConfig, num_tokens: int) -> int:
    """data2vec 2.0: tokens each masked copy keeps of `num_tokens`, fairseq's exact counts: "random" keeps
    int(T * (1 - p)) (`random_masking`'s len_keep), "inverse_block" keeps int(T * (1 - p)) (`compute_block_mask_2d`
    with inverse_mask: 39 of 196 at p = 0.8), "block" masks int(T * p) (`compute_block_mask_1d`). The student encodes
    this many tokens per copy: a function of the config and T alone, so the model never reads a mask back."""
    T, p = num_tokens, config.mask_prob
    keep = T - int(T * p) if config.mask_type == "block" else int(T * (1 - p))
    if keep < 1:
        raise ValueError(
            f"mask_prob={p} leaves no visible token of {T} ({config.mask_type} masking keeps {keep}): the student must "
            f"see something; lower mask_prob or use longer inputs"
        )
    if keep >= T:
        raise ValueError(
            f"mask_prob={p} masks no token of {T} ({config.mask_type} masking keeps all): nothing to predict; raise "
            f"mask_prob or use longer inputs"
        )
    return keep


__all__ = ["MASK_TYPES", "MaskType", "num_visible"]
