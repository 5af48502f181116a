"""Mask statistics per modality (fractions, span lengths, block sizes and aspect ratios) and determinism."""

import math

import modeling_data2vec_unified as d2v
import numpy as np
import pytest
import torch
from modeling_data2vec_unified.masking import block_mask, corrupt_text, text_span_mask, time_span_mask

from conftest import tiny_config, tiny_examples


def runs(row: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1D bool array."""
    edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def test_text_spans_mask_the_asked_fraction_and_never_special_or_padding():
    rng = np.random.default_rng(0)
    B, T = 400, 130
    lengths = rng.integers(10, T, B)
    eligible = np.arange(T)[None, :] < lengths[:, None]
    eligible[:, 0] = False  # <s>
    eligible[np.arange(B), lengths - 1] = False  # </s>
    mask = text_span_mask(eligible, 0.35, 4, rng)
    assert not (mask & ~eligible).any()
    n = eligible.sum(1)
    per_row = mask.sum(1)
    assert ((per_row >= np.floor(0.35 * n)) & (per_row <= np.ceil(0.35 * n))).all()
    assert abs(per_row.sum() / n.sum() - 0.35) < 0.005  # stochastic rounding: unbiased
    all_runs = [r for row in mask for r in runs(row)]
    # spans of 4 (adjacent spans merge into longer runs); only each row's last span may be shorter
    assert sum(r < 4 for r in all_runs) <= B
    assert np.mean(all_runs) >= 4


def test_text_spans_leave_something_visible_and_skip_tiny_rows():
    rng = np.random.default_rng(0)
    eligible = np.array([[True, True, False, False], [True, False, False, False], [True] * 4])
    for _ in range(50):
        mask = text_span_mask(eligible, 0.99, 4, rng)
        assert mask[0].sum() == 1 and mask[1].sum() == 0 and mask[2].sum() == 3


def test_bert_corruption_proportions_and_loss_positions():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, (200, 100))
    mask = rng.random(ids.shape) < 0.15
    out = corrupt_text(ids, mask, rng, mask_token_id=999, vocab_size=1000, random_token_prob=0.1,
                       leave_unmasked_prob=0.1, special_ids=(0, 1, 2))
    assert (out[~mask] == ids[~mask]).all()
    became_mask = (out == 999) & mask
    unchanged = (out == ids) & mask
    assert abs(became_mask.sum() / mask.sum() - 0.8) < 0.02
    assert abs(unchanged.sum() / mask.sum() - 0.1) < 0.02  # (a random token equal to the original is rare)
    assert not np.isin(out[mask & ~became_mask & ~unchanged], [0, 1, 2, 999]).any()


def test_block_mask_count_block_sizes_and_aspect_ratios():
    rng = np.random.default_rng(0)
    areas, aspects, filled = [], [], 0
    for _ in range(200):
        mask, blocks = block_mask((14, 14), 120, rng, min_block=16, min_aspect=0.3, return_blocks=True)
        assert mask.sum() == 120  # data2vec: 120 of 196 patches
        covered = np.zeros_like(mask)
        for top, left, h, w in blocks:
            covered[top : top + h, left : left + w] = True
            areas.append(h * w)
            aspects.append(h / w)
        assert (covered <= mask).all()
        filled += (mask & ~covered).sum()
    assert filled <= 2  # the count is reached by blocks, not by random patches
    aspects = np.abs(np.log(aspects))
    # log-uniform in [0.3, 1/0.3]: rounding h, w to integers moves small blocks a little outside
    assert np.mean(aspects <= math.log(1 / 0.3) + 0.05) > 0.9 and aspects.max() <= math.log(6)
    assert 0.35 < np.mean(aspects <= math.log(1 / 0.3) / 2) < 0.65  # uniform in log: about half in the inner half
    # blocks are drawn with area >= 16 until fewer than 16 patches remain to be masked
    assert np.mean(np.array(areas) >= 16) > 0.55 and np.mean(areas) > 20


def test_block_mask_refuses_counts_that_leave_nothing():
    with pytest.raises(ValueError, match="num_masked"):
        block_mask((4, 4), 16, np.random.default_rng(0))


def test_time_spans_mask_about_half_and_equal_counts():
    rng = np.random.default_rng(0)
    lengths = [500, 480, 450, 500]
    raw = time_span_mask(lengths, 500, 0.65, 10, rng, same_count=False)
    for row, n in zip(raw, lengths):
        assert not row[n:].any()
        assert min(runs(row[:n])) >= 10  # spans of 10 frames (overlapping ones merge)
    fractions = [raw[i, :n].mean() for i, n in enumerate(lengths)]
    assert 0.4 < np.mean(fractions) < 0.6  # start probability 0.65 / 10 with overlaps: about half
    thinned = time_span_mask(lengths, 500, 0.65, 10, np.random.default_rng(1))
    assert len(set(thinned.sum(1).tolist())) == 1


def test_time_spans_long_run_fraction():
    rng = np.random.default_rng(0)
    mask = time_span_mask([5000] * 8, 5000, 0.65, 10, rng, same_count=False)
    expected = 1 - (1 - 0.065) ** 10  # P(a frame is covered) with independent-ish starts
    assert abs(mask.mean() - expected) < 0.03


@pytest.mark.parametrize("mod", ["text", "vision", "audio"])
def test_collator_is_deterministic_per_seed(mod):
    config = tiny_config(mod)
    a = d2v.DataCollatorForData2VecPretraining(config, seed=3)(tiny_examples(mod))
    b = d2v.DataCollatorForData2VecPretraining(config, seed=3)(tiny_examples(mod))
    c = d2v.DataCollatorForData2VecPretraining(config, seed=4)(tiny_examples(mod))
    key = "mask_time_indices" if mod == "audio" else "bool_masked_pos"
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[key], c[key])


def test_collator_state_resumes_the_mask_stream():
    config = tiny_config("vision")
    collator = d2v.DataCollatorForData2VecPretraining(config, seed=0)
    collator(tiny_examples("vision"))
    state = collator.state_dict()
    expected = collator(tiny_examples("vision"))["bool_masked_pos"]
    fresh = d2v.DataCollatorForData2VecPretraining(config, seed=0)
    fresh.load_state_dict(state)
    assert torch.equal(fresh(tiny_examples("vision"))["bool_masked_pos"], expected)


def test_collator_outputs_per_modality():
    text = d2v.DataCollatorForData2VecPretraining(tiny_config("text"))(tiny_examples("text"))
    ids, mask = text["input_ids"], text["bool_masked_pos"]
    assert ids.shape == (3, 22) and (ids[text["attention_mask"] == 0] == 1).all()  # padded with pad_token_id
    assert (text["masked_input_ids"][mask] == 98).all()  # <mask> = last id of the 99-token vocabulary
    assert torch.equal(text["masked_input_ids"][~mask], ids[~mask])
    assert not mask[:, 0].any() and not (mask & (ids == 2)).any()  # <s>, </s> never masked

    vision = d2v.DataCollatorForData2VecPretraining(tiny_config("vision"))(tiny_examples("vision"))
    assert vision["bool_masked_pos"].shape == (3, 16) and (vision["bool_masked_pos"].sum(1) == 10).all()

    audio_config = tiny_config("audio")
    cropped = d2v.DataCollatorForData2VecPretraining(audio_config)(tiny_examples("audio"))
    assert cropped["input_values"].shape == (3, 3000) and "attention_mask" not in cropped
    padded = d2v.DataCollatorForData2VecPretraining(audio_config, audio_crop="pad")(tiny_examples("audio"))
    assert padded["input_values"].shape == (3, 3600) and padded["attention_mask"].sum(1).tolist() == [3000, 3600, 3300]
    frames = [audio_config.num_audio_frames(n) for n in (3000, 3600, 3300)]
    m = padded["mask_time_indices"]
    assert all(not m[i, n:].any() for i, n in enumerate(frames)) and len(set(m.sum(1).tolist())) == 1


@pytest.mark.parametrize("mod", ["vision", "audio"])
def test_collator_refuses_nan_or_inf_and_keeps_large_finite_values(mod):
    """`check_batch` settles finiteness from the sum (one pass): a NaN, an inf, or +inf and -inf together (a NaN sum)
    are refused; finite values whose float32 sum overflows are checked exactly, and kept."""
    collator = d2v.DataCollatorForData2VecPretraining(tiny_config(mod), seed=0)
    key = "pixel_values" if mod == "vision" else "input_values"
    for bad in ([math.nan], [math.inf], [-math.inf], [math.inf, -math.inf]):
        examples = tiny_examples(mod)
        for i, value in enumerate(bad):
            examples[i][key].view(-1)[5] = value
        with pytest.raises(ValueError, match=f"{key} holds NaN or inf values"):
            collator(examples)
    examples = tiny_examples(mod)
    for e in examples:
        e[key].fill_(3e38)  # finite; their sum is inf in float32
    assert torch.equal(collator(examples)[key], torch.full_like(collator(examples)[key], 3e38))


def test_dataloader_workers_draw_different_masks():
    config = tiny_config("vision")
    collator = d2v.DataCollatorForData2VecPretraining(config, seed=0)
    collator(tiny_examples("vision"))  # used in the main process before the workers start
    images = [{"pixel_values": torch.randn(3, 32, 32)} for _ in range(8)]
    loader = torch.utils.data.DataLoader(images, batch_size=4, num_workers=2, collate_fn=collator)
    first, second = [batch["bool_masked_pos"] for batch in loader]  # one batch from each worker
    assert not torch.equal(first, second)


def test_random_patch_masks_have_the_exact_count_and_cover_the_grid():
    config = tiny_config("vision", mask_type="random", mask_prob=0.6)  # 4x4 grid: round(9.6) = 10 patches
    collator = d2v.DataCollatorForData2VecPretraining(config, seed=0)
    masks = torch.cat([collator(tiny_examples("vision"))["bool_masked_pos"] for _ in range(200)])
    assert (masks.sum(1) == 10).all()
    assert masks.float().mean(0).sub(10 / 16).abs().max() < 0.1  # uniform over positions
    with pytest.raises(Exception, match="mask_type for vision"):
        tiny_config("vision", mask_type="span")
    with pytest.raises(Exception, match="mask_type for audio"):
        tiny_config("audio", mask_type="random")


def test_seeded_batches_draw_from_their_own_seed_even_in_workers():
    config = tiny_config("audio")
    collator = d2v.DataCollatorForData2VecPretraining(config, seed=0)
    examples = tiny_examples("audio")
    a = collator(d2v.SeededBatch(examples, (7, 0, 3)))
    collator(examples)  # the collator's own stream moves on; seeded batches do not depend on it
    b = collator(d2v.SeededBatch(examples, (7, 0, 3)))
    c = collator(d2v.SeededBatch(examples, (7, 0, 4)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mask_time_indices"], c["mask_time_indices"])
    dataset = type("Batched", (torch.utils.data.Dataset,), {
        "__len__": lambda self: 3, "__getitem__": lambda self, i: examples[i],
        "__getitems__": lambda self, idx: d2v.SeededBatch([examples[i] for i in idx], idx.seed)})()
    sampler = [d2v.SeededBatch([0, 1, 2], (7, 0, 3))]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=1, collate_fn=collator)
    (from_worker,) = list(loader)
    assert all(torch.equal(a[k], from_worker[k]) for k in a)


def test_long_clips_are_cropped_to_max_audio_samples():
    config = tiny_config("audio")
    collator = d2v.DataCollatorForData2VecPretraining(config, audio_crop="pad", max_audio_samples=3200)
    batch = collator(tiny_examples("audio"))  # 3000, 3600, 3300 samples
    assert batch["input_values"].shape == (3, 3200) and batch["attention_mask"].sum(1).tolist() == [3000, 3200, 3200]
    wave = tiny_examples("audio")[1]["input_values"].numpy()
    crop = batch["input_values"][1].numpy()
    assert any(np.array_equal(crop, wave[s : s + 3200]) for s in range(401))  # a window of the clip
    with pytest.raises(ValueError, match="receptive field"):
        d2v.DataCollatorForData2VecPretraining(config, max_audio_samples=10)


def test_random_affine_is_identity_at_zero_and_moves_pixels_otherwise():
    from modeling_data2vec_unified.masking import random_affine

    images = torch.randn(4, 1, 16, 16)
    rng = np.random.default_rng(0)
    same = random_affine(images, rng, degrees=0.0, scale=0.0, translate=0.0)
    torch.testing.assert_close(same, images, atol=1e-5, rtol=0)
    moved = random_affine(images, rng)
    assert moved.shape == images.shape and not torch.allclose(moved, images, atol=1e-3)
    # a pure rotation keeps the centre pixel's neighbourhood in place: the mean moves far less than the pixels
    rotated = random_affine(images, np.random.default_rng(1), degrees=10.0, scale=0.0, translate=0.0)
    assert (rotated - images).abs().mean() > 0.05
    collator = d2v.DataCollatorForData2VecPretraining(tiny_config("vision"), image_augment="affine")
    out = collator(tiny_examples("vision"))
    assert not torch.allclose(out["pixel_values"], torch.stack([e["pixel_values"] for e in tiny_examples("vision")]))


def test_short_padded_clips_do_not_empty_the_batch_mask():
    """One 1-frame and one 2-frame clip padded into a batch of long clips: they are masked on their own and left
    out of the equal-count minimum, so the long rows still mask about half their frames, the same count each."""
    config = tiny_config("audio")  # mask_prob 0.65, spans of 10: about half the frames
    field = config.receptive_field
    lengths = [3000, 3600, field, field + config.inputs_to_logits_ratio, 3300]
    examples = [{"input_values": torch.randn(n, generator=torch.Generator().manual_seed(n))} for n in lengths]
    collator = d2v.DataCollatorForData2VecPretraining(config, audio_crop="pad", seed=0)
    frames = [config.num_audio_frames(n) for n in lengths]
    assert frames[2:4] == [1, 2]
    for _ in range(20):
        mask = collator(examples)["mask_time_indices"].numpy()
        counts = mask.sum(1)
        long_rows = [0, 1, 4]
        assert len({counts[i] for i in long_rows}) == 1  # equal across the long rows
        assert 0.3 < counts[0] / min(frames[i] for i in long_rows) < 0.75
        assert counts[2] == 0 and counts[3] <= 1
        assert all(not mask[i, n:].any() for i, n in enumerate(frames))
    # every row short: the equal count is taken over the rows that can hold a mask (2 frames or more)
    only_short = time_span_mask([9, 3, 1], 9, 0.65, 10, np.random.default_rng(0)).sum(1)
    assert only_short[0] == only_short[1] >= 1 and only_short[2] == 0
