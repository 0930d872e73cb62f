"""Named compute budgets. The budget is part of every cell's identity and result row, so a
reduced-budget number can never be mistaken for a paper-budget one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError
from .registry import Registry


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    eval_epochs: int | None = None  # cap on evaluation epochs (None: the protocol's epochs)
    eval_step_cap: int | None = None  # fewer epochs so that one network takes at most this many steps
    eval_max_steps: int | None = None  # hard stop after this many optimizer steps (smoke tests only)
    num_exp: int | None = None  # cap on synthetic sets per cell (None: the grid's)
    num_eval: int | None = None  # cap on evaluation networks per set (None: the grid's)
    distill_iterations: int | None = None  # cap on distillation iterations (None: the preset's)
    selector_epochs: int | None = None  # cap on proxy-training epochs of coreset selectors
    full_epochs: int = 300  # epochs for the whole-training-set reference row
    full_min_steps: int = 0  # ...raised so that at least this many optimizer steps are taken
    full_max_steps: int | None = None

    def full_epochs_for(self, n_train: int, batch_size: int) -> int:
        steps_per_epoch = -(-n_train // batch_size)
        return max(self.full_epochs, -(-self.full_min_steps // steps_per_epoch))

    @property
    def label(self) -> str:
        return self.name

    def eval_epochs_for(self, protocol_epochs: int, n_train: int, batch_size: int) -> int:
        """Evaluation epochs under this budget. The step cap lowers the epoch count (so the
        protocol's lr schedule still happens, at its fraction of training)."""
        e = protocol_epochs if self.eval_epochs is None else min(protocol_epochs, self.eval_epochs)
        if self.eval_step_cap is not None:
            steps_per_epoch = -(-n_train // batch_size)
            e = min(e, max(1, self.eval_step_cap // steps_per_epoch))
        return e

    def iterations(self, preset_value: int) -> int:
        return preset_value if self.distill_iterations is None else min(preset_value, self.distill_iterations)

    def cap(self, field: str, grid_value: int) -> int:
        v = getattr(self, field)
        return grid_value if v is None else min(grid_value, v)


BUDGETS: Registry[Budget] = Registry("budget")


def register_budget(b: Budget) -> Budget:
    BUDGETS.add(b.name, b)
    return b


register_budget(Budget(
    name="paper",
    description="the preset's official iterations, epochs and counts; full-data reference 300 epochs "
                "(IDC's full-data default)",
))
register_budget(Budget(
    name="cpu",
    description="minutes per cell on 2 CPU cores: the protocol's eval epochs but at most ~1000 steps per net "
                "(IPC 1/10 train exactly as the protocol), <=5 sets x <=2 nets, distillation <=1000 iterations, "
                "selectors <=5 proxy epochs, full-data reference 1 epoch (at least 200 steps)",
    eval_step_cap=1000, num_exp=5, num_eval=2, distill_iterations=1000, selector_epochs=5, full_epochs=1,
    full_min_steps=200,
))
register_budget(Budget(
    name="smoke",
    description="seconds per cell, for tests: eval 5 epochs (<=20 steps), 1 set x 1 net, 2 iterations, 1 proxy epoch, "
                "full-data reference 20 steps",
    eval_epochs=5, eval_max_steps=20, num_exp=1, num_eval=1, distill_iterations=2, selector_epochs=1, full_epochs=1,
    full_max_steps=20,
))


def resolve_budget(name: str, overrides: dict | None = None) -> Budget:
    base = BUDGETS.get(name)
    if not overrides:
        return base
    fields = sorted(k for k in Budget.model_fields if k not in ("name", "description"))
    unknown = sorted(str(k) for k in overrides if k not in fields)
    if unknown:
        raise ConfigError(f"budget_overrides: unknown field(s) {', '.join(unknown)}; "
                          f"budget fields: {', '.join(fields)}.")
    try:
        tag = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
        return Budget.model_validate({**base.model_dump(), **overrides, "name": f"{base.name}[{tag}]"})
    except Exception as e:  # noqa: BLE001
        errors = getattr(e, "errors", lambda: [])()
        msg = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in errors) or str(e).splitlines()[0]
        raise ConfigError(f"budget_overrides {overrides}: {msg}.") from None
