"""data2vec 2.0 (algorithm="data2vec2") against independent math written out here: exact mask counts and block
shapes, the gather / scatter of visible tokens, one teacher pass per sample, the loss and the targets from hooks,
ALiBi and sin-cos in closed form, the student's FLOPs, bad input, and the AutoModel round trip.

Numbers that come from fairseq's data2vec 2.0 (examples/data2vec/config/v2/base_*_only_task.yaml and
data2vec2.py / modalities/base.py): 39 of 196 patches visible (inverse 3x3 blocks, mask_prob 0.8), int(0.5 T) frames
masked (1-D blocks of 5), int(0.52 T) tokens kept (random masking); ALiBi slopes of fairseq's `get_alibi`.
"""

import math

import modeling_data2vec_unified as d2v
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from modeling_data2vec_unified.masking import (
    block_masks_1d,
    block_masks_2d,
    check_batch,
    data2vec2_masks,
    num_visible,
)
from modeling_data2vec_unified.modeling_data2vec import (
    Data2VecALiBi,
    Data2VecEncoder,
    alibi_slopes,
    gather_tokens,
    sincos_2d,
)
from modeling_data2vec_unified.modeling_data2vec_pretraining import Data2VecDecoder, visible_positions
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel, AutoModelForPreTraining

from conftest import tiny_config, tiny_examples

DECODER = {"text": dict(decoder_dim=32, decoder_layers=2),
           "vision": dict(decoder_dim=32, decoder_layers=2, decoder_groups=4),
           "audio": dict(decoder_dim=16, decoder_layers=2, decoder_groups=4)}


MODEL_INPUTS = {"text": ("input_ids", "attention_mask"), "vision": ("pixel_values",),
                "audio": ("input_values", "attention_mask")}


MASK_KEY = {"text": "bool_masked_pos", "vision": "bool_masked_pos", "audio": "mask_time_indices"}


PREFIX = {"text": 0, "vision": 1, "audio": 0}


def config2(modality, **overrides):
    return tiny_config(modality, **{"algorithm": "data2vec2", "clone_batch": 3, "layerdrop": 0.0,
                                    **DECODER[modality], **overrides})


def setup2(modality, seed=0, **overrides):
    """A tiny 2.0 model in eval mode with its teacher built (so hooks put on the student later are not copied into
    the teacher), and a collated batch (text / audio padded)."""
    config = config2(modality, **overrides)
    torch.manual_seed(seed)
    model = d2v.Data2VecForPreTraining(config).eval()
    model.teacher  # noqa: B018 - build it now
    collator = d2v.DataCollatorForData2VecPretraining(config, seed=seed, audio_crop="pad")
    return model, collator(tiny_examples(modality))


def inputs_of(batch, modality):
    return {k: batch[k] for k in MODEL_INPUTS[modality] if k in batch}


def conv_frames(config, samples: int) -> int:
    for k, s in zip(config.conv_kernel, config.conv_stride):
        samples = (samples - k) // s + 1
    return samples


def real_positions(config, batch, modality) -> torch.Tensor:
    """(B, P) True at real (non-padding) positions, from the attention mask and the conv arithmetic."""
    if modality == "text":
        return batch["attention_mask"].bool()
    if modality == "vision":
        B, _, H, W = batch["pixel_values"].shape
        return torch.ones(B, (H // config.patch_size) * (W // config.patch_size), dtype=torch.bool)
    frames = [conv_frames(config, int(n)) for n in batch["attention_mask"].sum(1)]
    T = conv_frames(config, batch["input_values"].shape[1])
    return torch.tensor([[t < n for t in range(T)] for n in frames])


def visible_lists(mask: torch.Tensor) -> list[list[int]]:
    """Per row of (N, P) mask (True = masked): the visible positions in ascending order, by a plain loop."""
    return [[p for p in range(mask.shape[1]) if not bool(mask[n, p])] for n in range(mask.shape[0])]


def test_base_mask_counts_are_fairseqs_exact_counts():
    # vision 224/16: inverse blocks, mask_prob 0.8 -> 39 visible, 157 masked of 196, in every copy of every image
    vc = d2v.Data2VecConfig(modality="vision", algorithm="data2vec2")
    assert (vc.clone_batch, vc.mask_type, vc.mask_length) == (16, "inverse_block", 3)
    batch = d2v.DataCollatorForData2VecPretraining(vc, seed=0)([{"pixel_values": torch.randn(3, 224, 224)}] * 2)
    mask = batch["bool_masked_pos"]
    assert mask.shape == (2, 16, 196) and mask.dtype == torch.bool
    assert (mask.sum(-1) == 157).all() and ((~mask).sum(-1) == 39).all()

    # audio: exactly int(0.5 T) frames masked, T = the conv encoder's frames
    ac = d2v.Data2VecConfig(modality="audio", algorithm="data2vec2")
    rng = np.random.default_rng(0)
    for T in (49, 99, 999):
        m = data2vec2_masks(ac, 40, T, rng)
        assert (m.sum(1) == int(0.5 * T)).all(), T
    batch = d2v.DataCollatorForData2VecPretraining(ac, seed=0)(
        [{"input_values": np.random.default_rng(1).standard_normal(n).astype(np.float32)} for n in (16000, 20000)])
    T = conv_frames(ac, 16000)  # cropped to the shortest clip
    assert T == 49
    assert batch["mask_time_indices"].shape == (2, 8, T)
    assert (batch["mask_time_indices"].sum(-1) == int(0.5 * T)).all()

    # text: random masking keeps int(0.52 T): 266 of 512 kept, 246 masked (fairseq's random_masking)
    tc = d2v.Data2VecConfig(modality="text", algorithm="data2vec2")
    ids = np.random.default_rng(2).integers(3, 50000, (2, 510))
    batch = d2v.DataCollatorForData2VecPretraining(tc, seed=0)([{"input_ids": [0, *row, 2]} for row in ids])
    mask = batch["bool_masked_pos"]
    assert mask.shape == (2, 8, 512)
    assert (mask.sum(-1) == 246).all()
    for T in (7, 22, 100, 333):
        m = data2vec2_masks(tc, 10, T, rng)
        assert (m.sum(1) == T - int(0.52 * T)).all(), T
        assert num_visible(tc, T) == int(0.52 * T)


def test_inverse_block_visible_sets_are_3x3_squares():
    # one centre and a count of 9: the visible set is exactly the 3x3 square around it when the centre is inside,
    # and always contains the (border-clipped) square of some centre
    rng = np.random.default_rng(0)
    h = w = 14
    share = 9.5 / 196  # int(196 * share) = 9 visible, int(196 * share / 9) = 1 centre
    vis = block_masks_2d((h, w), 300, share, 3, 0.0, rng).reshape(300, h, w)
    assert (vis.sum((1, 2)) == 9).all()
    squares = 0
    for v in vis:
        found = exact = False
        for r in range(h):
            for c in range(w):
                block = np.zeros((h, w), bool)
                block[max(r - 1, 0) : min(r + 2, h), max(c - 1, 0) : min(c + 2, w)] = True
                if (v >= block).all():
                    found = True
                    exact |= (v == block).all()
        assert found
        squares += exact
    assert squares / len(vis) > 0.6  # 144 of 196 centres are inside (~73%)

    # the base recipe: visible patches cluster (mean visible 4-neighbours of a visible patch) far above uniform draws
    vc = d2v.Data2VecConfig(modality="vision", algorithm="data2vec2")
    vis = ~data2vec2_masks(vc, 300, 196, rng, grid=(14, 14))
    rand = np.stack([rng.permutation(196) < 39 for _ in range(300)])

    def neighbours(v):
        v = v.reshape(-1, 14, 14)
        p = np.pad(v, ((0, 0), (1, 1), (1, 1))).astype(int)
        n = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]
        return (n * v).sum() / v.sum()

    assert neighbours(vis) > 2.0 > 1.0 > neighbours(rand)


def test_1d_blocks_are_spans():
    rng = np.random.default_rng(0)
    T = 50
    share = 5.5 / T  # int(T * share) = 5 masked, int(T * share / 5) = 1 centre
    m = block_masks_1d(T, 300, share, 5, 0.0, rng)
    assert (m.sum(1) == 5).all()
    spans = 0
    for row in m:
        idx = np.flatnonzero(row)
        # contains the clipped span [c - 2, c + 2] of some centre c
        assert any(set(range(max(c - 2, 0), min(c + 3, T))) <= set(idx) for c in range(T))
        spans += idx[-1] - idx[0] == 4
    assert spans / len(m) > 0.8  # centres in [2, 47]: 46 of 50
    # the audio recipe: far fewer masked / visible runs than a uniform draw of as many frames
    ac = d2v.Data2VecConfig(modality="audio", algorithm="data2vec2")
    m = data2vec2_masks(ac, 200, 999, rng)
    rand = np.stack([rng.permutation(999) < 499 for _ in range(200)])
    runs = lambda x: np.abs(np.diff(x.astype(int), axis=1)).sum(1).mean()  # noqa: E731
    assert runs(m) < 0.6 * runs(rand)


def test_collator_masks_are_seeded_and_resume(modality):
    config = config2(modality)
    examples = tiny_examples(modality)
    key = MASK_KEY[modality]

    def collator(seed):
        return d2v.DataCollatorForData2VecPretraining(config, seed=seed, audio_crop="pad")

    a, b, other = collator(0)(examples), collator(0)(examples), collator(1)(examples)
    assert a[key].shape == (3, config.clone_batch, a[key].shape[-1])
    assert torch.equal(a[key], b[key])
    assert not torch.equal(a[key], other[key])
    # the copies of one sample get different masks
    assert any(not torch.equal(a[key][i, 0], a[key][i, 1]) for i in range(3))

    first = collator(0)
    first(examples)
    state = first.state_dict()
    want = first(examples)
    resumed = collator(7)
    resumed.load_state_dict(state)
    got = resumed(examples)
    assert torch.equal(got[key], want[key])


@pytest.mark.parametrize("modality", ["text", "audio"])
def test_padding_rows_keep_a_real_visible_token(modality):
    if modality == "text":
        config = config2("text", mask_prob=0.9)  # keeps int(36 * 0.1) = 3 of 36
        examples = [{"input_ids": [0, 5, 2]}, {"input_ids": [0, *range(3, 36), 2]}]
    else:
        config = config2("audio", mask_prob=0.9)
        examples = [{"input_values": torch.randn(400)}, {"input_values": torch.randn(4000)}]
    collator = d2v.DataCollatorForData2VecPretraining(config, seed=0, audio_crop="pad")
    for _ in range(10):
        batch = collator(examples)
        mask = batch[MASK_KEY[modality]]
        real = real_positions(config, batch, modality)
        T = mask.shape[-1]
        assert ((~mask).sum(-1) == num_visible(config, T)).all()
        assert (real[:, None] & ~mask).any(-1).all()  # every copy sees a real token
    # directly: rows with a single real token
    rng = np.random.default_rng(0)
    real = np.zeros((50, 30), bool)
    real[:, 0] = True
    real[::2] = True
    text = config2("text", mask_prob=0.9)
    m = data2vec2_masks(text, 50, 30, rng, real=real)
    assert ((~m).sum(1) == num_visible(text, 30)).all()
    assert (real & ~m).any(1).all()


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x)
        return x


def test_visible_tokens_are_gathered_and_put_back_in_place(modality):
    config = config2(modality, mask_noise_std=0.5, decoder_residual=False, decoder_input_dropout=0.0)
    grid = (4, 4) if modality == "vision" else None
    P = 16 if modality == "vision" else 40
    N, D = 12, config.hidden_size
    K = num_visible(config, P)
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(data2vec2_masks(config, N, P, rng, grid=grid))
    x = torch.randn(N, P, D)

    keep = visible_positions(mask, K)
    assert keep.tolist() == visible_lists(mask)
    visible = gather_tokens(x, keep)
    for n, positions in enumerate(visible_lists(mask)):
        torch.testing.assert_close(visible[n], x[n, positions], rtol=0, atol=0)

    # the decoder's scatter: layers replaced by a recorder, the projection by identity
    decoder = Data2VecDecoder(config)
    recorder = Recorder()
    decoder.layers = nn.ModuleList([recorder])
    decoder.proj = nn.Identity()
    torch.manual_seed(0)
    out = decoder(visible, keep, P, grid)
    assert out.shape == (N, P, D)
    torch.testing.assert_close(out[~mask], x[~mask], rtol=0, atol=0)
    noise = out[mask]
    assert abs(noise.std().item() - 0.5) < 0.03 and abs(noise.mean().item()) < 0.03
    assert not torch.equal(noise, x[mask])
    # the conv layers see (N, D, T), vision (N, D, h, w) with patch r * w + c at [r, c]
    seen = recorder.seen[0]
    if modality == "vision":
        assert seen.shape == (N, D, 4, 4)
        for n in range(N):
            for p in visible_lists(mask)[n]:
                torch.testing.assert_close(seen[n, :, p // 4, p % 4], x[n, p], rtol=0, atol=0)
    else:
        assert seen.shape == (N, D, P)
        torch.testing.assert_close(seen.transpose(1, 2)[~mask], x[~mask], rtol=0, atol=0)


def teacher_encoder(model) -> Data2VecEncoder:
    t = model.teacher.model
    return t if isinstance(t, Data2VecEncoder) else t.encoder


def test_teacher_runs_once_per_sample_and_the_student_on_visible_tokens(modality):
    model, batch = setup2(modality)
    c, C = model.config, model.config.clone_batch
    B = len(batch[MODEL_INPUTS[modality][0]])
    mask = batch[MASK_KEY[modality]]
    P = mask.shape[-1]
    K, p = num_visible(c, P), PREFIX[modality]
    teacher_in, student_in = [], []
    hooks = [teacher_encoder(model).register_forward_pre_hook(lambda m, a: teacher_in.append(a[0])),
             model.data2vec.encoder.register_forward_pre_hook(lambda m, a: student_in.append(a[0]))]
    with torch.no_grad():
        out = model(**batch)
    for h in hooks:
        h.remove()
    assert len(teacher_in) == 1 and teacher_in[0].shape == (B, p + P, c.hidden_size)
    assert len(student_in) == 1 and student_in[0].shape == (B * C, p + K, c.hidden_size)
    assert out.targets.shape == (B, P, c.hidden_size)
    assert out.predictions.shape == (B, C, P, c.hidden_size) and out.mask.shape == (B, C, P)
    # the loss reads masked real positions only
    real = real_positions(c, batch, modality)
    assert torch.equal(out.mask, mask & real[:, None])

    with torch.no_grad():
        # the teacher saw the whole unmasked input (at step 0 the teacher is the student)
        front = model.data2vec.embeddings(**inputs_of(batch, modality))
        torch.testing.assert_close(teacher_in[0], front.hidden_states, atol=1e-6, rtol=1e-5)
        # row b * C + k of the student holds copy k of sample b: its visible tokens, in order
        tokens = model.data2vec.embed(batch).hidden_states  # (B, P, D) once per sample
        if modality == "audio":  # masked frames zeroed (padded ones are not: fairseq's 2.0 audio encoder), the
            fe = model.data2vec.embeddings  # positional conv over the full length, LayerNorm
            assert not c.pos_conv_zero_padding
            x = tokens[:, None] * (~mask[..., None])
            x = x.flatten(0, 1)
            tokens = fe.layer_norm(x + fe.pos_conv(x.transpose(1, 2)).transpose(1, 2)).view(B, C, P, -1)
        else:
            tokens = tokens[:, None].expand(B, C, P, -1)
        if modality == "vision":  # the patches plus the closed-form sin-cos positions
            patches = model.data2vec.embeddings.patch_embedding(batch["pixel_values"]).flatten(2).transpose(1, 2)
            torch.testing.assert_close(tokens[:, 0], patches + mae_sincos(4, 4, c.hidden_size), atol=1e-5, rtol=1e-5)
        for b in range(B):
            for k in range(C):
                row = student_in[0][b * C + k]
                torch.testing.assert_close(row[p:], tokens[b, k, visible_lists(mask[b])[k]], atol=1e-5, rtol=1e-5)
                if p:
                    torch.testing.assert_close(row[0], model.data2vec.embeddings.cls_token[0, 0])


def test_loss_is_the_written_out_sum(modality):
    model, batch = setup2(modality)
    c = model.config
    cls_rows = []
    hook = model.data2vec.encoder.register_forward_hook(lambda m, i, o: cls_rows.append(o.last_hidden_state[:, 0]))
    torch.manual_seed(1)  # the decoder's mask noise: the same draw for the second forward below
    with torch.no_grad():
        out = model(**batch)
    hook.remove()
    scale = {"text": 1.0, "vision": 1 / math.sqrt(32), "audio": 1 / math.sqrt(32)}[modality]
    assert c.target_loss_scale == pytest.approx(scale)
    pred, tgt, m = out.predictions.double(), out.targets.double(), out.mask
    B, C, P, D = pred.shape
    total, count = 0.0, 0
    for b in range(B):
        for k in range(C):
            for t in range(P):
                if m[b, k, t]:
                    total += float(((pred[b, k, t] - tgt[b, t]) ** 2).sum())
                    count += 1
    assert count == int(out.num_masked) > 0
    want = total * scale / count
    if modality == "vision":
        assert c.cls_loss_weight == 0.01
        cls = cls_rows[0].double().view(B, C, D)  # the student's encoder output at CLS, per copy
        cls_target = tgt.mean(1)  # (B, D): the mean of the patch targets
        # fairseq data2vec2.py: d2v_loss(cls_pred, cls_target) * cls_loss * sample_size, summed over every element by
        # the criterion, divided by sample_size: the weight times a SUM over the B x C copies (cls_loss_reduction "sum")
        cls_loss = sum(float(((cls[b, k] - cls_target[b]) ** 2).sum()) for b in range(B) for k in range(C))
        assert c.cls_loss_reduction == "sum" and B * C > 1
        assert cls_loss * scale * 0.01 > 1e-4 * want  # the term is not negligible for this check
        c.cls_loss_reduction = "mean"  # the per-copy mean instead
        torch.manual_seed(1)
        with torch.no_grad():
            mean = model(**batch).loss.item()
        assert mean == pytest.approx(want + 0.01 * cls_loss / (B * C) * scale, rel=1e-5)
        want += 0.01 * cls_loss * scale
    assert out.loss.item() == pytest.approx(want, rel=1e-5)
    # the fraction over real positions of every copy
    real = real_positions(c, batch, modality)
    assert out.masked_fraction.item() == pytest.approx(count / (int(real.sum()) * C), rel=1e-6)


def test_targets_are_the_top_k_instance_normed_ffn_outputs(modality):
    model, batch = setup2(modality)
    c = model.config
    layers = teacher_encoder(model).layers
    assert len(layers) == 3 and c.average_top_k_layers == 2
    ffn = []
    hooks = [layer.fc2.register_forward_hook(lambda m, i, o: ffn.append(o.double())) for layer in layers]
    with torch.no_grad():
        out = model(**batch)
    for h in hooks:
        h.remove()
    assert len(ffn) == 3
    p = PREFIX[modality]
    real = real_positions(c, batch, modality)
    B, P, D = out.targets.shape
    want = torch.zeros(B, P, D, dtype=torch.float64)
    for b in range(B):
        n = int(real[b].sum())
        assert bool(real[b, :n].all())
        acc = 0
        for y in ffn[-2:]:  # top K = 2 of 3 layers
            x = y[b, p : p + n]  # CLS stripped; the real positions
            mean = x.mean(0)
            var = ((x - mean) ** 2).mean(0)  # biased, over time, per channel
            acc = acc + (x - mean) / torch.sqrt(var + 1e-5)
        y = acc / 2
        if modality == "vision":  # final LayerNorm over channels, no affine
            mu = y.mean(-1, keepdim=True)
            y = (y - mu) / torch.sqrt(((y - mu) ** 2).mean(-1, keepdim=True) + 1e-5)
        want[b, :n] = y
    torch.testing.assert_close(out.targets.double()[real], want[real], atol=2e-5, rtol=1e-4)


def test_alibi_slopes_are_fairseqs():
    assert alibi_slopes(8) == pytest.approx([2.0**-i for i in range(1, 9)], rel=1e-12)
    want12 = [2.0**-i for i in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    assert alibi_slopes(12) == pytest.approx(want12, rel=1e-12)
    assert alibi_slopes(4) == pytest.approx([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8], rel=1e-12)


def test_alibi_bias_is_the_closed_form_with_a_clamped_scale():
    config = config2("audio", hidden_size=48, num_attention_heads=12, intermediate_size=96)
    alibi = Data2VecALiBi(config)
    scale = [1.0, 0.5, -0.3, 2.0, 0.0, 1.5, 1.0, 1.0, -2.0, 0.25, 1.0, 3.0]
    with torch.no_grad():
        alibi.scale.copy_(torch.tensor(scale))
    slopes = [2.0**-i for i in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    T = 9
    bias = alibi(T)
    assert bias.shape == (1, 12, T, T)
    want = torch.tensor([[[-max(scale[h], 0.0) * slopes[h] * abs(i - j) for j in range(T)] for i in range(T)]
                         for h in range(12)])
    torch.testing.assert_close(bias[0].double(), want.double(), atol=1e-6, rtol=1e-6)
    assert (bias[0, 2] == 0).all() and (bias[0, 8] == 0).all()  # negative scales: no bias
    # kept positions: the bias between the tokens' original positions
    keep = torch.tensor([[0, 3, 4, 8], [1, 2, 6, 7]])
    gathered = alibi(4, keep)
    assert gathered.shape == (2, 12, 4, 4)
    for b in range(2):
        pos = keep[b].tolist()
        want = torch.tensor([[[-max(scale[h], 0.0) * slopes[h] * abs(pi - pj) for pj in pos] for pi in pos]
                             for h in range(12)])
        torch.testing.assert_close(gathered[b].double(), want.double(), atol=1e-6, rtol=1e-6)


def test_the_student_attends_with_alibi_between_kept_frames():
    model, batch = setup2("audio")
    H = model.config.num_attention_heads
    scale = [1.0, -0.5, 0.7, 2.0]
    with torch.no_grad():
        model.data2vec.encoder.alibi.scale.copy_(torch.tensor(scale))
    slopes = [2.0 ** (-8 * (h + 1) / H) for h in range(H)]
    biases = []
    hook = model.data2vec.encoder.layers[0].attention.register_forward_pre_hook(lambda m, a: biases.append(a[1]))
    with torch.no_grad():
        model(**batch)
    hook.remove()
    mask = batch["mask_time_indices"].flatten(0, 1)
    real = real_positions(model.config, batch, "audio").repeat_interleave(model.config.clone_batch, 0)
    keep = visible_lists(mask)
    K = len(keep[0])
    bias = biases[0]
    assert bias.shape == (len(keep), H, K, K)
    for n, pos in enumerate(keep):
        key_real = real[n, pos]
        want = torch.tensor([[[-max(scale[h], 0.0) * slopes[h] * abs(i - j) for j in pos] for i in pos]
                             for h in range(H)])
        torch.testing.assert_close(bias[n][..., key_real].double(), want[..., key_real].double(),
                                   atol=1e-5, rtol=1e-6)
        assert (bias[n][..., ~key_real] < -1e30).all()  # padded keys stay out


def mae_sincos(h: int, w: int, D: int) -> torch.Tensor:
    """MAE's get_2d_sincos_pos_embed written out: token r * w + c gets sin(c w_k), cos(c w_k), sin(r w_k),
    cos(r w_k) in its four quarters, w_k = 10000^(-k / (D / 4))."""
    q = D // 4
    out = torch.zeros(h * w, D, dtype=torch.float64)
    for r in range(h):
        for c in range(w):
            for k in range(q):
                omega = 10000.0 ** (-k / q)
                out[r * w + c, k] = math.sin(c * omega)
                out[r * w + c, q + k] = math.cos(c * omega)
                out[r * w + c, 2 * q + k] = math.sin(r * omega)
                out[r * w + c, 3 * q + k] = math.cos(r * omega)
    return out.float()


@pytest.mark.parametrize("grid,dim", [((3, 5), 16), ((14, 14), 768), ((4, 4), 32)])
def test_sincos_is_maes_closed_form(grid, dim):
    got = sincos_2d(grid, dim)
    assert got.shape == (grid[0] * grid[1], dim)
    torch.testing.assert_close(got, mae_sincos(*grid, dim), atol=1e-6, rtol=1e-6)


def test_vision_tokens_add_sincos_and_the_cls_token_has_no_position():
    model, batch = setup2("vision")
    emb = model.data2vec.embeddings
    pixels = batch["pixel_values"]
    with torch.no_grad():
        patches = F.conv2d(pixels, emb.patch_embedding.weight, emb.patch_embedding.bias, stride=8)
        patches = patches.flatten(2).transpose(1, 2)
        front = emb(pixels)
    torch.testing.assert_close(front.hidden_states[:, 1:], patches + mae_sincos(4, 4, 32), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(front.hidden_states[:, 0], emb.cls_token[0].expand(len(pixels), -1))


def test_student_flops_per_copy_scale_with_the_visible_fraction(modality):
    model, batch = setup2(modality)
    c = model.config
    enc = model.data2vec.encoder
    records = []
    original = enc.forward

    def counted(*args, **kwargs):
        with FlopCounterMode(display=False) as counter:
            out = original(*args, **kwargs)
        records.append((tuple(args[0].shape[:2]), counter.get_total_flops()))
        return out

    enc.forward = counted
    try:
        with torch.no_grad():
            model(**batch)  # the student: (B * C, prefix + K)
            model.data2vec(**inputs_of(batch, modality))  # the full input: (B, prefix + P)
    finally:
        del enc.forward
    (rows_s, len_s), flops_s = records[0]
    (rows_f, len_f), flops_f = records[1]
    P = batch[MASK_KEY[modality]].shape[-1]
    p, K = PREFIX[modality], num_visible(c, P)
    B = rows_f
    assert (rows_s, len_s, len_f) == (B * c.clone_batch, p + K, p + P)
    D, I, L = c.hidden_size, c.intermediate_size, c.num_hidden_layers

    def closed_form(rows, T, flops):
        linear = L * 2 * rows * T * (3 * D * D + D * D + 2 * D * I)  # qkv, out_proj, fc1, fc2
        attention = L * 4 * rows * T * T * D  # q k^T and attn v, if the counter sees SDPA (not on CPU)
        assert flops in (linear, linear + attention)

    closed_form(rows_s, len_s, flops_s)
    closed_form(rows_f, len_f, flops_f)
    ratio = (flops_s / rows_s) / (flops_f / rows_f)
    frac = (p + K) / (p + P)
    assert frac**2 * (1 - 1e-9) <= ratio <= frac * (1 + 1e-9)
    assert frac < 0.6


def test_bad_masks_and_configs_are_refused(modality):
    model, batch = setup2(modality)
    key = MASK_KEY[modality]
    mask = batch[key]
    flat = mask[:, 0]  # (B, P): a 1.0 mask
    for check in (True, False):
        with pytest.raises(ValueError, match=r"\(batch, clone_batch, tokens\)"):
            model(**{**batch, key: flat}, check_inputs=check)
    wrong = mask.clone()
    b, k = 0, 1
    wrong[b, k, int((wrong[b, k]).nonzero()[0])] = False  # one more visible token
    with pytest.raises(ValueError, match=r"exactly \d+ of \d+ tokens visible"):
        model(**{**batch, key: wrong})
    # the config's validation error (huggingface_hub's strict dataclass wraps the ValueError)
    with pytest.raises(Exception, match="clone_batch must be an integer >= 1; got 0"):
        config2(modality, clone_batch=0)
    with pytest.raises(Exception, match="use_mask_token must be False"):
        config2(modality, use_mask_token=True)
    if modality == "audio":
        return  # block masking masks int(p T) < T: always a visible frame (too few frames: the next test)
    # a mask_prob that leaves nothing visible (random / inverse-block masking keep int((1 - p) T))
    few = config2(modality, mask_prob=0.999)
    with pytest.raises(ValueError, match="no visible token"):
        num_visible(few, 16)
    with pytest.raises(ValueError, match="no visible token"):
        d2v.DataCollatorForData2VecPretraining(few, seed=0, audio_crop="pad")(tiny_examples(modality))
    with pytest.raises(ValueError, match="no visible token"):
        d2v.Data2VecForPreTraining(few)(**{k: v for k, v in batch.items() if k != key})


def test_too_few_tokens_to_mask_is_refused():
    audio = config2("audio")  # block masking masks int(0.5 T): none of 1 frame
    with pytest.raises(ValueError, match="masks no token"):
        num_visible(audio, 1)
    short = [{"input_values": torch.randn(audio.receptive_field)}] * 2  # one frame each
    with pytest.raises(ValueError, match="masks no token"):
        d2v.DataCollatorForData2VecPretraining(audio, seed=0)(short)
    with pytest.raises(ValueError, match="no visible token"):
        num_visible(config2("text", mask_prob=0.1), 1)  # random masking keeps int(0.9) = 0 of 1
    with pytest.raises(ValueError, match="masks no token"):
        num_visible(config2("audio", mask_prob=0.1), 5)  # int(0.5) = 0 masked
    # a mask hiding every real token of a padded example
    model, batch = setup2("text")
    mask = batch["bool_masked_pos"].clone()
    real = batch["attention_mask"].bool()
    row = int(real.sum(1).argmin())
    T, K = mask.shape[-1], num_visible(model.config, mask.shape[-1])
    n_real = int(real[row].sum())
    if T - n_real >= K:  # room to put every visible token on padding
        mask[row, 0] = True
        mask[row, 0, n_real : n_real + K] = False
        with pytest.raises(ValueError, match="hides every real token"):
            check_batch(model.config, {**batch, "bool_masked_pos": mask})


def test_auto_model_round_trip(modality, tmp_path):
    model, batch = setup2(modality)
    with torch.no_grad():  # move the decoder away from its init so equality means something
        for prm in model.decoder.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)
    model.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is type(model.data2vec)
    assert base.config.algorithm == "data2vec2"
    inputs = inputs_of(batch, modality)
    with torch.no_grad():
        got = base(**inputs).last_hidden_state
        want = model.data2vec(**inputs).last_hidden_state
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # the full-input encoding is the encoder on every token (keep = all positions, no mask)
    with torch.no_grad():
        P = batch[MASK_KEY[modality]].shape[-1]
        tokens = model.data2vec.embed(batch)
        keep = torch.arange(P).expand(len(got), -1)
        kept = model.data2vec.encode(model.data2vec.contextualize(tokens, torch.zeros(len(got), P, dtype=torch.bool),
                                                                  keep)).last_hidden_state
    torch.testing.assert_close(kept, want, atol=1e-5, rtol=1e-5)

    loaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert isinstance(loaded, d2v.Data2VecForPreTraining) and loaded.config.algorithm == "data2vec2"
    with torch.no_grad():  # its student encodes as the saved one (ALiBi slopes included: a non-persistent buffer)
        torch.testing.assert_close(loaded.eval().data2vec(**inputs).last_hidden_state, want, rtol=0, atol=0)
    mine, theirs = model.decoder.state_dict(), loaded.decoder.state_dict()
    assert mine.keys() == theirs.keys()
    for name in mine:
        torch.testing.assert_close(theirs[name], mine[name], rtol=0, atol=0)


def test_the_sincos_table_is_saved_and_an_older_checkpoint_without_it_gets_the_closed_form(tmp_path):
    """The 2.0 image positions are a saved buffer (a converted fairseq model keeps its fp16-rounded table); a checkpoint
    written before the buffer existed loads with MAE's closed form, and other grids still use the closed form."""
    from modeling_data2vec_unified.modeling_data2vec import sincos_2d
    from safetensors.torch import load_file, save_file

    config = d2v.Data2VecConfig(modality="vision", algorithm="data2vec2", hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64, image_size=16, patch_size=4)
    model = d2v.Data2VecVisionModel(config)
    table = model.embeddings.sincos_positions
    assert torch.equal(table[0], sincos_2d((4, 4), 32))
    table.copy_(table.half().float())  # as a converted fairseq table
    model.save_pretrained(tmp_path / "new")
    assert torch.equal(d2v.Data2VecVisionModel.from_pretrained(tmp_path / "new").embeddings.sincos_positions, table)
    model.save_pretrained(tmp_path / "old")
    weights = load_file(tmp_path / "old" / "model.safetensors")
    del weights["embeddings.sincos_positions"]
    save_file(weights, tmp_path / "old" / "model.safetensors", metadata={"format": "pt"})
    old = d2v.Data2VecVisionModel.from_pretrained(tmp_path / "old")
    assert torch.equal(old.embeddings.sincos_positions[0], sincos_2d((4, 4), 32))
    with torch.no_grad():
        wider = old.embeddings.tokens(torch.zeros(1, 3, 24, 24)).hidden_states  # a 6x6 grid: the closed form
    patches = old.embeddings.patch_embedding(torch.zeros(1, 3, 24, 24)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(wider - patches, sincos_2d((6, 6), 32)[None])


def test_mask_prob_adjust_adds_block_centres_in_the_inverse_2d_masks():
    """data2vec2_masks passes the config's mask_prob_adjust to the inverse blocks: with 9 visible patches of 196 and
    no adjustment there is one centre, so most visible sets are one 3x3 square; an adjustment of 3 more squares' worth
    draws 4 centres before the count is cut to 9, so visible sets are rarely a single square."""
    from modeling_data2vec_unified.masking import data2vec2_masks

    def exact_squares(adjust: float) -> float:
        config = tiny_config("vision", algorithm="data2vec2", mask_type="inverse_block", mask_length=3,
                             mask_prob=1 - 9.5 / 196, mask_prob_adjust=adjust, image_size=56, patch_size=4)
        vis = ~data2vec2_masks(config, 200, 196, np.random.default_rng(0), grid=(14, 14)).reshape(200, 14, 14)
        assert (vis.sum((1, 2)) == 9).all()
        found = 0
        for v in vis:
            rows, cols = np.nonzero(v)
            found += (rows.max() - rows.min() == 2) and (cols.max() - cols.min() == 2)  # 9 cells in a 3x3 box
        return found / len(vis)

    assert exact_squares(0.0) > 0.6 and exact_squares(27 / 196) < 0.2
