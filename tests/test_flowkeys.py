import pytest

from conveyor import flowkeys


@pytest.mark.parametrize(
    ("payload", "pointer", "key"),
    [
        ({"tenant": "acme"}, "/tenant", "acme"),
        ({"tenant": 7}, "/tenant", "7"),
        ({"a": {"b/c": [1, {"d": True}]}}, "/a/b~1c/1/d", "true"),
        ({"t": {"y": 1, "x": 2}}, "/t", '{"x":2,"y":1}'),
        ({"other": 1}, "/tenant", flowkeys.MISSING),
        ("not an object", "/tenant", flowkeys.MISSING),
        ({"tenant": "acme"}, None, flowkeys.MISSING),
    ],
)
def test_key_of(payload, pointer, key):
    assert flowkeys.key_of(payload, pointer) == key


def test_value_at_names_what_is_missing():
    with pytest.raises(flowkeys.Missing, match="/tenant"):
        flowkeys.value_at({}, "/tenant")


def test_digest_is_stable_and_short():
    assert flowkeys.digest("acme") == flowkeys.digest("acme") != flowkeys.digest("acme2")
    assert len(flowkeys.digest("x" * 10_000)) == 32
