"""What the Points sandbox accepts: the phone rule and the validation of §2.1 (Laravel's rules and messages)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from .points_wire import INVALID_PHONE

_NUMERIC = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)  # PHP is_numeric: ASCII only
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)


def normalize_phone(raw: str) -> str | None:
    """The contract's server-side rule: drop one of +966 / 00966 / 966 / a leading 0, expect ``5\\d{8}``.

    Deliberately stricter than a client should be (no spaces or dashes): that is what the docs describe.
    """
    for prefix in ("+966", "00966", "966", "0"):
        if raw.startswith(prefix):
            raw = raw[len(prefix) :]
            break
    return raw if re.fullmatch(r"5[0-9]{8}", raw) else None


def _label(key: str) -> str:
    """``products.0.product_price`` -> ``product price`` (the attribute name in the message)."""
    return key.rsplit(".", 1)[-1].replace("_", " ")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, list | dict) and not value)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMERIC.fullmatch(value)):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


class Rules:
    """Collects errors per dot-path key, first failing rule only per field (like ``bail``)."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def fail(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)

    def required(self, key: str, value: Any) -> bool:
        if _missing(value):
            self.fail(key, f"The {_label(key)} field is required.")
            return False
        return True

    def string(self, key: str, value: Any, max_length: int | None = None) -> str | None:
        if not isinstance(value, str):
            self.fail(key, f"The {_label(key)} must be a string.")
            return None
        if max_length is not None and len(value) > max_length:
            self.fail(key, f"The {_label(key)} must not be greater than {max_length} characters.")
            return None
        return value

    def phone(self, data: dict[str, Any], clean: dict[str, Any]) -> None:
        """``phone_number``: required, a string, in one of the documented forms (kept normalised in ``clean``)."""
        phone = data.get("phone_number")
        if self.required("phone_number", phone) and self.string("phone_number", phone) is not None:
            clean["phone_number"] = normalize_phone(phone)
            if clean["phone_number"] is None:
                self.fail("phone_number", INVALID_PHONE)

    def numeric(self, key: str, value: Any, minimum: int = 0) -> Decimal | None:
        number = _number(value)
        if number is None:
            self.fail(key, f"The {_label(key)} must be a number.")
            return None
        if number < minimum:
            self.fail(key, f"The {_label(key)} must be at least {minimum}.")
            return None
        return number

    def integer(self, key: str, value: Any, minimum: int) -> int | None:
        number = _integer(value)
        if number is None:
            self.fail(key, f"The {_label(key)} must be an integer.")
            return None
        if number < minimum:
            self.fail(key, f"The {_label(key)} must be at least {minimum}.")
            return None
        return number

    def array(self, key: str, value: Any) -> bool:
        if not isinstance(value, dict):
            self.fail(key, f"The {_label(key)} must be an array.")
            return False
        return True


def validate_earning(data: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The ``EarningOrderRequest`` rules of §2.1. Returns (errors, cleaned data)."""
    r = Rules()
    clean: dict[str, Any] = {}

    r.phone(data, clean)

    total = data.get("total_price")
    if r.required("total_price", total):
        clean["total_price"] = r.numeric("total_price", total)

    number = data.get("order_number")
    if r.required("order_number", number):
        clean["order_number"] = r.string("order_number", number)

    products = data.get("products")
    clean["items"] = []
    if r.required("products", products):
        if not isinstance(products, list):
            r.fail("products", "The products must be an array.")
        else:
            for i, item in enumerate(products):
                item = item if isinstance(item, dict) else {}
                line = {}
                for name in ("product_name", "product_price", "quantity"):
                    key, value = f"products.{i}.{name}", item.get(name)
                    if not r.required(key, value):
                        continue
                    if name == "product_name":
                        line[name] = r.string(key, value)
                    elif name == "product_price":
                        line[name] = r.numeric(key, value)
                    else:
                        line[name] = r.integer(key, value, 1)
                clean["items"].append(line)

    if data.get("name") is not None:
        clean["name"] = r.string("name", data["name"], 255)
    for name in ("shipping_amount", "tax_amount", "discount_amount"):
        if data.get(name) is not None:
            clean[name] = r.numeric(name, data[name])
    address = data.get("shipping_address")
    if address is not None and r.array("shipping_address", address):
        for name, limit in (("city", 100), ("line1", 255)):
            if address.get(name) is not None:
                r.string(f"shipping_address.{name}", address[name], limit)
    metadata = data.get("metadata")
    if metadata is not None:
        r.array("metadata", metadata)
    clean["metadata"] = metadata
    return r.errors, clean


def optional_number(data: dict[str, Any], key: str, errors: dict[str, list[str]]) -> Decimal | None:
    if data.get(key) is None:
        return None
    r = Rules()
    number = r.numeric(key, data[key])
    errors.update(r.errors)
    return number


def optional_string(data: dict[str, Any], key: str, limit: int, errors: dict[str, list[str]]) -> str | None:
    if data.get(key) is None:
        return None
    r = Rules()
    text = r.string(key, data[key], limit)
    errors.update(r.errors)
    return text
