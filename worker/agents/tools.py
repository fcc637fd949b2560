"""Tools an agent may call: a name, a description, a JSON schema for the arguments, and an async
function.

Plugins add tools the way they add agents: a module named in ``AGENT_MODULES`` lists them in
``TOOLS``. The tool-calling agent (``worker.agents.tool_agent``) offers every registered tool to
the model, checks the arguments the model sends against the tool's schema before calling it (a
call that does not validate never runs: the model gets the validation error as the result), and
bounds each call by ``TOOL_TIME_LIMIT``.

Two harmless tools are built in: ``utc_now`` (the current time) and ``calculator`` (arithmetic
on numbers, parsed with ``ast`` and evaluated node by node: no ``eval``, no names, no calls).
"""

import ast
import importlib
import math
import operator
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import jsonschema

ToolFunction = Callable[..., Awaitable[object]]


class ToolModuleError(RuntimeError):
    """An ``AGENT_MODULES`` entry's ``TOOLS`` is not a list of ``Tool``, or reuses a name."""


class ToolArgumentsError(ValueError):
    """The model's arguments for a tool are not valid JSON for its schema."""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    #: JSON schema of the arguments object (``{"type": "object", "properties": ...}``).
    parameters: Mapping[str, Any]
    #: Called with the validated arguments as keyword arguments; its return value is given to
    #: the model (as JSON when it is not a string).
    function: ToolFunction = field(compare=False)

    def declaration(self) -> dict[str, Any]:
        """The tool as the OpenAI tools protocol declares it."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }

    def validate(self, arguments: object) -> dict[str, Any]:
        """``arguments`` checked against the schema; ``ToolArgumentsError`` says what is wrong."""
        if not isinstance(arguments, dict):
            raise ToolArgumentsError("the arguments must be a JSON object")
        try:
            jsonschema.validate(arguments, dict(self.parameters))
        except jsonschema.ValidationError as exc:
            where = "/".join(str(part) for part in exc.absolute_path) or "arguments"
            raise ToolArgumentsError(f"{where}: {exc.message}") from None
        return arguments


async def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
#: Bounds that keep an expression cheap: its length, and the size of a power's result.
MAX_EXPRESSION = 200
MAX_POWER_BITS = 4096


def evaluate(expression: str) -> float | int:
    """The value of an arithmetic expression of numbers and + - * / // % ** and parentheses."""
    if len(expression) > MAX_EXPRESSION:
        raise ValueError(f"the expression is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    return _value(tree.body)


def _value(node: ast.AST) -> float | int:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))  # type: ignore[no-any-return]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and _power_bits(left, right) > MAX_POWER_BITS:
            raise ValueError("the power is too large")
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, float) and not math.isfinite(result):
            raise ValueError("the result is not a finite number")
        return result  # type: ignore[no-any-return]
    raise ValueError(
        f"only numbers and arithmetic operators are allowed, not {type(node).__name__}"
    )


def _power_bits(base: float | int, exponent: float | int) -> float:
    """About how many bits ``base ** exponent`` takes."""
    magnitude = abs(base)
    if magnitude <= 1:
        return 1
    return math.log2(magnitude) * abs(exponent)


async def _calculator(expression: str) -> str:
    try:
        return str(evaluate(expression))
    except ZeroDivisionError:
        raise ValueError("division by zero") from None
    except ArithmeticError as exc:  # an overflow
        raise ValueError(f"the result is out of range ({exc})") from None


BUILTIN_TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            name="utc_now",
            description="The current date and time in UTC, as ISO 8601.",
            parameters={"type": "object", "properties": {}, "additionalProperties": False},
            function=_utc_now,
        ),
        Tool(
            name="calculator",
            description="Evaluates an arithmetic expression of numbers with + - * / // % ** "
            "and parentheses, e.g. '(2 + 3) * 7'.",
            parameters={
                "type": "object",
                "properties": {
                    "expression": {"type": "string", "minLength": 1, "maxLength": MAX_EXPRESSION}
                },
                "required": ["expression"],
                "additionalProperties": False,
            },
            function=_calculator,
        ),
    )
}


@lru_cache
def registered_tools(module_names: tuple[str, ...]) -> dict[str, Tool]:
    """The built-in tools and those of the named modules' ``TOOLS``, by name."""
    tools = dict(BUILTIN_TOOLS)
    for name in module_names:
        module = importlib.import_module(name)  # imported already by the agents' loading
        added = getattr(module, "TOOLS", ())
        if not isinstance(added, Sequence) or not all(isinstance(t, Tool) for t in added):
            raise ToolModuleError(f"AGENT_MODULES: {name!r}: TOOLS must be a list of Tool")
        for tool in added:
            if tool.name in tools:
                raise ToolModuleError(
                    f"AGENT_MODULES: {name!r} registers tool {tool.name!r}, which already exists"
                )
            jsonschema.Draft202012Validator.check_schema(dict(tool.parameters))
            tools[tool.name] = tool
    return tools
