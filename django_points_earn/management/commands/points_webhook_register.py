"""``manage.py points_webhook_register``: register this shop's webhook URL with the account's platform (any platform
whose backend can: ``register_webhook`` / ``list_webhooks``), and keep the secret it returns safe.

The secret is written to ``--secret-file`` (mode 0600) and never printed; put it in the environment the
account's ``WEBHOOK_SECRET`` reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...conf import get_settings
from ...providers import get_backend
from ...providers.results import PlatformError


class Command(BaseCommand):
    help = "Register (or --list) this shop's webhook with the account's platform; the secret goes to --secret-file."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--account", required=True, help="A POINTS_EARN account whose platform takes webhooks.")
        parser.add_argument("--url", help="https://<shop>/<prefix>/webhooks/<platform>/<account>/")
        parser.add_argument("--name", default="django-points-earn", help="A label shown in the platform's dashboard.")
        parser.add_argument("--secret-file", help="Where to write the secret (created with mode 0600).")
        parser.add_argument("--list", action="store_true", help="List the registered webhooks (no secrets).")

    def handle(self, *args: Any, **options: Any) -> None:
        account = get_settings().account(options["account"])
        backend = get_backend(account)
        if not hasattr(backend, "register_webhook"):
            raise CommandError(
                f"account {account.name} is a {account.provider} account, which has no webhooks to register"
            )
        try:
            if options["list"]:
                for hook in backend.list_webhooks():
                    self.stdout.write(f"{hook.get('uuid')}  {hook.get('name')}  {hook.get('url')}")
                return
            if not options["url"] or not options["secret_file"]:
                raise CommandError("--url and --secret-file are required to register")
            path = Path(options["secret_file"])
            if path.exists():
                raise CommandError(f"{path} exists; move it away first (it may hold the current secret)")
            hook = backend.register_webhook(options["name"], options["url"])
        except PlatformError as exc:
            raise CommandError(str(exc)) from exc
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(hook["secret"])
        self.stdout.write(
            f"Registered webhook {hook.get('uuid')} for {options['url']}.\n"
            f"Its secret is in {path} (mode 0600). Set it as the account's WEBHOOK_SECRET, e.g.\n"
            f'  export {account.name.upper()}_WEBHOOK_SECRET="$(cat {path})"'
        )
