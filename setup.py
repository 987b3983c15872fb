"""Installs r3vae_jax: semantic-ID generative recommendation in JAX/Flax."""
import setuptools

_CORE = [
    "jax>=0.6",
    "flax>=0.10",
    "optax>=0.2",
    "orbax-checkpoint>=0.11",
    "chex>=0.1.89",
    "numpy>=1.26",
    "absl-py>=2.0",
    "ml_collections>=1.0",
    "tqdm>=4.66",
    "tokenizers>=0.19",
    "safetensors>=0.4",
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow (training/tensorboard.py)
]

_EXTRAS = {
    # TFDS builders (array_record output, readable without TensorFlow).
    "tfds": ["tensorflow-datasets>=4.9", "array_record>=0.5", "importlib_resources"],
    "plots": ["matplotlib>=3.8"],
    "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "nbclient>=0.10",
             "nbformat>=5.10", "ipykernel>=6.29", "matplotlib>=3.8", "fsspec>=2023.1"],
    "cuda": ["jax[cuda12]"],
    "tpu": ["jax[tpu]"],
}

setuptools.setup(
    name="r3vae_jax",
    version="0.1.0",
    description="Semantic-ID generative recommendation (RQ-KMeans, RQ-VAE, R3-VAE, DIGER) in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["r3vae_jax", "r3vae_jax.*"]),
    package_data={"r3vae_jax": ["configs/*.py"]},
    python_requires=">=3.10",
    install_requires=_CORE,
    extras_require=_EXTRAS,
    entry_points={"console_scripts": ["r3vae = r3vae_jax.main:run"]},
)
