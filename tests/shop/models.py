"""A minimal shop for the tests: orders with lines, the way a shop's own models look."""

from decimal import Decimal

from django.db import models


class Order(models.Model):
    number = models.CharField(max_length=100, unique=True)
    phone = models.CharField(max_length=40, blank=True)
    customer_name = models.CharField(max_length=100, blank=True)
    paid = models.BooleanField(default=False)
    shipping = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))
    opted_out = models.BooleanField(default=False)
    account = models.CharField(max_length=64, default="main")

    def __str__(self) -> str:
        return self.number

    @property
    def total(self) -> Decimal:
        return sum((line.price * line.quantity for line in self.lines.all()), Decimal("0")) + self.shipping


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    quantity = models.IntegerField(default=1)

    def __str__(self) -> str:
        return self.name
