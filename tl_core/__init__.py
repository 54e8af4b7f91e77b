"""Transfer Learning Lab: compare transfer-learning strategies on small image data sets."""

__version__ = "0.1.0"
