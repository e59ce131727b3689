"""SimpleNet for adcore: feature adaptor and a discriminator trained against Gaussian-noised features."""

__version__ = "0.1.0"
