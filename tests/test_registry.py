import pytest

from benchmark.errors import UnknownNameError
from benchmark.registry import Registry


def test_duplicate_registration_raises_naming_both():
    r = Registry("thing")

    @r.register("a")
    def one():
        pass

    def two():
        pass

    with pytest.raises(ValueError, match="duplicate thing 'a'"):
        r.add("a", two)


def test_unknown_name_suggests_and_lists():
    r = Registry("method")
    for n in ("dream", "dream_plus", "dm"):
        r.add(n, object())
    with pytest.raises(UnknownNameError) as e:
        r.get("dreem")
    msg = str(e.value)
    assert "Did you mean: dream" in msg and "Available: dm, dream, dream_plus" in msg


def test_list_natural_sort_and_pattern():
    r = Registry("x")
    for n in ("ipc50", "ipc2", "ipc10", "other"):
        r.add(n, object())
    assert r.list("ipc*") == ["ipc2", "ipc10", "ipc50"]


def test_bad_key_rejected():
    with pytest.raises(ValueError):
        Registry("x").add("Bad-Name", object())
