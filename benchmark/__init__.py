"""dbench: a reproducible benchmark harness for dataset distillation."""

__version__ = "0.1.0"
