"""Writes docs/settings.md from the defaults in code, so the settings reference cannot drift.

    python scripts/settings_reference.py          # rewrite docs/settings.md
    python scripts/settings_reference.py --check  # exit 1 if it is stale (tests/test_docs.py does the same)

Every key of ``conf.DEFAULTS`` and of each built-in platform's ``defaults`` (its backend class in
``django_points_earn/providers/``) is listed with its default and the comment written next to it (the lines right
above the key, and the one at its end). To document a new setting, comment it there and run this script.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import sys
import tokenize
from pathlib import Path
from typing import Any

from django.utils.module_loading import import_string

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from django_points_earn import conf  # noqa: E402 (after the path is set)
from django_points_earn.adapters import ORDER_FIELD_KEYS  # noqa: E402
from django_points_earn.providers import BUILT_IN  # noqa: E402

CONF = ROOT / "django_points_earn" / "conf.py"
PAGE = ROOT / "docs" / "settings.md"
REGENERATE = "python scripts/settings_reference.py"

ACCOUNT_COMMON = {
    "PROVIDER": " or ".join(f'`"{name}"`' for name in BUILT_IN)
    + " (or a platform added in `PLATFORMS`, see [Adding a platform](adding-platforms.md)); required",
    "HTTP_TIMEOUT": "this account's (connect, read) timeouts; default: the top-level `HTTP_TIMEOUT`",
    "EARNING_RATE": "points per unit of the order's currency (e.g. `10`), only to show customers an estimate before "
    "the platform answers (`django_points_earn.api.earning_for`, [Showing the customer](customer.md)); never sent. "
    "Unset: no number until the platform gives one. A positive number (`manage.py check`: points_earn.E014)",
}
# Keys an account has without a default (documented here, not next to a default), by platform.
ACCOUNT_KEYS: dict[str, dict[str, str]] = {}
ACCOUNT_KEYS["points"] = {
    "API_KEY": "the merchant's private key (`x-api-key`); required. Read it from the environment",
    "WEBHOOK_SECRET": "the secret Points gave the registered webhook (`points_webhook_register`); without it the "
    "webhook view answers 403",
}
ACCOUNT_KEYS["fabric"] = {
    "CLIENT_ID": "the OAuth client id fabric issued; required",
    "CLIENT_SECRET": "its client secret; required. Read it from the environment",
}


def comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on that line."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.lstrip("#").strip()
    return found


def described_keys(name: str, path: Path = CONF, within: str = "") -> dict[tuple[str, ...], str]:
    """(key path) -> its comment, for the dict literal assigned to ``name`` in ``path`` (at the top level, or in
    the body of the class ``within``)."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    notes = comments(source)
    tree = ast.parse(source)
    found: dict[tuple[str, ...], str] = {}

    def walk(node: ast.Dict, prefix: tuple[str, ...], parent_line: int = 0) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if not isinstance(key, ast.Constant):
                continue
            if key.lineno == parent_line:  # a one-line dict: its keys share the parent's description
                found[(*prefix, key.value)] = f"see `{prefix[-1]}`"
                continue
            above, line = [], key.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, notes.get(line, ""))
                line -= 1
            inline = [notes[n] for n in range(key.lineno, (value.end_lineno or key.lineno) + 1) if n in notes]
            if isinstance(value, ast.Dict):
                inline = [notes[key.lineno]] if key.lineno in notes else []
            found[(*prefix, key.value)] = " ".join([*above, *inline]).strip()
            if isinstance(value, ast.Dict):
                walk(value, (*prefix, key.value), key.lineno)

    body = tree.body
    if within:
        body = next(n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == within)
    for node in body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) else None)
        )
        if isinstance(target, ast.Name) and target.id == name and isinstance(node.value, ast.Dict):
            walk(node.value, ())
    return found


def shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict):
        return "see below" if value else "`{}`"
    return f"`{value!r}`".replace("|", "\\|")


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ") or "—"


def render() -> str:
    top = described_keys("DEFAULTS")
    out = [
        "# Settings reference",
        "",
        f"<!-- Generated from django_points_earn/conf.py and the platforms' backend classes by `{REGENERATE}`: "
        "edit the comments there, not this page. -->",
        "",
        "Everything lives in one dict, `POINTS_EARN`. Only `ACCOUNTS` and either `ORDER_FIELDS` or `ORDER_ADAPTER` are",
        "required; `python manage.py check` names any missing, unknown or misspelt key with its exact path",
        '(e.g. `POINTS_EARN["ACCOUNTS"]["main"]["API_KEY"]`). This page is generated from the defaults in',
        "`django_points_earn/conf.py` and in each platform's backend class (`django_points_earn/providers/`), so it",
        "always says what the code does.",
        "",
        "## Top level",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    for key, default in conf.DEFAULTS.items():
        if key == "ACCOUNTS":
            out.append(
                "| `ACCOUNTS` | — | name → account dict (below); one per merchant key, brand or branch; required |"
            )
            continue
        out.append(f"| `{key}` | {shown(default)} | {cell(top.get((key,), ''))} |")
        if isinstance(default, dict):
            for sub, value in default.items():
                out.append(f'| `{key}["{sub}"]` | {shown(value)} | {cell(top.get((key, sub), ""))} |')
    out += [
        "",
        "## `ORDER_FIELDS`",
        "",
        'Dotted paths from the order (`"customer.phone"`), read by the declarative adapter',
        "(`django_points_earn.adapters.FieldsAdapter`); the `line_` paths are read from each line.",
        "",
        "| key | default path | what it is |",
        "|---|---|---|",
    ]
    for key, (meaning, default) in ORDER_FIELD_KEYS.items():
        out.append(f"| `{key}` | {shown(default)} | {cell(meaning)} |")
    out += ["", "## Accounts", "", '`POINTS_EARN["ACCOUNTS"][name]`, for every platform:', ""]
    out += ["| key | default | meaning |", "|---|---|---|"]
    out += [f"| `{k}` | — | {cell(v)} |" for k, v in ACCOUNT_COMMON.items()]
    for name, path in BUILT_IN.items():
        backend = import_string(path)
        described = described_keys("defaults", Path(inspect.getsourcefile(backend)), backend.__name__)
        title = f'{backend.label} accounts (`"PROVIDER": "{name}"`)'
        out += ["", f"### {title}", "", "| key | default | meaning |", "|---|---|---|"]
        out += [f"| `{k}` | — | {cell(v)} |" for k, v in ACCOUNT_KEYS.get(name, {}).items()]
        for key, default in backend.defaults.items():
            meaning = described.get((key,), "")
            if key in backend.required_keys and "required" not in meaning:
                meaning = (meaning + "; required").lstrip("; ")
            out.append(f"| `{key}` | {shown(default)} | {cell(meaning)} |")
    out += [
        "",
        "Secrets (`API_KEY`, `CLIENT_SECRET`, `WEBHOOK_SECRET`) are read only from settings: take them from the",
        "environment. They never reach the database, a log line, an exception message or an admin page.",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/settings.md is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"docs/settings.md is stale: run `{REGENERATE}` and commit it.", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
