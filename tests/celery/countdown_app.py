"""A Celery app whose one task records when it ran, for the end-to-end test.

Configured from the environment: DT_BROKER_URL, DT_QUEUE (the queue, its
topic exchange and its routing key share this name) and DT_RECORD (a file
that gets one JSON line per task run). Remote control and events are off, so
the worker needs no `celery.pidbox` or `celeryev` permissions.
"""

import json
import os
import time

from celery import Celery
from kombu import Exchange, Queue

QUEUE = os.environ["DT_QUEUE"]

app = Celery("countdown_app", broker=os.environ["DT_BROKER_URL"])
app.conf.update(
    broker_native_delayed_delivery_queue_type="quorum",
    task_queues=[
        Queue(
            QUEUE,
            Exchange(QUEUE, type="topic"),
            routing_key=QUEUE,
            queue_arguments={"x-queue-type": "quorum"},
        )
    ],
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_exchange_type="topic",
    task_default_routing_key=QUEUE,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
    broker_connection_retry_on_startup=True,
    # The sender exits right after its last publish: without confirms, a
    # publish still in flight can be lost when its connection is torn down.
    broker_transport_options={"confirm_publish": True},
)


@app.task(name="record")
def record(countdown, sent_at):
    line = {"countdown": countdown, "sent_at": sent_at, "ran_at": time.time()}
    with open(os.environ["DT_RECORD"], "a") as out:
        out.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    # send: countdown_app.py COUNTDOWN... sends one task per countdown.
    import sys

    for countdown in sys.argv[1:]:
        record.apply_async(args=[int(countdown), time.time()], countdown=int(countdown))
    app.close()
