"""The message the web pushes itself is the one kombu would have pushed for ``send_task``."""

import base64
import json

import pytest
import redis

from app.celery_message import redis_message
from app.submission import create_producer
from contract.task_repr import agent_kwargs_repr
from contract.tasks import AGENT_QUEUE, INVOKE_AGENT_ASYNC, SENT_AT_HEADER, agent_task_kwargs
from scripts.embedded_redis import EmbeddedRedis
from tests.support import redis_databases
from teststack.stack import redis_db_url

KWARGS = agent_task_kwargs(agent_id="echo", message="hi", user_id="alice")


@pytest.mark.parametrize("priority", [0, 5, 9])
def test_the_pushed_message_is_the_one_kombu_sends(
    redis_server: EmbeddedRedis, priority: int
) -> None:
    url = redis_db_url(redis_server.url, redis_databases.MESSAGE_FORMAT)
    producer = create_producer(broker_url=url)
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        producer.send_task(
            INVOKE_AGENT_ASYNC,
            kwargs=dict(KWARGS),
            task_id="by-kombu",
            queue=AGENT_QUEUE,
            priority=priority,
            # What the web's producer sends (app.submission): no message in the repr.
            argsrepr="()",
            kwargsrepr=agent_kwargs_repr(KWARGS),
            headers={SENT_AT_HEADER: 0.0},
        )
        (kombu_key,) = client.keys(f"{AGENT_QUEUE}*")
        assert isinstance(kombu_key, bytes)
        kombu_list = kombu_key.decode()
        pushed = client.lindex(kombu_list, 0)
        assert pushed is not None
        sent = json.loads(pushed)
        our_list, ours = redis_message(
            producer,
            INVOKE_AGENT_ASYNC,
            task_id="by-kombu",
            kwargs=KWARGS,
            queue=AGENT_QUEUE,
            priority=priority,
        )
    finally:
        client.close()
        producer.close()
    built = json.loads(ours)

    assert our_list == kombu_list
    for part in ("content-encoding", "content-type"):
        assert built[part] == sent[part]
    volatile = {"origin", "reply_to", "delivery_tag", SENT_AT_HEADER}
    assert isinstance(built["headers"][SENT_AT_HEADER], float)
    assert "hi" not in built["headers"]["kwargsrepr"]
    assert _without(built["headers"], volatile) == _without(sent["headers"], volatile)
    # send_task also copies the reprs into the properties, where no worker reads them.
    reprs = {"argsrepr", "kwargsrepr"}
    assert _without(built["properties"], volatile) == _without(sent["properties"], volatile | reprs)
    assert base64.b64decode(built["body"]) == base64.b64decode(sent["body"])


def _without(mapping: dict[str, object], names: set[str]) -> dict[str, object]:
    return {key: value for key, value in mapping.items() if key not in names}
