"""Merchants read Arabic first: the states and the admin's words are translated."""

from django.utils import translation

from django_points_earn.models import EarningRecord, Status


def test_states_and_labels_in_arabic():
    with translation.override("ar"):
        assert str(Status.AWARDED.label) == "مُنحت"
        assert str(Status.PENDING_ACTIVATION.label) == "بانتظار تفعيل العميل"
        assert str(EarningRecord._meta.verbose_name_plural) == "عمليات اكتساب النقاط"
        assert str(EarningRecord._meta.get_field("order_number").verbose_name) == "رقم الطلب"
