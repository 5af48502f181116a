"""data2vec models: one Transformer encoder shared by three modality front ends.

Reading order: the encoder (`Data2VecAttention` -> `Data2VecLayer` -> `Data2VecEncoder`), then one front end
per modality (raw input -> tokens + padding mask), then the `PreTrainedModel` classes that join them. Pretraining
(the EMA teacher, targets, loss) is in `modeling_data2vec_pretraining`.

Conventions, stated once:
- `attention_mask`: (batch, time), 1 / True = a real token, 0 / False = padding (transformers' convention).
- `bool_masked_pos` / `mask_time_indices`: (batch, positions), True = masked, i.e. hidden from the model.
- Every module takes `config` (a `Data2VecConfig`); the config is the one place a knob lives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .checkpoint_files import (
    TRANSFORMERS_MODEL_TYPES,
    check_local_path,
    checkpoint_modality,
    load_transformers_checkpoint,
    read_config_dict,
    unreadable_weights_error,
)
from .configuration_data2vec import Data2VecConfig
from .input_checks import (
    MODALITY_INPUT,
    check_attention_mask,
    check_attention_values,
    check_pixel_layout,
    check_token_ids,
    host_checks_are_free,
)

# ==================================================================================================
# Shared Transformer encoder
# ==================================================================================================


@dataclass
class Data2VecEncoderOutput(ModelOutput):
    """
    last_hidden_state: (B, T, D) output of the last layer.
    hidden_states: input of the first layer, then every layer's block output (L + 1 entries).
    ffn_outputs: every layer's FFN output before dropout, residual and the final LayerNorm (L entries):
        data2vec's targets for text and audio.
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    ffn_outputs: tuple[torch.FloatTensor, ...] | None = None


def _relative_position_index(grid: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(1 + h*w, 1 + h*w) index into a BEiT relative position table for tokens [CLS, patches (row-major)].

    Patch pairs index the (2h-1) x (2w-1) table of 2D offsets; the last three entries are
    CLS->patch, patch->CLS and CLS->CLS.
    """
    h, w = grid
    num_offsets = (2 * h - 1) * (2 * w - 1)
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).flatten(1)  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    patch_index = (rel[0] + h - 1) * (2 * w - 1) + (rel[1] + w - 1)  # (N, N)
    index = torch.empty(h * w + 1, h * w + 1, dtype=torch.long)
    index[1:, 1:] = patch_index
    index[0, :] = num_offsets
    index[:, 0] = num_offsets + 1
    index[0, 0] = num_offsets + 2
    return index.to(device)


class Data2VecRelativePositionBias(nn.Module):
    """BEiT relative position bias: one learned scalar per head for every 2D offset between two tokens."""

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        self.grid = config.patch_grid
        h, w = self.grid
        self.table = nn.Parameter(torch.zeros((2 * h - 1) * (2 * w - 1) + 3, config.num_attention_heads))
        self._index_cache: dict[tuple, torch.Tensor] = {}

    def _table_for(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.grid:
            return self.table
        # another resolution: resample the 2D offset part of the table bilinearly (as BEiT / transformers do)
        (h, w), (nh, nw) = self.grid, grid
        offsets = self.table[:-3].T.reshape(1, -1, 2 * h - 1, 2 * w - 1)  # (1, heads, 2h-1, 2w-1)
        offsets = F.interpolate(offsets, size=(2 * nh - 1, 2 * nw - 1), mode="bilinear", align_corners=False)
        return torch.cat([offsets.flatten(2)[0].T, self.table[-3:]])

    def forward(self, grid: tuple[int, int], position_index: torch.Tensor | None = None) -> torch.Tensor:
        """Bias (1, heads, T, T), or (B, heads, T', T') for the tokens at `position_index` (B, T')."""
        key = (grid, self.table.device)
        if key not in self._index_cache:
            self._index_cache[key] = _relative_position_index(grid, self.table.device)
        index = self._index_cache[key]
        table = self._table_for(grid)
        # contiguous: a strided bias makes every layer's score + bias add about 3x slower on CPU
        if position_index is None:
            return table[index].permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, H, T, T)
        index = index[position_index[:, :, None], position_index[:, None, :]]  # (B, T', T')
        return table[index].permute(0, 3, 1, 2).contiguous()  # (B, H, T', T')


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi's per-head slopes (Press et al., 2022): the geometric sequence 2^(-8/n), 2^(-16/n), ... for n a power of
    two; otherwise those of the nearest lower power of two, then every other slope of the next power (fairseq's
    `get_alibi`)."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


class Data2VecALiBi(nn.Module):
    """ALiBi attention bias, symmetric (data2vec 2.0 audio): bias[h, i, j] = -scale[h] * slope[h] * |i - j|, with a
    learned per-head `scale` (init 1, clamped >= 0 in use) shared by every layer."""

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        self.register_buffer("slopes", torch.tensor(alibi_slopes(config.num_attention_heads)), persistent=False)
        self.scale = nn.Parameter(torch.ones(config.num_attention_heads))

    def forward(self, num_tokens: int, position_index: torch.Tensor | None = None) -> torch.Tensor:
        """Bias (1, heads, T, T), or (B, heads, T', T') between the tokens at `position_index` (B, T')."""
        if position_index is None:
            position_index = torch.arange(num_tokens, device=self.scale.device)[None]  # (1, T)
        distance = (position_index[:, :, None] - position_index[:, None, :]).abs()  # (B, T', T')
        slope = self.slopes * self.scale.clamp(min=0)  # (H,)
        return -slope[None, :, None, None] * distance[:, None].to(slope.dtype)  # (B, H, T', T')


def sincos_2d(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions of an (h, w) patch grid, (h * w, dim) row-major (MAE's `get_2d_sincos_pos_embed`,
    used by data2vec 2.0): the first dim / 2 channels encode the column, the last dim / 2 the row; each half is
    [sin(p * w_k), cos(p * w_k)] with w_k = 10000^(-k / (dim / 4)), k < dim / 4."""
    h, w = grid
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None]  # (h*w, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()  # (h*w, dim)


class Data2VecAttention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention`, with one fused QKV projection."""

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        # data2vec vision has no key bias; a key bias only shifts every score of a query by the same amount,
        # which softmax ignores, so loading it as zeros is exact.
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob
        per_layer = config.relative_position_bias == "per_layer"
        self.relative_position_bias = Data2VecRelativePositionBias(config) if per_layer else None

    def forward(self, hidden_states: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        B, T, D = hidden_states.shape
        qkv = self.qkv(hidden_states).view(B, T, 3, self.num_heads, self.head_dim)
        # unbind on the (B, T, 3, H, hd) layout: the gradient of qkv is then assembled without an extra copy
        q, k, v = (x.transpose(1, 2) for x in qkv.unbind(2))  # each (B, H, T, hd)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, hd)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


class Data2VecDropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability `p` in training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:  # (in this order, a compiled eval-mode layer never reads `p`)
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Data2VecLayer(GradientCheckpointingLayer):
    """One Transformer block, post-LN (data2vec text / audio) or pre-LN with layer scale (data2vec vision).

    post: h = LN1(x + attn(x));            out = LN2(h + ffn(h))
    pre:  h = x + g1 * attn(LN1(x));       out = h + g2 * ffn(LN2(h))
    Returns (block output, FFN output before dropout / layer scale / residual / final LayerNorm).
    """

    def __init__(self, config: Data2VecConfig, drop_path: float = 0.0):
        super().__init__()
        self.pre_norm = config.layer_norm_position == "pre"
        self.attention = Data2VecAttention(config)
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.activation_dropout = nn.Dropout(config.activation_dropout)
        self.drop_path = Data2VecDropPath(drop_path)
        if config.layer_scale_init_value > 0:
            self.layer_scale_1 = nn.Parameter(torch.full((config.hidden_size,), config.layer_scale_init_value))
            self.layer_scale_2 = nn.Parameter(torch.full((config.hidden_size,), config.layer_scale_init_value))
        else:
            self.layer_scale_1 = self.layer_scale_2 = None

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_dropout(self.act(self.fc1(x))))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attn_bias: torch.Tensor | None = None,
        grid: tuple[int, int] | None = None,
        position_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.attention.relative_position_bias is not None:
            own = self.attention.relative_position_bias(grid, position_index)
            attn_bias = own if attn_bias is None else own + attn_bias
        if self.pre_norm:
            attn = self.dropout(self.attention(self.norm1(hidden_states), attn_bias))
            if self.layer_scale_1 is not None:
                attn = self.layer_scale_1 * attn
            hidden_states = hidden_states + self.drop_path(attn)
            ffn_out = self.ffn(self.norm2(hidden_states))
            ffn = self.dropout(ffn_out)
            if self.layer_scale_2 is not None:
                ffn = self.layer_scale_2 * ffn
            return hidden_states + self.drop_path(ffn), ffn_out
        attn = self.dropout(self.attention(hidden_states, attn_bias))
        hidden_states = self.norm1(hidden_states + self.drop_path(attn))
        ffn_out = self.ffn(hidden_states)
        return self.norm2(hidden_states + self.drop_path(self.dropout(ffn_out))), ffn_out


def padding_to_attn_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) mask, 1 = real token -> additive (B, 1, 1, T) bias that keeps padded keys out of attention.
    An additive mask passed in its place (0 = attend, negative = padding) is refused where that is free (CPU)."""
    if attention_mask is None:
        return None
    if attention_mask.dtype != torch.bool and host_checks_are_free(attention_mask):
        check_attention_values(attention_mask)
    bias = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    bias = bias.masked_fill(~attention_mask.bool(), torch.finfo(dtype).min)
    return bias[:, None, None, :]


class Data2VecEncoder(nn.Module):
    """The Transformer encoder every modality shares. It never asks which modality it serves.

    It can run on a subset of a sequence's tokens (data2vec 2.0 encodes only the visible ones): pass the
    kept tokens and, for the relative position bias or ALiBi, `position_index` (B, T'), each token's position in
    the full sequence. `hidden_states` at the input of the first block are included after the optional pre-block
    LayerNorm (`config.pre_block_layer_norm`).
    """

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        self.config = config
        shared = config.relative_position_bias == "shared"
        self.relative_position_bias = Data2VecRelativePositionBias(config) if shared else None
        self.alibi = Data2VecALiBi(config) if config.relative_position_bias == "alibi" else None
        pre_norm = config.pre_block_layer_norm
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if pre_norm else None
        rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()  # stochastic depth decay
        self.layers = nn.ModuleList([Data2VecLayer(config, drop_path=rate) for rate in rates])
        self.layerdrop = config.layerdrop

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        grid: tuple[int, int] | None = None,
        position_index: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_ffn_outputs: bool = False,
    ) -> Data2VecEncoderOutput:
        if self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)
        attn_bias = padding_to_attn_bias(attention_mask, hidden_states.dtype)
        if self.relative_position_bias is not None:
            shared = self.relative_position_bias(grid, position_index).to(hidden_states.dtype)
            attn_bias = shared if attn_bias is None else shared + attn_bias
        if self.alibi is not None:
            alibi = self.alibi(hidden_states.shape[1], position_index).to(hidden_states.dtype)
            attn_bias = alibi if attn_bias is None else alibi + attn_bias
        all_hidden = [hidden_states] if output_hidden_states else None
        ffn_outputs = [] if output_ffn_outputs else None
        for layer in self.layers:
            # LayerDrop (https://arxiv.org/abs/1909.11556): skip the whole layer in training
            if self.training and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                continue
            hidden_states, ffn_out = layer(hidden_states, attn_bias, grid, position_index)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_ffn_outputs:
                ffn_outputs.append(ffn_out)
        return Data2VecEncoderOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            ffn_outputs=tuple(ffn_outputs) if output_ffn_outputs else None,
        )


# ==================================================================================================
# Modality front ends: raw input -> (tokens (B, T, D), padding mask (B, T) or None)
# ==================================================================================================


@dataclass
class FrontEndOutput:
    hidden_states: torch.Tensor  # (B, T, D)
    attention_mask: torch.Tensor | None = None  # (B, T) bool, True = real token; None = no padding
    grid: tuple[int, int] | None = None  # vision: patch grid (h, w), for the relative position bias
    extract_features: torch.Tensor | None = None  # audio: normalised conv features before the projection
    # data2vec 2.0: each kept token's position in the full sequence (B, T'), prefix tokens included; None: all kept
    position_index: torch.Tensor | None = None


def gather_tokens(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The `keep` (B, K) positions of each row of (B, T, ...) `x`: (B, K, ...)."""
    index = keep.reshape(*keep.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, index)


def _check_not_empty(name: str, tensor: torch.Tensor) -> None:
    if tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)}): pass at least one example with content")


class Data2VecTextEmbeddings(nn.Module):
    """RoBERTa-style embeddings: tokens + learned positions (offset past the padding index) + token types (none with
    `type_vocab_size` 0, as fairseq's data2vec text: every token is of type 0, which adds nothing)."""

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        types = config.type_vocab_size
        self.token_type_embeddings = nn.Embedding(types, config.hidden_size) if types else None
        self.num_token_types = config.num_token_types
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # longest sequence: positions run from padding_idx + 1 (fairseq's make_positions)
        self.max_length = config.max_position_embeddings - (config.pad_token_id or 0) - 1

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> FrontEndOutput:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, sequence_length); got shape {tuple(input_ids.shape)}")
        if input_ids.is_floating_point():
            raise ValueError("input_ids must hold integer token ids; got a float tensor (tokenize the text first)")
        _check_not_empty("input_ids", input_ids)
        if input_ids.shape[1] > self.max_length:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens; this model takes at most {self.max_length} "
                "(truncate, e.g. tokenizer(..., truncation=True, max_length=...))"
            )
        if host_checks_are_free(input_ids):  # value checks only where reading them back costs no device sync
            check_token_ids(input_ids, "input_ids", self.word_embeddings.num_embeddings, self.padding_idx)
            if token_type_ids is not None:
                check_token_ids(token_type_ids, "token_type_ids", self.num_token_types)
            if attention_mask is not None:
                check_attention_mask(attention_mask, input_ids.shape)
        if position_ids is None:
            # non-padding tokens get positions padding_idx + 1, padding_idx + 2, ...; padding keeps padding_idx
            not_pad = input_ids.ne(self.padding_idx).long()
            position_ids = torch.cumsum(not_pad, dim=1) * not_pad + self.padding_idx
        x = self.word_embeddings(input_ids)
        if self.token_type_embeddings is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.token_type_embeddings(types)
        x = x + self.position_embeddings(position_ids)
        x = self.dropout(self.layer_norm(x))  # (B, T, D)
        return FrontEndOutput(x, attention_mask.bool() if attention_mask is not None else None)

    tokens = forward  # the whole front end runs once per sample (positions are learned, in the front end)

    def contextualize(self, front: FrontEndOutput, mask: torch.Tensor | None = None,
                      keep: torch.Tensor | None = None) -> FrontEndOutput:
        """Per masked copy: nothing for 1.0 (text masks the ids, before `tokens`); data2vec 2.0 keeps only the
        `keep` (B, K) tokens of each row."""
        if keep is None:
            return front
        mask = gather_tokens(front.attention_mask, keep) if front.attention_mask is not None else None
        return FrontEndOutput(gather_tokens(front.hidden_states, keep), mask, position_index=keep)


class Data2VecVisionEmbeddings(nn.Module):
    """BEiT-style patch embedding: non-overlapping patches -> linear projection (+ fixed sin-cos positions, data2vec
    2.0), masked patches replaced by a learned mask token (1.0) or removed (2.0), a CLS token in front, optional
    learned absolute position embeddings."""

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.grid = config.patch_grid
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if config.use_mask_token else None
        num_patches = self.grid[0] * self.grid[1]
        if config.use_absolute_position_embeddings:
            self.position_embeddings = nn.Parameter(torch.zeros(1, num_patches + 1, config.hidden_size))
        else:
            self.position_embeddings = None
        self.sincos = config.position_embedding_type == "sincos"
        if self.sincos:  # the table at the configured grid, saved with the weights: a converted checkpoint keeps the
            # table it was trained with (fairseq stores it in fp16); other grids use the closed form
            self.register_buffer("sincos_positions", sincos_2d(self.grid, config.hidden_size)[None], persistent=True)
        self._sincos_cache: dict[tuple, torch.Tensor] = {}
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def _position_embeddings(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.grid:
            return self.position_embeddings
        # another resolution: resample the patch positions bicubically, keep the CLS position
        cls_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        patch_pos = patch_pos.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)

    def tokens(self, pixel_values: torch.Tensor) -> FrontEndOutput:
        """Once per sample: patches (B, N, D) (+ fixed sin-cos positions, added before masking)."""
        if pixel_values.dim() != 4:
            raise ValueError(
                f"pixel_values must be (batch, channels, height, width); got shape {tuple(pixel_values.shape)}"
            )
        B, C, H, W = pixel_values.shape
        _check_not_empty("pixel_values", pixel_values)
        if C != self.num_channels:
            check_pixel_layout(pixel_values, self.num_channels)  # channels-last: say to permute
            raise ValueError(
                f"pixel_values has {C} channels; this model takes {self.num_channels} (config.num_channels)"
            )
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(
                f"image size {H}x{W} is not divisible by patch_size {self.patch_size}: resize or crop the images "
                f"to a multiple of {self.patch_size} (e.g. the image processor's size / crop_size)"
            )
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # (B, D, h, w)
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        if self.sincos:
            x = x + self._sincos(grid, x)
        return FrontEndOutput(x, None, grid=grid)

    def _sincos(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        if grid == self.grid:
            return self.sincos_positions[0].to(like.dtype)
        key = (grid, like.device, like.dtype)
        if key not in self._sincos_cache:
            self._sincos_cache[key] = sincos_2d(grid, like.shape[-1]).to(like.device, like.dtype)
        return self._sincos_cache[key]

    def contextualize(self, front: FrontEndOutput, bool_masked_pos: torch.Tensor | None = None,
                      keep: torch.Tensor | None = None) -> FrontEndOutput:
        """Per masked copy: 1.0 replaces the masked patches by the mask token; data2vec 2.0 keeps only the `keep`
        (B, K) patches of each row. Then the CLS token in front (and learned positions, where configured)."""
        x, grid = front.hidden_states, front.grid
        B = x.shape[0]
        if bool_masked_pos is not None and keep is None:
            if self.mask_token is None:
                raise ValueError("bool_masked_pos needs a mask token: build the model with use_mask_token=True")
            if bool_masked_pos.shape != x.shape[:2]:
                raise ValueError(
                    f"bool_masked_pos must be (batch, num_patches) = {tuple(x.shape[:2])}; "
                    f"got {tuple(bool_masked_pos.shape)}"
                )
            w = bool_masked_pos.unsqueeze(-1).to(x.dtype)
            x = x * (1 - w) + self.mask_token.to(x.dtype) * w
        position_index = None
        if keep is not None:
            x = gather_tokens(x, keep)  # (B, K, D)
            position_index = F.pad(keep + 1, (1, 0))  # the CLS token is position 0
        x = torch.cat([self.cls_token.expand(B, -1, -1).to(x.dtype), x], dim=1)  # (B, 1 + N, D)
        if self.position_embeddings is not None:
            positions = self._position_embeddings(grid)  # (1, 1 + N, D)
            x = x + (positions if position_index is None else positions[0][position_index])
        return FrontEndOutput(self.dropout(x), None, grid=grid, position_index=position_index)

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None) -> FrontEndOutput:
        return self.contextualize(self.tokens(pixel_values), bool_masked_pos)


class Data2VecAudioConvLayer(nn.Module):
    def __init__(self, config: Data2VecConfig, layer_id: int):
        super().__init__()
        in_dim = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        self.conv = nn.Conv1d(
            in_dim,
            config.conv_dim[layer_id],
            kernel_size=config.conv_kernel[layer_id],
            stride=config.conv_stride[layer_id],
            bias=config.conv_bias,
        )
        self.layer_norm = nn.LayerNorm(config.conv_dim[layer_id])  # over channels, wav2vec2 "layer_norm" mode
        self.act = ACT2FN[config.feat_extract_activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # (B, C, T)
        return self.act(self.layer_norm(x.transpose(1, 2)).transpose(1, 2))


class Data2VecAudioFeatureEncoder(nn.ModuleList):
    """The conv feature encoder's layers (state-dict keys `feature_extractor.N.*`, as a plain list): (B, 1, S) ->
    (B, conv_dim[-1], frames). A module of its own so that `--torch_compile` compiles the stack as one region."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self:
            x = conv(x)
        return x


class Data2VecAudioPositionalConvLayer(nn.Module):
    def __init__(self, config: Data2VecConfig):
        super().__init__()
        k = config.conv_pos_kernel_size
        self.conv = nn.Conv1d(
            config.hidden_size, config.hidden_size, kernel_size=k, padding=k // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        self.trim = 1 if k % 2 == 0 else 0  # an even kernel with padding k // 2 yields one extra frame
        self.layer_norm = nn.LayerNorm(config.hidden_size, elementwise_affine=False)
        self.act = ACT2FN[config.feat_extract_activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, T)
        x = self.conv(x)
        if self.trim:
            x = x[:, :, : -self.trim]
        return self.act(self.layer_norm(x.transpose(1, 2)).transpose(1, 2))


class GradMultiply(torch.autograd.Function):
    """Identity forward; the gradient times `scale` backward (fairseq's GradMultiply)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class Data2VecAudioFrontEnd(nn.Module):
    """wav2vec2-style front end: layer-normed conv feature encoder -> LayerNorm + projection -> (masked frames
    replaced by a learned embedding) -> a positional convolution of several layers, added, then LayerNorm."""

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        self.config = config
        self.feature_extractor = Data2VecAudioFeatureEncoder(
            [Data2VecAudioConvLayer(config, i) for i in range(config.num_feat_extract_layers)]
        )
        self.feature_layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.feature_projection = nn.Linear(config.conv_dim[-1], config.hidden_size)
        self.feature_dropout = nn.Dropout(config.feat_proj_dropout)
        self.mask_embedding = nn.Parameter(torch.zeros(config.hidden_size)) if config.use_mask_token else None
        self.pos_conv = nn.Sequential(
            *[Data2VecAudioPositionalConvLayer(config) for _ in range(config.num_conv_pos_embeddings)]
        )
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def frame_attention_mask(self, attention_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Sample-level (B, samples) mask -> frame-level (B, frames) bool mask."""
        lengths = self.config.num_audio_frames(attention_mask.long().sum(-1))
        return torch.arange(num_frames, device=attention_mask.device)[None, :] < lengths[:, None]

    def extract_features(self, input_values: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> normalised conv features (B, frames, conv_dim[-1]); in training, the conv layers' gradient
        scaled by `feature_grad_mult` (fairseq's GradMultiply on the conv output; 0: not computed)."""
        scale = self.config.feature_grad_mult
        if scale == 0.0 and self.training:
            with torch.no_grad():
                x = self.feature_extractor(input_values[:, None, :])
        else:
            x = self.feature_extractor(input_values[:, None, :])  # (B, 1, S) -> (B, C, T)
            if scale != 1.0 and self.training and x.requires_grad:
                x = GradMultiply.apply(x, scale)
        return self.feature_layer_norm(x.transpose(1, 2))  # (B, T, C)

    def tokens(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None, features: torch.Tensor | None = None
    ) -> FrontEndOutput:
        """Once per sample: conv features -> projection (B, T, D) and the frame padding mask. `features`: this input's
        conv features when already computed (1.0 pretraining shares them between the student's masked view and the
        teacher's unmasked one)."""
        if input_values.dim() != 2:
            hint = " (drop the channel axis: mono audio is (batch, samples))" if input_values.dim() == 3 else ""
            raise ValueError(
                f"input_values must be (batch, samples) raw waveforms; got shape {tuple(input_values.shape)}{hint}"
            )
        _check_not_empty("input_values", input_values)
        if not input_values.is_floating_point():
            raise ValueError("input_values must be float waveforms; got integer samples (scale them to [-1, 1])")
        need = self.config.receptive_field
        if input_values.shape[1] < need:
            raise ValueError(
                f"audio of {input_values.shape[1]} samples is shorter than the conv feature encoder's receptive "
                f"field ({need} samples, {need / self.config.sampling_rate * 1000:.0f} ms at "
                f"{self.config.sampling_rate} Hz): pad or drop such clips"
            )
        if attention_mask is not None and host_checks_are_free(attention_mask):
            check_attention_mask(attention_mask, input_values.shape, need)
        if features is None:
            features = self.extract_features(input_values)  # (B, T, C)
        x = self.feature_dropout(self.feature_projection(features))  # (B, T, D)
        frame_mask = None
        if attention_mask is not None:
            frame_mask = self.frame_attention_mask(attention_mask, x.shape[1])
        return FrontEndOutput(x, frame_mask, extract_features=features)

    def contextualize(self, front: FrontEndOutput, mask_time_indices: torch.Tensor | None = None,
                      keep: torch.Tensor | None = None) -> FrontEndOutput:
        """Per masked copy: masked frames become the learned mask embedding (1.0) or zeros (data2vec 2.0, which then
        keeps only the `keep` (B, K) frames of each row); padded frames are zeroed (`pos_conv_zero_padding`); the
        positional convolution runs over the full length and is added; LayerNorm."""
        x, frame_mask = front.hidden_states, front.attention_mask
        if mask_time_indices is not None:
            if mask_time_indices.shape != x.shape[:2]:
                raise ValueError(
                    f"mask_time_indices must be (batch, frames) = {tuple(x.shape[:2])} for this input; "
                    f"got {tuple(mask_time_indices.shape)}"
                )
            if keep is None and self.mask_embedding is None:
                raise ValueError("mask_time_indices needs a mask embedding: build the model with use_mask_token=True")
            fill = self.mask_embedding.to(x.dtype) if keep is None else x.new_zeros(())
            x = torch.where(mask_time_indices.bool()[..., None], fill, x)
        if frame_mask is not None and self.config.pos_conv_zero_padding:
            x = x * frame_mask[..., None].to(x.dtype)  # padded frames are zero before the positional conv
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.dropout(self.layer_norm(x))
        if keep is None:
            return FrontEndOutput(x, frame_mask, extract_features=front.extract_features)
        frame_mask = gather_tokens(frame_mask, keep) if frame_mask is not None else None
        return FrontEndOutput(gather_tokens(x, keep), frame_mask, extract_features=front.extract_features,
                              position_index=keep)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> FrontEndOutput:
        return self.contextualize(self.tokens(input_values, attention_mask, features), mask_time_indices)


FRONT_ENDS = {"text": Data2VecTextEmbeddings, "vision": Data2VecVisionEmbeddings, "audio": Data2VecAudioFrontEnd}

# what each modality's model takes, to name the right class when a batch of another modality arrives
MODALITY_INPUTS = MODALITY_INPUT


# ==================================================================================================
# PreTrainedModel classes
# ==================================================================================================


@dataclass
class Data2VecModelOutput(ModelOutput):
    """transformers' output names; `ffn_outputs` (data2vec's text/audio targets) with `output_ffn_outputs=True`,
    `extract_features` for audio."""

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    ffn_outputs: tuple[torch.FloatTensor, ...] | None = None
    extract_features: torch.FloatTensor | None = None


class Data2VecPreTrainedModel(PreTrainedModel):
    config_class = Data2VecConfig
    config: Data2VecConfig
    base_model_prefix = "data2vec"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["Data2VecLayer"]
    # a Data2VecForPreTraining checkpoint loaded as the plain model: its pretraining head is not needed
    _keys_to_ignore_on_load_unexpected = [r"regression_head\.", r"final_norm\.", r"^decoder\."]
    modality: ClassVar[str | None] = None  # None: the class serves every modality
    num_prefix_tokens: ClassVar[int] = 0  # tokens in front of the input's own (vision: CLS), which have no target
    feature_encoder: ClassVar[str | None] = None  # a front end part a teacher may share instead of averaging (audio)
    positional_conv: ClassVar[str | None] = None  # a front end part a teacher may copy instead of averaging (audio)

    def __init__(self, config: Data2VecConfig, *args, **kwargs):
        if self.modality is not None and config.modality != self.modality:
            raise ValueError(
                f"{type(self).__name__} is the {self.modality} model but config.modality is {config.modality!r}: "
                f"use {MODEL_CLASS_NAMES[config.modality]} (or AutoModel), or Data2VecConfig(modality="
                f"{self.modality!r})"
            )
        super().__init__(config, *args, **kwargs)
        self.model_tags = ["data2vec", "self-supervised", config.modality]  # Hub tags (push_to_hub, Trainer)

    def save_pretrained(self, save_directory, *args, model_card: bool = True, push_to_hub: bool = False, **kwargs):
        """transformers' `save_pretrained`, plus what lets anyone load the folder: the modeling code and an `auto_map`
        for every Auto class of the modality (`trust_remote_code=True` works without this package) and a model card
        (README.md, unless one this package did not write is there). `push_to_hub=True` then uploads the folder."""
        from .sharing import auto_map, copy_code, write_model_card

        self.config.auto_map = auto_map(self.config.modality)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            copy_code(save_directory)
            if model_card:
                write_model_card(save_directory, self)
        if push_to_hub:
            hub = {k: kwargs[k] for k in ("token", "private", "commit_message", "revision", "create_pr") if k in kwargs}
            self.push_to_hub(kwargs.get("repo_id") or Path(save_directory).resolve().name, **hub)

    def push_to_hub(self, repo_id: str, *, datasets=None, metrics: dict | None = None, tags=None,
                    base_model: str | None = None, processor=None, commit_message: str | None = None,
                    private: bool | None = None, token: str | None = None, revision: str | None = None,
                    create_pr: bool = False, **save_kwargs):
        """Uploads the model in one commit: safetensors weights, config.json with `auto_map`, the modeling code,
        the `processor`'s files when given, and a model card with `datasets`, `metrics` ({name: value}) and `tags`
        in its metadata. Returns the commit info."""
        import tempfile

        from huggingface_hub import CommitOperationAdd, HfApi

        from .sharing import write_model_card

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, model_card=False, **save_kwargs)
            if processor is not None:
                processor.save_pretrained(folder)
            write_model_card(folder, self, overwrite=True, datasets=datasets, metrics=metrics, tags=tags,
                             base_model=base_model)
            files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
            operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                          for p in files]
            return api.create_commit(repo_id, operations=operations, revision=revision, create_pr=create_pr,
                                     commit_message=commit_message or f"Upload {type(self).__name__} (data2vec)")

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):  # patch embedding, as a linear layer over a patch
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.bias)
        elif isinstance(module, Data2VecAudioPositionalConvLayer):
            init.kaiming_normal_(module.conv.weight)
            init.zeros_(module.conv.bias)
        elif isinstance(module, Data2VecAudioConvLayer):
            init.kaiming_normal_(module.conv.weight)
            if module.conv.bias is not None:
                init.zeros_(module.conv.bias)
        elif isinstance(module, Data2VecAudioFrontEnd) and module.mask_embedding is not None:
            init.uniform_(module.mask_embedding)
        elif isinstance(module, Data2VecALiBi):
            init.ones_(module.scale)
            # a non-persistent buffer: not in checkpoints, so from_pretrained (built on the meta device) must refill it
            init.copy_(module.slopes, torch.tensor(alibi_slopes(len(module.slopes)), device=module.slopes.device))
        elif isinstance(module, Data2VecVisionEmbeddings):
            init.trunc_normal_(module.cls_token, std=std)
            if module.mask_token is not None:
                init.trunc_normal_(module.mask_token, std=std)
            if module.position_embeddings is not None:
                init.trunc_normal_(module.position_embeddings, std=std)
            if module.sincos:  # checkpoints written before the table was saved lack it: the closed form
                init.copy_(module.sincos_positions, sincos_2d(module.grid, module.sincos_positions.shape[-1])[None])
        elif isinstance(module, Data2VecRelativePositionBias):
            init.zeros_(module.table)
        elif isinstance(module, Data2VecLayer) and module.layer_scale_1 is not None:
            init.constant_(module.layer_scale_1, self.config.layer_scale_init_value)
            init.constant_(module.layer_scale_2, self.config.layer_scale_init_value)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Loads our checkpoints, and transformers' Data2VecText/Vision/Audio checkpoints (converted on the fly).

        A checkpoint of another model type or of another modality is refused with an error naming the fix, and so
        are a local folder that does not exist and weights that cannot be read (a truncated or empty safetensors
        file): the errors name the path.
        """
        from safetensors import SafetensorError

        check_local_path(pretrained_model_name_or_path)
        config = kwargs.get("config")
        try:
            if cls is Data2VecTextModel and not _saved_keys_include(pretrained_model_name_or_path, "pooler."):
                kwargs.setdefault("add_pooling_layer", False)  # a pretraining run has none: no fresh random one
            if isinstance(config, Data2VecConfig):
                cls._check_modality(config.modality, pretrained_model_name_or_path)
                saved = read_config_dict(pretrained_model_name_or_path, **kwargs)
                if saved.get("model_type") == Data2VecConfig.model_type:
                    cls._check_algorithm(saved.get("algorithm", "data2vec"), config.algorithm,
                                         pretrained_model_name_or_path)
                return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
            config_dict = read_config_dict(pretrained_model_name_or_path, **kwargs)
            model_type = config_dict.get("model_type")
            if model_type == Data2VecConfig.model_type:
                cls._check_modality(config_dict.get("modality", "vision"), pretrained_model_name_or_path)
                return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
            if model_type in TRANSFORMERS_MODEL_TYPES:
                cls._check_modality(TRANSFORMERS_MODEL_TYPES[model_type], pretrained_model_name_or_path)
                return load_transformers_checkpoint(cls, pretrained_model_name_or_path, config_dict, *model_args,
                                                    **kwargs)
        except SafetensorError as error:  # safetensors names neither the file nor the fix
            raise unreadable_weights_error(pretrained_model_name_or_path, error, **kwargs) from error
        known = ", ".join([Data2VecConfig.model_type, *TRANSFORMERS_MODEL_TYPES])
        raise ValueError(
            f"{pretrained_model_name_or_path} holds a model of type {model_type!r}, not a data2vec model "
            f"(accepted: {known}). Load it with its own class (e.g. transformers.AutoModel)."
        )

    @classmethod
    def _check_modality(cls, modality: str, where) -> None:
        if cls.modality is not None and modality != cls.modality:
            raise ValueError(
                f"{where} is a {modality} checkpoint; {cls.__name__} is the {cls.modality} model. Load it with "
                f"{MODEL_CLASS_NAMES[modality]} or AutoModel.from_pretrained."
            )

    @staticmethod
    def _check_algorithm(saved: str, given: str, where) -> None:
        if saved != given:
            raise ValueError(
                f"{where} holds a {saved} model but the config passed in is algorithm={given!r}: data2vec 1.0 and 2.0 "
                f"differ in their pretraining head (regression head / conv decoder) and, for vision, their blocks. "
                f"Load it with its own config (leave config= out), or pass Data2VecConfig(algorithm={saved!r}, ...)"
            )

    def _reject_foreign_inputs(self, kwargs: dict) -> None:
        for modality, name in MODALITY_INPUTS.items():
            if name in kwargs:
                raise ValueError(
                    f"{type(self).__name__} takes {MODALITY_INPUTS[self.config.modality]} ({self.config.modality}); "
                    f"got {name}, which is {modality} input: use {MODEL_CLASS_NAMES[modality]} or a model whose "
                    f"config has modality={modality!r}"
                )
        if kwargs:
            raise TypeError(f"{type(self).__name__}.forward() got unexpected arguments: {sorted(kwargs)}")

    def _encode(
        self, front: FrontEndOutput, output_hidden_states: bool | None, output_ffn_outputs: bool
    ) -> Data2VecEncoderOutput:
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return self.encoder(
            front.hidden_states,
            attention_mask=front.attention_mask,
            grid=front.grid,
            output_hidden_states=output_hidden_states,
            output_ffn_outputs=output_ffn_outputs,
        )

    # ---- the interface pretraining uses (data2vec 1.0 and 2.0), the same for every modality ---------------------

    def embed(self, batch: dict, mask: torch.Tensor | None = None, features: torch.Tensor | None = None
              ) -> FrontEndOutput:
        """The front end's tokens for `batch` (the modality's inputs by name), once per sample: (B, T, D) before any
        masking, positions added where they are added before masking. Text with a `mask` embeds the 1.0 student's
        view (`masked_input_ids`, else `<mask>` at the masked tokens); other modalities mask in `contextualize`.
        `features`: audio's conv features when already computed."""
        base = getattr(self, "data2vec", None)  # a head or the pretraining model: its modality's model embeds
        if base is None:
            raise TypeError(f"{type(self).__name__} has no front end of its own: call embed() on a modality's model")
        return base.embed(batch, mask, features)

    def contextualize(self, tokens: FrontEndOutput, mask: torch.Tensor | None = None,
                      keep: torch.Tensor | None = None) -> FrontEndOutput:
        """Per masked copy, what the encoder gets: 1.0 replaces masked tokens (`mask`); 2.0 keeps the `keep` (B, K)
        tokens of each row; prefix tokens in front."""
        return self.embeddings.contextualize(tokens, mask, keep)

    def encode(self, front: FrontEndOutput, output_hidden_states: bool = False, output_ffn_outputs: bool = False
               ) -> Data2VecEncoderOutput:
        """The encoder on the front end's output (kept tokens and their positions included), then the model's
        final normalisation of the last hidden state, where it has one."""
        out = self.encoder(
            front.hidden_states, attention_mask=front.attention_mask, grid=front.grid,
            position_index=front.position_index, output_hidden_states=output_hidden_states,
            output_ffn_outputs=output_ffn_outputs,
        )
        out.last_hidden_state = self.output_norm(out.last_hidden_state)
        return out

    def output_norm(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states

    @staticmethod
    def _output(return_dict: bool | None, **fields) -> Data2VecModelOutput | tuple:
        out = Data2VecModelOutput(**fields)
        return out if return_dict is None or return_dict else out.to_tuple()


def _saved_keys_include(path, prefix: str) -> bool:
    """Whether a local folder's model.safetensors holds a key starting with `prefix` (True where it cannot tell: a Hub
    id, sharded or other weights, which then load as before)."""
    from safetensors import safe_open

    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        return True
    with safe_open(str(weights), framework="pt") as f:
        return any(key.startswith(prefix) or key.startswith(f"data2vec.{prefix}") for key in f.keys())


class Data2VecTextPooler(nn.Module):
    """transformers' RoBERTa pooler: tanh(Linear(first token))."""

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states[:, 0]))


class Data2VecTextModel(Data2VecPreTrainedModel):
    """data2vec text: RoBERTa-style embeddings + the shared post-LN encoder."""

    modality = "text"
    main_input_name = "input_ids"
    input_modalities = ("text",)

    def __init__(self, config: Data2VecConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = Data2VecTextEmbeddings(config)
        self.encoder = Data2VecEncoder(config)
        self.pooler = Data2VecTextPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def embed(self, batch: dict, mask: torch.Tensor | None = None, features: torch.Tensor | None = None
              ) -> FrontEndOutput:
        ids = batch["input_ids"]
        if mask is not None:  # data2vec 1.0's student: masked tokens replaced before the embedding
            ids = batch.get("masked_input_ids")
            if ids is None:
                ids = batch["input_ids"].masked_fill(mask, self.config.mask_token_id)
        return self.embeddings.tokens(ids, batch.get("attention_mask"), batch.get("token_type_ids"))

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_ffn_outputs: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Data2VecModelOutput | tuple:
        self._reject_foreign_inputs(kwargs)
        if input_ids is None:
            raise ValueError("Data2VecTextModel needs input_ids (batch, sequence_length)")
        front = self.embeddings(input_ids, attention_mask, token_type_ids, position_ids)
        enc = self._encode(front, output_hidden_states, output_ffn_outputs)
        pooled = self.pooler(enc.last_hidden_state) if self.pooler is not None else None
        return self._output(
            return_dict, last_hidden_state=enc.last_hidden_state, pooler_output=pooled,
            hidden_states=enc.hidden_states, ffn_outputs=enc.ffn_outputs,
        )


class Data2VecVisionPooler(nn.Module):
    """data2vec vision: LayerNorm of the mean of the patch tokens (or the CLS token without mean pooling)."""

    def __init__(self, config: Data2VecConfig):
        super().__init__()
        mean = config.use_mean_pooling
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if mean else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.layernorm is None:
            return hidden_states[:, 0]
        return self.layernorm(hidden_states[:, 1:].mean(1))


class Data2VecVisionModel(Data2VecPreTrainedModel):
    """data2vec vision: BEiT patch embedding + the shared pre-LN encoder with layer scale and relative
    position bias."""

    modality = "vision"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: Data2VecConfig, add_pooling_layer: bool = False):
        super().__init__(config)
        self.embeddings = Data2VecVisionEmbeddings(config)
        self.encoder = Data2VecEncoder(config)
        # with mean pooling the pooler normalises; without it the sequence gets a final LayerNorm (BEiT)
        mean = config.use_mean_pooling
        self.layernorm = nn.Identity() if mean else nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = Data2VecVisionPooler(config) if add_pooling_layer else None
        self.post_init()

    num_prefix_tokens = 1  # CLS

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def embed(self, batch: dict, mask: torch.Tensor | None = None, features: torch.Tensor | None = None
              ) -> FrontEndOutput:
        return self.embeddings.tokens(batch["pixel_values"])

    def output_norm(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layernorm(hidden_states)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_ffn_outputs: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Data2VecModelOutput | tuple:
        self._reject_foreign_inputs(kwargs)
        if pixel_values is None:
            raise ValueError("Data2VecVisionModel needs pixel_values (batch, channels, height, width)")
        front = self.embeddings(pixel_values, bool_masked_pos)
        enc = self._encode(front, output_hidden_states, output_ffn_outputs)
        sequence = self.output_norm(enc.last_hidden_state)
        pooled = self.pooler(sequence) if self.pooler is not None else None
        return self._output(
            return_dict, last_hidden_state=sequence, pooler_output=pooled,
            hidden_states=enc.hidden_states, ffn_outputs=enc.ffn_outputs,
        )


class Data2VecAudioModel(Data2VecPreTrainedModel):
    """data2vec audio: wav2vec2-style conv front end + the shared post-LN encoder."""

    modality = "audio"
    main_input_name = "input_values"
    input_modalities = ("audio",)

    def __init__(self, config: Data2VecConfig, add_pooling_layer: bool = False):
        super().__init__(config)  # add_pooling_layer: accepted as the other modalities' models do; audio has none
        self.embeddings = Data2VecAudioFrontEnd(config)
        self.encoder = Data2VecEncoder(config)
        self.post_init()

    feature_encoder = "embeddings.feature_extractor"
    positional_conv = "embeddings.pos_conv"

    def embed(self, batch: dict, mask: torch.Tensor | None = None, features: torch.Tensor | None = None
              ) -> FrontEndOutput:
        return self.embeddings.tokens(batch["input_values"], batch.get("attention_mask"), features)

    def freeze_feature_encoder(self) -> None:
        """Stop training the conv feature encoder (as data2vec audio fine-tuning does)."""
        self.embeddings.feature_extractor.requires_grad_(False)

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_ffn_outputs: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Data2VecModelOutput | tuple:
        self._reject_foreign_inputs(kwargs)
        if input_values is None:
            raise ValueError("Data2VecAudioModel needs input_values (batch, samples)")
        front = self.embeddings(input_values, attention_mask, mask_time_indices)
        enc = self._encode(front, output_hidden_states, output_ffn_outputs)
        return self._output(
            return_dict, last_hidden_state=enc.last_hidden_state, hidden_states=enc.hidden_states,
            ffn_outputs=enc.ffn_outputs, extract_features=front.extract_features,
        )


MODEL_CLASSES = {"text": Data2VecTextModel, "vision": Data2VecVisionModel, "audio": Data2VecAudioModel}
MODEL_CLASS_NAMES = {m: c.__name__ for m, c in MODEL_CLASSES.items()}


def modality_dispatch(name: str, classes: dict[str, type]) -> type:
    """A class that stands for `classes[config.modality]`: what an Auto class is registered with, so that
    `AutoModel.from_pretrained(d)` returns the right modality's model for a `Data2VecConfig` of any modality."""

    def pick(modality: str) -> type:
        if modality not in classes:
            raise ValueError(f"{name} has no {modality} model; available: {sorted(classes)}")
        return classes[modality]

    def new(cls, config, *args, **kwargs):
        return pick(config.modality)(config, *args, **kwargs)

    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        if isinstance(config, Data2VecConfig):
            return pick(config.modality).from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)
        modality = checkpoint_modality(pretrained_model_name_or_path, **kwargs)
        return pick(modality).from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def from_config(cls, config, **kwargs):
        return pick(config.modality)._from_config(config, **kwargs)

    namespace = {
        "__doc__": f"Stands for the {name} class of `config.modality` ({', '.join(sorted(classes))}).",
        "__module__": __name__,
        "config_class": Data2VecConfig,
        "__new__": new,
        "from_pretrained": classmethod(from_pretrained),
        "_from_config": classmethod(from_config),
        "from_config": classmethod(from_config),
    }
    return type(name, (), namespace)


Data2VecModel = modality_dispatch("Data2VecModel", MODEL_CLASSES)


__all__ = [
    "Data2VecAudioModel",
    "Data2VecEncoder",
    "Data2VecEncoderOutput",
    "Data2VecModel",
    "Data2VecModelOutput",
    "Data2VecPreTrainedModel",
    "Data2VecTextModel",
    "Data2VecVisionModel",
]
