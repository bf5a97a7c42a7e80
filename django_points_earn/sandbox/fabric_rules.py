"""What the fabric sandbox accepts: request parsing, the validation rules and the four identities, the envelope.

The messages follow Django REST framework's wording (fabric's ``errors`` is "a dictionary of lists", inferred to
be DRF's shape); the rules are those of fabric's reference (docs/platforms/fabric.md), and where it is silent
the choice is said here.
"""

from __future__ import annotations

import base64
import json
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from .response import SandboxResponse, load_json
from .response import as_bytes as as_bytes  # fabric_rules.as_bytes: the name it always had

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
CENT = Decimal("0.01")
_JSON = {"Content-Type": "application/json"}


def parse_object(body: bytes) -> tuple[dict[str, Any], SandboxResponse | None]:
    if not body.strip():
        return {}, None
    try:
        data = load_json(body)
    except (ValueError, UnicodeDecodeError):
        return {}, envelope(400, "JSON parse error.", {"non_field_errors": ["The body is not valid JSON."]})
    if not isinstance(data, dict):
        return {}, envelope(400, "Invalid data.", {"non_field_errors": ["Expected a JSON object."]})
    return data, None


def credentials_body(content_type: str, body: bytes) -> tuple[dict[str, Any], str]:
    """The token request's fields, and how they were sent (``form`` or ``json``)."""
    if "json" in content_type.lower():
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            return {}, "json"
        return (data if isinstance(data, dict) else {}), "json"
    fields = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace"), keep_blank_values=True).items()}
    return fields, "form"


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, sep, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return ("", "")
    return (client_id, secret) if sep else ("", "")


class _Checker:
    """Collects DRF-style errors per dot-path field (first failing rule per field)."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def fail(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)

    def string(self, data: dict, key: str, low: int, high: int | None, path: str = "", required: bool = True):
        value, name = data.get(key), path + key
        if value is None:
            if required:
                self.fail(name, "This field is required.")
            return None
        if not isinstance(value, str):
            self.fail(name, "Not a valid string.")
            return None
        if len(value) < low:
            self.fail(name, f"Ensure this field has at least {low} characters.")
            return None
        if high is not None and len(value) > high:
            self.fail(name, f"Ensure this field has no more than {high} characters.")
            return None
        return value

    def number(self, data: dict, key: str, *, path: str = "", sign: int = 1, integer: bool = False, required=True):
        value, name = data.get(key), path + key
        if value is None:
            if required:
                self.fail(name, "This field is required.")
            return None
        number = _decimal(value)
        if number is None:
            self.fail(name, "A valid number is required.")
            return None
        if integer and number != number.to_integral_value():
            self.fail(name, "A valid integer is required.")
            return None
        if sign > 0 and number < 0:
            self.fail(name, "Ensure this value is greater than or equal to 0.")
            return None
        if sign < 0 and number > 0:
            self.fail(name, "Ensure this value is less than or equal to 0.")
            return None
        return number

    def flag(self, data: dict, key: str) -> int | None:
        value = data.get(key)
        if value is None:
            self.fail(key, "This field is required.")
            return None
        if isinstance(value, bool) or value not in (0, 1):  # an integer, not a JSON boolean
            self.fail(key, "Must be the integer 0 or 1.")
            return None
        return int(value)

    def boolean(self, data: dict, key: str) -> bool | None:
        value = data.get(key)
        if value is not None and not isinstance(value, bool):
            self.fail(key, "Must be a valid boolean.")
            return None
        return value


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, ROUND_HALF_UP)


def _header(c: _Checker, data: dict[str, Any], *, sign: int, reverse: bool, discount_integer: bool) -> dict:
    clean: dict[str, Any] = {"raw": data}
    short = (3, 15) if reverse else (1, 100)  # the reverse page limits these two to 3-15 characters
    clean["profileId"] = c.string(data, "profileId", 1, 100)
    clean["entityReference"] = c.string(data, "entityReference", *short)
    clean["transactionTypeExternalReference"] = c.string(data, "transactionTypeExternalReference", *short)
    stamp = c.string(data, "activityTimestamp", 1, None)
    if stamp is not None and not TIMESTAMP.fullmatch(stamp):
        c.fail("activityTimestamp", "Use the format YYYY-MM-DD HH:MM:SS (UTC).")
    clean["activityTimestamp"] = stamp
    clean["transactionExternalReference"] = c.string(data, "transactionExternalReference", 1, 100)
    clean["checkForDuplicateTransaction"] = c.flag(data, "checkForDuplicateTransaction")
    clean["fetchUpdatedMemberPointTotals"] = c.flag(data, "fetchUpdatedMemberPointTotals")
    for key in ("transactionGrossAmount", "totalAmountPaid", "totalTax", "netAmount"):
        clean[key] = c.number(data, key, sign=sign)
    if reverse and data.get("discountValue") is None and "discountValue" in data:
        clean["discountValue"] = Decimal(0)  # number | null on the reverse page
    else:
        clean["discountValue"] = c.number(data, "discountValue", sign=sign, integer=discount_integer)
    clean["setToPending"] = c.boolean(data, "setToPending")
    c.string(data, "issueAuditUser", 1, 200, required=False)
    _discounts(c, data.get("discounts"), "discounts")
    return clean


def _discounts(c: _Checker, value: Any, name: str) -> Decimal:
    if value is None:
        return Decimal(0)
    if not isinstance(value, list):
        c.fail(name, f'Expected a list of items but got type "{type(value).__name__}".')
        return Decimal(0)
    total = Decimal(0)
    for i, discount in enumerate(value):
        if not isinstance(discount, dict):
            c.fail(f"{name}.{i}", "Invalid data. Expected a dictionary.")
            continue
        total += c.number(discount, "value", path=f"{name}.{i}.") or 0
    return total


def _items(c: _Checker, data: dict[str, Any]) -> list[dict[str, Any]]:
    items = data.get("transactionItems")
    if items is None:
        return []
    if not isinstance(items, list):
        c.fail("transactionItems", "Expected a list of items.")
        return []
    clean = []
    for i, item in enumerate(items):
        path = f"transactionItems.{i}."
        if not isinstance(item, dict):
            c.fail(path.rstrip("."), "Invalid data. Expected a dictionary.")
            continue
        for lower, upper in (("sku", "SKU"), ("uom", "UOM")):
            if lower in item:
                c.fail(path + lower, f"Unknown field; fabric spells it {upper}.")
        row = {key: c.number(item, key, path=path) for key in ("grossAmount", "netAmount", "itemPrice")}
        row["taxAmount"] = c.number(item, "taxAmount", path=path, required=False) or Decimal(0)
        quantity = c.number(item, "itemQuantity", path=path)
        if quantity is not None and quantity <= 0:
            c.fail(path + "itemQuantity", "Ensure this value is greater than 0.")
            quantity = None
        row["itemQuantity"] = quantity
        row["discount"] = _discounts(c, item.get("discounts"), path + "discounts")
        for key in ("SKU", "UOM", "itemName"):
            c.string(item, key, 1, 255, path=path, required=False)
        clean.append(row)
    return clean


def _identities(c: _Checker, clean: dict[str, Any], items: list[dict[str, Any]]) -> None:
    """The four formulas of the earn page, each side rounded to 2 places and compared exactly."""
    gross, paid, tax = clean["transactionGrossAmount"], clean["totalAmountPaid"], clean["totalTax"]
    net, discount = clean["netAmount"], clean["discountValue"]
    if _round(paid) != _round(gross - discount):
        c.fail("totalAmountPaid", f"Amount Paid must equal Gross Amount - Discounts ({gross} - {discount}).")
    if _round(net) != _round(gross - tax - discount):
        c.fail("netAmount", f"Net Amount must equal Gross Amount - Taxes - Discounts ({gross} - {tax} - {discount}).")
    for i, item in enumerate(items):
        price, qty = item["itemPrice"], item["itemQuantity"]
        if _round(price - item["discount"] / qty) != _round(item["netAmount"] / qty):
            c.fail(
                f"transactionItems.{i}.netAmount",
                "Item Price - (Discount / Quantity) must equal Net Amount / Quantity.",
            )
    if _round(sum((item["grossAmount"] for item in items), Decimal(0))) != _round(gross):
        c.fail(
            "transactionGrossAmount",
            "The total of all Transaction Items' Gross Amount must equal the Total Gross Amount.",
        )


def validate_earn(data: dict[str, Any], discount_value_as: str) -> tuple[dict[str, list[str]], dict[str, Any]]:
    c = _Checker()
    clean = _header(c, data, sign=1, reverse=False, discount_integer=discount_value_as == "integer")
    items = _items(c, data)
    if not c.errors:
        _identities(c, clean, items)
    return c.errors, clean


def validate_reverse(data: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    c = _Checker()
    clean = _header(c, data, sign=-1, reverse=True, discount_integer=False)
    clean["reverseTransactionExternalRef"] = c.string(data, "reverseTransactionExternalRef", 1, 100)
    _items(c, data)  # positive item amounts in the example: shapes checked, no identities across the signs
    if not c.errors:
        gross, tax, discount = clean["transactionGrossAmount"], clean["totalTax"], clean["discountValue"]
        if _round(clean["totalAmountPaid"]) != _round(gross - discount):
            c.fail("totalAmountPaid", "Amount Paid must equal Gross Amount - Discounts.")
        if _round(clean["netAmount"]) != _round(gross - tax - discount):
            c.fail("netAmount", "Net Amount must equal Gross Amount - Taxes - Discounts.")
    return c.errors, clean


def paging(query: dict[str, str], errors: dict[str, list[str]]) -> tuple[int, int]:
    values = []
    for key, default in (("offset", 0), ("limit", 20)):
        raw = query.get(key, str(default))
        if not raw.isdigit():
            errors[key] = ["A valid integer is required."]
            values.append(default)
        else:
            values.append(int(raw))
    return values[0], values[1]


# -- the wire format --------------------------------------------------------------------------------------


def json_response(status: int, payload: Any) -> SandboxResponse:
    return SandboxResponse(status, dict(_JSON), json.dumps(payload, ensure_ascii=False).encode())


def envelope(
    status: int, message: str, errors: dict[str, list[str]] | None = None, data: Any = None
) -> SandboxResponse:
    """fabric's envelope on every answer: ``{status, message, errors, data}``."""
    return json_response(status, {"status": status, "message": message, "errors": errors or {}, "data": data})


def oauth_error(status: int, error: str, description: str) -> SandboxResponse:
    return json_response(status, {"error": error, "error_description": description})
