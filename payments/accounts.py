"""Accounts: created once, never changed, read once per process, and their cached balances locked in order.

An account is a code and a currency (`project:3:budget` in EUR). Its kind fixes its normal balance; a no-overdraft
account (budgets, payables) has a cached balance row that every posting to it locks, in ascending account id, so
two postings may wait on each other but never deadlock.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, select, tuple_, update
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, make_transient_to_detached

from payments.deferred_balances import apply_queued_balance_changes
from payments.errors import AccountConflict, AccountNotFound, InvalidAmount
from payments.models import NORMAL_BALANCE, Account, AccountBalance, AccountKind
from payments.money import validate_currency

_CODE_RE = re.compile(r"^[a-z][a-z0-9_]*(?::[A-Za-z0-9_.\-]+)+$")

AccountKey = tuple[str, str]  # (code, currency)


def validate_account_code(code: object) -> str:
    """`code` if it looks like `project:3:budget` or `platform:fees`; InvalidAmount otherwise."""
    if not isinstance(code, str) or len(code) > 200 or not _CODE_RE.match(code):
        raise InvalidAmount(f"not an account code: {code!r} (expected e.g. 'project:3:budget')")
    return code


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """An account to make sure of: its code, currency, kind and whether it may never be overdrawn."""

    code: str
    currency: str
    kind: str
    no_overdraft: bool = False


def ensure_account(
    session: Session, *, code: str, currency: str, kind: str, no_overdraft: bool = False
) -> Account:
    """The account `code` in `currency`, created if missing; its normal balance follows its kind."""
    spec = AccountSpec(code=code, currency=currency, kind=kind, no_overdraft=no_overdraft)
    return ensure_accounts(session, [spec])[(code, currency)]


def ensure_accounts(session: Session, specs: Sequence[AccountSpec]) -> dict[AccountKey, Account]:
    """The accounts of `specs`, each created if missing, read with one query for all those not yet known.

    AccountConflict if an account exists with another kind or overdraft rule than asked.
    """
    kinds: dict[AccountKey, AccountKind] = {}
    for spec in specs:
        validate_account_code(spec.code)
        validate_currency(spec.currency)
        try:
            kinds[(spec.code, spec.currency)] = AccountKind(spec.kind)
        except ValueError as exc:
            raise InvalidAmount(f"unknown account kind {spec.kind!r}") from exc
    found = _accounts_by_keys(session, kinds)
    for spec in specs:
        key = (spec.code, spec.currency)
        if key in found:
            continue
        account_kind = kinds[key]
        values = {
            "code": spec.code,
            "currency": spec.currency,
            "kind": account_kind.value,
            "normal_balance": NORMAL_BALANCE[account_kind].value,
            "no_overdraft": spec.no_overdraft,
        }
        # Two requests may create the same account at once: ON CONFLICT DO NOTHING waits for the other insert
        # and then yields, where a plain INSERT would abort this whole unit of work with a unique violation.
        session.info.setdefault(_CREATED, set()).add(key)
        _insert_ignoring_conflicts(session, Account, values, ["code", "currency"])
        created = _accounts_by_keys(session, [key])[key]
        if spec.no_overdraft:
            _insert_ignoring_conflicts(session, AccountBalance, {"account_id": created.id}, ["account_id"])
        found[key] = created
    for spec in specs:
        account = found[(spec.code, spec.currency)]
        if (
            account.kind != kinds[(spec.code, spec.currency)].value
            or account.no_overdraft != spec.no_overdraft
        ):
            raise AccountConflict(
                f"account {spec.code} ({spec.currency}) exists as {account.kind}, "
                f"no_overdraft={account.no_overdraft}",
                details={
                    "code": spec.code,
                    "currency": spec.currency,
                    "kind": account.kind,
                    "no_overdraft": account.no_overdraft,
                },
            )
    return found


def _insert_ignoring_conflicts(
    session: Session, model: type[Account] | type[AccountBalance], values: dict[str, Any], keys: list[str]
) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(postgresql.insert(model).values(**values).on_conflict_do_nothing(index_elements=keys))
    elif dialect == "sqlite":
        session.execute(sqlite.insert(model).values(**values).on_conflict_do_nothing(index_elements=keys))
    else:
        session.add(model(**values))
        session.flush()  # generate the row now, like the dialect-specific inserts do


@dataclass(frozen=True, slots=True)
class _CommittedAccount:
    """What is known of a committed account: everything, since an account never changes."""

    id: int
    code: str
    currency: str
    kind: str
    normal_balance: str
    no_overdraft: bool
    created_at: datetime

    @classmethod
    def of(cls, account: Account) -> _CommittedAccount:
        return cls(**{field.name: getattr(account, field.name) for field in fields(cls)})

    def attach(self, session: Session) -> Account:
        """The account as an entity of `session`, without a query."""
        existing = session.identity_map.get(session.identity_key(Account, self.id))
        if isinstance(existing, Account):
            return existing
        account = Account(**{field.name: getattr(self, field.name) for field in fields(self)})
        make_transient_to_detached(account)
        session.add(account)
        return account


#: Accounts known to be committed, per engine. Accounts are never changed or deleted once committed (on
#: PostgreSQL a trigger refuses it), so a process reads each one once, not once per unit of work: a lease
#: touches three accounts, and this saves it a query. Entries enter at commit, and only those read from the
#: database that this unit of work did not create itself (a savepoint may have rolled that back).
_COMMITTED: weakref.WeakKeyDictionary[Engine, dict[AccountKey, _CommittedAccount]] = (
    weakref.WeakKeyDictionary()
)
_SESSION_CACHE = "ledger_accounts"
_READ = "ledger_accounts_read"
_CREATED = "ledger_accounts_created"


def _engine_of(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def _committed_accounts(session: Session) -> dict[AccountKey, _CommittedAccount]:
    engine = _engine_of(session)
    known = _COMMITTED.get(engine)
    if known is None:
        known = _COMMITTED.setdefault(engine, {})
    return known


@sa_event.listens_for(Session, "after_commit")
def _remember_committed_accounts(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released: its reads are kept until the transaction commits
    read: dict[AccountKey, _CommittedAccount] | None = session.info.pop(_READ, None)
    created: set[AccountKey] = session.info.pop(_CREATED, set())
    if read:
        known = _committed_accounts(session)
        for key, account in read.items():
            if key not in created:
                known[key] = account


@sa_event.listens_for(Session, "after_rollback")
def _forget_read_accounts(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_READ, None)
        session.info.pop(_CREATED, None)
        # An account this unit of work created or read stays in the session, expired, after the rollback; one
        # it created is gone from the database, and the next read of it would fail. The committed ones are
        # found again in the process's cache.
        session.info.pop(_SESSION_CACHE, None)


def _accounts_by_keys(session: Session, keys: Iterable[AccountKey]) -> dict[AccountKey, Account]:
    """The existing accounts among `keys`: from this unit of work's cache, the accounts the process already
    knows committed, or one query for the rest.

    An account rolled back with a savepoint has left the session and is read again.
    """
    cache: dict[AccountKey, Account] = session.info.setdefault(_SESSION_CACHE, {})
    committed = _committed_accounts(session)
    found: dict[AccountKey, Account] = {}
    wanted: list[AccountKey] = []
    for key in keys:
        cached = cache.get(key)
        if cached is not None and cached in session:
            found[key] = cached
            continue
        known = committed.get(key)
        if known is not None:
            cache[key] = found[key] = known.attach(session)
        elif key not in wanted:
            wanted.append(key)
    if wanted:
        condition = (
            (Account.code == wanted[0][0]) & (Account.currency == wanted[0][1])
            if len(wanted) == 1
            else tuple_(Account.code, Account.currency).in_(sorted(wanted))
        )
        read: dict[AccountKey, _CommittedAccount] = session.info.setdefault(_READ, {})
        for account in session.scalars(select(Account).where(condition)):
            key = (account.code, account.currency)
            cache[key] = found[key] = account
            read[key] = _CommittedAccount.of(account)
    return found


def _account_by_key(session: Session, key: AccountKey) -> Account | None:
    return _accounts_by_keys(session, [key]).get(key)


def get_account(session: Session, *, code: str, currency: str) -> Account:
    """The account `code` in `currency`; AccountNotFound if it was never created."""
    account = _account_by_key(session, (code, currency))
    if account is None:
        raise AccountNotFound(
            f"no account {code} in {currency}", details={"code": code, "currency": currency}
        )
    return account


def accounts_for(session: Session, keys: Iterable[AccountKey]) -> dict[AccountKey, Account]:
    """The accounts of `keys`; AccountNotFound naming every missing one."""
    wanted = set(keys)
    if not wanted:
        return {}
    found = _accounts_by_keys(session, wanted)
    missing = sorted(wanted - found.keys())
    if missing:
        raise AccountNotFound(
            "no such account: " + ", ".join(f"{code} ({currency})" for code, currency in missing),
            details={"missing": [{"code": c, "currency": cur} for c, cur in missing]},
        )
    return found


def lock_balances(session: Session, account_ids: Iterable[int]) -> dict[int, AccountBalance]:
    """Lock the cached balances of `account_ids` (where they exist) in ascending id order, read fresh (with the
    changes this transaction queued for its commit applied first)."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    apply_queued_balance_changes(session, ids)
    if session.get_bind().dialect.name == "sqlite":
        # SQLite has no row locks and ignores FOR UPDATE. An engine that begins with BEGIN IMMEDIATE already
        # holds the database's write lock; one left to pysqlite's deferred transactions would read outside any
        # transaction and lose updates. A no-op write takes the write lock (waiting for the busy timeout) so
        # that the read below is the latest committed state whatever the engine's configuration.
        session.execute(
            update(AccountBalance)
            .where(AccountBalance.account_id.in_(ids))
            .values(posted_minor=AccountBalance.posted_minor)
            .execution_options(synchronize_session=False)
        )
    # ORDER BY before FOR UPDATE: PostgreSQL locks rows in the order it returns them, so every writer takes
    # the same locks in the same order. populate_existing: the identity map may hold a value read before the
    # lock.
    query: Select[tuple[AccountBalance]] = (
        select(AccountBalance)
        .where(AccountBalance.account_id.in_(ids))
        .order_by(AccountBalance.account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {b.account_id: b for b in session.scalars(query)}
