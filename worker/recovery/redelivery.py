"""Handing a dead worker's tasks to a live one: deliveries whose lease lapsed, and lost messages.

Run by one worker at a time (under ``WorkerLease``'s lock), every renewal period:

- ``restore_lapsed``: a delivery older than the lease whose holder key has lapsed (its worker
  died) goes back to its queue with kombu's own restore;
- ``resend_lost``, every ``RESEND_EVERY`` passes: kombu's Redis transport takes a message with
  ``BRPOP`` and records it as unacknowledged in a second round trip (celery/celery#7950); a
  worker killed between the two loses the message, and a worker that has just restored a dead
  worker's deliveries takes them back itself, so it sits in that window more often than most. So
  the open tasks (accepted, sent, not ended: ``contract.keys.OPEN_TASKS``) older than two leases
  that no live process holds or runs are looked for in their queues and among the
  unacknowledged deliveries (one server-side scan); one found nowhere is sent again, from what
  the web recorded (``contract.task_record``), under the same task id. A message sent twice
  costs nothing: the second delivery finds the task running (and waits) or ended (and stops).
  Open entries of tasks that have ended, or whose record is gone, are dropped on the way;
- at the same pace, ``heal_user_slots`` frees the per-user active-task slots (``app.caps``) of
  tasks that ended or vanished without giving theirs back, and sends the tasks a web process
  recorded and never sent (``worker.recovery.resend``).

With RabbitMQ as the broker there is no such window (a delivery is the broker's until it is
acknowledged, and a lost connection returns it), and nothing to scan: ``resend_lost`` does not
run there; ``heal_user_slots`` does.
"""

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from contract import keys
from contract.events import TERMINAL_TYPES
from contract.task_record import KWARGS, TaskRecord, decode_record
from worker.observability.logs import log_event
from worker.recovery import resend

logger = logging.getLogger("agent_service.worker.recovery")

#: Lost messages are looked for every this many passes.
RESEND_EVERY = 3
#: Open tasks examined per pass, the oldest first (the next pass goes on from there).
CANDIDATES_PER_PASS = 200
#: Messages a scan reads at most; past it, nothing it did not find is sent again.
SCAN_LIMIT = 50_000
#: Seconds a user's active-task slot may exist before its task is recorded.
SLOT_GRACE = 30
#: Users whose slots a pass examines; the next pass goes on from there, so every user with
#: active tasks is seen within (users / this) passes however many there are.
USERS_PER_PASS = 200

# KEYS: queue lists..., the unacknowledged deliveries' hash (last). ARGV: limit, task ids...
# Returns {'done' or 'partial', ids found nowhere...}.
_FIND_SCRIPT = """
local wanted, remaining = {}, 0
for i = 2, #ARGV do wanted[ARGV[i]] = true; remaining = remaining + 1 end
local limit, seen = tonumber(ARGV[1]), 0
local function look(item)
  local id = string.match(item, '"id":%s*"([^"]+)"')
  if id and wanted[id] then wanted[id] = nil; remaining = remaining - 1 end
end
for k = 1, #KEYS - 1 do
  local size, start = redis.call('LLEN', KEYS[k]), 0
  while start < size and remaining > 0 do
    if seen >= limit then return {'partial'} end
    for _, item in ipairs(redis.call('LRANGE', KEYS[k], start, start + 499)) do look(item) end
    seen, start = seen + 500, start + 500
  end
end
local cursor = '0'
repeat
  if remaining == 0 then break end
  if seen >= limit then return {'partial'} end
  local page = redis.call('HSCAN', KEYS[#KEYS], cursor, 'COUNT', 500)
  cursor = page[1]
  for i = 2, #page[2], 2 do look(page[2][i]) end
  seen = seen + 500
until cursor == '0'
local lost = {'done'}
for id, _ in pairs(wanted) do lost[#lost + 1] = id end
return lost
"""


@dataclass(frozen=True, slots=True)
class _Candidate:
    task_id: str
    record: TaskRecord


class DeliveryRecovery:
    def __init__(self, app: "Celery[Any]", client: "redis.Redis", *, lease_seconds: float) -> None:
        self._app = app
        self._client = client
        self._lease = lease_seconds
        self._passes = 0
        self._after = 0.0  # the open tasks' score the next examination starts after
        self._users_cursor = 0  # where the next look at the users with active tasks starts

    def run(self) -> tuple[int, int]:
        """One pass: (deliveries restored, messages sent again)."""
        self._passes += 1
        with self._app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            channel: Any = connection.default_channel
            if not hasattr(channel, "unacked_key"):  # not kombu's Redis transport
                if self._passes % RESEND_EVERY == 0:
                    return 0, self.heal_user_slots()[1]
                return 0, 0
            broker = channel.client  # the broker's Redis, which may not be REDIS_URL's
            restored = self.restore_lapsed(channel, broker)
            resent = 0
            if self._passes % RESEND_EVERY == 0:
                resent = self.resend_lost(channel, broker) + self.heal_user_slots()[1]
        return restored, resent

    def restore_lapsed(self, channel: Any, broker: Any) -> int:
        """Put back on their queues the deliveries whose holder's lease lapsed."""
        restored = 0
        for tag, task_id in self._lapsed_deliveries(channel, broker):
            channel.qos.restore_by_tag(tag, client=broker)
            restored += 1
            log_event(
                logger,
                logging.WARNING,
                "task_recovered",
                task_id=task_id,
                reason="its worker's lease lapsed",
            )
        return restored

    def _lapsed_deliveries(self, channel: Any, broker: Any) -> list[tuple[str, str]]:
        """(delivery tag, task id) of deliveries older than the lease with no live holder."""
        ceiling = time.time() - self._lease
        tags = [t.decode() for t in broker.zrangebyscore(channel.unacked_index_key, 0, ceiling)]
        if not tags:
            return []
        payloads = broker.hmget(channel.unacked_key, tags)
        candidates: list[tuple[str, str]] = []
        for tag, raw in zip(tags, payloads, strict=True):
            if raw is None:
                continue
            try:
                task_id = json.loads(raw)[0]["headers"]["id"]
            except (ValueError, IndexError, KeyError, TypeError):
                continue  # not a task message of ours: left to the visibility timeout
            if isinstance(task_id, str) and task_id:
                candidates.append((tag, task_id))
        if not candidates:
            return []
        with self._client.pipeline(transaction=False) as pipe:
            for _, task_id in candidates:
                pipe.exists(keys.task_holder(task_id))
            held = pipe.execute()
        return [c for c, alive in zip(candidates, held, strict=True) if not alive]

    def resend_lost(self, channel: Any, broker: Any) -> int:
        """Send again the open tasks whose message is nowhere; how many."""
        candidates = self._unattended()
        if not candidates:
            return 0
        queues = sorted({c.record.queue for c in candidates if c.record.queue})
        lists = [
            channel._q_for_pri(queue, pri) for queue in queues for pri in channel.priority_steps
        ]
        reply = broker.eval(
            _FIND_SCRIPT,
            len(lists) + 1,
            *lists,
            channel.unacked_key,
            SCAN_LIMIT,
            *[c.task_id for c in candidates],
        )
        verdict, lost = _text(reply[0]), {_text(task_id) for task_id in reply[1:]}
        if verdict != "done":
            log_event(logger, logging.WARNING, "lost_task_scan_incomplete", limit=SCAN_LIMIT)
            return 0
        resent = 0
        for candidate in candidates:
            if candidate.task_id not in lost or candidate.record.kwargs is None:
                continue
            resend.send(self._app, candidate.record)
            resent += 1
            log_event(
                logger,
                logging.WARNING,
                "task_resent",
                task_id=candidate.task_id,
                reason="its message was in no queue and no worker held it",
            )
        return resent

    def _unattended(self) -> list[_Candidate]:
        """Open tasks older than two leases that no live process holds or runs; open entries
        of ended or vanished tasks are dropped meanwhile."""
        ceiling = time.time() - 2 * self._lease
        entries: Any = self._client.zrangebyscore(
            keys.OPEN_TASKS,
            f"({self._after}",
            ceiling,
            start=0,
            num=CANDIDATES_PER_PASS,
            withscores=True,
        )
        if not entries:
            self._after = 0.0  # the end of the index: start again from its oldest
            return []
        self._after = float(entries[-1][1])
        task_ids: list[str] = [_text(task_id) for task_id, _ in entries]
        with self._client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.xrevrange(keys.task_events(task_id), count=1)
                pipe.exists(keys.task_holder(task_id), keys.task_runner(task_id))
                pipe.hgetall(keys.task_record(task_id))
            replies = pipe.execute()
        unattended: list[_Candidate] = []
        finished: list[str] = []
        for i, task_id in enumerate(task_ids):
            last, alive, raw = replies[3 * i : 3 * i + 3]
            record = decode_record(task_id, raw) if raw else None
            if record is None or _ended(last):
                finished.append(task_id)
            elif not alive and record.sent:
                unattended.append(_Candidate(task_id, record))
        if finished:
            with self._client.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.OPEN_TASKS, *finished)
                for task_id in finished:
                    pipe.hdel(keys.task_record(task_id), KWARGS)
                pipe.execute()
        return unattended

    def heal_user_slots(self) -> tuple[int, int]:
        """Free the active-task slots of tasks that ended or vanished without giving theirs
        back (Redis lost them, a web process died between taking the slot and recording the
        task); and send the tasks whose record says they were never sent (the broker is
        elsewhere and their web process died, or stalled, before sending them): they were
        accepted, and may have been promised to a client (an idempotent replay gives the id).
        (Slots freed, tasks sent.) A slot younger than ``SLOT_GRACE`` is left alone: its task
        may not be recorded or sent yet."""
        freed = sent = 0
        for user_id in self._next_users():
            active = keys.user_active_tasks(user_id)
            ceiling = time.time() - SLOT_GRACE
            old: Any = self._client.zrangebyscore(active, 0, ceiling)
            task_ids = [_text(t) for t in old]
            if not task_ids:
                if not self._client.zcard(active):
                    self._client.srem(keys.USERS_WITH_ACTIVE_TASKS, user_id)
                continue
            with self._client.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.xrevrange(keys.task_events(task_id), count=1)
                    pipe.hgetall(keys.task_record(task_id))
                replies = pipe.execute()
            gone: list[str] = []
            for i, task_id in enumerate(task_ids):
                last, raw = replies[2 * i], replies[2 * i + 1]
                record = decode_record(task_id, raw) if raw else None
                if record is None or _ended(last):
                    gone.append(task_id)
                elif not record.sent:
                    sent += self._send_unsent(record)
            if gone:
                with self._client.pipeline(transaction=False) as pipe:
                    pipe.zrem(active, *gone)
                    pipe.zrem(keys.user_urgent_tasks(user_id), *gone)
                    pipe.execute()
                freed += len(gone)
                log_event(
                    logger, logging.WARNING, "user_slots_freed", user_id=user_id, count=len(gone)
                )
        return freed, sent

    def _next_users(self) -> list[str]:
        """Up to about ``USERS_PER_PASS`` users with active tasks, going on from where the last
        pass stopped (``SSCAN``: every member present throughout is seen once per sweep)."""
        users: dict[str, None] = {}  # SSCAN may return a member twice
        while len(users) < USERS_PER_PASS:
            cursor, found = self._client.sscan(
                keys.USERS_WITH_ACTIVE_TASKS, self._users_cursor, count=USERS_PER_PASS
            )
            self._users_cursor = int(cursor)
            users.update((_text(u), None) for u in found)
            if self._users_cursor == 0:  # the sweep is complete: the next pass starts another
                break
        return list(users)

    def _send_unsent(self, record: TaskRecord) -> bool:
        """Send a task its web process recorded and did not send within ``SLOT_GRACE``, unless
        the web has marked it sent meanwhile (``worker.recovery.resend``)."""
        if record.kwargs is None or not resend.take_unsent(self._client, record):
            return False
        try:
            resend.send(self._app, record)
        except Exception as exc:  # the broker is in trouble: the next pass tries again
            resend.give_back(self._client, record)
            log_event(
                logger, logging.WARNING, "task_not_resent", task_id=record.task_id, error=repr(exc)
            )
            return False
        log_event(
            logger,
            logging.WARNING,
            "task_resent",
            task_id=record.task_id,
            reason="its web process recorded it and did not send it",
        )
        return True


def _ended(last: Any) -> bool:
    if not last:
        return False
    fields = last[0][1]
    kind = fields.get(b"e", b"").decode()
    return kind in TERMINAL_TYPES


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
