"""Adding agents by module name, and the errors that stop a process at start-up."""

import pytest

from worker.agents.catalog import AGENT_CATALOG
from worker.agents.plugins import AgentModuleError, agent_catalog, load_agent_modules


def test_modules_add_their_agents_to_the_catalogue() -> None:
    catalog = agent_catalog(" tests.support.agents , ")

    assert set(catalog) == {*AGENT_CATALOG, "blocking_agent", "shouting_agent"}
    assert catalog["shouting_agent"].description == "Answers in capitals."
    assert agent_catalog("") == AGENT_CATALOG


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("tests.support.no_such_module",), "cannot import 'tests.support.no_such_module'"),
        (("tests.support.broken_agents",), "must define AGENTS"),
        (("tests.support.agents", "tests.support.agents"), "'blocking_agent', which already"),
    ],
)
def test_a_bad_module_is_a_configuration_error_naming_it(
    names: tuple[str, ...], message: str
) -> None:
    with pytest.raises(AgentModuleError, match=message):
        load_agent_modules(names)
