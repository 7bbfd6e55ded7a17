#!/usr/bin/env python3
"""Submits a `stepchain` task to Baton as any non-Swift service would (DESIGN.md §6), with pika.

Publishes the submit JSON to the `baton.submit` exchange (routing key = the agent) with `reply_to` an
exclusive queue and a `correlation_id`, waits for the worker's reply, and prints the reply as JSON on
stdout. Exit status: 0 with a reply, 1 when no reply came within --timeout, 2 on a reply for another
correlation id only.

    python3 submit_stepchain.py --amqp amqp://guest:guest@127.0.0.1:5673/ --id my-task-1 --steps 5
"""

import argparse
import json
import sys
import time
import uuid

import pika


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--amqp", required=True, help="RabbitMQ URL")
    parser.add_argument("--id", required=True, help="the client-chosen task id")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--record-bytes", type=int, default=64)
    parser.add_argument("--tokens-per-step", type=int, default=100)
    parser.add_argument("--cost-usd-per-step", type=float, default=0.0001)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the reply")
    args = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(args.amqp))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        reply_queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
        correlation_id = str(uuid.uuid4())
        submit = {
            "v": 1,
            "id": args.id,
            "agent": "stepchain",
            "input": {
                "steps": args.steps,
                "record_bytes": args.record_bytes,
                "tokens_per_step": args.tokens_per_step,
                "cost_usd_per_step": args.cost_usd_per_step,
            },
            "budget": {"max_cost_usd": 5.0, "max_tokens": 2000000, "max_steps": 500, "max_attempts": 5},
            "tenant": "python-client",
            "labels": {"client": "pika"},
            "unknown_field": "ignored by the worker",
        }
        channel.basic_publish(
            exchange="baton.submit",
            routing_key="stepchain",
            body=json.dumps(submit).encode("utf-8"),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                reply_to=reply_queue,
                correlation_id=correlation_id,
            ),
            mandatory=True,
        )
        deadline = time.monotonic() + args.timeout
        other = False
        while time.monotonic() < deadline:
            method, properties, body = channel.basic_get(queue=reply_queue, auto_ack=True)
            if method is None:
                connection.sleep(0.05)
                continue
            if properties.correlation_id != correlation_id:
                other = True
                continue
            print(json.dumps(json.loads(body), sort_keys=True))
            return 0
        print("no reply within %.0f s" % args.timeout, file=sys.stderr)
        return 2 if other else 1
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
