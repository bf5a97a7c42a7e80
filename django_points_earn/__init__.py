"""Award loyalty points for every paid order exactly once (Points, fabric Loyalty)."""

__version__ = "0.1.0"
