"""data2vec's masks, per modality, and the collator that draws them.

Mask convention: True = masked, i.e. hidden from the student (the loss is computed there).

- text:   contiguous spans over the non-special tokens (data2vec text: spans of 4 over 35% of the tokens);
          with `mask_length=1, mask_prob=0.15` and 10%/10% random/unchanged this is BERT's 80/10/10.
- vision: BEiT block masking: rectangles of >= `mask_length` patches with a log-uniform aspect ratio,
          until round(mask_prob * patches) patches are masked; or (`mask_type="random"`) that many patches
          drawn uniformly, which works better on tiny patch grids.
- audio:  wav2vec 2.0 / data2vec span masking: each frame starts a span of `mask_length` frames with
          probability mask_prob / mask_length (spans may overlap), then every row of the batch is thinned
          to the same number of masked frames (rows too short for a span are masked on their own).

All randomness comes from a `numpy.random.Generator` passed in, so a seeded collator is deterministic. A batch
that arrives as a `SeededBatch` (the trainer's sampler makes them) is drawn from its own seed, so its masks are a
pure function of (seed, epoch, step, rank): the same with or without DataLoader workers and after a resume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .configuration_data2vec import Data2VecConfig

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


# ---- data2vec 2.0: exact counts, every row of a batch the same ------------------------------------------------


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


def data2vec2_masks(config: Data2VecConfig, num_rows: int, num_tokens: int, rng: np.random.Generator,
                    grid: tuple[int, int] | None = None, real: np.ndarray | None = None) -> np.ndarray:
    """(num_rows, T) bool masks (True = masked) for data2vec 2.0, each hiding exactly T - `num_visible` tokens.
    `real` (num_rows, T) marks non-padding tokens: masks are drawn over the padded length (the count is then the
    same for every row, as fairseq's text masking does), and a row whose visible tokens are all padding swaps one
    for a real token."""
    c, T = config, num_tokens
    keep = num_visible(c, T)
    if c.mask_type == "inverse_block":  # blocks mark what stays visible
        grid = grid or (1, T)
        mask = ~block_masks_2d(grid, num_rows, 1 - c.mask_prob, c.mask_length, c.mask_prob_adjust, rng)
    elif c.mask_type == "block":
        mask = block_masks_1d(T, num_rows, c.mask_prob, c.mask_length, c.mask_prob_adjust, rng)
    else:  # random: a uniform choice of the visible tokens
        mask = ~_exactly(np.zeros((num_rows, T), dtype=bool), keep, rng)
    if real is not None:
        blind = ~(real & ~mask).any(1) & real.any(1)
        for row in np.flatnonzero(blind):
            mask[row, rng.choice(np.flatnonzero(real[row]))] = False
            mask[row, rng.choice(np.flatnonzero(~mask[row] & ~real[row]))] = True
    return mask


# ---- the collator ------------------------------------------------------------------------------------------


def _check_examples(examples) -> None:
    """The collator takes a list of example dicts: one dict (a single example, or a batch already collated) is
    refused naming the fix."""
    if isinstance(examples, Mapping):
        raise ValueError("the collator takes a list of examples (dicts), not one dict: wrap a single example in a list "
                         "([example]); a batch that is already collated goes to the model directly")


def _checked_values(modality: str, values):
    """One example's input, refused when it cannot be what the model takes: text that is not token ids (a string,
    fractional ids), audio as integer PCM, images as integer pixels (each named with its fix)."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{MODALITY_INPUT[modality]} is a string ({values[:40]!r}): the collator takes "
                         + ("token ids: tokenize the text first (the run's tokenizer: data.processor)" if modality == "text"
                            else "decoded arrays: decode the file first (load_pretraining_data does)"))
    if torch.is_tensor(values):
        kind = "f" if values.is_floating_point() else ("b" if values.dtype == torch.bool else "i")
        array = values
    else:
        array = np.asarray(values)
        kind = array.dtype.kind
    if kind in "USO":
        raise ValueError(f"{MODALITY_INPUT[modality]} holds {array.dtype} values, not numbers: "
                         + ("tokenize the text first" if modality == "text" else "decode the inputs first"))
    if modality == "text" and kind == "f":
        as_float = torch.as_tensor(array, dtype=torch.float64)
        if not bool((as_float == as_float.round()).all()):
            bad = as_float[as_float != as_float.round()][0].item()
            raise ValueError(f"input_ids must be whole token ids; got {bad:g}: token ids are integers (a tokenizer's "
                             "output), not features")
    if modality == "audio" and kind in "iu":
        raise ValueError(f"input_values are integers ({array.dtype}: PCM samples?); the model takes float waveforms: "
                         "divide int16 PCM by 32768 (to [-1, 1]) and normalise as the feature extractor does "
                         "(Wav2Vec2FeatureExtractor, do_normalize=True)")
    if modality == "vision" and kind in "iu":
        raise ValueError(f"pixel_values are integers ({array.dtype}: 0-255 pixels?); the model takes normalised "
                         "floats: pass the images through the image processor (rescale to [0, 1], then normalise), "
                         "as load_pretraining_data does")
    return values


MODALITY_INPUT = {"text": "input_ids", "vision": "pixel_values", "audio": "input_values"}
MASK_INPUT = {"text": "bool_masked_pos", "vision": "bool_masked_pos", "audio": "mask_time_indices"}


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
        inputs = [_checked_values(self.modality, example[MODALITY_INPUT[self.modality]]) for example in examples]
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


def num_masked_patches(config: Data2VecConfig, grid: tuple[int, int]) -> int:
    """Patches masked per image: round(mask_prob * patches), at least 1 and leaving at least 1 visible."""
    total = grid[0] * grid[1]
    return int(min(max(round(config.mask_prob * total), 1), total - 1))


def draw_mask(config: Data2VecConfig, rng: np.random.Generator, **batch) -> dict[str, torch.Tensor]:
    """The modality's masks for a padded batch: what the collator adds, and what
    `Data2VecForPreTraining.forward` draws when no mask is passed. Text also gets `masked_input_ids` (1.0).
    data2vec 2.0: `clone_batch` masks per example, (batch, clone_batch, tokens)."""
    c = config
    attention = batch.get("attention_mask")
    if attention is not None:  # the host copy the mask is drawn from: checking it costs no extra device sync
        attention = attention.cpu()
        values = batch[MODALITY_INPUT[c.modality]]
        check_attention_mask(attention, values.shape, c.receptive_field if c.modality == "audio" else 1)
    if c.algorithm == "data2vec2":
        return _draw_data2vec2(c, rng, attention, batch)
    if c.modality == "text":
        ids = batch["input_ids"].cpu()
        check_token_ids(ids, "input_ids", c.vocab_size, c.pad_token_id)
        ids = ids.numpy()
        real = np.ones(ids.shape, bool) if attention is None else attention.numpy().astype(bool)
        special = [t for t in (c.bos_token_id, c.eos_token_id, c.pad_token_id) if t is not None]
        mask = text_span_mask(real & ~np.isin(ids, special), c.mask_prob, c.mask_length, rng)
        masked_ids = corrupt_text(
            ids, mask, rng, c.mask_token_id, c.vocab_size, c.mask_random_token_prob, c.mask_leave_unmasked_prob,
            special,
        )
        return {"masked_input_ids": torch.from_numpy(masked_ids), "bool_masked_pos": torch.from_numpy(mask)}
    if c.modality == "vision":
        pixel_values = batch["pixel_values"]
        check_pixel_layout(pixel_values, c.num_channels)
        grid = (pixel_values.shape[-2] // c.patch_size, pixel_values.shape[-1] // c.patch_size)
        n = num_masked_patches(c, grid)
        if c.mask_type == "random":
            masks = [np.isin(np.arange(grid[0] * grid[1]), rng.choice(grid[0] * grid[1], n, replace=False))
                     for _ in pixel_values]
        else:
            masks = [block_mask(grid, n, rng, c.mask_length, c.mask_min_aspect).reshape(-1) for _ in pixel_values]
        return {"bool_masked_pos": torch.from_numpy(np.stack(masks))}
    values = batch["input_values"]
    samples = [values.shape[1]] * len(values) if attention is None else attention.sum(1).tolist()
    frames = [c.num_audio_frames(int(n)) for n in samples]
    mask = time_span_mask(frames, c.num_audio_frames(values.shape[1]), c.mask_prob, c.mask_length, rng)
    return {"mask_time_indices": torch.from_numpy(mask)}


def _draw_data2vec2(c: Data2VecConfig, rng: np.random.Generator, attention: torch.Tensor | None, batch) -> dict:
    values = batch[MODALITY_INPUT[c.modality]]
    B, grid, real = len(values), None, None
    if c.modality == "vision":
        check_pixel_layout(values, c.num_channels)
        grid = (values.shape[-2] // c.patch_size, values.shape[-1] // c.patch_size)
        T = grid[0] * grid[1]
    elif c.modality == "text":
        check_token_ids(values.cpu(), "input_ids", c.vocab_size, c.pad_token_id)
        T = values.shape[1]
        real = None if attention is None else attention.numpy().astype(bool)
    else:
        T = c.num_audio_frames(values.shape[1])
        if attention is not None:
            frames = c.num_audio_frames(attention.sum(1))
            real = (torch.arange(T)[None, :] < frames[:, None]).numpy()
    if real is not None:
        real = np.repeat(real, c.clone_batch, axis=0)
    mask = data2vec2_masks(c, B * c.clone_batch, T, rng, grid, real)
    return {MASK_INPUT[c.modality]: torch.from_numpy(mask).reshape(B, c.clone_batch, T)}


# ---- input checks ------------------------------------------------------------------------------------------
# Value checks read tensors back to the host: they run on CPU tensors only (the collator, CPU inputs, host copies
# made anyway), never inside an accelerator step. Shape checks cost nothing and run everywhere.


def host_checks_are_free(tensor: torch.Tensor) -> bool:
    """Whether reading `tensor`'s values back costs no device sync: a CPU tensor, outside torch.compile / tracing."""
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling() and not torch.jit.is_tracing()


def check_token_ids(ids: torch.Tensor, name: str, size: int, pad_token_id: int | None = None) -> None:
    """Refuses ids outside [0, size): `input_ids` against vocab_size, `token_type_ids` against type_vocab_size.
    The embedding lookup would fail with a bare IndexError (a device-side assert on GPU)."""
    if ids.numel() == 0 or ids.is_floating_point():
        return
    low, high = int(ids.min()), int(ids.max())
    if low >= 0 and high < size:
        return
    bad = high if high >= size else low
    where = (ids == bad).nonzero()[0].tolist()
    at = f"example {where[0]}, position {where[1]}" if len(where) == 2 else f"index {where}"
    types = name == "token_type_ids"
    if bad < 0:
        pad = "0" if types else f"pad_token_id ({pad_token_id})"
        fix = f"a negative id is no token (-100 marks ignored labels, not inputs): pad {name} with {pad} instead"
    elif types:
        fix = (f"this model has {size} token type(s): drop token_type_ids "
               f"(tokenizer(..., return_token_type_ids=False)) or use a config with type_vocab_size > {bad}")
    else:
        fix = ("the tokenizer does not match the model: tokenize with the model's own tokenizer, or use a config "
               "whose vocab_size covers the tokenizer's ids (vocab_size >= len(tokenizer))")
    field = "type_vocab_size" if types else "vocab_size"
    raise ValueError(f"{name} holds {bad} at {at}, outside 0..{size - 1} (config.{field} = {size}): {fix}")


_ADDITIVE = (
    " If this is an additive mask (0 = attend, a large negative value = padding), convert it: (mask == 0).long()"
)


def check_attention_values(attention_mask: torch.Tensor) -> None:
    """Refuses an attention_mask holding anything but 1 (real) and 0 (padding): an additive float mask (0 for
    tokens, -1e4 or -inf for padding) would otherwise be read inverted."""
    if attention_mask.dtype == torch.bool:
        return
    odd = (attention_mask != 0) & (attention_mask != 1)
    if odd.any():
        value = attention_mask[odd].min().item()
        raise ValueError(
            f"attention_mask holds {value:g}; it must be 1 for real tokens and 0 for padding."
            + (_ADDITIVE if value < 0 else " Pass a 0 / 1 mask, e.g. (mask > 0).long()")
        )


def check_attention_mask(attention_mask: torch.Tensor, shape: Sequence[int], receptive_field: int = 1) -> None:
    """Refuses an `attention_mask` that is not (batch, length) = `shape` of 1 (real) / 0 (padding): an additive
    float mask (0 for tokens, -1e4 or -inf for padding) would be read inverted; refuses a batch with no real
    position and examples that are all padding, naming them (audio: also those with fewer real samples than the
    conv encoder's `receptive_field`, which yield no frame)."""
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(
            f"attention_mask must be (batch, length) = {tuple(shape)}, like the input; "
            f"got {tuple(attention_mask.shape)}"
        )
    check_attention_values(attention_mask)
    hint = "." + _ADDITIVE if attention_mask.is_floating_point() else ""
    real = attention_mask.bool().sum(1)  # (B,)
    if not real.any():
        raise ValueError(f"the batch has no real tokens: every attention_mask entry is 0 (all padding){hint}")
    empty = (real == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"example(s) {empty[:5]} of the batch are all padding (attention_mask all 0): nothing to encode or "
            f"predict there. Drop empty examples before batching (e.g. dataset.filter on their length){hint}"
        )
    short = (real < receptive_field).nonzero().flatten().tolist()
    if short:
        raise ValueError(
            f"example(s) {short[:5]} of the batch have fewer real samples (attention_mask 1) than the conv feature "
            f"encoder's receptive field ({receptive_field}), so no frame: drop such short examples before batching"
        )


def check_pixel_layout(pixel_values: torch.Tensor, num_channels: int) -> None:
    """Refuses channels-last images, (batch, height, width, channels) or one (height, width, channels): the last
    axis holds `num_channels` where the channel axis does not. A shape check: free anywhere."""
    shape = tuple(pixel_values.shape)
    if len(shape) not in (3, 4) or shape[-3] == num_channels or shape[-1] != num_channels:
        return
    batched = len(shape) == 4
    got = "(batch, height, width, channels)" if batched else "(height, width, channels)"
    want = "(batch, channels, height, width)" if batched else "(channels, height, width)"
    permute = "permute(0, 3, 1, 2)" if batched else "permute(2, 0, 1)"
    raise ValueError(
        f"pixel_values of shape {shape} look channels-last, {got}; this model takes channels first, {want} "
        f"(config.num_channels = {num_channels}): pass pixel_values.{permute} (or use an image processor that "
        f"returns channels first)"
    )


def _all_finite(values: torch.Tensor) -> bool:
    """No NaN / inf in `values`: a NaN or inf makes the sum NaN or inf, so a finite sum settles it in one pass without a
    (N,) bool tensor (a 224 px batch of 128: 2 ms against 80 ms on a CPU core); a sum that overflowed is checked
    exactly."""
    return bool(torch.isfinite(torch.sum(values, dtype=torch.float32))) or bool(torch.isfinite(values).all())


def check_batch(config: Data2VecConfig, batch: Mapping[str, torch.Tensor | None]) -> None:
    """Refuses a batch data2vec cannot learn from, naming the fix: another modality's input, token ids outside the
    vocabulary, channels-last images, an attention_mask that is not 1 / 0 (e.g. additive), no real token, an example
    that is all padding, NaN / inf values, a mask of the wrong shape, one that selects nothing, or one that hides
    a whole example.

    Reads values back to the host: the collator calls it on CPU tensors, the model on CPU inputs (or when
    asked), never inside an accelerator step by default."""
    key = MODALITY_INPUT[config.modality]
    values = batch.get(key)
    if values is None:
        found = [m for m, k in MODALITY_INPUT.items() if batch.get(k) is not None]
        hint = f"got {found[0]} input ({MODALITY_INPUT[found[0]]})" if found else "got none"
        raise ValueError(
            f"a {config.modality} model needs {key}; {hint}. Use data of the model's modality, or a config whose "
            f"modality matches the data."
        )
    if values.numel() == 0:
        raise ValueError(f"{key} is empty (shape {tuple(values.shape)}): the batch has no examples")
    if config.modality == "text":
        for name in ("input_ids", "masked_input_ids"):
            if batch.get(name) is not None:
                check_token_ids(batch[name], name, config.vocab_size, config.pad_token_id)
        if batch.get("token_type_ids") is not None:
            check_token_ids(batch["token_type_ids"], "token_type_ids", config.num_token_types)
    elif config.modality == "vision":
        if values.dim() != 4:
            raise ValueError(f"pixel_values must be (batch, channels, height, width); got shape {tuple(values.shape)}")
        check_pixel_layout(values, config.num_channels)
    attention = batch.get("attention_mask")
    if attention is not None:
        check_attention_mask(attention, values.shape, config.receptive_field if config.modality == "audio" else 1)
    if values.is_floating_point() and not _all_finite(values):
        raise ValueError(f"{key} holds NaN or inf values: clean or drop those examples")
    mask = batch.get(MASK_INPUT[config.modality])
    if mask is None:
        return
    mask = mask.bool()
    if config.algorithm == "data2vec2":
        _check_data2vec2_mask(config, values, attention, mask)
        return
    if config.modality == "text":
        real = attention.bool() if attention is not None else torch.ones_like(mask)
        if mask.shape != values.shape:
            raise ValueError(f"bool_masked_pos must be (batch, tokens) = {tuple(values.shape)}; got {tuple(mask.shape)}")
    elif config.modality == "audio":
        frames = config.num_audio_frames(values.shape[1])
        if mask.shape != (values.shape[0], frames):
            raise ValueError(
                f"mask_time_indices must be (batch, frames) = {(values.shape[0], frames)} for these waveforms; "
                f"got {tuple(mask.shape)}"
            )
        samples = attention.long().sum(1) if attention is not None else torch.full((len(values),), values.shape[1])
        real = torch.arange(frames)[None, :] < config.num_audio_frames(samples.cpu())[:, None]
    else:
        patches = (values.shape[-2] // config.patch_size) * (values.shape[-1] // config.patch_size)
        if mask.reshape(len(mask), -1).shape != (values.shape[0], patches):
            raise ValueError(
                f"bool_masked_pos must be (batch, patches) = {(values.shape[0], patches)}; got {tuple(mask.shape)}"
            )
        mask = mask.reshape(len(mask), -1)
        real = torch.ones_like(mask)
    real = real.to(mask.device)
    selected = (mask & real).sum(1)
    if not selected.any():
        raise ValueError(
            f"the mask selects no position among the real {config.modality} positions, so there is nothing to "
            f"predict: use longer examples, a larger mask_prob, or a mask with True where the student is blind"
        )
    full = (selected == real.sum(1)).nonzero().flatten().tolist()
    if full:
        raise ValueError(
            f"the mask hides every real position of example(s) {full[:5]}: the student must see part of its input. "
            f"Lower mask_prob or mask_length, or leave at least one position unmasked."
        )



def _check_data2vec2_mask(config: Data2VecConfig, values: torch.Tensor, attention, mask: torch.Tensor) -> None:
    name = MASK_INPUT[config.modality]
    if config.modality == "vision":
        T = (values.shape[-2] // config.patch_size) * (values.shape[-1] // config.patch_size)
    elif config.modality == "audio":
        T = config.num_audio_frames(values.shape[1])
    else:
        T = values.shape[1]
    want = (values.shape[0], config.clone_batch, T)
    if tuple(mask.shape) != want:
        raise ValueError(
            f"data2vec 2.0 takes {name} as (batch, clone_batch, tokens) = {want}, one mask per copy of each example; "
            f"got {tuple(mask.shape)} (DataCollatorForData2VecPretraining(config) draws them)"
        )
    keep = num_visible(config, T)
    counts = (~mask).sum(-1)
    if (counts != keep).any():
        raise ValueError(
            f"every data2vec 2.0 mask must leave exactly {keep} of {T} tokens visible (the student encodes the same "
            f"number per copy; config mask_type={config.mask_type!r}, mask_prob={config.mask_prob}); got visible "
            f"counts {sorted(set(counts.flatten().tolist()))[:5]}"
        )
    if attention is not None:
        if config.modality == "audio":
            frames = config.num_audio_frames(attention.long().sum(1).cpu())
            real = torch.arange(T)[None, :] < frames[:, None]
        else:
            real = attention.bool().cpu()
        seen = (real[:, None].to(mask.device) & ~mask).any(-1)  # (B, clone_batch)
        if not seen.all():
            rows = sorted({int(i) for i in (~seen).nonzero()[:, 0]})
            raise ValueError(
                f"a data2vec 2.0 mask hides every real token of example(s) {rows[:5]}: the student sees only padding "
                f"there; use the collator's masks, which keep a real token visible"
            )


__all__ = [
    "DataCollatorForData2VecPretraining",
    "block_masks_1d",
    "block_masks_2d",
    "data2vec2_masks",
    "num_visible",
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
