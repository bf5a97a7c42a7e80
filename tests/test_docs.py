"""The documentation cannot drift from the code: the README's "try it locally" block is run in a fresh
`startproject` and must end in an award, the settings reference is what the code generates, the README stays short
and says what the code does, and every Python block of the docs at least compiles."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"


def try_block() -> str:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- --8<-- [start:try] -->", 1)[1].split("<!-- --8<-- [end:try] -->", 1)[0]
    return re.search(r"```sh\n(.*?)```", block, re.S).group(1)


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_settings_reference_is_generated_from_the_code():
    from scripts.settings_reference import PAGE, REGENERATE, render

    assert PAGE.read_text(encoding="utf-8") == render(), (
        f"docs/settings.md is stale (a setting changed in django_points_earn/conf.py or adapters.ORDER_FIELD_KEYS): "
        f"run `{REGENERATE}` (or `make docs`) and commit docs/settings.md."
    )


def test_the_readme_is_short_and_current():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) <= 10 * 1024
    assert "(coming)" not in text  # issue 16.11: the approved webhook exists
    assert "env(" not in text  # issue 16.4: plain os.environ works after `pip install`, django-environ is optional
    assert "LocaleMiddleware" in text  # issue 16.5: Arabic needs it
    assert text.count("class ShopOrderAdapter") <= 1  # issue 16.6: one adapter example, not two
    for link in re.findall(r"\]\(((?:docs/|CHANGELOG)[^)#]*)", text):
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_docs_say_what_arabic_needs_and_show_one_adapter():
    assert "LocaleMiddleware" in (DOCS / "installation.md").read_text(encoding="utf-8")
    assert "LocaleMiddleware" in (DOCS / "admin.md").read_text(encoding="utf-8")
    adapter = (DOCS / "adapter.md").read_text(encoding="utf-8")
    assert adapter.count("class ShopOrderAdapter") == 1


def test_no_source_cites_a_document_that_is_not_in_the_repository():
    """Issue 16.11: base.py and conf.py cited design notes that were never in the repository."""
    cited = set()
    for path in (ROOT / "django_points_earn").rglob("*.py"):
        for name in re.findall(r"[\w./-]+\.md\b", path.read_text(encoding="utf-8")):
            cited.add((path.relative_to(ROOT), name))
    missing = [(str(path), name) for path, name in cited if not (ROOT / name).exists()]
    assert not missing, f"cited but not in the repository: {missing}"


@pytest.mark.parametrize(
    "page", [Path("../README.md"), *sorted(p.relative_to(DOCS) for p in DOCS.rglob("*.md"))], ids=str
)
def test_every_python_block_of_the_docs_compiles(page):
    for block in python_blocks(DOCS / page):
        compile(block, str(page), "exec")


def test_the_declarative_settings_of_the_adapter_page_pass_check():
    from django.test import override_settings

    from django_points_earn.checks import check_settings

    block = next(b for b in python_blocks(DOCS / "adapter.md") if "ORDER_FIELDS" in b)
    from django.conf import settings

    namespace = {"POINTS_EARN": {**settings.POINTS_EARN}}
    namespace["POINTS_EARN"].pop("ORDER_ADAPTER")
    exec(block, namespace)  # noqa: S102 (our own documentation)
    with override_settings(POINTS_EARN=namespace["POINTS_EARN"]):
        assert check_settings() == []


@pytest.mark.slow
def test_the_try_it_locally_block_awards_an_order_in_a_fresh_project(tmp_path, redis_server):
    """The README's block, pasted into a fresh `django-admin startproject`: it must end in an awarded earning.
    Only the ports differ (a free one for the sandbox, the suite's Redis), so it can run beside anything."""
    port = free_port()
    block = try_block().replace("8765", str(port))
    bindir = str(Path(sys.executable).parent)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")},
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/5",
    }
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "shopsite"], cwd=tmp_path, env=env, check=True, timeout=60
    )
    project = tmp_path / "shopsite"
    log = tmp_path / "block.log"
    with log.open("w") as output:  # a file, not a pipe: the background processes keep their stdout open
        proc = subprocess.Popen(
            ["bash", "-e", "-c", block],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the block's background sandbox and worker share its process group
        )
    try:
        proc.wait(timeout=180)
        out = log.read_text()
        assert proc.returncode == 0, out
        assert "System check identified no issues" in out, out
        query = (
            "from django_points_earn.models import EarningRecord as E; "
            "print(list(E.objects.values_list('order_number', 'status')))"
        )
        deadline = time.monotonic() + 60
        while "('A-1001', 'awarded')" not in out:  # the block waited 5 s; a slow machine gets longer
            assert time.monotonic() < deadline, out + log.read_text()
            time.sleep(1)
            out = subprocess.run(
                [sys.executable, "manage.py", "shell", "-c", query],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
