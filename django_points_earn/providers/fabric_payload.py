"""The body of fabric's ``POST /v2/earn``, built from the provider-neutral request with exact amounts.

fabric validates four identities (its earn reference; docs/platforms/fabric.md), with no documented rounding or
tolerance:

1. ``totalAmountPaid == transactionGrossAmount - discountValue``
2. ``netAmount == transactionGrossAmount - totalTax - discountValue``
3. per item ``itemPrice - itemDiscount / itemQuantity == item.netAmount / itemQuantity``
4. ``sum(item.grossAmount) == transactionGrossAmount``

Everything is a 2-place ``Decimal`` built so that they hold exactly: item ``netAmount = itemPrice * qty - discount``
(so 3 holds for any quantity), ``grossAmount = itemPrice * qty + tax``, and the header is summed from the items.
An order whose own amounts disagree (its total is not lines + shipping + tax - discount) is refused with the reason,
since no honest payload exists for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from django.utils import timezone

from ..conf import AccountConfig
from ..earning_request import CENTS, EarningRequest, InvalidEarningRequest, NothingToEarn
from ..phones import InvalidPhone, normalize_ksa_mobile
from .base import to_json_number

ZERO = Decimal("0.00")
# Keys of the stored payload that are ours, not fabric's: stripped before the POST.
MEMBER_PHONE_KEY = "_memberPhone"
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
_ARABIC_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")


@dataclass
class Item:
    name: str
    sku: str | None
    category: str | None
    unit_price: Decimal  # itemPrice: one unit, before discounts, without tax
    quantity: int
    discount: Decimal = ZERO
    tax: Decimal | None = None  # None until allocated

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.quantity

    @property
    def net(self) -> Decimal:
        return self.amount - self.discount

    @property
    def gross(self) -> Decimal:
        return self.amount + (self.tax or ZERO)


@dataclass
class Amounts:
    items: list[Item]
    gross: Decimal
    tax: Decimal
    discount: Decimal  # discountValue: every discount, the lines' included
    order_discount: Decimal  # the part not on any line (the header's discounts[])
    paid: Decimal
    net: Decimal


def compute_amounts(request: EarningRequest, account: AccountConfig) -> Amounts:
    """The items and header amounts of a validated request; :class:`InvalidEarningRequest` when impossible."""
    items = []
    for i, line in enumerate(request.lines):
        item = Item(str(line.name), line.sku, line.category, line.unit_price, line.quantity, line.discount or ZERO)
        if item.discount > item.amount:
            raise InvalidEarningRequest(
                f"line {i + 1} discount {item.discount} is more than the line's amount {item.amount}",
                field=f"lines.{i}.discount",
            )
        item.tax = line.tax
        items.append(item)
    merchandise = sum((item.amount for item in items), ZERO)
    shipping = request.shipping_amount or ZERO
    tax = request.tax_amount or ZERO
    line_discounts = sum((item.discount for item in items), ZERO)
    discount = request.discount_amount if request.discount_amount is not None else line_discounts
    if discount < line_discounts:
        raise InvalidEarningRequest(
            f"the order's discount {discount} is less than the discounts on its lines ({line_discounts})",
            field="discount_amount",
        )
    expected = merchandise + shipping + tax - discount
    if expected != request.total:
        raise InvalidEarningRequest(
            f"the order's amounts do not add up: lines {merchandise} + shipping {shipping} + tax {tax} - discount "
            f"{discount} = {expected}, but the total is {request.total} (fabric needs unit prices without tax)",
            field="total",
        )
    if shipping and account.option("SHIPPING") == "item":
        items.append(Item("Shipping", account.option("SHIPPING_SKU") or None, None, shipping, 1))
    sent_tax = _allocate_tax(items, tax, shipping_excluded=bool(shipping) and account.option("SHIPPING") != "item")
    gross = sum((item.gross for item in items), ZERO)
    net = gross - sent_tax - discount
    if net < 0:
        raise InvalidEarningRequest(
            f"the discount {discount} is more than the order's amount before tax ({gross - sent_tax})",
            field="discount_amount",
        )
    return Amounts(items, gross, sent_tax, discount, discount - line_discounts, gross - discount, net)


def _allocate_tax(items: list[Item], tax: Decimal, *, shipping_excluded: bool) -> Decimal:
    """Give every item its tax so that they add up to the tax sent. Returns that total.

    Lines that carry their own tax keep it; the rest of the order's tax is spread over the other items in
    proportion to their net amounts, to the cent (largest remainder), so the sum is exact.
    """
    known = sum((item.tax for item in items if item.tax is not None), ZERO)
    free = [item for item in items if item.tax is None]
    rest = tax - known
    if rest < 0:
        raise InvalidEarningRequest(
            f"the lines' tax ({known}) is more than the order's tax ({tax})", field="tax_amount"
        )
    if not free:
        if rest and not shipping_excluded:
            raise InvalidEarningRequest(
                f"the lines' tax ({known}) does not add up to the order's tax ({tax})", field="tax_amount"
            )
        return known  # with shipping left out, the difference is the shipping's tax, left out with it
    for item, share in zip(free, spread(rest, [item.net for item in free]), strict=True):
        item.tax = share
    return tax


def spread(amount: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """Split ``amount`` (2 places, >= 0) in proportion to ``weights``, to the cent, adding up exactly."""
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [Decimal(1)] * len(weights)
    cents = int((amount / CENTS).to_integral_value())
    total = sum(weights)
    exact = [Decimal(cents) * w / total for w in weights]
    shares = [int(x.to_integral_value(ROUND_FLOOR)) for x in exact]
    # The cents left over go to the largest fractions; ties to the earlier item, so the split is deterministic.
    order = sorted(range(len(weights)), key=lambda k: (shares[k] - exact[k], k))
    for k in order[: cents - sum(shares)]:
        shares[k] += 1
    return [(Decimal(share) * CENTS).quantize(CENTS) for share in shares]


def member_phone(phone: Any, style: str) -> str:
    """The phone as ``GET /v1/members?phonenumber=`` expects it: digits only, in the account's format."""
    if style == "as-given":
        digits = "".join(ch for ch in str(phone or "").translate(_ARABIC_DIGITS) if ch.isdigit())
        if not 1 <= len(digits) <= 16:
            raise InvalidEarningRequest(f"phone number has {len(digits)} digits; fabric takes 1 to 16", field="phone")
        return digits
    try:
        national = normalize_ksa_mobile(phone)
    except InvalidPhone as exc:
        raise InvalidEarningRequest(
            f"{exc} (the account's MEMBER_PHONE_FORMAT is {style!r}; 'as-given' takes other countries)", field="phone"
        ) from None
    return {"international": "966" + national, "local": "0" + national}.get(style, national)


def activity_timestamp(moment: datetime | None) -> str:
    """UTC, ``YYYY-MM-DD HH:MM:SS``: when the order was paid, else now (frozen in the payload at checkout)."""
    moment = moment or timezone.now()
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def build(request: EarningRequest, account: AccountConfig) -> dict[str, Any]:
    try:
        request.validate()
        nothing: NothingToEarn | None = None
    except NothingToEarn as exc:  # a total of 0; amounts that do not add up are still refused first, below
        nothing = exc
    amounts = compute_amounts(request, account)
    if nothing is not None:
        raise nothing
    if amounts.net == 0:
        raise NothingToEarn(
            f"the order's net amount (before tax, after discounts) is 0 (total {request.total}): fabric earns "
            "nothing on it, nothing sent",
            field="total",
        )
    payload: dict[str, Any] = {}
    if request.profile_id:
        payload["profileId"] = str(request.profile_id)
    elif request.phone:
        payload[MEMBER_PHONE_KEY] = member_phone(request.phone, account.option("MEMBER_PHONE_FORMAT"))
    else:
        raise InvalidEarningRequest("no fabric profileId and no phone number to find the member by", field="phone")
    payload.update(
        {
            "entityReference": str(account.option("ENTITY_REFERENCE")),
            "transactionTypeExternalReference": str(account.option("TRANSACTION_TYPE")),
            "activityTimestamp": activity_timestamp(request.paid_at),
            "transactionExternalReference": request.order_number,
            "transactionGrossAmount": to_json_number(amounts.gross),
            "checkForDuplicateTransaction": 1,  # always: resends after a lost answer must not earn twice
            "fetchUpdatedMemberPointTotals": 1 if account.option("FETCH_UPDATED_TOTALS") else 0,
            "totalAmountPaid": to_json_number(amounts.paid),
            "discountValue": _discount_value(amounts.discount, account.option("DISCOUNT_VALUE_AS")),
            "totalTax": to_json_number(amounts.tax),
            "netAmount": to_json_number(amounts.net),
        }
    )
    if account.option("ISSUE_AUDIT_USER"):
        payload["issueAuditUser"] = str(account.option("ISSUE_AUDIT_USER"))[:200]
    if amounts.order_discount:
        payload["discounts"] = [_discount("order discount", amounts.order_discount)]
    payload["transactionItems"] = [_item(n, item, account) for n, item in enumerate(amounts.items)]
    payload["setToPending"] = bool(account.option("SET_TO_PENDING"))
    return payload


def _discount_value(discount: Decimal, style: str) -> int | float | None:
    if style == "number":
        return to_json_number(discount)
    if discount != discount.to_integral_value():
        raise InvalidEarningRequest(
            f"the discount {discount} has cents, but fabric types discountValue as an integer "
            "(DISCOUNT_VALUE_AS is 'integer'; set it to 'number' once fabric confirms decimals are accepted)",
            field="discount_amount",
        )
    return int(discount)


def _discount(description: str, value: Decimal) -> dict[str, Any]:
    return {"type": "discount", "description": description, "value": to_json_number(value)}


def _item(number: int, item: Item, account: AccountConfig) -> dict[str, Any]:
    body: dict[str, Any] = {
        "lineNumber": number,
        "itemName": item.name[:255],
        "itemPrice": to_json_number(item.unit_price),
        "itemQuantity": item.quantity,
        "grossAmount": to_json_number(item.gross),
        "taxAmount": to_json_number(item.tax or ZERO),
        "netAmount": to_json_number(item.net),
        "totalAmountPaid": to_json_number(item.gross - item.discount),
    }
    if item.sku:
        body["SKU"] = str(item.sku)  # upper-case keys, as fabric spells them; the values as the shop has them
    body["UOM"] = str(account.option("UOM") or "unit")
    if item.category:
        body["categories"] = [str(item.category)]
    if item.discount:
        body["discounts"] = [_discount("line discount", item.discount)]
    return body
