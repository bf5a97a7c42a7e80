"""How the Points sandbox shows what it stores: the OrderResource, the pending-customer shape, a webhook's
``order``, and a merchant's ledger."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from .points_state import Order, Pending, PointsMerchant, iso, since


def order_resource(order: Order, now: datetime) -> dict[str, Any]:
    """The ``OrderResource`` of §2.3, with every documented field."""
    return {
        "id": order.id,
        "uuid": order.uuid,
        "reference_number": order.reference_number,
        "order_status": order.status,
        "order_number": order.order_number,
        "type": 1,
        "total_price": float(order.total_price),
        "total_points": order.total_points,
        "metadata": order.data.get("metadata"),
        "status": 1,
        "status_label": "New",
        "custom_status": None,
        "settlement_status": None,
        "date": order.created_at.strftime("%Y-%m-%d"),
        "time": order.created_at.strftime("%H:%M:%S"),
        "since": since(order.created_at, now),
        "items": [
            {
                "product_name": i["product_name"],
                "product_price": float(i["product_price"]),
                "quantity": i["quantity"],
            }
            for i in order.data.get("items", [])
        ],
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
    }


def pending_resource(p: Pending | None) -> dict[str, Any]:
    assert p is not None
    return {
        "pending_client_activation": True,
        "pending_earning_order": {
            "id": p.id,
            "merchant_order_number": p.order_number,
            "total_price": float(p.total_price),
            "total_points": p.total_points,
        },
    }


def webhook_order(order: Order) -> dict[str, Any]:
    """The ``order`` of a webhook payload (§8.3): ``id`` is the uuid and ``type`` a string."""
    return {
        "id": order.uuid,
        "reference_number": order.reference_number,
        "order_number": order.order_number,
        "type": "earning",
        "order_status": order.status,
        "total_price": float(order.total_price),
        "total_points": order.total_points,
        "payment_status": "fully_paid",
        "metadata": order.data.get("metadata"),
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
    }


def merchant_ledger(m: PointsMerchant) -> dict[str, Any]:
    orders = {}
    for number, created in m.orders.items():
        last = created[-1]
        orders[number] = {
            "channel": created[0].data.get("channel", "purchase"),
            "awards": len(created),
            "uuid": created[0].uuid,
            "uuids": [o.uuid for o in created],
            "reference_number": created[0].reference_number,
            "phone_number": created[0].phone_number,
            "total_price": float(created[0].total_price),
            "points": created[0].total_points,
            "points_awarded": sum(o.total_points for o in created),
            "status": last.status,
            "refunded_amount": float(sum((o.refunded_amount for o in created), Decimal(0))),
            "refunded_points": sum(o.refunded_points for o in created),
        }
    return {
        "calls": m.calls,
        "overlaps": m.overlaps,
        "max_concurrency": m.max_concurrency,
        "in_flight": m.in_flight,
        "forbidden": m.forbidden is not None,
        "responses": dict(m.responses),
        "faults": dict(m.faults),
        "awards": sum(len(created) for created in m.orders.values()),
        "points_awarded": sum(o.total_points for created in m.orders.values() for o in created),
        "points_refunded": sum(o.refunded_points for created in m.orders.values() for o in created),
        "orders": orders,
        "pending": [
            {
                "id": p.id,
                "channel": p.data.get("channel", "purchase"),
                "order_number": p.order_number,
                "phone_number": p.phone_number,
                "total_price": float(p.total_price),
                "total_points": p.total_points,
            }
            for p in m.pending
        ],
    }
