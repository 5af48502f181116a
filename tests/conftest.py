"""Tiny configs and tiny transformers reference models shared by the tests (nothing is downloaded)."""

import socket

import modeling_data2vec_unified as d2v
import pytest
import torch
import transformers

torch.set_num_threads(2)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: real processes, multi-process runs, full default runs (over ~2 s each on 2 CPU cores); "
                   "`pytest -m 'not slow'` is the fast loop, CI runs everything")

TINY_ENCODER = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                    average_top_k_layers=2)
TINY_FRONT = {
    "text": dict(vocab_size=99, max_position_embeddings=40),
    "vision": dict(image_size=32, patch_size=8, num_channels=3),
    "audio": dict(conv_dim=[16, 16, 16], conv_stride=[5, 2, 2], conv_kernel=[10, 3, 3],
                  num_conv_pos_embeddings=2, conv_pos_kernel_size=5, num_conv_pos_embedding_groups=4),
}


def tiny_config(modality: str, **overrides) -> d2v.Data2VecConfig:
    return d2v.Data2VecConfig(modality=modality, **{**TINY_ENCODER, **TINY_FRONT[modality], **overrides})


def tiny_transformers_model(modality: str, cls_name: str | None = None, **overrides):
    """A small random transformers Data2Vec* model with every parameter randomised (not left at its init),
    so that no mapping mistake can hide behind zeros or ones."""
    common = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
    if modality == "text":
        cfg = transformers.Data2VecTextConfig(**common, vocab_size=99, max_position_embeddings=40,
                                              type_vocab_size=2, layer_norm_eps=1e-5, **overrides)
        cls = getattr(transformers, cls_name or "Data2VecTextModel")
    elif modality == "vision":
        cfg = transformers.Data2VecVisionConfig(**common, image_size=32, patch_size=8, use_mask_token=True,
                                                **overrides)
        cls = getattr(transformers, cls_name or "Data2VecVisionModel")
    else:
        cfg = transformers.Data2VecAudioConfig(**common, conv_dim=(16, 16, 16), conv_stride=(5, 2, 2),
                                               conv_kernel=(10, 3, 3), num_conv_pos_embeddings=2,
                                               conv_pos_kernel_size=5, num_conv_pos_embedding_groups=4,
                                               **overrides)
        cls = getattr(transformers, cls_name or "Data2VecAudioModel")
    torch.manual_seed(0)
    model = cls(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if "norm" in name.lower() and name.endswith("weight") else 0))
    return model.eval()


def tiny_examples(modality: str, seed: int = 1) -> list[dict]:
    """Three unbatched examples of different lengths (text, audio) for the tiny configs."""
    g = torch.Generator().manual_seed(seed)
    if modality == "text":  # <s> tokens </s>
        return [{"input_ids": [0, *torch.randint(3, 98, (n,), generator=g).tolist(), 2]} for n in (12, 20, 9)]
    if modality == "vision":
        return [{"pixel_values": torch.randn(3, 32, 32, generator=g)} for _ in range(3)]
    return [{"input_values": torch.randn(n, generator=g)} for n in (3000, 3600, 3300)]


@pytest.fixture(params=["text", "vision", "audio"])
def modality(request):
    return request.param


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1, and any attempt to open a network connection fails the test."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    connect = socket.socket.connect

    def local_only(sock, address):
        if sock.family != socket.AF_UNIX:
            raise AssertionError(f"the example tried to reach the network: {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
