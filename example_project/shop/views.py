"""The customer's order page: the order, its loyalty points ({% points_for_order %}) and, once, the message
written when its points were awarded (shop.notices).

The example shop has no customer accounts, so the page is behind the admin login; a real shop shows it to the
signed-in customer who placed the order, and to nobody else.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.utils.translation import gettext as _

from .models import Order, OrderNotice


@staff_member_required
def order_page(request: HttpRequest, number: str) -> HttpResponse:
    order = get_object_or_404(Order.objects.select_related("customer").prefetch_related("lines"), number=number)
    notices = list(order.notices.filter(shown_at=None))
    for notice in notices:
        if notice.points is not None:
            text = _("You earned %(points)s loyalty points with this order.") % {"points": f"{notice.points:,.0f}"}
        else:
            text = _("You earned loyalty points with this order.")
        messages.success(request, text)
    OrderNotice.objects.filter(pk__in=[n.pk for n in notices]).update(shown_at=timezone.now())
    return render(request, "shop/order.html", {"order": order})
