"""Real-data samplers for distillation loops (DC lineage).

* :class:`ClassRandomSampler` - DC-style ``get_images(c, n)``: a fresh random permutation
  of class ``c`` per call, first ``n`` (the whole class if ``n`` is larger). ``many``
  draws several classes in class order and returns them concatenated (class-major), with
  exactly the draws a per-class loop would make, so batched and looped paths agree.
* :class:`AllClassSampler` - IDM's ``get_images(None, n)``: a random permutation of the
  whole train split, first ``n`` (images and labels), used to train IDM's queue nets.

Provenance: VICO-UoE/DatasetCondensation@53f63a6 ``main_DM.py`` (get_images);
uitrbn/IDM@fe23bbc ``IDM_cifar10.py`` (all-class variant). Every draw goes through an
explicit ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .data import RealData


class ClassRandomSampler:
    def __init__(self, real: RealData, generator: torch.Generator, device: torch.device | str = "cpu"):
        self.real, self.g, self.device = real, generator, device

    def indices(self, c: int, n: int) -> torch.Tensor:
        idx = self.real.class_indices[c]
        return idx[torch.randperm(idx.numel(), generator=self.g)[:n]]

    def __call__(self, c: int, n: int) -> torch.Tensor:
        return self.real.normalize(self.real.images[self.indices(c, n)], self.device)

    def per_class_count(self, n: int, classes: Sequence[int] | None = None) -> int:
        """Images per class ``many`` returns (``n`` capped by the smallest class drawn)."""
        classes = range(self.real.num_classes) if classes is None else classes
        return min(n, *(int(self.real.class_indices[c].numel()) for c in classes))

    def many(self, n: int, classes: Sequence[int] | None = None) -> torch.Tensor:
        """Class-major concatenation of ``n`` images per class (equal count per class)."""
        classes = list(range(self.real.num_classes)) if classes is None else list(classes)
        m = self.per_class_count(n, classes)
        idx = torch.cat([self.indices(c, n)[:m] for c in classes])
        return self.real.normalize(self.real.images[idx], self.device)


class AllClassSampler:
    def __init__(self, real: RealData, generator: torch.Generator, device: torch.device | str = "cpu"):
        self.real, self.g, self.device = real, generator, device

    def __call__(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randperm(len(self.real), generator=self.g)[:n]
        return self.real.batch(idx, self.device)
