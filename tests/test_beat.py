"""Beat's schedule: every task it lists is registered, takes the entry's arguments, has time
limits Celery accepts, is routed to a queue the worker consumes, and is sent the way beat sends
it and run by a real worker without error. And the job it exists for: a hold left by a relay
that died mid-request is released."""

from __future__ import annotations

import inspect
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import beat, signals
from celery.app.task import Task
from django.core.management import call_command

from billing import sync
from core import state
from keys.services import issue_key
from portal.celery import app

from .conftest import credit, start_relay, wait_until
from .test_relay import chat


def scheduler() -> beat.Scheduler:
    """The schedule as `celery beat` builds it (its own default entries included), without the
    persistent store."""
    return beat.Scheduler(app=app)


# What beat and the worker do at start-up: import the apps' task modules.
app.loader.import_default_modules()


ENTRIES = sorted(scheduler().schedule)
OURS = sorted(name for name in app.tasks if name.split(".")[0] in {"billing", "keys", "catalog"})


def test_the_schedule_lists_the_periodic_jobs() -> None:
    listed = {entry.task for entry in scheduler().schedule.values()}
    assert {"billing.release_stale_holds", "billing.reconcile", "keys.expire_keys"} <= listed


@pytest.mark.parametrize("name", ENTRIES)
def test_it_names_a_registered_task_that_takes_the_entrys_arguments(name: str) -> None:
    entry = scheduler().schedule[name]
    assert entry.task in app.tasks, f"{name}: {entry.task} is not registered"
    task = app.tasks[entry.task]
    inspect.signature(task.run).bind(*entry.args, **entry.kwargs)


def limits(task: Task) -> tuple[float | None, float | None]:
    """(soft, hard) as the worker applies them: the task's own, else the global settings."""
    soft = (
        task.soft_time_limit if task.soft_time_limit is not None else app.conf.task_soft_time_limit
    )
    hard = task.time_limit if task.time_limit is not None else app.conf.task_time_limit
    return soft, hard


@pytest.mark.parametrize("name", sorted({*OURS, *(e.task for e in scheduler().schedule.values())}))
def test_its_soft_time_limit_comes_before_its_hard_one(name: str) -> None:
    soft, hard = limits(app.tasks[name])
    assert soft is not None and hard is not None, f"{name}: soft {soft}, hard {hard}"
    assert soft < hard, f"{name}: soft limit {soft}s, hard limit {hard}s"
    if app.tasks[name].acks_late:
        # An unacknowledged message is handed to another worker after the visibility timeout:
        # a task allowed to run longer would run twice.
        visibility = app.conf.broker_transport_options.get("visibility_timeout", 3600)
        assert hard < visibility, f"{name}: hard limit {hard}s, visibility timeout {visibility}s"


def test_the_global_limits_agree() -> None:
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit


@pytest.mark.parametrize("name", ENTRIES)
def test_it_is_routed_to_a_queue_the_worker_consumes(name: str) -> None:
    entry = scheduler().schedule[name]
    route = app.amqp.router.route(dict(entry.options), entry.task, entry.args, entry.kwargs)
    # `celery worker` without -Q (the Procfile's) consumes exactly these queues.
    assert route["queue"].name in app.amqp.queues, route


@pytest.fixture
def outcomes() -> Iterator[dict[str, dict[str, Any]]]:
    """Every task the in-process worker finishes, by task id: succeeded or failed."""
    done: dict[str, dict[str, Any]] = {"success": {}, "failure": {}}

    def succeeded(sender: Task, result: Any, **kwargs: Any) -> None:
        done["success"][sender.request.id] = result

    def failed(task_id: str, exception: BaseException, **kwargs: Any) -> None:
        done["failure"][task_id] = exception

    signals.task_success.connect(succeeded, weak=False)
    signals.task_failure.connect(failed, weak=False)
    yield done
    signals.task_success.disconnect(succeeded)
    signals.task_failure.disconnect(failed)


def apply_like_beat(*names: str) -> dict[str, str]:
    """Sends entries exactly as beat does when they fall due (its own apply_async, with the
    entry's options and beat's header); raises where beat would log "Couldn't apply scheduled
    task". Task id by entry name."""
    schedule = scheduler()
    with app.producer_or_acquire() as producer:
        return {
            name: schedule.apply_async(schedule.schedule[name], producer=producer, advance=False).id
            for name in names
        }


def test_beat_sends_every_entry_and_the_worker_runs_each_without_error(
    worker: Any, outcomes: dict[str, dict[str, Any]]
) -> None:
    consumed = {queue.name for queue in worker.consumer.task_consumer.queues}
    sent = apply_like_beat(*ENTRIES)
    for name, task_id in sent.items():
        entry = scheduler().schedule[name]
        queue = app.amqp.router.route(dict(entry.options), entry.task)["queue"].name
        assert queue in consumed, f"{name} goes to {queue}, the worker consumes {consumed}"
    wait_until(lambda: set(sent.values()) <= {*outcomes["success"], *outcomes["failure"]}, 60)
    failed = {name: outcomes["failure"][i] for name, i in sent.items() if i in outcomes["failure"]}
    assert not failed


def test_a_hold_left_by_a_relay_that_died_is_released_by_the_beat_job(
    tmp_path: Path,
    make_user: Any,
    catalog: None,
    worker: Any,
    outcomes: dict[str, dict[str, Any]],
    settings: Any,
) -> None:
    user = make_user("ida@example.com")
    credit(user, 1)
    _, secret = issue_key(account=user.account, name="dies")
    account_id = user.account.pk
    posted = sync.figures(account_id)["posted"]

    relay = start_relay(tmp_path)
    # A request the upstream takes half a minute to answer: the relay holds its worst-case
    # cost and is killed before it can settle.
    body = json.dumps(chat(max_tokens=100)).encode()
    host, port = relay.base_url.removeprefix("http://").split("/")[0].split(":")
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
        f"x-demo-latency-ms: 30000\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    conversation = socket.create_connection((host, int(port)), timeout=30)
    try:
        conversation.sendall(request)
        wait_until(lambda: sync.figures(account_id)["held"] > 0, timeout=10)
        relay.process.kill()
        relay.process.wait(10)
    finally:
        conversation.close()
        relay.stop()
    held = sync.figures(account_id)["held"]
    assert held > 0 and sync.client().zcard(state.hold_times(account_id)) == 1

    # Every hold is older than the longest request allowed from here on.
    settings.TP_HOLD_MAX_AGE_SECONDS = 0
    (task_id,) = apply_like_beat("release-stale-holds").values()
    wait_until(lambda: task_id in outcomes["success"] or task_id in outcomes["failure"], 30)
    assert task_id not in outcomes["failure"], outcomes["failure"][task_id]
    assert outcomes["success"][task_id] >= 1
    assert sync.figures(account_id) == {"posted": posted, "held": 0, "unposted": 0}
    assert not sync.client().exists(state.account_holds(account_id))
    call_command("reconcile", stdout=io.StringIO())
