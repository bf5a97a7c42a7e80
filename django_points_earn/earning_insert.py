"""Creating an earning inside the shop's transaction: exactly one INSERT at checkout, and a second signal for the
same order finds the first record (``INSERT … ON CONFLICT DO NOTHING RETURNING id``)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone

from .earning_states import INITIAL
from .models import EarningRecord, Kind, Status
from .outbox import TransitionError

log = logging.getLogger("django_points_earn")


def create(*, status: str, reason: str = "", **fields: Any) -> tuple[EarningRecord, bool]:
    """Insert the record; a second signal for the same order finds the first record.

    Nothing this INSERT raises may break the shop's transaction. A duplicate signal meets the unique
    ``(account, kind, order_number)`` constraint: ``INSERT … ON CONFLICT (…) DO NOTHING RETURNING id``
    returns no row, and the existing record is fetched. Any other error (NOT NULL, a value the database refuses)
    is raised: on PostgreSQL, where an error aborts the whole transaction, after rolling back to a savepoint sent in
    the same round trip; on SQLite a failed statement is undone on its own (:func:`_insert_once`). Elsewhere,
    Django's savepoint around a plain INSERT. The row itself (``created_at``, initial ``status``,
    ``status_reason``) is the audit of its creation, so checkout pays for exactly one INSERT.
    """
    if status not in INITIAL:
        raise TransitionError(f"a new earning cannot start as {status}")
    now = timezone.now()
    record = EarningRecord(
        status=status,
        status_reason=reason,
        next_attempt_at=now if status == Status.QUEUED else None,
        completed_at=None if status in (Status.QUEUED, Status.HELD) else now,
        **fields,
    )
    using = router.db_for_write(EarningRecord)
    inserted = _insert_once(connections[using], record)
    if inserted is None:  # see _insert_once: Django's savepoint, then a plain INSERT
        try:
            with transaction.atomic(using=using):
                record.save(force_insert=True, using=using)
            return record, True
        except IntegrityError:
            existing = _existing(using, fields)
            if existing is None:
                raise
            return existing, False
    if inserted:
        return record, True
    existing = _existing(using, fields)
    if existing is None:  # the row that conflicted is not visible to this transaction
        raise IntegrityError(f"earning {fields['account']}/{fields['order_number']} exists but cannot be read")
    return existing, False


def _existing(using: str, fields: dict[str, Any]) -> EarningRecord | None:
    return (
        EarningRecord.objects.using(using)
        .filter(account=fields["account"], kind=fields.get("kind", Kind.PURCHASE), order_number=fields["order_number"])
        .first()
    )


_SAVEPOINT = "points_earn_create"


def _insert_once(connection: Any, record: EarningRecord) -> bool | None:
    """``INSERT … ON CONFLICT (account, kind, order_number) DO NOTHING RETURNING id`` in one round trip. True: inserted
    (``record`` has its id); False: the order already has a record. Only the unique conflict is ignored (SQLite's
    ``INSERT OR IGNORE`` would also hide NOT NULL violations; this does not): any other error is raised.

    PostgreSQL, in a transaction: ``SAVEPOINT; INSERT …; RELEASE SAVEPOINT`` as one statement string, and a
    failed INSERT is rolled back to the savepoint before raising. That takes psycopg 3's client-side binding
    (Django's default); with server-side binding or psycopg 2 this returns ``None`` and the caller uses Django's
    savepoint (three round trips). SQLite (3.35+) undoes a failed statement by itself and keeps the transaction:
    no savepoint. Other databases: ``None``.
    """
    vendor = connection.vendor
    if vendor not in ("postgresql", "sqlite") or not connection.features.can_return_columns_from_insert:
        return None
    savepoint = vendor == "postgresql" and not connection.get_autocommit()
    with connection.cursor() as cursor:
        if savepoint and not _binds_client_side(cursor):
            return None
        sql, fields = _insert_sql(connection)
        params = [field.get_db_prep_save(field.pre_save(record, add=True), connection) for field in fields]
        if savepoint:
            sql = f"SAVEPOINT {_SAVEPOINT}; {sql}; RELEASE SAVEPOINT {_SAVEPOINT}"
        try:
            cursor.execute(sql, params)
        except Exception:
            if savepoint:
                _rollback_to_savepoint(connection)
            raise
        if savepoint:
            cursor.nextset()  # from the SAVEPOINT's result to the INSERT's
        row = cursor.fetchone()
    if row is None:
        return False
    record.pk = row[0]
    record._state.adding = False
    record._state.db = connection.alias
    return True


def _binds_client_side(cursor: Any) -> bool:
    """psycopg 3's client-side binding cursor (Django's default) takes several statements with parameters."""
    try:
        from psycopg import ClientCursor
    except ImportError:  # psycopg 2
        return False
    return isinstance(cursor.cursor, ClientCursor)


def _rollback_to_savepoint(connection: Any) -> None:
    """After a failed INSERT: only if the server saw an error. A value psycopg refuses before sending anything
    (e.g. a NUL character in a text column) leaves no savepoint, and rolling back to one would be an error."""
    from psycopg.pq import TransactionStatus

    if connection.connection.info.transaction_status != TransactionStatus.INERROR:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE SAVEPOINT {_SAVEPOINT}")
    except Exception:  # e.g. the connection is gone: the caller raises the first error
        log.exception("could not roll back to the savepoint of a failed earning INSERT")


_insert_sql_cache: dict[str, tuple[str, list[Any]]] = {}


def _insert_sql(connection: Any) -> tuple[str, list[Any]]:
    """The INSERT of a new record (every concrete field but the id), built once per database alias. Values are
    prepared by each field's own ``get_db_prep_save``, as Django's ``save()`` does."""
    cached = _insert_sql_cache.get(connection.alias)
    if cached is None:
        opts = EarningRecord._meta
        qn = connection.ops.quote_name
        fields = [f for f in opts.concrete_fields if not f.primary_key and not getattr(f, "generated", False)]
        unique = [opts.get_field(name).column for name in ("account", "kind", "order_number")]
        columns = ", ".join(qn(f.column) for f in fields)
        values = ", ".join(["%s"] * len(fields))
        conflict = ", ".join(qn(c) for c in unique)
        # Names from the model, values as parameters.
        sql = f"INSERT INTO {qn(opts.db_table)} ({columns}) VALUES ({values}) ON CONFLICT ({conflict}) DO NOTHING"  # noqa: S608
        sql += f" RETURNING {qn(opts.pk.column)}"
        cached = _insert_sql_cache[connection.alias] = (sql, fields)
    return cached
