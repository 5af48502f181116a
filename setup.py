from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="modeling-data2vec-unified",
    version="0.1.0",
    description="data2vec self-supervised pretraining for text, images and speech in the HuggingFace ecosystem",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["modeling_data2vec_unified", "modeling_data2vec_unified.*"]),
    python_requires=">=3.10",
    # torch: a range that an installed CPU or CUDA build satisfies, so pip never swaps it (see README)
    install_requires=[
        "torch>=2.4",
        "transformers>=5.0,<6",
        "accelerate>=1.0",
        "datasets>=4.0",
        "evaluate>=0.4",
        "safetensors>=0.4",
        "scikit-learn>=1.3",  # built-in default data (digits) and linear probes
        "scipy>=1.9",  # audio resampling
        "soundfile>=0.12",  # audio files (datasets' Audio feature needs torchcodec + FFmpeg)
        "pillow>=9",  # image folders
        "tensorboard>=2.10",  # the trainer's default tracker
        "matplotlib>=3.6",  # the trainer's learning curves (curves.png)
    ],
    extras_require={"dev": ["pytest>=8"]},
    entry_points={"console_scripts": [
        "data2vec-convert=modeling_data2vec_unified.conversion_cli:main",
        "data2vec-pretrain=modeling_data2vec_unified.training.trainer:main",
    ]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
