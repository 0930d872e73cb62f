"""Optuna sweeps: validation split, never the test set, resumable studies, best-grid output, CLI."""

from pathlib import Path

import optuna
import pytest
import torch
import yaml
from typer.testing import CliRunner

import benchmark.runner as runner_mod
import benchmark.tune as tune_mod
from benchmark.cli import app
from benchmark.data import load_dataset
from benchmark.errors import ConfigError
from benchmark.grid import load_grid
from benchmark.progress import NullProgress
from benchmark.runner import RunOptions
from benchmark.tracking import NullTracker
from benchmark.tune import TuneSpec, load_tune, run_tune, validation_split, write_best_grid

SPEC = {
    "name": "t_tune",
    "method": {"name": "dm", "preset": "official", "params": {"batch_real": 16}},
    "dataset": "digits", "ipc": 1, "protocol": "dm", "budget": "smoke", "num_eval": 1,
    "validation_per_class": 10, "trials": 2,
    "search": {"lr_img": {"low": 0.1, "high": 10.0, "log": True}, "batch_real": {"choices": [8, 16]}},
}


def _write(tmp: Path, spec: dict, name="t_tune.yaml") -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(spec))
    return p


@pytest.fixture
def no_test_split(monkeypatch):
    """Fail loudly if anything in a sweep reads a test split."""
    real_load = load_dataset

    def guarded(name, train=True, source=None):
        assert train, "tuning read the test split"
        return real_load(name, train, source)

    monkeypatch.setattr(tune_mod, "load_dataset", guarded)
    monkeypatch.setattr(runner_mod, "load_dataset", guarded)


def test_validation_split_is_disjoint_seeded_and_stratified():
    real = load_dataset("digits")
    tr, va = validation_split(real, 7, 123)
    assert len(va) == 7 * 10 and len(tr) == len(real) - 70
    assert torch.equal(torch.bincount(va.labels, minlength=10), torch.full((10,), 7))
    tr2, va2 = validation_split(real, 7, 123)
    assert torch.equal(va.images, va2.images) and torch.equal(tr.images, tr2.images)
    _, va3 = validation_split(real, 7, 124)
    assert not torch.equal(va.images, va3.images)
    # a partition: the two parts together are the training set, image for image
    w = torch.randn(real.images[0].numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    key = lambda x: torch.sort(x.reshape(len(x), -1).double() @ w).values  # noqa: E731  (one number per image)
    assert torch.allclose(key(torch.cat([tr.images, va.images])), key(real.images))
    with pytest.raises(Exception, match="too few"):
        validation_split(real, 10_000, 0)


def test_sweep_resumes_never_reruns_and_writes_best_grid(tmp_path, no_test_split):
    spec = TuneSpec.model_validate(SPEC)
    opts = RunOptions(device="cpu")
    res = run_tune(spec, tmp_path, NullTracker(), opts, NullProgress())
    done = [t for t in res.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and all(0 <= t.value <= 100 for t in done)
    assert res.best_value == max(t.value for t in done)
    # trials live in their own store; rows name the split
    rows = list(res.store.iter_rows())
    assert rows and all("val_acc" in r and "test_acc" not in r for r in rows)
    assert res.store.root == tmp_path / "tune" / spec.study_name
    # rerun: nothing new; more trials: continues the same study
    again = run_tune(spec, tmp_path, NullTracker(), opts, NullProgress())
    assert len(again.study.trials) == len(res.study.trials)
    more = run_tune(spec, tmp_path, NullTracker(), opts, NullProgress(), trials=3)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in more.study.trials) == 3
    # the winner as a grid beside random, loadable by the runner
    out = write_best_grid(spec, more, tmp_path / "best.yaml")
    grid = load_grid(out)
    assert grid.methods[0].name == "random"
    assert grid.methods[1].params["lr_img"] == pytest.approx(more.best_params["lr_img"])
    assert grid.methods[1].params["batch_real"] == more.best_params["batch_real"]
    assert "validation accuracy" in out.read_text()


def test_interrupted_trial_is_requeued_with_its_params(tmp_path, no_test_split, monkeypatch):
    spec = TuneSpec.model_validate({**SPEC, "trials": 1})
    real_run_cell = runner_mod.run_cell

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_mod, "run_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, tmp_path, NullTracker(), RunOptions(device="cpu"), NullProgress())
    monkeypatch.setattr(tune_mod, "run_cell", real_run_cell)
    res = run_tune(spec, tmp_path, NullTracker(), RunOptions(device="cpu"), NullProgress())
    first, retry = res.study.trials[0], res.study.trials[1]
    assert first.state == optuna.trial.TrialState.FAIL
    assert retry.user_attrs["retry_of"] == 0 and retry.params == first.params
    assert retry.state == optuna.trial.TrialState.COMPLETE


@pytest.mark.parametrize("change, match", [
    ({"search": {"lr_imgg": {"low": 0.1, "high": 1.0}}}, "lr_imgg"),
    ({"search": {"lr_img": {"low": 2.0, "high": 1.0}}}, "above high"),
    ({"search": {"lr_img": {"low": 0.0, "high": 1.0, "log": True}}}, "low > 0"),
    ({"search": {"lr_img": {"choices": [], "low": 1}}}, "choices"),
    ({"search": {}}, "at least one"),
    ({"method": {"name": "dmm"}}, "dmm"),
    ({"dataset": "nope"}, "nope"),
])
def test_bad_tune_files_are_one_line_config_errors(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_tune(_write(tmp_path, {**SPEC, **change}))
    assert "\n" not in str(e.value)


def test_cli_tune_end_to_end(tmp_path, no_test_split):
    spec = _write(tmp_path, {**SPEC, "trials": 1})
    res = CliRunner().invoke(app, ["tune", str(spec), "--results-dir", str(tmp_path / "r"), "--no-mlflow",
                                   "--device", "cpu", "--write-grid", str(tmp_path / "best.yaml")])
    assert res.exit_code == 0, res.output
    assert "best:" in res.output and (tmp_path / "best.yaml").exists()
    bad = CliRunner().invoke(app, ["tune", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "not found" in bad.output
    bad = CliRunner().invoke(app, ["tune", str(spec), "--trials", "0"])
    assert bad.exit_code == 2 and "--trials" in bad.output


def test_grid_and_tune_files_are_told_apart(tmp_path):
    root = Path(__file__).parent.parent / "tables"
    with pytest.raises(ConfigError, match="dbench tune"):
        load_grid(root / "tune" / "dm_digits.yaml")
    with pytest.raises(ConfigError, match="dbench run --grid"):
        load_tune(root / "quickstart.yaml")


def test_shipped_tune_file_loads():
    spec = load_tune(Path(__file__).parent.parent / "tables" / "tune" / "dm_digits.yaml")
    assert spec.method.name == "dm" and "lr_img" in spec.search


def test_protocol_fields_can_be_tuned_and_typos_are_one_line(tmp_path):
    spec = load_tune(_write(tmp_path, {**SPEC, "search": {"protocol.lr": {"low": 0.001, "high": 0.1, "log": True}}}))
    cell = spec.cell_for({"protocol.lr": 0.05})
    assert cell.protocol.lr == 0.05 and cell.protocol_name == "dm*"
    with pytest.raises(ConfigError, match="lrr: Extra inputs are not permitted") as e:
        load_tune(_write(tmp_path, {**SPEC, "search": {"protocol.lrr": {"low": 0.001, "high": 0.1}}}))
    assert "\n" not in str(e.value)
