"""`dbench validate` catches every config mistake that needs no data, as one line (exit 2)
naming the field, the bad value and the valid values, never a traceback, never only inside
a running cell."""

from __future__ import annotations

import re

import pytest
import yaml
from typer.testing import CliRunner

from benchmark.cli import app

runner = CliRunner()


def _grid(tmp_path, methods, **top) -> str:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "methods": methods, "datasets": ["digits"], "ipc": [1],
                                    "budget": "smoke", **top}, sort_keys=False))
    return str(path)


def _validate_fails(path: str) -> str:
    """Runs `dbench validate`; asserts exit 2, one line, no traceback; returns that line."""
    r = runner.invoke(app, ["validate", path])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit), r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("error: ") and path in lines[0]
    return lines[0]


@pytest.mark.parametrize("methods,top,expect", [
    pytest.param([{"name": "dm", "params": {"init": "herdin"}}], {},
                 ["init:", "'herdin'", "Did you mean: herding", "real, noise", "kcenter", "dbench list selectors"],
                 id="dm-init-typo"),
    pytest.param([{"name": "dsa", "params": {"init": "kmeans_net"}}], {},
                 ["init:", "'kmeans_net'", "real, noise"], id="dsa-init-of-another-method"),
    pytest.param([{"name": "idc", "params": {"init": "frist"}}], {},
                 ["init:", "'frist'", "Did you mean: first", "kmeans_net"], id="idc-init-typo"),
    pytest.param([{"name": "dm", "params": {"init": "full"}}], {},
                 ["init:", "'full'", "selector key"], id="whole-dataset-is-no-init"),
    pytest.param([{"name": "dm", "params": {"init": "herding", "init_params": {"extractor": {"epocs": 5}}}}], {},
                 ["init_params:", "selector 'herding'", "extractor.epocs", "Did you mean: epochs", "max_steps"],
                 id="init-params-unknown-field"),
    pytest.param([{"name": "idm", "params": {"init": "kcenter", "init_params": {"extractor": {"arch": "ConvNot"}}}}],
                 {}, ["init_params:", "selector 'kcenter'", "extractor.arch", "'ConvNot'", "dbench list archs"],
                 id="init-params-bad-extractor-arch"),
    pytest.param([{"name": "dm", "params": {"init": "real", "init_params": {"extractor": {"epochs": 5}}}}], {},
                 ["init_params:", "init 'real'", "takes no init_params"], id="init-params-on-a-built-in-init"),
    pytest.param([{"name": "dm", "params": {"dsa_strategy": "color_crop_cutot"}}], {},
                 ["dsa_strategy:", "'cutot'", "did you mean cutout", "color, crop, cutout, flip, scale, rotate"],
                 id="dm-dsa-strategy"),
    pytest.param([{"name": "dsa", "params": {"dsa_strategy": "flip_rotat"}}], {},
                 ["dsa_strategy:", "'rotat'", "did you mean rotate"], id="dsa-dsa-strategy"),
    pytest.param([{"name": "idc", "params": {"aug_type": "color_crop_cutot"}}], {},
                 ["aug_type:", "'cutot'"], id="idc-aug-type"),
    pytest.param(["random"], {"protocol_overrides": {"dsa_strategy": "color_crop_cutot"}},
                 ["protocol overrides", "dsa_strategy:", "'cutot'", "did you mean cutout"], id="protocol-dsa-strategy"),
    pytest.param(["random"], {"protocol_overrides": {"aug": "dc", "dsa_strategy": "crop_nois"}},
                 ["dsa_strategy:", "'nois'", "crop, scale, rotate, noise"], id="protocol-dc-aug-ops"),
    pytest.param([{"name": "datadam", "params": {"arch": "ConvNot"}}], {},
                 ["arch:", "'ConvNot'", "Did you mean: ConvNet", "dbench list archs"], id="datadam-arch"),
    pytest.param([{"name": "herding", "params": {"extractor": {"arch": "ConvNot"}}}], {},
                 ["extractor.arch:", "'ConvNot'", "dbench list archs"], id="selector-extractor-arch"),
    pytest.param([{"name": "dm", "params": {"iterations": 0}}], {}, ["iterations:"], id="zero-iterations"),
])
def test_validate_rejects_in_one_line(tmp_path, methods, top, expect):
    line = _validate_fails(_grid(tmp_path, methods, **top))
    for part in expect:
        assert part in line, (part, line)


@pytest.mark.parametrize("methods,top", [
    ([{"name": "dm", "params": {"init": "herding",
                                "init_params": {"extractor": {"epochs": 1, "arch": "convnet"}}}}], {}),
    ([{"name": "idm", "params": {"init": "aug"}}, {"name": "idc", "params": {"init": "kmeans_net"}}], {}),
    ([{"name": "dc", "params": {"init": "real", "dsa_strategy": "none"}}], {}),
    ([{"name": "datadam", "preset": "paper", "params": {"arch": "ConvNetBN", "dsa_strategy": "color_crop"}}], {}),
    (["random"], {"protocol_overrides": {"aug": "dc", "dsa_strategy": "crop_scale_rotate_noise"}}),
])
def test_valid_values_pass(tmp_path, methods, top):
    r = runner.invoke(app, ["validate", _grid(tmp_path, methods, **top)])
    assert r.exit_code == 0, r.output


def test_validation_keeps_values_as_written():
    """The checks never rewrite a value: dumps (and with them cell hashes) are unchanged."""
    from benchmark.api import get_method

    cfg = get_method("datadam").resolve_config(None, {"arch": "convnetbn", "init": "herding",
                                                      "init_params": {"extractor": {"arch": "convnet"}}})
    assert cfg.arch == "convnetbn" and cfg.init_params == {"extractor": {"arch": "convnet"}}


# Dumps of the default configs before DM, IDM and DataDAM shared ImageMatchingConfig: the
# shared base must not change a name, a default or a value (cell hashes come from these).
DEFAULT_DUMPS = {
    "dm": {"aug_scope": "class", "batch_real": 256, "checkpoint_every": None, "dsa": True, "dsa_strategy": None,
           "eval_every": 0, "forward": "batched", "init": "real", "init_params": {}, "iterations": None,
           "log_every": 10, "lr_img": None, "momentum_img": 0.5,
           "representative": {"embed_batch": 1000, "features": "raw", "interval": 10, "kmeans_init": "random",
                              "max_iter": 100, "n": None, "per_cluster": 1, "pool": None},
           "sampler": "random"},
    "idm": {"aug_scope": "class", "batch_real": None, "ce_acc_scale": "percent", "ce_weight": None,
            "checkpoint_every": None, "dsa": True, "dsa_strategy": None, "eval_every": 0, "eval_interval": None,
            "factor": 2, "fetch_net_num": 2, "forward": "batched", "init": "aug", "init_params": {},
            "iterations": 20000, "log_every": 10, "lr_img": 0.2, "model_train_steps": None, "momentum_img": 0.5,
            "net_begin": 0, "net_end": 100000, "net_generate_interval": None, "net_lr": 0.01, "net_momentum": 0.9,
            "net_num": 100, "net_weight_decay": 0.0005, "queue_init": 3, "syn_ce": True, "trained_bs": 256},
    "datadam": {"arch": "ConvNetBN", "attention_norm": "l2", "attention_weight": 100.0, "aug_scope": "class",
                "batch_real": 64, "checkpoint_every": None, "dsa": True, "dsa_strategy": None, "eval_every": 0,
                "init": "real", "init_params": {}, "iterations": 20000, "log_every": 10, "lr_img": None,
                "momentum_img": 0.5, "power": 1.0, "task_balance": 0.01},
}


@pytest.mark.parametrize("key", sorted(DEFAULT_DUMPS))
def test_shared_image_matching_config_keeps_dumps(key):
    from benchmark.api import get_method
    from benchmark.distill import ImageMatchingConfig

    cls = get_method(key)
    assert issubclass(cls.Config, ImageMatchingConfig)
    assert cls.resolve_config(None, {}).model_dump(mode="json") == DEFAULT_DUMPS[key]


def test_checkpoint_fingerprint_ignores_config_key_order():
    """Checkpoints written before the shared base (other field order) still resume."""
    from benchmark.distill import same_fingerprint

    old = 'dm/1/{"iterations":null,"init":"real","forward":"batched"}/ipc10/{\'lr_img\': 1.0}'
    new = 'dm/1/{"iterations":null,"forward":"batched","init":"real"}/ipc10/{\'lr_img\': 1.0}'
    assert same_fingerprint(old, new)
    assert not same_fingerprint(old, new.replace('"real"', '"noise"'))
    assert not same_fingerprint(old, new.replace("ipc10", "ipc1"))


# ------------------------------------------------------------------ error hints


def _unknown_name_messages() -> dict[str, str]:
    """One real UnknownNameError message per place that raises one."""
    from benchmark.api import get_method
    from benchmark.augment import AUGMENTS
    from benchmark.budgets import resolve_budget
    from benchmark.data import get_info
    from benchmark.errors import DbenchError
    from benchmark.evaluate import get_protocol
    from benchmark.models import canonical_arch, expand_archs

    triggers = {
        "method": lambda: get_method("dreem"),
        "method preset": lambda: get_method("dm").resolve_config("offcial", {}),
        "dataset": lambda: get_info("cifar1"),
        "arch": lambda: canonical_arch("ConvNot"),
        "arch pool": lambda: expand_archs(["pool:nope"]),
        "budget": lambda: resolve_budget("tiny"),
        "protocol": lambda: get_protocol("dsaa"),
        "augment": lambda: AUGMENTS.get("nope"),
    }
    out = {}
    for name, fn in triggers.items():
        with pytest.raises(DbenchError) as e:
            fn()
        out[name] = str(e.value)
    r = runner.invoke(app, ["list", "metods"])
    assert r.exit_code == 2
    out["list kind"] = r.output
    return out


def test_error_hints_name_real_list_commands():
    msgs = _unknown_name_messages()
    kinds = {k for m in msgs.values() for k in re.findall(r"dbench list ([a-z_]+)", m)}
    assert {"methods", "datasets", "archs", "budgets"} <= kinds, msgs
    for kind in sorted(kinds):
        r = runner.invoke(app, ["list", kind])
        assert r.exit_code == 0, (kind, r.output)
    assert "dbench list" not in msgs["augment"]  # no command lists augmentations: no hint
    assert "dbench list methods" in msgs["method preset"]


def test_every_list_hint_kind_exists():
    from benchmark.errors import LIST_COMMANDS, UnknownNameError

    for kind, command in LIST_COMMANDS.items():
        assert f"`{command}`" in str(UnknownNameError(kind, "x", ["y"]))
        r = runner.invoke(app, command.split()[1:])
        assert r.exit_code == 0, (command, r.output)
    assert "dbench list" not in str(UnknownNameError("kind", "x", ["y"]))
    assert "custom hint" in str(UnknownNameError("thing", "x", ["y"], hint="custom hint"))
