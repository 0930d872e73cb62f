"""Whole dataset: the upper-bound row (evaluation networks train on the full train split).

Its training length is set by the budget's ``full_epochs`` (not the protocol's epochs,
which are meant for tiny sets); the IPC axis does not apply and is recorded as 0.
"""

from __future__ import annotations

from benchmark.api import ComponentConfig, WholeDataset, register_method


@register_method
class Full(WholeDataset):
    key = "full"
    display_name = "Whole dataset"
    description = "train on the whole training split (upper bound; epochs from the budget's full_epochs)"

    class Config(ComponentConfig):
        pass

    PRESETS = {"default": {"provenance": "DM paper Table 1 'Whole dataset' row"}}
