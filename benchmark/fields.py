"""Config field types that check their value when a config is built.

``dbench validate`` (and the first step of ``dbench run``) builds every method config of a
grid, so a value these types reject fails there, as one line, before any compute: not
minutes later inside a running cell. Each type is ``typing.Annotated`` over the plain type
with a pydantic ``AfterValidator`` that only *checks*: it returns the value unchanged, so
``model_dump`` (and with it every cell hash) is the same as with the plain type.

A failure is a pydantic error whose message is one sentence naming the bad value, the
valid values and the fix; pydantic's ``loc`` adds the field path.

* :func:`init_name` - the type of a method's ``init``: one of the inits the method builds
  itself, or the key of a registered coreset selector;
* :data:`InitParams` - ``init_params``, checked against the selected selector's ``Config``;
* :data:`DsaStrategy` - a DSA strategy such as ``color_crop_cutout_flip_scale_rotate``;
* :data:`ArchName` - an architecture name (kept as written); :func:`canonical_arch_name`
  for fields that store the canonical spelling.

Registry lookups import lazily: the method modules that use these types are themselves
imported while the registry loads.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

__all__ = ["ArchName", "DsaStrategy", "InitParams", "canonical_arch_name", "check_strategy", "describe_error",
           "init_name", "invalid", "selector_keys"]


def invalid(detail: str) -> PydanticCustomError:
    """A validation error whose message is exactly ``detail`` (no 'Value error, ' prefix)."""
    return PydanticCustomError("dbench_invalid", "{detail}", {"detail": detail})


def _did_you_mean(value: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(options), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _short(value: Any, limit: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


# ----------------------------------------------------------------------------- init


def selector_keys() -> list[str]:
    """Registered coreset selectors (``kind == "select"``): every one can seed a method."""
    from .api import METHODS
    from .registry import load_plugins

    load_plugins()
    return [k for k, cls in METHODS.items() if cls.kind == "select"]


def init_name(*builtin: str) -> Any:
    """The type of a method's ``init`` field: one of ``builtin`` (the inits the method
    implements itself, e.g. ``real``, ``noise``) or a registered selector key."""

    def check(value: str) -> str:
        if value in builtin:
            return value
        selectors = selector_keys()
        if value in selectors:
            return value
        raise invalid(f"unknown init {value!r}.{_did_you_mean(value, [*builtin, *selectors])} Use one of this "
                      f"method's own inits ({', '.join(builtin)}) or a selector key ({', '.join(selectors)}; "
                      "`dbench list selectors` describes them)")

    return Annotated[str, AfterValidator(check)]


def _check_init_params(value: dict, info: ValidationInfo) -> dict:
    init = info.data.get("init")
    if not value or init is None:  # no params, or `init` failed itself (that error is the one to fix)
        return value
    selectors = selector_keys()
    if init not in selectors:
        raise invalid(f"init {init!r} is built into the method and takes no init_params (got {_short(value)}); "
                      f"remove init_params, or set init to a selector key ({', '.join(selectors)}) and give that "
                      "selector's fields")
    from .api import METHODS
    from .errors import DbenchError

    cls = METHODS.get(init)
    try:
        cls.Config.model_validate(value)
    except ValidationError as e:
        details = "; ".join(describe_error(cls.Config, err) for err in e.errors())
        raise invalid(f"selector '{init}' (the init) rejects them: {details}. See `dbench list selectors` and "
                      f"the presets of '{init}'") from None
    try:
        cls.resolve_config(None, value)  # whatever else the selector checks
    except DbenchError as e:
        raise invalid(f"selector '{init}' (the init) rejects them: {e}") from None
    return value


InitParams = Annotated[dict, AfterValidator(_check_init_params)]
"""``init_params``: the config of the selector named by ``init`` (declare it after ``init``)."""


def _model_at(model: type[BaseModel], path: Sequence[Any]) -> type[BaseModel] | None:
    """The (nested) pydantic model at ``path`` of ``model``'s fields, if there is one."""
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nested is None:
            return None
        model = nested
    return model


def describe_error(model: type[BaseModel], err: Mapping[str, Any]) -> str:
    """One pydantic error of ``model`` as 'field.path ...', naming the bad value; for an
    unknown key also a close match and the fields that exist there."""
    loc = ".".join(map(str, err["loc"])) or "(top level)"
    if err["type"] != "extra_forbidden":
        got = _short(err.get("input"))
        return f"{loc}: {err['msg']}" + ("" if got in err["msg"] else f" (got {got})")
    nested = _model_at(model, err["loc"][:-1])
    if nested is None:
        return f"{loc} is not a field"
    fields = list(nested.model_fields)
    if not fields:
        return f"{loc} is not a field (this takes no params)"
    where = ".".join(map(str, err["loc"][:-1]))
    return (f"{loc} is not a field.{_did_you_mean(str(err['loc'][-1]), fields)} "
            f"Fields{f' of {where}' if where else ''}: {', '.join(fields)}")


# ------------------------------------------------------------------ augmentation


def check_strategy(value: str, ops: Sequence[str] | None = None) -> str:
    """``value`` unchanged if it is a '_'-joined list of ``ops`` (default: the DSA families)
    or 'none'; otherwise a validation error naming the bad op and the valid ones."""
    from . import augment as A

    problem = A.strategy_problem(value, A.FAMILIES if ops is None else ops)
    if problem:
        raise invalid(problem)
    return value


DsaStrategy = Annotated[str, AfterValidator(check_strategy)]
"""A DSA strategy (``color_crop_cutout_flip_scale_rotate``, ``none``); use ``DsaStrategy | None``
for 'the dataset's default'."""


# ----------------------------------------------------------------- architectures


def canonical_arch_name(value: str) -> str:
    """The canonical spelling of an architecture name; an unknown name is a validation
    error listing the known ones (``dbench list archs``)."""
    from .errors import UnknownNameError
    from .models import canonical_arch

    try:
        return canonical_arch(value)
    except UnknownNameError as e:
        raise invalid(str(e).rstrip(".")) from None


def _check_arch(value: str) -> str:
    canonical_arch_name(value)
    return value


ArchName = Annotated[str, AfterValidator(_check_arch)]
"""An architecture name, kept as written (so dumps and hashes do not change)."""
