"""A Celery task message as kombu's Redis transport stores it, built without a broker round trip.

When the broker is the very Redis the web writes a task's record to, the message goes into its
queue list in the same script as the record (``app.acceptance``): one round trip for the whole
submit instead of kombu's publish in a thread after three others. The message is Celery's own
(``app.amqp.as_task_v2``: protocol 2 headers and body, as ``send_task`` makes them), wrapped as
kombu's virtual channel wraps it (``prepare_message`` and ``_inplace_augment_message``: the body
base64-encoded, a delivery tag, the delivery info of the default exchange), so a worker cannot
tell it from one kombu sent. A test compares the two.

Unless told otherwise, its arguments' repr leaves the user's message out (``contract.task_repr``)
and its ``sent_at`` header says when it was built, as ``app.submission`` sends them.
"""

import base64
import time
import uuid
from collections.abc import Mapping
from typing import Any

from celery import Celery
from kombu.utils.json import dumps

from contract.task_repr import agent_kwargs_repr
from contract.tasks import SENT_AT_HEADER, redis_queue_list


def redis_message(
    producer: "Celery[Any]",
    task_name: str,
    *,
    task_id: str,
    kwargs: Mapping[str, Any],
    queue: str,
    priority: int,
    argsrepr: str | None = None,
    kwargsrepr: str | None = None,
    headers: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """(the queue list, the message as JSON) of the task ``send_task`` would send."""
    message = producer.amqp.as_task_v2(
        task_id,
        task_name,
        args=(),
        kwargs=dict(kwargs),
        argsrepr="()" if argsrepr is None else argsrepr,
        kwargsrepr=agent_kwargs_repr(kwargs) if kwargsrepr is None else kwargsrepr,
        ignore_result=None,  # type: ignore[arg-type]  # as send_task: the task decides
    )
    message_headers = {**message.headers, SENT_AT_HEADER: time.time(), **(headers or {})}
    properties = {
        **message.properties,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": priority,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    body = base64.b64encode(dumps(message.body).encode()).decode()
    envelope = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message_headers,
        "properties": properties,
    }
    return redis_queue_list(queue, priority), dumps(envelope)
