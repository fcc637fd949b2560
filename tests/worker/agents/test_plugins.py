"""Adding agents by module name, and the errors that stop a process at start-up."""

import pytest

from contract.agents import decode_specs, encode_specs
from worker.agents.plugins import AgentModuleError, load_agent_modules, plugin_specs


def _as_read_back(fields: dict[str, bytes]) -> dict[bytes | str, bytes | str]:
    """The catalogue hash's fields typed as a Redis read gives them back (bytes or text)."""
    return {name: value for name, value in fields.items()}


def test_modules_add_their_agents_and_their_specs_survive_publication() -> None:
    specs = plugin_specs(" tests.support.agents , ")

    assert [spec.id for spec in specs] == ["blocking_agent", "shouting_agent", "unstorable_agent"]
    published = decode_specs(_as_read_back(encode_specs(specs)))
    assert published["shouting_agent"].description == "Answers in capitals."
    assert plugin_specs("") == []


def test_a_published_field_that_is_not_a_spec_is_skipped() -> None:
    fields = _as_read_back(
        {**encode_specs(plugin_specs("tests.support.agents")), "junk": b"{not json"}
    )

    assert set(decode_specs(fields)) == {"blocking_agent", "shouting_agent", "unstorable_agent"}


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("tests.support.no_such_module",), "cannot import 'tests.support.no_such_module'"),
        (("tests.support.failing_agents",), "cannot import 'tests.support.failing_agents': KeyE"),
        (("tests.support.broken_agents",), "must define AGENTS"),
        (("tests.support.agents", "tests.support.agents"), "'blocking_agent', which already"),
    ],
)
def test_a_bad_module_is_a_configuration_error_naming_it(
    names: tuple[str, ...], message: str
) -> None:
    with pytest.raises(AgentModuleError, match=message):
        load_agent_modules(names)
