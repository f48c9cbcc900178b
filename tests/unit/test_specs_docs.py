"""docs/specs.md holds each spec declaration's table as the code generates it: a key added to
a declaration is not done until its docs line is (regenerate with `docs_tables()`)."""

import re

import pytest
from cli_helpers import ROOT
from marlscale.runspec import docs_tables

PAGE = (ROOT / "docs" / "specs.md").read_text()


@pytest.mark.parametrize("name", sorted(docs_tables()))
def test_the_docs_table_of_each_spec_declaration_is_the_generated_one(name):
    found = re.search(rf"<!-- table: {name} -->\n(.*?)\n<!-- end -->", PAGE, re.S)
    assert found, f"docs/specs.md has no table '{name}'"
    assert found[1] == docs_tables()[name], (
        f"docs/specs.md's '{name}' table differs from its declaration: regenerate it with "
        f"marlscale.runspec.docs_tables()['{name}']")


def test_a_declared_curriculum_key_is_validated_with_no_other_change():
    """What 'one declaration' buys: a field added to CurriculumConfig is checked, with its
    one-line message, from the declaration alone."""
    import dataclasses

    from marlscale.curriculum import schedules
    from marlscale.runspec.sweep import _axis_target
    from marlscale.specfile import setting

    @dataclasses.dataclass
    class WithSignal(schedules.CurriculumConfig):
        signal: str = setting("team", kind="str", choices=("team", "active"))

    assert WithSignal.from_dict({"signal": "active"}).signal == "active"
    with pytest.raises(ValueError, match=r"curriculum\.signal='all' is invalid; "
                                         r"allowed: team, active"):
        WithSignal.from_dict({"signal": "all"})
    # Sweeps take their `training.curriculum.<key>` axes from the same fields.
    assert _axis_target("training.curriculum.embedding_init") == (
        "training", "curriculum", "embedding_init")
