"""PostgreSQL's hot path through the outbox machine: an earning claimed, its attempt written and its answer recorded
in three statements instead of nine. The raw SQL of the drain lives here, and nowhere else.

The ORM code (:class:`~django_points_earn.outbox.Machine`, :mod:`~django_points_earn.lifecycle`) is the reference
behaviour and what every other database runs; this module writes the same rows from the same values, and keeps every
guarantee of the machine:

1. :func:`claim_next`: ``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED) RETURNING *`` takes the account's
   oldest due earning, only if the account's gate is clear (not paused, not busy, no resend owed): exactly one
   claimant wins, as with the ORM's conditional UPDATE.
2. ``INSERT … SELECT`` its attempt row, numbered on the timeline (max + 1), its body stored unless the previous
   attempt sent the same (compared by SHA-256): committed with the claim, before the call.
3. :func:`finish_and_move`: one data-modifying CTE closes the attempt, makes the move (conditional on the state and
   the lease token) and inserts its audit entry, and says whether a row waits for the one that moved.

Every value of time comes from the caller (``timezone.now()``, as for the ORM path), never from the database's
clock: a test that moves the clock, the sweep and this path agree. Names come from the models' ``_meta`` and
values are always parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, router, transaction
from django.db.models import Field, Model, Q
from django.db.models.sql import Query

from .attempts import payload_digest
from .models import AccountState, EarningAttempt, EarningEvent, EarningRecord, Status


def in_use() -> bool:
    """Whether the outbox's writes take this path (PostgreSQL) rather than the ORM's."""
    return _connection().vendor == "postgresql"


def _connection(model: type[Model] = EarningRecord) -> Any:
    return connections[router.db_for_write(model)]


# -- 1 and 2: the claim and its attempt row ----------------------------------------------------------------------------
def _cursor(conn: Any) -> Any:
    """A cursor for the hot path's statements: Django's own (its execute wrappers and query log see them, its time
    zone handling applies), but binding the parameters on the server. psycopg's client-side binding, Django's
    default, renders every value into the SQL text in Python, and for these wide statements that cost more CPU than
    the rest of an earning's bookkeeping (docs/capacity.md). Nothing is prepared (safe behind PgBouncer); a shop that
    sets Django's ``server_side_binding`` and ``prepare_threshold`` gets that as well. psycopg 2: Django's cursor."""
    try:
        from django.db.backends.postgresql.base import ServerBindingCursor
    except ImportError:  # psycopg 2
        return conn.cursor()
    conn.ensure_connection()
    raw = conn.connection
    original, raw.cursor_factory = raw.cursor_factory, ServerBindingCursor  # this thread's connection only
    try:
        return conn.cursor()
    finally:
        raw.cursor_factory = original


def claim_next(
    account: str, *, now: datetime, token: str, lease_seconds: float, trigger: str, actor: str = ""
) -> tuple[EarningRecord, EarningAttempt] | None:
    """Claim ``account``'s next due earning under ``token`` and write its attempt row: two statements, in the
    caller's transaction (one of its own if there is none, committed on return).

    Due: ``queued``, ``next_attempt_at <= now``; the oldest due first, by ``(next_attempt_at, id)``, one that
    another transaction holds skipped; claimed only if it has a body to send. Only while the account's gate is
    clear: no AccountState row, or one neither paused, nor busy until after ``now``, nor owing a resend. ``None``
    when nothing qualifies; the caller then takes the general path, which says why (paused, busy, the resend owed,
    a record without a body: rejected there, so the next one comes through here again).
    The instances returned are built from the rows the statements return: nothing is read again.
    """
    conn = _connection()
    claim_sql, record_fields, converters = _claim_statement(conn)
    params = {
        "sending": Status.SENDING,
        "queued": Status.QUEUED,
        "token": token,
        "expires": now + timedelta(seconds=lease_seconds),
        "now": now,
        "account": account,
    }
    with transaction.atomic(using=conn.alias, savepoint=False), _cursor(conn) as cursor:
        cursor.execute(claim_sql, params)
        row = cursor.fetchone()
        if row is None:
            return None
        record = _instance(conn, EarningRecord, record_fields, converters, row)
        attempt = EarningAttempt(
            record_id=record.pk,
            number=0,  # numbered by the INSERT
            trigger=trigger,
            actor=actor[:150],
            request_sha256=payload_digest(record.payload),
            started_at=now,
        )
        insert_sql, attempt_fields = _attempt_statement(conn)
        values = [f.get_db_prep_save(f.pre_save(attempt, add=True), conn) for f in attempt_fields]
        cursor.execute(insert_sql, [*values, attempt.request_sha256, record.pk])
        attempt.pk, attempt.number, body_left_out = cursor.fetchone()
    attempt.request_body = None if body_left_out else record.payload
    attempt._state.adding, attempt._state.db = False, conn.alias
    return record, attempt


# What a returned column goes through to become the instance's value (as the ORM converts what it reads).
Converters = list[tuple[list[Callable[..., Any]], Any]]
# Built once per database alias (names only: the statements hold no value).
_claims: dict[str, tuple[str, list[Field], Converters]] = {}
_inserts: dict[str, tuple[str, list[Field]]] = {}


def _claim_statement(conn: Any) -> tuple[str, list[Field], Converters]:
    """The claim, built once per database alias: its SQL, the record's columns it returns, their converters."""
    if conn.alias not in _claims:
        qn, r, g = conn.ops.quote_name, EarningRecord._meta, AccountState._meta

        def c(meta: Any, name: str) -> str:
            return qn(meta.get_field(name).column)

        fields = list(r.concrete_fields)
        returning = ", ".join(qn(f.column) for f in fields)
        # The gate is checked inside the subselect: a closed gate locks no row. The oldest due row is chosen whatever
        # its body, as the ORM path chooses it; the UPDATE then requires one, so a row without a body goes to the
        # general path (which rejects it) instead of being passed over. The UPDATE repeats the state: a row that
        # moved on between the subselect's snapshot and its lock is not claimed.
        sql = (
            f"UPDATE {qn(r.db_table)} SET {c(r, 'status')} = %(sending)s, {c(r, 'lease_token')} = %(token)s, "  # noqa: S608 (names from _meta, values as parameters)
            f"{c(r, 'lease_expires_at')} = %(expires)s, {c(r, 'updated_at')} = %(now)s "
            f"WHERE {c(r, 'id')} = ("
            f"SELECT {c(r, 'id')} FROM {qn(r.db_table)} "
            f"WHERE {c(r, 'account')} = %(account)s AND {c(r, 'status')} = %(queued)s "
            f"AND {c(r, 'next_attempt_at')} <= %(now)s "
            f"AND NOT EXISTS (SELECT 1 FROM {qn(g.db_table)} WHERE {c(g, 'account')} = %(account)s "
            f"AND ({c(g, 'paused')} OR {c(g, 'busy_until')} > %(now)s OR {c(g, 'resend_first')} IS NOT NULL)) "
            f"ORDER BY {c(r, 'next_attempt_at')}, {c(r, 'id')} LIMIT 1 FOR UPDATE SKIP LOCKED"
            f") AND {c(r, 'status')} = %(queued)s AND {c(r, 'payload')} IS NOT NULL "
            f"RETURNING {returning}"
        )
        columns = [f.get_col(r.db_table) for f in fields]
        converters = [
            (conn.ops.get_db_converters(col) + f.get_db_converters(conn), col)
            for f, col in zip(fields, columns, strict=True)
        ]
        _claims[conn.alias] = (sql, fields, converters)
    return _claims[conn.alias]


def _attempt_statement(conn: Any) -> tuple[str, list[Field]]:
    """The attempt's INSERT, built once per alias: every column from the instance but the number and the body, which
    the statement computes from the timeline's last attempt; then the digest to compare and the record's id."""
    if conn.alias not in _inserts:
        qn, a, r = conn.ops.quote_name, EarningAttempt._meta, EarningRecord._meta
        computed = ("number", "request_body")
        fields = [f for f in a.concrete_fields if not f.primary_key and f.name not in computed]
        number, body = (qn(a.get_field(name).column) for name in computed)
        columns = ", ".join(qn(f.column) for f in fields) + f", {number}, {body}"
        table, record_id, sha = (
            qn(a.db_table),
            qn(a.get_field("record").column),
            qn(a.get_field("request_sha256").column),
        )
        sql = (
            f"INSERT INTO {table} ({columns}) "  # noqa: S608 (names from _meta, values as parameters)
            f"SELECT {', '.join(['%s'] * len(fields))}, COALESCE(last.number, 0) + 1, "
            f"CASE WHEN last.sha = %s THEN NULL ELSE r.{qn(r.get_field('payload').column)} END "
            f"FROM {qn(r.db_table)} r LEFT JOIN LATERAL ("
            f"SELECT {number} AS number, {sha} AS sha FROM {table} "
            f"WHERE {record_id} = r.{qn(r.pk.column)} ORDER BY {number} DESC LIMIT 1"
            f") last ON true WHERE r.{qn(r.pk.column)} = %s "
            f"RETURNING {qn(a.pk.column)}, {number}, {body} IS NULL"
        )
        _inserts[conn.alias] = (sql, fields)
    return _inserts[conn.alias]


def _instance(conn: Any, model: type[Model], fields: list[Field], converters: Converters, row: Any) -> Any:
    """A model instance from a returned row, its values converted as the ORM converts what it reads."""
    values = []
    for (convert, col), value in zip(converters, row, strict=True):
        for converter in convert:
            value = converter(value, col, conn)
        values.append(value)
    return model.from_db(conn.alias, [f.attname for f in fields], values)


# -- 3: the answer ---------------------------------------------------------------------------------------------------
def finish_and_move(
    model: type[Model],
    pk: int,
    from_status: str,
    to: str,
    fields: dict[str, Any],
    *,
    lease_token: str | None,
    guard: Q | None,
    attempt: EarningAttempt | None,
    attempt_fields: dict[str, Any],
    event: dict[str, Any] | None,
    waiters: tuple[type[Model], str, str] | None,
) -> tuple[bool, bool | None]:
    """Close ``attempt`` with ``attempt_fields``, move row ``pk`` of ``model`` from ``from_status`` to ``to`` with
    ``fields`` if it is still there (and under ``lease_token``, and meets ``guard``), and insert ``event`` (an
    ``EarningEvent``'s values) if it moved: one statement. The attempt is closed whether or not the row moves.

    Returns whether it moved, and whether a row of ``waiters`` (model, the key naming this row, its waiting state)
    waits for it (``None``: not asked, or not moved)."""
    conn = _connection(model)
    qn = conn.ops.quote_name
    ctes, params = [], []
    if attempt is not None:
        sets, values = _assignments(conn, EarningAttempt, attempt_fields)
        a = EarningAttempt._meta
        ctes.append(f"att AS (UPDATE {qn(a.db_table)} SET {sets} WHERE {qn(a.pk.column)} = %s)")  # noqa: S608
        params += [*values, attempt.pk]
    meta = model._meta
    sets, values = _assignments(conn, model, {"status": to, **fields})
    where = [f"{qn(meta.pk.column)} = %s", f"{qn(meta.get_field('status').column)} = %s"]
    params += [*values, pk, from_status]
    if lease_token is not None:
        where.append(f"{qn(meta.get_field('lease_token').column)} = %s")
        params.append(lease_token)
    if guard is not None:
        query = Query(model, alias_cols=False)  # as Django renders a CheckConstraint: columns of this table
        condition, condition_params = query.build_where(guard).as_sql(query.get_compiler(connection=conn), conn)
        where.append(f"({condition})")
        params += condition_params
    ctes.append(
        f"moved AS (UPDATE {qn(meta.db_table)} SET {sets} WHERE {' AND '.join(where)} RETURNING {qn(meta.pk.column)})"  # noqa: S608
    )
    probe, probe_params = "1", []
    if waiters is not None:
        waiting, key, state = waiters
        w = waiting._meta
        probe = (
            f"EXISTS (SELECT 1 FROM {qn(w.db_table)} WHERE {qn(w.get_field(key).column)} = %s "  # noqa: S608
            f"AND {qn(w.get_field('status').column)} = %s)"
        )
        probe_params = [pk, state]
    if event is not None:
        entry = EarningEvent(**event)
        event_fields = [f for f in EarningEvent._meta.concrete_fields if not f.primary_key]
        columns = ", ".join(qn(f.column) for f in event_fields)
        params += [f.get_db_prep_save(f.pre_save(entry, add=True), conn) for f in event_fields]
        main = (
            f"INSERT INTO {qn(EarningEvent._meta.db_table)} ({columns}) "  # noqa: S608
            f"SELECT {', '.join(['%s'] * len(event_fields))} FROM moved RETURNING {probe}"
        )
    else:
        main = f"SELECT {probe} FROM moved"  # noqa: S608
    params += probe_params
    with _cursor(conn) as cursor:
        cursor.execute(f"WITH {', '.join(ctes)} {main}", params)
        row = cursor.fetchone()
    if attempt is not None:
        for name, value in attempt_fields.items():
            setattr(attempt, name, value)
    if row is None:
        return False, None
    return True, (bool(row[0]) if waiters is not None else None)


def _assignments(conn: Any, model: type[Model], values: dict[str, Any]) -> tuple[str, list[Any]]:
    """``"col" = %s, …`` and its parameters, each value prepared by its field as the ORM's UPDATE prepares it.
    Plain values only: an expression (``F()``) would need the ORM."""
    qn, meta = conn.ops.quote_name, model._meta
    sets, params = [], []
    for name, value in values.items():
        if hasattr(value, "resolve_expression"):
            raise TypeError(f"{name}: the hot path writes plain values, not expressions")
        field = meta.get_field(name)
        sets.append(f"{qn(field.column)} = %s")
        params.append(field.get_db_prep_save(value, conn))
    return ", ".join(sets), params
