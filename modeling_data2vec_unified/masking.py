"""data2vec's masks: one strategy per `mask_type`, registered under its name, and the collator that draws them.

Mask convention: True = masked, i.e. hidden from the student (the loss is computed there).

data2vec 1.0:
- text "span":    contiguous spans over the non-special tokens (data2vec text: spans of 4 over 35% of the tokens);
                  with `mask_length=1, mask_prob=0.15` and 10%/10% random/unchanged this is BERT's 80/10/10.
- vision "block": BEiT block masking: rectangles of >= `mask_length` patches with a log-uniform aspect ratio,
                  until round(mask_prob * patches) patches are masked; "random": that many patches drawn
                  uniformly, which works better on tiny patch grids.
- audio "span":   wav2vec 2.0 / data2vec span masking: each frame starts a span of `mask_length` frames with
                  probability mask_prob / mask_length (spans may overlap), then every row of the batch is thinned
                  to the same number of masked frames (rows too short for a span are masked on their own).
data2vec 2.0 (`clone_batch` masks per example, each leaving exactly `mask_types.num_visible` tokens visible):
"inverse_block" (vision), "block" (audio), "random" (any modality), as fairseq's data2vec 2.0 draws them.

A strategy is a function `(config, layout, rng) -> (rows, positions) bool mask` (`MaskStrategy`), registered with
`@register_mask` under (algorithm, modality, mask_type) in `MASKS`. `MaskLayout` says where a batch's masks go;
`draw_mask` builds it from the batch (one function per modality), calls the config's strategy and adds what the
modality needs beyond the mask (1.0 text: the student's view, `masked_input_ids`). A new strategy: its name in
`mask_types.py` (the config's type hint and checks read it there), its function here under `@register_mask`.

All randomness comes from a `numpy.random.Generator` passed in, so a seeded collator is deterministic. A batch
that arrives as a `SeededBatch` (the trainer's sampler makes them) is drawn from its own seed, so its masks are a
pure function of (seed, epoch, step, rank): the same with or without DataLoader workers and after a resume.
The checks of the inputs live in `input_checks.py` (the models import them too); their names are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .configuration_data2vec import Data2VecConfig
from .input_checks import (  # noqa: F401  (the checks this module does not call: re-exported, their old home)
    MASK_INPUT,
    MODALITY_INPUT,
    attention_unit,
    check_attention_mask,
    check_attention_values,
    check_batch,
    check_example_values,
    check_pixel_layout,
    check_token_ids,
    host_checks_are_free,
)
from .mask_types import MASK_TYPES, num_visible

# ---- the registry ----------------------------------------------------------------------------------------------


@dataclass
class MaskLayout:
    """Where one batch's masks go: `rows` masks of `num_tokens` positions each (text tokens, vision patches in
    row-major order, audio frames). `real` (rows, num_tokens) marks the positions that hold input, not padding;
    `maskable` those a 1.0 mask may cover (the real ones, less text's special tokens); `grid`: vision's patch grid;
    `token_ids`: text's ids on the host (the 1.0 student's view is drawn from them)."""

    rows: int
    num_tokens: int
    real: np.ndarray
    maskable: np.ndarray | None = None  # None: every real position
    grid: tuple[int, int] | None = None
    token_ids: np.ndarray | None = None

    def __post_init__(self):
        if self.maskable is None:
            self.maskable = self.real


MaskStrategy = Callable[[Data2VecConfig, MaskLayout, np.random.Generator], np.ndarray]

# (algorithm, modality, mask_type) -> strategy; filled by @register_mask below
MASKS: dict[tuple[str, str, str], MaskStrategy] = {}


def register_mask(algorithm: str, mask_type: str, modality: str | None = None):
    """Registers a strategy under `mask_type` for `modality`, or for every modality that `MASK_TYPES[algorithm]`
    lets use it. A name `mask_types.py` does not list for them is refused: the config would never ask for it."""
    allowed = MASK_TYPES[algorithm]
    modalities = [modality] if modality else [m for m, names in allowed.items() if mask_type in names]
    if not modalities or any(mask_type not in allowed[m] for m in modalities):
        raise ValueError(f"{algorithm} mask type {mask_type!r} is not allowed for {modality or 'any modality'}: "
                         "name it in mask_types.MASK_TYPES (and MaskType) first")

    def add(strategy: MaskStrategy) -> MaskStrategy:
        for m in modalities:
            MASKS[algorithm, m, mask_type] = strategy
        return strategy

    return add


def mask_strategy(config: Data2VecConfig) -> MaskStrategy:
    """The strategy `config.mask_type` names for the config's algorithm and modality."""
    key = (config.algorithm, config.modality, config.mask_type)
    if key not in MASKS:
        known = sorted(t for a, m, t in MASKS if (a, m) == key[:2])
        raise ValueError(f"no {config.algorithm} mask strategy {config.mask_type!r} for {config.modality}: "
                         f"mask_type must be one of {known}")
    return MASKS[key]


# ---- text ------------------------------------------------------------------------------------------------------


def text_span_mask(eligible: np.ndarray, mask_prob: float, span: int, rng: np.random.Generator) -> np.ndarray:
    """(B, T) bool mask of non-overlapping spans over the `eligible` positions of each row.

    A row with n eligible positions gets m = round_stochastic(mask_prob * n) masked ones, clipped to
    [1, n - 1] so that the student always sees something and every row contributes (rows with n < 2 get
    none). The m positions form ceil(m / span) spans (the last one shorter), placed uniformly at random
    without overlap: the realised fraction is mask_prob, where fairseq's overlapping spans reach ~30% at
    35%. A span runs over consecutive *eligible* positions (special tokens are skipped, never masked).
    """
    mask = np.zeros(eligible.shape, dtype=bool)
    for row, ok in enumerate(eligible):
        positions = np.flatnonzero(ok)
        n = len(positions)
        if n < 2:
            continue
        m = int(np.clip(math.floor(mask_prob * n + rng.random()), 1, n - 1))
        num_spans = math.ceil(m / span)
        lengths = np.full(num_spans, span)
        lengths[-1] = m - span * (num_spans - 1)
        # non-overlapping placement: choose num_spans gaps among the n - m unmasked positions (stars and bars)
        free = n - m
        gaps = np.sort(rng.choice(free + num_spans, num_spans, replace=False)) - np.arange(num_spans)
        order = rng.permutation(num_spans)  # which span length goes where (only the short one matters)
        lengths = lengths[order]
        starts = gaps + np.concatenate([[0], np.cumsum(lengths)[:-1]])
        idx = np.concatenate([np.arange(s, s + length) for s, length in zip(starts, lengths)])
        mask[row, positions[idx]] = True
    return mask


def corrupt_text(
    input_ids: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    mask_token_id: int,
    vocab_size: int,
    random_token_prob: float = 0.0,
    leave_unmasked_prob: float = 0.0,
    special_ids: Sequence[int] = (),
) -> np.ndarray:
    """The student's view of `input_ids`: each masked position becomes `<mask>`, or with probability
    `random_token_prob` a random (non-special) token, or with `leave_unmasked_prob` stays as it is.
    The loss stays on every masked position whatever it was replaced with."""
    out = input_ids.copy()
    u = rng.random(input_ids.shape)
    random_pos = mask & (u < random_token_prob)
    keep_pos = mask & (u >= random_token_prob) & (u < random_token_prob + leave_unmasked_prob)
    out[mask & ~random_pos & ~keep_pos] = mask_token_id
    if random_pos.any():
        allowed = np.setdiff1d(np.arange(vocab_size), np.asarray([*special_ids, mask_token_id]))
        out[random_pos] = rng.choice(allowed, int(random_pos.sum()))
    return out


@register_mask("data2vec", "span", "text")
def text_spans(config: Data2VecConfig, layout: MaskLayout, rng: np.random.Generator) -> np.ndarray:
    """data2vec text: `text_span_mask` over the maskable (real, non-special) tokens."""
    return text_span_mask(layout.maskable, config.mask_prob, config.mask_length, rng)


# ---- vision ----------------------------------------------------------------------------------------------------


def block_mask(
    grid: tuple[int, int],
    num_masked: int,
    rng: np.random.Generator,
    min_block: int = 16,
    min_aspect: float = 0.3,
    max_block: int | None = None,
    return_blocks: bool = False,
):
    """BEiT block masking of one image: an (h, w) bool mask with exactly `num_masked` patches masked.

    Rectangles of area uniform in [min_block, max_block] (capped by what is left to mask) and aspect ratio
    log-uniform in [min_aspect, 1 / min_aspect] are placed at random; a rectangle counts when it adds
    between 1 and the remaining number of new patches (BEiT's MaskingGenerator rule; rectangles overlap).
    BEiT gives up on a rectangle after 10 tries and may leave an image short of the count; with 100 tries the
    count is reached by rectangles in all but ~0.1% of 224/16 images, where random single patches complete it,
    so every image of a batch has the same count (each image contributes equally; data2vec 2.0 needs it). `return_blocks=True` also returns the accepted (top, left, h, w).
    """
    H, W = grid
    if not 0 < num_masked < H * W:
        raise ValueError(f"num_masked must be in [1, {H * W - 1}] for a {H}x{W} patch grid; got {num_masked}")
    max_block = max_block or H * W
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    mask = np.zeros(grid, dtype=bool)
    blocks, count = [], 0
    while count < num_masked:
        budget = min(num_masked - count, max_block)
        added = 0
        for _attempt in range(100):  # BEiT tries 10 times; 100 fills the exact count with blocks in >99%
            area = rng.uniform(min_block, budget) if budget >= min_block else rng.uniform(budget, min_block)
            aspect = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (0 < h < H and 0 < w < W):
                continue
            top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
            new = h * w - int(mask[top : top + h, left : left + w].sum())
            if 0 < new <= budget:
                mask[top : top + h, left : left + w] = True
                blocks.append((top, left, h, w))
                added = new
                break
        if added == 0:  # stalled: complete the count with random patches
            rest = np.flatnonzero(~mask.ravel())
            mask.ravel()[rng.choice(rest, num_masked - count, replace=False)] = True
            break
        count += added
    return (mask, blocks) if return_blocks else mask


def num_masked_patches(config: Data2VecConfig, grid: tuple[int, int]) -> int:
    """Patches masked per image: round(mask_prob * patches), at least 1 and leaving at least 1 visible."""
    total = grid[0] * grid[1]
    return int(min(max(round(config.mask_prob * total), 1), total - 1))


@register_mask("data2vec", "block")
def beit_blocks(config: Data2VecConfig, layout: MaskLayout, rng: np.random.Generator) -> np.ndarray:
    """BEiT: one `block_mask` per image, each masking `num_masked_patches` patches."""
    n = num_masked_patches(config, layout.grid)
    return np.stack([block_mask(layout.grid, n, rng, config.mask_length, config.mask_min_aspect).reshape(-1)
                     for _ in range(layout.rows)])


@register_mask("data2vec", "random")
def random_patches(config: Data2VecConfig, layout: MaskLayout, rng: np.random.Generator) -> np.ndarray:
    """`num_masked_patches` patches per image, drawn uniformly without replacement."""
    n, total = num_masked_patches(config, layout.grid), layout.num_tokens
    return np.stack([np.isin(np.arange(total), rng.choice(total, n, replace=False)) for _ in range(layout.rows)])


# ---- audio -----------------------------------------------------------------------------------------------------


def time_span_mask(
    lengths: Sequence[int],
    num_frames: int,
    mask_prob: float,
    span: int,
    rng: np.random.Generator,
    same_count: bool = True,
) -> np.ndarray:
    """(B, num_frames) bool mask of spans over the first `lengths[i]` frames of each row (wav2vec 2.0's
    `compute_mask_indices`): int(mask_prob * n / span + u) span starts drawn without replacement, spans of
    `span` frames (overlapping spans merge, so 0.65 / 10 masks about half the frames). At least one frame of a
    row stays visible. With `same_count`, every row is thinned at random to the smallest row count
    (data2vec's `require_same_masks`), so each example contributes equally.

    Short rows: a row of fewer than `span + 1` frames (a short clip padded into a batch of long ones) cannot hold
    a span and a visible frame. It is masked on its own, with spans of at most n - 1 frames (a 1-frame row gets
    none), and is left out of the smallest count: it is thinned to the long rows' count if above it, but its
    own small count never thins them, so one short clip does not empty the batch's mask. When every row is short,
    the smallest count is taken over the rows that can hold a mask (2 frames or more)."""
    mask = np.zeros((len(lengths), num_frames), dtype=bool)
    for row, n in enumerate(lengths):
        n = int(n)
        length = min(span, n - 1)
        if length < 1:
            continue
        num_spans = max(1, int(mask_prob * n / length + rng.random()))
        num_spans = min(num_spans, n - length + 1)
        starts = rng.choice(n - length + 1, num_spans, replace=False)
        idx = (starts[:, None] + np.arange(length)[None, :]).ravel()
        mask[row, idx] = True
        if mask[row, :n].all():  # keep one frame visible
            mask[row, rng.integers(n)] = False
    if same_count and len(lengths) > 1:
        n = np.asarray(lengths, dtype=np.int64)
        counted = n >= span + 1  # rows long enough to hold a span and a visible frame
        if not counted.any():
            counted = n >= 2
        if not counted.any():
            return mask
        target = int(mask.sum(1)[counted].min())
        for row in range(len(mask)):
            masked = np.flatnonzero(mask[row])
            if len(masked) > target:
                mask[row, rng.choice(masked, len(masked) - target, replace=False)] = False
    return mask


@register_mask("data2vec", "span", "audio")
def time_spans(config: Data2VecConfig, layout: MaskLayout, rng: np.random.Generator) -> np.ndarray:
    """wav2vec 2.0 / data2vec audio: `time_span_mask` over each clip's real frames."""
    return time_span_mask(layout.real.sum(1), layout.num_tokens, config.mask_prob, config.mask_length, rng)


# ---- data2vec 2.0: exact counts, every row of a batch the same ------------------------------------------------


def _exactly(marked: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Each row of (R, T) bool `marked` brought to exactly `count` True: surplus ones dropped at random, missing ones
    added at random among the rest (fairseq's require_same_masks step, drawn without replacement)."""
    score = marked + rng.random(marked.shape)  # marked positions first, in random order
    top = np.argpartition(-score, count - 1, axis=1)[:, :count] if count > 0 else np.zeros((len(marked), 0), int)
    out = np.zeros_like(marked, dtype=bool)
    np.put_along_axis(out, top, True, axis=1)
    return out


def block_masks_2d(grid: tuple[int, int], rows: int, share: float, block: int, adjust: float,
                   rng: np.random.Generator) -> np.ndarray:
    """(rows, h * w) bool: square blocks of `block` x `block` patches around int(N * (share + adjust) / block^2) random
    centres (clipped at the borders), then exactly int(N * share) patches (fairseq's `compute_block_mask_2d`)."""
    h, w = grid
    N = h * w
    marked = np.zeros((rows, h, w), dtype=bool)
    centres = int(N * (share + adjust) / block**2)
    if centres > 0:
        c = rng.integers(0, N, (rows, centres))
        offset = np.arange(block) - block // 2
        r = np.clip((c // w)[:, :, None, None] + offset[:, None], 0, h - 1)  # (rows, centres, block, 1)
        q = np.clip((c % w)[:, :, None, None] + offset[None, :], 0, w - 1)  # (rows, centres, 1, block)
        r, q = np.broadcast_arrays(r, q)
        marked[np.arange(rows)[:, None, None, None], r, q] = True
    return _exactly(marked.reshape(rows, N), int(N * share), rng)


def block_masks_1d(num_tokens: int, rows: int, share: float, span: int, adjust: float,
                   rng: np.random.Generator) -> np.ndarray:
    """(rows, T) bool: spans of `span` tokens around int(T * (share + adjust) / span) random centres (clipped at the
    ends), then exactly int(T * share) tokens (fairseq's `compute_block_mask_1d`)."""
    T = num_tokens
    marked = np.zeros((rows, T), dtype=bool)
    centres = int(T * (share + adjust) / span)
    if centres > 0:
        c = rng.integers(0, T, (rows, centres))
        idx = np.clip(c[:, :, None] + (np.arange(span) - span // 2), 0, T - 1).reshape(rows, -1)
        np.put_along_axis(marked, idx, True, axis=1)
    return _exactly(marked, int(T * share), rng)


@register_mask("data2vec2", "inverse_block")
def inverse_blocks(config: Data2VecConfig, layout: MaskLayout, rng: np.random.Generator) -> np.ndarray:
    """Blocks mark what stays visible (`block_masks_2d` over the patch grid, a (1, T) grid without one)."""
    grid = layout.grid or (1, layout.num_tokens)
    return ~block_masks_2d(grid, layout.rows, 1 - config.mask_prob, config.mask_length, config.mask_prob_adjust, rng)


@register_mask("data2vec2", "block")
def blocks_1d(config: Data2VecConfig, layout: MaskLayout, rng: np.random.Generator) -> np.ndarray:
    """Spans of `mask_length` tokens mark what is masked (`block_masks_1d`)."""
    return block_masks_1d(layout.num_tokens, layout.rows, config.mask_prob, config.mask_length,
                          config.mask_prob_adjust, rng)


@register_mask("data2vec2", "random")
def random_visible(config: Data2VecConfig, layout: MaskLayout, rng: np.random.Generator) -> np.ndarray:
    """A uniform choice of the `num_visible` visible tokens of each row."""
    keep = num_visible(config, layout.num_tokens)
    return ~_exactly(np.zeros((layout.rows, layout.num_tokens), dtype=bool), keep, rng)


def data2vec2_masks(config: Data2VecConfig, num_rows: int, num_tokens: int, rng: np.random.Generator,
                    grid: tuple[int, int] | None = None, real: np.ndarray | None = None) -> np.ndarray:
    """(num_rows, T) bool masks (True = masked) for data2vec 2.0, each hiding exactly T - `num_visible` tokens.
    `real` (num_rows, T) marks non-padding tokens: masks are drawn over the padded length (the count is then the
    same for every row, as fairseq's text masking does), and a row whose visible tokens are all padding swaps one
    for a real token."""
    num_visible(config, num_tokens)  # refuses a mask_prob that leaves no token visible or masks none, before drawing
    real = np.ones((num_rows, num_tokens), dtype=bool) if real is None else real
    mask = mask_strategy(config)(config, MaskLayout(num_rows, num_tokens, real, grid=grid), rng)
    blind = ~(real & ~mask).any(1) & real.any(1)
    for row in np.flatnonzero(blind):
        mask[row, rng.choice(np.flatnonzero(real[row]))] = False
        mask[row, rng.choice(np.flatnonzero(~mask[row] & ~real[row]))] = True
    return mask


# ---- drawing a batch's masks -------------------------------------------------------------------------------------


def _special_ids(config: Data2VecConfig) -> list[int]:
    return [t for t in (config.bos_token_id, config.eos_token_id, config.pad_token_id) if t is not None]


def _text_layout(config: Data2VecConfig, batch: Mapping, attention: torch.Tensor | None) -> MaskLayout:
    ids = batch["input_ids"].cpu()
    check_token_ids(ids, "input_ids", config.vocab_size, config.pad_token_id)
    ids = ids.numpy()
    real = np.ones(ids.shape, bool) if attention is None else attention.numpy().astype(bool)
    return MaskLayout(len(ids), ids.shape[1], real, real & ~np.isin(ids, _special_ids(config)), token_ids=ids)


def _vision_layout(config: Data2VecConfig, batch: Mapping, attention: torch.Tensor | None) -> MaskLayout:
    pixel_values = batch["pixel_values"]
    check_pixel_layout(pixel_values, config.num_channels)
    grid = (pixel_values.shape[-2] // config.patch_size, pixel_values.shape[-1] // config.patch_size)
    real = np.ones((len(pixel_values), grid[0] * grid[1]), bool)
    return MaskLayout(len(pixel_values), grid[0] * grid[1], real, grid=grid)


def _audio_layout(config: Data2VecConfig, batch: Mapping, attention: torch.Tensor | None) -> MaskLayout:
    values = batch["input_values"]
    samples = [values.shape[1]] * len(values) if attention is None else attention.sum(1).tolist()
    frames = np.asarray([config.num_audio_frames(int(n)) for n in samples])
    T = config.num_audio_frames(values.shape[1])
    return MaskLayout(len(values), T, np.arange(T)[None, :] < frames[:, None])


# the batch's mask positions, per modality (checking the inputs read on the host)
MASK_LAYOUTS = {"text": _text_layout, "vision": _vision_layout, "audio": _audio_layout}


def draw_mask(config: Data2VecConfig, rng: np.random.Generator, **batch) -> dict[str, torch.Tensor]:
    """The modality's masks for a padded batch: what the collator adds, and what
    `Data2VecForPreTraining.forward` draws when no mask is passed. Text also gets `masked_input_ids` (1.0).
    data2vec 2.0: `clone_batch` masks per example, (batch, clone_batch, tokens)."""
    c = config
    attention = batch.get("attention_mask")
    if attention is not None:  # the host copy the mask is drawn from: checking it costs no extra device sync
        attention = attention.cpu()
        values = batch[MODALITY_INPUT[c.modality]]
        check_attention_mask(attention, values.shape, attention_unit(c))
    layout = MASK_LAYOUTS[c.modality](c, batch, attention)
    if c.algorithm == "data2vec2":
        B, T = layout.rows, layout.num_tokens
        real = np.repeat(layout.real, c.clone_batch, axis=0)
        mask = data2vec2_masks(c, B * c.clone_batch, T, rng, layout.grid, real)
        return {MASK_INPUT[c.modality]: torch.from_numpy(mask).reshape(B, c.clone_batch, T)}
    mask = mask_strategy(c)(c, layout, rng)
    if c.modality != "text":
        return {MASK_INPUT[c.modality]: torch.from_numpy(mask)}
    masked_ids = corrupt_text(  # the 1.0 student's view: <mask>, a random token or the same token where masked
        layout.token_ids, mask, rng, c.mask_token_id, c.vocab_size, c.mask_random_token_prob,
        c.mask_leave_unmasked_prob, _special_ids(c),
    )
    return {"masked_input_ids": torch.from_numpy(masked_ids), "bool_masked_pos": torch.from_numpy(mask)}


# ---- the collator ------------------------------------------------------------------------------------------


def _check_examples(examples) -> None:
    """The collator takes a list of example dicts: one dict (a single example, or a batch already collated) is
    refused naming the fix."""
    if isinstance(examples, Mapping):
        raise ValueError("the collator takes a list of examples (dicts), not one dict: wrap a single example in a list "
                         "([example]); a batch that is already collated goes to the model directly")


class SeededBatch(list):
    """A list of examples (or of dataset indices) that carries the seed its masks are drawn from."""

    def __init__(self, items, seed: Sequence[int]):
        super().__init__(items)
        self.seed = tuple(int(x) for x in seed)

    def __reduce__(self):  # keep the seed when sent to / from DataLoader workers
        return SeededBatch, (list(self), self.seed)


def _worker_id() -> int | None:
    info = torch.utils.data.get_worker_info()
    return None if info is None else info.id


TEXT_LENGTH_BUCKETS = 4  # bucket_lengths: text pads to one of 4 lengths
AUDIO_BUCKETS_PER_OCTAVE = 4  # bucket_lengths: audio lengths 2^k (1 + j / 4)


def audio_length_bucket(n: int, up: bool = False) -> int:
    """The largest length <= n (`up`: the smallest >= n) of the form 2^k (1 + j / 4), j in 0..3 (exact integers for
    n >= 4): `AUDIO_BUCKETS_PER_OCTAVE` lengths per doubling."""
    if n < 2 * AUDIO_BUCKETS_PER_OCTAVE:
        return n
    base = 1 << (n.bit_length() - 1)  # 2^k <= n < 2^(k + 1)
    step = base // AUDIO_BUCKETS_PER_OCTAVE
    return (-(-n // step) if up else n // step) * step


def text_max_length(config) -> int:
    """The longest token sequence the text model takes (its learned positions start after the padding index)."""
    return config.max_position_embeddings - (config.pad_token_id or 0) - 1


class DataCollatorForData2VecPretraining:
    """Pads a list of examples into a batch and draws the modality's masks from a seeded generator.

    Examples are mappings with the modality's input (`input_ids` for text, `pixel_values` for vision,
    `input_values` for audio: lists, numpy arrays or tensors). The batch holds that input unmasked (the
    teacher's view), `attention_mask` where the modality pads, and the mask under `bool_masked_pos`
    (text, vision) or `mask_time_indices` (audio); text also gets `masked_input_ids`, the student's view.

    Audio: `audio_crop="shortest"` (data2vec's default) crops every clip to the batch's shortest at a random
    offset, so nothing is padded; `"pad"` pads to the longest and returns `attention_mask` (padding-aware
    targets). `pad_to_multiple_of` pads text (tokens) and padded audio (samples) further.

    `bucket_lengths` (`--torch_compile`) brings variable lengths to a few shapes, so that a compiled model recompiles
    a bounded number of times: text pads to the next of `TEXT_LENGTH_BUCKETS` equal steps up to the model's longest
    sequence; audio crops ("shortest") down to, or pads ("pad") up to, a length of the form 2^k (1 + j / 4) samples
    (`AUDIO_BUCKETS_PER_OCTAVE` = 4 lengths per doubling: a crop keeps at least 80% of the shortest clip).
    """

    def __init__(
        self,
        config: Data2VecConfig,
        seed: int = 0,
        audio_crop: str = "shortest",
        pad_to_multiple_of: int | None = None,
        max_audio_samples: int | None = None,
        image_augment: str | None = None,
        bucket_lengths: bool = False,
    ):
        if audio_crop not in ("shortest", "pad"):
            raise ValueError(f"audio_crop must be 'shortest' or 'pad'; got {audio_crop!r}")
        self.config = config
        self.modality = config.modality
        self.seed = seed
        self.audio_crop = audio_crop
        self.pad_to_multiple_of = pad_to_multiple_of
        self.bucket_lengths = bucket_lengths
        if max_audio_samples is not None and max_audio_samples < config.receptive_field:
            raise ValueError(
                f"max_audio_samples ({max_audio_samples}) is shorter than the conv feature encoder's receptive "
                f"field ({config.receptive_field} samples)"
            )
        self.max_audio_samples = max_audio_samples
        if image_augment not in (None, "none", "affine"):
            raise ValueError(f"image_augment must be None, 'none' or 'affine'; got {image_augment!r}")
        self.image_augment = image_augment if image_augment != "none" else None
        self._rng: np.random.Generator | None = None
        self._rng_worker: int | None = None

    @property
    def rng(self) -> np.random.Generator:
        """The mask generator: seeded with `seed` in the main process, with `[seed, worker_id]` in a DataLoader
        worker (a worker's copy of the collator must not replay the main process's or another worker's masks)."""
        worker = _worker_id()
        if self._rng is None or worker != self._rng_worker:
            self._rng = np.random.default_rng(self.seed if worker is None else [self.seed, worker])
            self._rng_worker = worker
        return self._rng

    def state_dict(self) -> dict:
        return {"seed": self.seed, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.seed = state["seed"]
        self.rng.bit_generator.state = state["rng"]

    def __call__(self, examples: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        _check_examples(examples)
        if len(examples) == 0:
            raise ValueError("the batch is empty: the dataset or sampler produced no examples")
        key = MODALITY_INPUT[self.modality]
        for example in examples:
            if key not in example:
                found = [m for m, k in MODALITY_INPUT.items() if k in example]
                hint = f"it holds {found[0]} input ({MODALITY_INPUT[found[0]]})" if found else f"keys: {sorted(example)}"
                raise ValueError(
                    f"this collator serves a {self.modality} model and needs {key!r} in every example; {hint}. "
                    f"Use a dataset of the model's modality, or a config with the data's modality."
                )
        rng = np.random.default_rng(examples.seed) if isinstance(examples, SeededBatch) else self.rng
        batch = self.collate_inputs(examples, rng)
        check_batch(self.config, batch)  # before drawing: errors about the data come first
        batch.update(draw_mask(self.config, rng, **batch))
        check_batch(self.config, batch)
        return batch

    def collate_inputs(self, examples: Sequence[Mapping], rng: np.random.Generator | None = None) -> dict:
        """The padded (or, audio, cropped) batch without masks: what a frozen encoder takes, e.g. for a probe."""
        _check_examples(examples)
        inputs = [check_example_values(self.modality, example[MODALITY_INPUT[self.modality]]) for example in examples]
        rng = self.rng if rng is None else rng
        if self.modality == "audio":
            return self._collate_audio(inputs, rng)
        batch = getattr(self, f"_collate_{self.modality}")(inputs)
        if self.modality == "vision" and self.image_augment == "affine":
            batch["pixel_values"] = random_affine(batch["pixel_values"], rng)
        return batch

    def _pad_length(self, n: int) -> int:
        m = self.pad_to_multiple_of
        return n if not m else -(-n // m) * m

    def _text_length(self, n: int) -> int:
        n = self._pad_length(n)
        if not self.bucket_lengths:
            return n
        longest = text_max_length(self.config)
        step = -(-longest // TEXT_LENGTH_BUCKETS)
        return n if n > longest else min(-(-n // step) * step, longest)

    def _collate_text(self, sequences: list) -> dict[str, torch.Tensor]:
        c = self.config
        seqs = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
        T = self._text_length(max(len(s) for s in seqs))
        if T == 0:
            raise ValueError("every example has an empty input_ids: the batch has no real tokens")
        ids = np.full((len(seqs), T), c.pad_token_id, dtype=np.int64)
        attention = np.zeros((len(seqs), T), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], attention[i, : len(s)] = s, 1
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(attention)}

    def _collate_vision(self, images: list) -> dict[str, torch.Tensor]:
        images = [torch.as_tensor(x if torch.is_tensor(x) else np.asarray(x)) for x in images]
        shapes = {tuple(x.shape) for x in images}
        if len(shapes) > 1:
            raise ValueError(
                f"images of different sizes in one batch: {sorted(shapes)}. Resize / crop them to one size "
                "first (e.g. an image processor with a fixed size)."
            )
        if images[0].dim() != 3:
            raise ValueError(f"each pixel_values must be (channels, height, width); got {tuple(images[0].shape)}")
        check_pixel_layout(images[0], self.config.num_channels)
        return {"pixel_values": torch.stack(images).float()}

    def _collate_audio(self, waves: list, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        waves = [np.asarray(w, dtype=np.float32) for w in waves]
        for w in waves:
            if w.ndim != 1:
                raise ValueError(
                    f"each input_values must be a mono waveform (samples,); got shape {w.shape} "
                    "(average the channels or pick one)"
                )
        lengths = [len(w) for w in waves]
        need = self.config.receptive_field
        if min(lengths) < need:
            raise ValueError(
                f"a clip of {min(lengths)} samples is shorter than the conv feature encoder's receptive field "
                f"({need} samples): drop such clips"
            )
        if self.max_audio_samples is not None:
            cap = self.max_audio_samples
            waves = [w if len(w) <= cap else w[(s := int(rng.integers(0, len(w) - cap + 1))) : s + cap] for w in waves]
            lengths = [len(w) for w in waves]
        if self.audio_crop == "shortest":  # a random crop of every clip to the shortest one (data2vec)
            n = min(lengths)
            if self.bucket_lengths and audio_length_bucket(n) >= need:
                n = audio_length_bucket(n)
            starts = [int(rng.integers(0, len(w) - n + 1)) for w in waves]
            return {"input_values": torch.from_numpy(np.stack([w[s : s + n] for w, s in zip(waves, starts)]))}
        S = self._pad_length(max(lengths))
        S = audio_length_bucket(S, up=True) if self.bucket_lengths else S
        values = np.zeros((len(waves), S), dtype=np.float32)
        attention = np.zeros((len(waves), S), dtype=np.int64)
        for i, w in enumerate(waves):
            values[i, : len(w)], attention[i, : len(w)] = w, 1
        return {"input_values": torch.from_numpy(values), "attention_mask": torch.from_numpy(attention)}


def random_affine(images: torch.Tensor, rng: np.random.Generator, degrees: float = 10.0, scale: float = 0.1,
                  translate: float = 1.0) -> torch.Tensor:
    """Each image of (B, C, H, W) rotated by up to +-`degrees`, scaled by up to +-`scale` and shifted by up to
    +-`translate` pixels (bilinear; edges repeat the border). A small augmentation for small image sets."""
    B, _, H, W = images.shape
    angle = np.deg2rad(rng.uniform(-degrees, degrees, B))
    zoom = rng.uniform(1 - scale, 1 + scale, B)
    shift = rng.uniform(-translate, translate, (B, 2)) * 2 / np.array([W, H])  # pixels -> [-1, 1] units
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    theta = np.stack([np.stack([cos, -sin, shift[:, 0]], 1), np.stack([sin, cos, shift[:, 1]], 1)], 1)  # (B, 2, 3)
    theta = torch.as_tensor(theta, dtype=images.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, padding_mode="border", align_corners=False)


__all__ = [
    "DataCollatorForData2VecPretraining",
    "MASKS",
    "MaskLayout",
    "MaskStrategy",
    "block_masks_1d",
    "block_masks_2d",
    "data2vec2_masks",
    "mask_strategy",
    "num_visible",
    "register_mask",
    "SeededBatch",
    "block_mask",
    "check_attention_mask",
    "check_attention_values",
    "check_batch",
    "check_pixel_layout",
    "check_token_ids",
    "corrupt_text",
    "draw_mask",
    "random_affine",
    "text_span_mask",
    "time_span_mask",
]
