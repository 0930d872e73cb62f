"""``--only KEY=V1,V2`` filters, shared by grid cells and stored rows (no torch: ``dbench
table`` filters rows without importing the method code)."""

from __future__ import annotations

from .errors import ConfigError

# --only keys; the old names ('arch', 'preset') still select the same field
ONLY_KEYS = ("method", "dataset", "ipc", "arch_distill", "arch_eval", "protocol", "exp")
_ONLY_ALIASES = {"arch": "arch_distill", "preset": "protocol"}


def parse_only(only: list[str] | None) -> dict[str, set[str]]:
    """``--only dataset=mnist --only ipc=1,10`` -> {'dataset': {'mnist'}, 'ipc': {'1','10'}}."""
    out: dict[str, set[str]] = {}
    for item in only or []:
        key, sep, vals = item.partition("=")
        if not sep or not key or not vals:
            raise ConfigError(f"--only {item!r}: expected KEY=V1,V2 (e.g. --only dataset=mnist --only ipc=1,10).")
        key = _ONLY_ALIASES.get(key, key)
        if key not in ONLY_KEYS:
            raise ConfigError(f"--only {key}: unknown key. Use one of: {', '.join(ONLY_KEYS)}.")
        out.setdefault(key, set()).update(v.strip() for v in vals.split(","))
    return out


def _only_values(method: str, method_label: str, dataset: str, ipc, arch_distill: str, arch_eval: str,
                 protocol: str, exp) -> dict[str, set[str]]:
    names = {method, method_label}
    if method_label.startswith("imported."):  # an imported set is written imported:<name> in grids
        names.add("imported:" + method_label[len("imported."):])
    return {"method": names, "dataset": {dataset}, "ipc": {str(ipc)},
            "arch_distill": {arch_distill}, "arch_eval": {arch_eval}, "protocol": {protocol}, "exp": {str(exp)}}


def row_matches(row: dict, only: dict[str, set[str]]) -> bool:
    """``--only`` on a stored result row (rows carry the same names as cells)."""
    vals = _only_values(row.get("method", ""), row.get("method_label", ""), row["dataset"], row["ipc"],
                        row.get("arch_distill", ""), row.get("arch_eval", ""), row.get("protocol", ""), row["exp"])
    return all(vals[k] & v for k, v in only.items())
