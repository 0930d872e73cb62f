"""Distillation methods (one module per method, auto-registered by ``load_plugins``)."""
