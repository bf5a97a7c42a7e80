"""Delivers the sandbox's events to registered webhook endpoints the way Points does: a POST with the
``X-Webhook-Secret`` and ``X-Webhook-Event`` headers, a 10 s timeout, up to 3 retries on a non-2xx or a network
error — and, to test receivers, on request duplicated and out of order.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from .points import PointsSandbox

Transport = Callable[[str, bytes, dict[str, str]], int]  # (url, body, headers) -> HTTP status


def http_transport(url: str, body: bytes, headers: dict[str, str]) -> int:
    try:
        return requests.post(url, data=body, headers=headers, timeout=10).status_code
    except requests.RequestException:
        return 0


@dataclass
class Delivery:
    url: str
    event: str
    seq: int
    status: int
    tries: int
    order_number: str = ""


class WebhookSender:
    def __init__(
        self,
        sandbox: PointsSandbox,
        *,
        transport: Transport = http_transport,
        seed: int | None = None,
        retries: int = 3,
    ):
        self.sandbox = sandbox
        self.transport = transport
        self.retries = retries
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def deliver(self, *, duplicate: bool = False, reorder: bool = False) -> list[Delivery]:
        """Send every event not yet delivered to each endpoint. ``duplicate``: each twice; ``reorder``: shuffled."""
        done: list[Delivery] = []
        with self._lock:
            for merchant, hook in self.sandbox.webhook_endpoints():
                events = [e for e in self.sandbox.events_since(hook["delivered_seq"]) if e["merchant"] == merchant]
                if not events:
                    continue
                batch = [e for e in events for _ in range(2 if duplicate else 1)]
                if reorder:
                    self._random.shuffle(batch)
                for event in batch:
                    done.append(self._send(hook, event))
                hook["delivered_seq"] = max(e["seq"] for e in events)
        return done

    def _send(self, hook: dict[str, Any], event: dict[str, Any]) -> Delivery:
        body = json.dumps(event["payload"]).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Webhook-Secret": hook["secret"],
            "X-Webhook-Event": event["event"],
        }
        status, tries = 0, 0
        while tries <= self.retries:
            tries += 1
            status = self.transport(hook["url"], body, headers)
            if 200 <= status < 300:
                break
        order_number = str((event["payload"].get("order") or {}).get("order_number", ""))
        return Delivery(hook["url"], event["event"], event["seq"], status, tries, order_number)


class WebhookPusher(threading.Thread):
    """Every ``interval`` seconds until stopped: approves the pending earnings that came due
    (``PointsSandbox.approve_pending_after``), then delivers new events (the HTTP sandbox's background sender).
    ``on_delivery`` hears of each delivery (``manage.py points_sandbox`` prints them)."""

    def __init__(
        self,
        sender: WebhookSender,
        interval: float = 1.0,
        on_delivery: Callable[[Delivery], None] | None = None,
    ):
        super().__init__(daemon=True, name="sandbox-webhooks")
        self.sender, self.interval, self.on_delivery = sender, interval, on_delivery
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.tick()

    def tick(self) -> list[Delivery]:
        self.sender.sandbox.approve_due_pending()
        deliveries = self.sender.deliver()
        for delivery in deliveries:
            if self.on_delivery is not None:
                self.on_delivery(delivery)
        return deliveries

    def stop(self) -> None:
        self._stop_event.set()
