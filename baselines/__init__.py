"""Coreset selectors (one module per selector, auto-registered by ``load_plugins``)."""
