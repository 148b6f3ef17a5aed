"""gdw_jax: meta-learned data weighting (GDW, MW-Net, ...) in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="gdw_jax",
    version="0.1.0",
    description="Generalized Data Weighting and meta-reweighting methods for biased data, in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gdw_jax", "gdw_jax.*", "configs", "experiments"]),
    python_requires=">=3.10",
    install_requires=[
        "jax",
        "flax",
        "optax",
        "chex",
        "orbax-checkpoint",
        "ml_collections",
        "absl-py",
        "numpy",
        "scikit-learn",
        "tqdm",
        "matplotlib",
        "tensorflow-datasets",
        "pillow",  # decodes tfds image records when TensorFlow is not installed
    ],
    extras_require={
        # pytest-xdist: the suite runs its test files in parallel (pytest.ini: -n auto)
        "test": ["pytest", "pytest-xdist", "nbclient", "nbformat", "ipykernel"],
        "tensorboard": ["tensorboardX"],  # TensorBoard scalars without TensorFlow
        "compare": ["cleanlab"],  # experiments.detect_benchmark: label-error detection vs cleanlab
    },
)
