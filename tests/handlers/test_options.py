"""The option helpers the built-in handlers share (webhook hosts, mail domains, S3 lists)."""

from __future__ import annotations

import pytest

from conveyor.errors import PermanentError
from worker.handlers.options import domain_listed, string_list


def test_domain_patterns_match_the_name_or_below_a_wildcard_only():
    patterns = ["billing.internal", "*.corp.test"]
    assert domain_listed("billing.internal", patterns)
    assert domain_listed("a.b.corp.test", patterns)
    assert not domain_listed("corp.test", patterns)  # *.domain is below it, not the domain
    assert not domain_listed("corp.test.evil.test", patterns)
    assert not domain_listed("evilcorp.test", patterns)
    assert not domain_listed("x.billing.internal", patterns)


def test_string_lists_refuse_other_shapes_naming_the_option():
    assert string_list({}, "x") is None
    assert string_list({"x": ["a", ""]}, "x", non_empty=False) == ["a", ""]
    for bad in ("a", ["a", 1], ["a", " "], {"a": 1}):
        with pytest.raises(PermanentError, match=r"options\.x: must be a list of non-empty strings"):
            string_list({"x": bad}, "x")
