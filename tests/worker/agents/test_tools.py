"""The tools registry, argument validation, and the two built-in tools."""

from datetime import UTC, datetime

import pytest

from worker.agents.tools import (
    BUILTIN_TOOLS,
    Tool,
    ToolArgumentsError,
    ToolModuleError,
    evaluate,
    registered_tools,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2 + 3 * 4", 14), ("(2 + 3) * 7", 35), ("-2 ** 2", -4), ("7 // 2", 3), ("1 / 4", 0.25)],
)
def test_the_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "x + 1",
        "[1, 2]",
        "'a' * 3",
        "9 ** 9 ** 9",
        "1e308 * 10",
        "1" * 300,
        "2 +",
    ],
)
def test_the_calculator_refuses_anything_but_bounded_arithmetic(expression: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each refusal has its own message)
        evaluate(expression)


async def test_the_calculator_tool_answers_with_text_and_refuses_division_by_zero() -> None:
    calculator = BUILTIN_TOOLS["calculator"]

    assert await calculator.function(expression="6 * 7") == "42"
    with pytest.raises(ValueError, match="division by zero"):
        await calculator.function(expression="1 / 0")


async def test_utc_now_tells_the_time_in_utc() -> None:
    told = datetime.fromisoformat(str(await BUILTIN_TOOLS["utc_now"].function()))

    assert told.tzinfo == UTC
    assert abs((datetime.now(UTC) - told).total_seconds()) < 60


def test_arguments_are_checked_against_the_schema_before_a_call() -> None:
    calculator = BUILTIN_TOOLS["calculator"]

    assert calculator.validate({"expression": "1+1"}) == {"expression": "1+1"}
    with pytest.raises(ToolArgumentsError, match="'expression' is a required property"):
        calculator.validate({})
    with pytest.raises(ToolArgumentsError, match="expression: 3 is not of type 'string'"):
        calculator.validate({"expression": 3})
    with pytest.raises(ToolArgumentsError, match="a JSON object"):
        calculator.validate(["1+1"])


def test_plugins_add_tools_and_may_not_reuse_a_name() -> None:
    tools = registered_tools(("tests.support.agents",))

    assert {"utc_now", "calculator", "lookup_capital"} <= set(tools)
    assert isinstance(tools["lookup_capital"], Tool)
    with pytest.raises(ToolModuleError, match="already exists"):
        registered_tools(("tests.support.agents", "tests.support.agents"))
