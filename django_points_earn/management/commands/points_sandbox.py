"""``manage.py points_sandbox``: serve the local Points and fabric sandboxes until SIGTERM or Ctrl-C.

    manage.py points_sandbox --api-key shop-key=riyadh --latency-ms 200 --rate-429 0.1 \
        --fabric-client-id shop --fabric-client-secret s3cret --fabric-member 966512345678

It prints the base URLs and a settings snippet to paste. The default key (``sandbox-key``) and client secret
(``sandbox-secret``) are public and printed; keys and secrets given here are never printed. Webhooks registered
with ``points_webhook_register`` receive the sandbox's ``approved``, ``refunded`` and ``cancelled`` events, as
Points sends them (``X-Webhook-Secret``, ``X-Webhook-Event``). A pending customer's earning is approved after
``--approve-pending-after`` seconds, or when asked from another terminal::

    manage.py points_sandbox --activate 0500000003      # that customer activates their account
    manage.py points_sandbox --approve-pending          # every pending earning is approved
    manage.py points_sandbox --refund A-1001 --amount 20  # a refund made in the Points dashboard
    manage.py points_sandbox --cancel A-1001            # an order cancelled in the Points dashboard
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_points_earn.sandbox import fabric as fabric_sandbox
from django_points_earn.sandbox.fabric import FabricSandbox
from django_points_earn.sandbox.points import DUPLICATE_MODES, Faults, PointsSandbox
from django_points_earn.sandbox.server import CONTROL_PREFIX, SandboxServer, check_loopback
from django_points_earn.sandbox.webhook_sender import Delivery, WebhookPusher, WebhookSender

DEFAULT_MERCHANT = "sandbox"
DEFAULT_KEY = "sandbox-key"  # public: the sandbox's documented default, printed in the settings snippet
DEFAULT_FABRIC_CLIENT = ("sandbox-client", "sandbox-secret")
FAULTS = (
    ("429", "answer 429 without doing anything"),
    ("5xx", "answer 500 without doing anything"),
    ("created-500", "record the earning, then answer 500"),
    ("slow", "record the earning, then hang for --slow-seconds"),
    ("html", "answer 502 with an HTML page"),
    ("truncated", "record the earning, then send half the JSON"),
    ("reset", "reset the connection without doing anything"),
)


def parse_api_key(value: str) -> tuple[str, str]:
    """``KEY=MERCHANT`` -> (key, merchant); a bare ``KEY`` (or one ending in ``=`` padding) is merchant
    ``sandbox``. Splits on the last ``=`` so base64-style keys keep their padding."""
    key, sep, merchant = value.rpartition("=")
    if not sep or not key or not merchant:
        return value, DEFAULT_MERCHANT
    return key, merchant


class Command(BaseCommand):
    help = "Serve a local fake of the Points earning API (fault injection, a ledger) on a loopback port."
    requires_system_checks: list[str] = []  # needs no database and no app configuration

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (127.0.0.1)")
        parser.add_argument("--port", type=int, default=8765, help="port (8765; 0 picks a free one)")
        parser.add_argument(
            "--api-key",
            action="append",
            dest="api_keys",
            metavar="KEY[=MERCHANT]",
            help="a private key to accept, and its merchant (repeatable; default sandbox-key=sandbox)",
        )
        parser.add_argument(
            "--pending-phone",
            action="append",
            dest="pending_phones",
            metavar="PHONE",
            help="a phone whose customer is not activated yet (repeatable; default 500000003)",
        )
        parser.add_argument(
            "--duplicate-mode",
            choices=DUPLICATE_MODES,
            default="422",
            help="what a repeated order_number gets once the lock is free (default 422)",
        )
        parser.add_argument(
            "--approve-pending-after",
            type=float,
            metavar="SECONDS",
            help="approve a pending customer's earning this long after it was made (default: only when asked)",
        )
        parser.add_argument(
            "--webhook-interval",
            type=float,
            default=1.0,
            metavar="SECONDS",
            help="how often new events are delivered to registered webhooks (1; 0 delivers none)",
        )
        ask = parser.add_argument_group("ask a running sandbox (on --host/--port), then exit")
        ask.add_argument("--activate", metavar="PHONE", help="this pending customer activates: approved webhooks")
        ask.add_argument("--approve-pending", action="store_true", help="approve every pending earning now")
        ask.add_argument("--refund", metavar="ORDER_NUMBER", help="refund it as in the Points dashboard: refunded")
        ask.add_argument("--amount", help="with --refund: the amount refunded (default: all that is left)")
        ask.add_argument("--cancel", metavar="ORDER_NUMBER", help="cancel it as in the Points dashboard: cancelled")
        ask.add_argument(
            "--low-balance",
            nargs="?",
            const="",
            metavar="MERCHANT",
            help="send a low_balance_warning webhook (for MERCHANT, default every merchant)",
        )
        ask.add_argument(
            "--debt-exceeded", nargs="?", const="", metavar="MERCHANT", help="send a debt_exceeded webhook"
        )
        ask.add_argument("--balance", type=float, help="with --low-balance/--debt-exceeded: the current balance")
        parser.add_argument("--points-per-sar", type=float, default=10)
        parser.add_argument("--seed", type=int, help="seed for fault rolls and uuids (reproducible runs)")
        parser.add_argument("--latency-ms", type=float, default=0)
        parser.add_argument("--latency-jitter-ms", type=float, default=0)
        parser.add_argument("--slow-seconds", type=float, default=12, help="how long a 'slow' call hangs (12)")
        for kind, what in FAULTS:
            parser.add_argument(
                f"--rate-{kind}", type=float, default=0, metavar="P", help=f"probability per Points call to {what}"
            )
        self.add_fabric_arguments(parser)

    def add_fabric_arguments(self, parser: CommandParser) -> None:
        fabric = parser.add_argument_group("fabric Loyalty (served under /fabric)")
        fabric.add_argument("--fabric-client-id", default="sandbox-client", help="client id to accept")
        fabric.add_argument(
            "--fabric-client-secret", default="sandbox-secret", help="its client secret (never printed)"
        )
        fabric.add_argument("--fabric-merchant", default=DEFAULT_MERCHANT, help="the program's name in the ledger")
        fabric.add_argument(
            "--fabric-member",
            action="append",
            dest="fabric_members",
            metavar="PHONE[=PROFILEID]",
            help="enrol a member with this phone, digits only as fabric stores it (repeatable)",
        )
        fabric.add_argument("--fabric-token-lifetime", type=float, default=600, help="expires_in of tokens (600)")
        fabric.add_argument("--fabric-grant-style", choices=fabric_sandbox.GRANT_STYLES, default="basic")
        fabric.add_argument("--fabric-validation-status", type=int, choices=(400, 422), default=422)
        fabric.add_argument("--fabric-duplicate-mode", choices=fabric_sandbox.DUPLICATE_MODES, default="400")
        fabric.add_argument(
            "--fabric-discount-value-as", choices=fabric_sandbox.DISCOUNT_VALUE_MODES, default="integer"
        )
        fabric.add_argument("--fabric-partial-reversals", action="store_true")
        fabric.add_argument("--fabric-latency-ms", type=float, default=0)
        for kind, what in FAULTS:
            fabric.add_argument(
                f"--fabric-rate-{kind}", type=float, default=0, metavar="P", help=f"probability per earn call to {what}"
            )

    def handle(self, *args: Any, **options: Any) -> None:
        balance = options.get("low_balance") is not None or options.get("debt_exceeded") is not None
        if options["activate"] or options["approve_pending"] or options["refund"] or options["cancel"] or balance:
            self.ask_running(options)
            return
        keys = dict(parse_api_key(v) for v in options["api_keys"] or [f"{DEFAULT_KEY}={DEFAULT_MERCHANT}"])
        try:
            sandbox = PointsSandbox(
                keys,
                pending_phones=options["pending_phones"] or ("500000003",),
                duplicate_mode=options["duplicate_mode"],
                points_per_sar=options["points_per_sar"],
                seed=options["seed"],
                approve_pending_after=options["approve_pending_after"],
            )
            sandbox.set_faults(self.faults(options, "", options["latency_ms"]))
            fabric = self.fabric(options)
            server = SandboxServer(
                sandbox, options["host"], options["port"], verbose=options["verbosity"] >= 2, fabric=fabric
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        try:
            server.start()
        except OSError as exc:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {exc}") from exc

        if options["verbosity"] >= 2:
            # Request lines and status codes only; headers (x-api-key) are never logged.
            sandbox_logger = logging.getLogger("django_points_earn.sandbox")
            sandbox_logger.setLevel(logging.INFO)
            if not sandbox_logger.hasHandlers():  # the project's LOGGING wins when it has a say
                handler = logging.StreamHandler(sys.stderr)
                handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
                sandbox_logger.addHandler(handler)

        stop = threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, lambda *_: stop.set())
        pusher = None
        if options["webhook_interval"] > 0:
            pusher = WebhookPusher(WebhookSender(sandbox), options["webhook_interval"], on_delivery=self.delivered)
            pusher.start()
        try:
            self.stdout.write(f"Points sandbox on {server.points_base_url} (ledger: {server.control_url}/ledger)")
            self.stdout.write(
                f"fabric sandbox on {server.fabric_base_url} (token URL: {server.fabric_token_url}; "
                f"ledger: {server.fabric_control_url}/ledger)"
            )
            if options["verbosity"] >= 1:
                self.stdout.write(self.snippet(server, keys, options))
            self.stdout.flush()
            while not stop.wait(0.5):
                pass
        finally:
            if pusher is not None:
                pusher.stop()
            server.stop()
            for signum, previous_handler in previous.items():
                signal.signal(signum, previous_handler)

    def snippet(self, server: SandboxServer, keys: dict[str, str], options: dict[str, Any]) -> str:
        """What to paste into a shop's settings to use this sandbox (public defaults shown, others by name)."""
        key = json.dumps(DEFAULT_KEY) if list(keys) == [DEFAULT_KEY] else 'os.environ["POINTS_API_KEY"]'
        client = (options["fabric_client_id"], options["fabric_client_secret"])
        secret = json.dumps(client[1]) if client == DEFAULT_FABRIC_CLIENT else 'os.environ["FABRIC_CLIENT_SECRET"]'
        pending = ", ".join(options["pending_phones"] or ("0500000003",))
        if options["approve_pending_after"] is not None:
            when = f"its earnings are approved after {options['approve_pending_after']:g} s"
        else:
            when = "approve its earnings with: manage.py points_sandbox --approve-pending"
        lines = [
            "",
            "Settings for a shop on this sandbox:",
            "",
            "POINTS_EARN = {",
            '    "ACCOUNTS": {',
            f'        "main": {{"PROVIDER": "points", "API_KEY": {key}, "BASE_URL": "{server.points_base_url}"}},',
            "    },",
            '    "ORDER_FIELDS": {"number": "number", "phone": "customer.phone", "total": "total"},'
            "  # where your order keeps them",
            "}",
            "# A fabric Loyalty account, if you have one (its members: --fabric-member PHONE):",
            'POINTS_EARN["ACCOUNTS"]["boutique"] = {',
            '    "PROVIDER": "fabric",',
            f'    "BASE_URL": "{server.fabric_base_url}",',
            f'    "TOKEN_URL": "{server.fabric_token_url}",',
            f'    "CLIENT_ID": {json.dumps(client[0])},',
            f'    "CLIENT_SECRET": {secret},',
            '    "ENTITY_REFERENCE": "Sandbox Store",',
            '    "TRANSACTION_TYPE": "PURCHASE",',
            "}",
            "",
            f"Any Saudi mobile earns at once on Points; {pending} has not activated yet ({when}).",
            "Webhooks (approved, refunded, cancelled) go to every URL registered with:",
            "  manage.py points_webhook_register --account main --secret-file .points_webhook_secret \\",
            "      --url http://127.0.0.1:8000/loyalty/webhooks/points/main/",
            "then set the account's \"WEBHOOK_SECRET\" to that file's content.",
            "",
        ]
        return "\n".join(lines)

    def delivered(self, delivery: Delivery) -> None:
        outcome = f"HTTP {delivery.status}" if delivery.status else "no answer"
        self.stdout.write(
            f"webhook {delivery.event} {delivery.order_number} -> {delivery.url}: {outcome} ({delivery.tries} tries)"
        )
        self.stdout.flush()

    def ask_running(self, options: dict[str, Any]) -> None:
        """Tell the sandbox already running on --host/--port that a customer activated, or approve all pending."""
        try:
            host = check_loopback(options["host"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        balance_event = next((e for e in ("low_balance", "debt_exceeded") if options.get(e) is not None), None)
        if balance_event is not None:
            event = {"low_balance": "low_balance_warning", "debt_exceeded": "debt_exceeded"}[balance_event]
            path, body = "/balance", {"event": event, "merchant": options[balance_event]}
            if options.get("balance") is not None:
                body["current_balance"] = options["balance"]
        elif options["activate"]:
            path, body = "/activate", {"phone": options["activate"]}
        elif options["refund"] or options["cancel"]:
            action = "refund" if options["refund"] else "cancel"
            path, body = "/dashboard", {"action": action, "order_number": options["refund"] or options["cancel"]}
            if options["amount"]:
                body["amount"] = options["amount"]
        else:
            path, body = "/approve-pending", {}
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{options['port']}{CONTROL_PREFIX}{path}"
        try:
            answer = requests.post(url, json=body, timeout=10)
        except requests.RequestException as exc:
            raise CommandError(f"no sandbox answers on {url}: {exc}") from exc
        data = answer.json() if answer.headers.get("Content-Type", "").startswith("application/json") else {}
        if answer.status_code != 200:
            raise CommandError(f"the sandbox refused: {data.get('error') or answer.status_code}")
        if "merchants" in data:
            self.stdout.write(f"{body['event']} sent for: {', '.join(data['merchants']) or 'no merchant'}")
            return
        if "order" in data:
            order = data["order"]
            self.stdout.write(
                f"{order['order_number']} is {order['order_status']} on the sandbox (its webhook follows)"
            )
            return
        orders = data.get("orders", [])
        self.stdout.write(f"approved {len(orders)} pending earning(s): " + ", ".join(o["order_number"] for o in orders))

    @staticmethod
    def faults(options: dict[str, Any], prefix: str, latency_ms: float) -> Faults:
        return Faults(
            latency_ms=latency_ms,
            latency_jitter_ms=options["latency_jitter_ms"],
            slow_seconds=options["slow_seconds"],
            **{
                f"rate_{k}": options[f"{prefix}rate_{k}"]
                for k in ("429", "5xx", "created_500", "slow", "html", "truncated", "reset")
            },
        )

    def fabric(self, options: dict[str, Any]) -> FabricSandbox:
        fabric = FabricSandbox(
            {options["fabric_client_id"]: options["fabric_client_secret"]},
            merchant=options["fabric_merchant"],
            token_lifetime=options["fabric_token_lifetime"],
            grant_style=options["fabric_grant_style"],
            validation_status=options["fabric_validation_status"],
            duplicate_mode=options["fabric_duplicate_mode"],
            discount_value_as=options["fabric_discount_value_as"],
            partial_reversals=options["fabric_partial_reversals"],
            seed=options["seed"],
        )
        for member in options["fabric_members"] or ():
            phone, _, profile_id = member.partition("=")
            fabric.add_member(phone.strip(), profile_id=profile_id.strip() or None)
        fabric.set_faults(self.faults(options, "fabric_", options["fabric_latency_ms"]))
        return fabric
