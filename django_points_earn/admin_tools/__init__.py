"""The merchant admin's building blocks: list filters, a paginator that does not count a million rows, display
helpers, the actions and their confirmation pages, and the reconciliation dashboard. ``admin.py`` wires them up."""
