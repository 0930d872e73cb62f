"""Deterministic seeding from config, never from the clock or the global RNG."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from any printable parts (stable across runs and machines)."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int, stream: str = "", device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` for one named random stream of one seed."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, stream) if stream else seed)
    return g


def randint(g: torch.Generator, high: int) -> int:
    return int(torch.randint(high, (1,), generator=g))
