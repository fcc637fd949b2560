"""What views of an agent task show of its arguments: ids, and sizes instead of text."""

from contract.task_repr import agent_args_repr, agent_kwargs_repr


def test_kwargs_repr_shows_ids_and_the_sizes_of_message_and_metadata() -> None:
    shown = agent_kwargs_repr(
        {
            "agent_id": "echo",
            "message": "my secret plan",
            "user_id": "alice",
            "session_id": None,
            "metadata": {"trace": "private", "n": 1},
        }
    )

    assert shown == (
        "{'agent_id': 'echo', 'message': '<14 characters>', 'user_id': 'alice', "
        "'session_id': None, 'metadata': '<2 keys>'}"
    )
    assert "secret" not in shown
    assert "private" not in shown


def test_kwargs_repr_of_a_foreign_producer_never_shows_unexpected_values() -> None:
    shown = agent_kwargs_repr({"message": ["a", "list"], "extra": "text", "user_id": 7})

    assert shown == "{'message': '<list>', 'extra': '<4 characters>', 'user_id': '<int>'}"


def test_ids_are_cut_and_non_mappings_are_named() -> None:
    assert agent_kwargs_repr({"agent_id": "x" * 500}) == "{'agent_id': '" + "x" * 128 + "'}"
    assert agent_kwargs_repr(["message"]) == "<list>"
    assert agent_args_repr([]) == "()"
    assert agent_args_repr(["message"]) == "<1 arguments>"
