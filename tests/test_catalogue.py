"""The Arabic catalogue is complete and compiled: every merchant-facing string has a translation, none is fuzzy,
the committed .mo says what the .po says, and the admin's own words come out in Arabic."""

import ast
import gettext
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import translation

from tests.conftest import ROOT

APP = ROOT / "django_points_earn"
PO = APP / "locale" / "ar" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")


def parse_po(path: Path) -> list[dict]:
    """Entries of a .po file: msgctxt, msgid, msgid_plural, msgstr (a list), flags. Enough for our catalogue."""
    entries, entry, key = [], None, None
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip():
            if entry:
                entries.append(entry)
            entry, key = None, None
            continue
        entry = entry or {"msgctxt": None, "msgid": "", "msgid_plural": None, "msgstr": {}, "flags": set()}
        if line.startswith("#,"):
            entry["flags"] |= {f.strip() for f in line[2:].split(",")}
            continue
        if line.startswith("#"):
            continue
        match = re.match(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+(".*")$', line)
        if match:
            key = ("msgstr", int(match.group(2) or 0)) if match.group(1).startswith("msgstr") else match.group(1)
            value = ast.literal_eval(match.group(3))
        else:
            value = ast.literal_eval(line.strip())
        if isinstance(key, tuple):
            entry["msgstr"][key[1]] = entry["msgstr"].get(key[1], "") + value
        else:
            entry[key] = (entry[key] or "") + value
    return [e for e in entries if e["msgid"]]


def test_every_string_is_translated_and_none_is_fuzzy():
    entries = parse_po(PO)
    assert len(entries) > 150
    untranslated = [e["msgid"] for e in entries if not all(e["msgstr"].values()) or not e["msgstr"]]
    fuzzy = [e["msgid"] for e in entries if "fuzzy" in e["flags"]]
    assert untranslated == []
    assert fuzzy == []


def test_the_compiled_catalogue_matches_the_source():
    with MO.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    for e in parse_po(PO):
        if e["msgid_plural"]:
            continue
        key = f"{e['msgctxt']}\x04{e['msgid']}" if e["msgctxt"] else e["msgid"]
        assert compiled._catalog.get(key) == e["msgstr"][0], f"django.mo is stale for {e['msgid']!r}"


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="xgettext (gettext) is not installed")
def test_no_source_string_is_missing_from_the_catalogue(tmp_path):
    """makemessages over a copy of the app finds no msgid the committed catalogue lacks."""
    copy = tmp_path / "django_points_earn"
    shutil.copytree(APP, copy, ignore=shutil.ignore_patterns("__pycache__", "*.mo"))
    subprocess.run(
        [sys.executable, "-m", "django", "makemessages", "-l", "ar", "--no-obsolete", "--no-location"],
        cwd=copy,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    fresh = {e["msgid"] for e in parse_po(copy / "locale" / "ar" / "LC_MESSAGES" / "django.po")}
    committed = {e["msgid"] for e in parse_po(PO) if "fuzzy" not in e["flags"]}
    assert sorted(fresh - committed) == []


def test_admin_words_in_arabic():
    from django_points_earn.admin_tools.actions import SPECS

    with translation.override("ar"):
        assert str(SPECS["retry"].title) == "إعادة الإرسال الآن"
        assert str(SPECS["verify"].title) == "التحقق لدى المنصة"
        assert translation.gettext("Reconciliation dashboard") == "لوحة المطابقة"
