"""lit_robust: PyTorch Lightning modules for training adversarially robust networks and for
measuring that robustness honestly (strong attacks, per-sample worst case)."""

__version__ = "0.1.0"
