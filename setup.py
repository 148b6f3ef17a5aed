"""gdw_jax: meta-learned data weighting (GDW, MW-Net, ...) in JAX/Flax.

The dependency lists are plain literals: ``tests/test_imports.py`` reads them from this file and
checks that every package the code imports is declared here (the core's in ``INSTALL_REQUIRES``,
the tests' in the ``test`` extra), so an undeclared import fails the suite, not a user.
"""
import os

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax",
    "flax",
    "optax",
    "chex",
    "orbax-checkpoint",
    "ml_collections",
    "ml_dtypes",  # bfloat16 tensors of PyTorch checkpoints (gdw_jax.interop)
    "absl-py",
    "numpy",
    "scikit-learn",
    "tqdm",
    "matplotlib",
    "tensorflow-datasets",
    "array-record",  # tfds' random-access record files (tfds.data_source), read without TensorFlow
    "grain",  # input_pipeline=stream: how the real-noise datasets and large own data are read
    "pillow",  # decodes tfds image records when TensorFlow is not installed
]

EXTRAS_REQUIRE = {
    "tensorboard": ["tensorboardX"],  # TensorBoard scalars without TensorFlow
    "compare": ["cleanlab"],  # experiments.detect_benchmark: label-error detection vs cleanlab
}
# Everything the suite imports: the README's test command installs only this extra, so it holds
# the optional extras too (their code paths are tested). pytest-xdist: pytest.ini runs -n auto.
# selenium drives headless Chromium in tests/test_review.py (the browser itself is a system
# package: apt-get install -y chromium chromium-driver).
EXTRAS_REQUIRE["test"] = (["pytest", "pytest-xdist", "nbclient", "nbformat", "ipykernel",
                           "selenium"]
                          + EXTRAS_REQUIRE["tensorboard"] + EXTRAS_REQUIRE["compare"])

setup(
    name="gdw_jax",
    version="0.1.0",
    description="Generalized Data Weighting and meta-reweighting methods for biased data, in JAX/Flax",
    long_description=(open("README.md", encoding="utf-8").read()
                      if os.path.exists("README.md") else ""),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["gdw_jax", "gdw_jax.*", "configs", "experiments"]),
    package_data={"gdw_jax.analysis": ["review_template.html"]},  # the review page's template
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
