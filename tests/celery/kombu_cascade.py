"""Builds what a Celery worker builds, with kombu's own functions.

    kombu_cascade.py URL QUEUE_TYPE PREFIX MODE QUEUE...

MODE `app` declares only the application queues (each with its exchange and
its plain binding, as `Queue.declare` does); MODE `kombu` then lets kombu
declare the delayed-delivery cascade and bind every queue to it. PREFIX `-`
means none. QUEUE is `name:exchange:exchange_type:routing_key`.
"""

import sys

from kombu import Connection, Exchange, Queue
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)


def main(url, queue_type, prefix, mode, *specs):
    prefix = None if prefix == "-" else prefix
    queues = []
    for spec in specs:
        name, exchange, exchange_type, routing_key = spec.split(":")
        queues.append(
            Queue(name, Exchange(exchange, type=exchange_type), routing_key=routing_key)
        )
    with Connection(url) as connection:
        channel = connection.channel()
        for queue in queues:
            queue.bind(channel).declare()
        if mode == "kombu":
            # kombu before 5.6 has no prefix parameter: pass it only when given.
            extra = [prefix] if prefix else []
            declare_native_delayed_delivery_exchanges_and_queues(connection, queue_type, *extra)
            for queue in queues:
                bind_queue_to_native_delayed_delivery_exchange(connection, queue, *extra)


if __name__ == "__main__":
    main(*sys.argv[1:])
