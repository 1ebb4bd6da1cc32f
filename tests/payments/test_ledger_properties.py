"""Property tests: random transactions, the database's own refusal of unbalanced ones, and a state machine over
every money flow (fund, lease hold, accept, duplicate accept, reject, expire, payout hold, confirm, fail,
reconcile) checked after each step against a model kept here and against the integrity check."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from payments import ledger
from payments.errors import HoldAlreadyResolved, InsufficientFunds, UnbalancedTransaction
from payments.ledger import Leg
from payments.money import Money

_run = itertools.count(1)
_key = itertools.count(1)

#: property tests share one database per test function; each example works in accounts of its own
FIXTURE_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ACCOUNTS = [("platform:p:cash", "asset"), ("platform:p:owed", "liability"), ("platform:p:income", "revenue")]
CURRENCIES = ["EUR", "JPY"]

legs_strategy = st.lists(
    st.tuples(
        st.sampled_from([code for code, _ in ACCOUNTS]),
        st.sampled_from(["debit", "credit"]),
        st.integers(min_value=1, max_value=10_000),
        st.sampled_from(CURRENCIES),
    ),
    min_size=1,
    max_size=6,
)


def _balance_per_currency(legs: list[tuple[str, str, int, str]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for _, direction, amount, currency in legs:
        totals[currency] += amount if direction == "debit" else -amount
    return totals


@st.composite
def transactions(draw: st.DrawFn) -> list[tuple[str, str, int, str]]:
    """Random legs; half of the time completed with one leg per currency that balances them."""
    legs = draw(legs_strategy)
    if draw(st.booleans()):
        for currency, diff in _balance_per_currency(legs).items():
            if diff:
                code = draw(st.sampled_from([code for code, _ in ACCOUNTS]))
                legs.append((code, "credit" if diff > 0 else "debit", abs(diff), currency))
    return legs


@pytest.fixture
def plain_books(db_session: Session) -> Session:
    for code, kind in ACCOUNTS:
        for currency in CURRENCIES:
            ledger.ensure_account(db_session, code=code, currency=currency, kind=kind)
    db_session.commit()
    return db_session


@FIXTURE_SETTINGS
@given(legs=transactions())
def test_random_transactions_post_iff_balanced(
    plain_books: Session, legs: list[tuple[str, str, int, str]]
) -> None:
    session = plain_books
    balanced = not any(_balance_per_currency(legs).values())
    key = f"random-{next(_key)}"
    typed = [Leg(code, direction, Money(amount, currency)) for code, direction, amount, currency in legs]  # type: ignore[arg-type]
    if balanced:
        posted = ledger.post_transaction(session, idempotency_key=key, kind="test", reference="r", legs=typed)
        session.commit()
        assert len(posted.entries) == len(legs)
    else:
        with pytest.raises(UnbalancedTransaction):
            ledger.post_transaction(session, idempotency_key=key, kind="test", reference="r", legs=typed)
        session.commit()
        assert ledger.find_transaction(session, idempotency_key=key) is None
    assert ledger.check_integrity(session) == []


@pytest.mark.postgres
@FIXTURE_SETTINGS
@given(legs=transactions())
def test_postgresql_refuses_unbalanced_entries_written_behind_the_service(
    plain_books: Session, engine: Engine, legs: list[tuple[str, str, int, str]]
) -> None:
    balanced = not any(_balance_per_currency(legs).values())
    key = f"raw-{next(_key)}"
    with engine.connect() as conn:
        tx_id = conn.execute(
            text(
                "INSERT INTO ledger_transactions (idempotency_key, kind, reference, status, content_hash, metadata, "
                "created_at) VALUES (:key, 'raw', 'raw', 'posted', '', '{}', now()) RETURNING id"
            ),
            {"key": key},
        ).scalar_one()
        for code, direction, amount, currency in legs:
            conn.execute(
                text(
                    "INSERT INTO ledger_entries (transaction_id, account_id, currency, direction, amount_minor) "
                    "SELECT :tx, id, currency, :direction, :amount FROM ledger_accounts "
                    "WHERE code = :code AND currency = :currency"
                ),
                {"tx": tx_id, "currency": currency, "direction": direction, "amount": amount, "code": code},
            )
        if balanced:
            conn.commit()
        else:
            with pytest.raises(IntegrityError, match="does not balance"):
                conn.commit()
    stored = plain_books.scalar(
        text("SELECT count(*) FROM ledger_transactions WHERE idempotency_key = :k"), {"k": key}
    )
    assert stored == (1 if balanced else 0)
    plain_books.rollback()


# --- the state machine --------------------------------------------------------------------------------------

EPOCH = datetime(2031, 1, 1, tzinfo=UTC)
LEDGER_TABLES = ("ledger_accounts", "ledger_balances", "ledger_transactions", "ledger_entries")
NORMAL = {"asset": "debit", "liability": "credit", "revenue": "credit"}


class LedgerMachine(RuleBasedStateMachine):
    """Two projects (EUR, JPY), two annotators, fees, funding, payout clearing and the Stripe balance."""

    engine: Engine

    label_holds = Bundle("label_holds")
    payout_holds = Bundle("payout_holds")

    def __init__(self) -> None:
        super().__init__()
        n = next(_run)
        self.session = Session(self.engine, expire_on_commit=False)
        # Each example starts from empty books, so that examples are independent (and replayable when one fails)
        # and the global checks stay cheap. TRUNCATE is the one change PostgreSQL's append-only triggers allow.
        if self.engine.dialect.name == "postgresql":
            self.session.execute(text(f"TRUNCATE {', '.join(LEDGER_TABLES)} CASCADE"))
        else:
            for table in reversed(LEDGER_TABLES):
                self.session.execute(text(f"DELETE FROM {table}"))  # noqa: S608  (constant table names)
        self.now = EPOCH
        self.currencies = ["EUR", "JPY"]
        self.kinds: dict[tuple[str, str], str] = {}
        self.budget = {
            cur: self._open(f"project:{n}-{cur}:budget", cur, "liability", True) for cur in self.currencies
        }
        self.payable = {
            (a, cur): self._open(f"annotator:{n}-{a}:payable", cur, "liability", True)
            for a in (1, 2)
            for cur in self.currencies
        }
        self.fees = {cur: self._open(f"platform:{n}:fees", cur, "revenue", False) for cur in self.currencies}
        self.funding = {
            cur: self._open(f"platform:{n}:funding", cur, "asset", False) for cur in self.currencies
        }
        self.clearing = {
            cur: self._open(f"clearing:{n}:transfers", cur, "liability", False) for cur in self.currencies
        }
        self.stripe = {
            cur: self._open(f"platform:{n}:stripe", cur, "asset", False) for cur in self.currencies
        }
        self.session.commit()
        # the model: posted debits and credits per account, and every hold with its fate
        self.posted: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.holds: dict[int, dict[str, Any]] = {}

    def _open(self, code: str, currency: str, kind: str, no_overdraft: bool) -> tuple[str, str]:
        ledger.ensure_account(
            self.session, code=code, currency=currency, kind=kind, no_overdraft=no_overdraft
        )
        self.kinds[(code, currency)] = kind
        return (code, currency)

    def teardown(self) -> None:
        self.session.rollback()
        self.session.close()

    # model helpers ------------------------------------------------------------------------------------------

    def _expected(self, key: tuple[str, str]) -> dict[str, int]:
        debits, credits = self.posted[key]
        pending = {"debit": 0, "credit": 0}
        for hold in self.holds.values():
            if hold["status"] == "pending":
                for leg_key, direction, amount in hold["legs"]:
                    if leg_key == key:
                        pending[direction] += amount
        credit_normal = NORMAL[self.kinds[key]] == "credit"
        posted = credits - debits if credit_normal else debits - credits
        against = pending["debit"] if credit_normal else pending["credit"]
        return {
            "posted": posted,
            "pending_debits": pending["debit"],
            "pending_credits": pending["credit"],
            "available": posted - against,
        }

    def _post_model(self, legs: list[tuple[tuple[str, str], str, int]]) -> None:
        for key, direction, amount in legs:
            self.posted[key][0 if direction == "debit" else 1] += amount

    @staticmethod
    def _legs(legs: list[tuple[tuple[str, str], str, int]]) -> list[Leg]:
        return [Leg(key[0], direction, Money(amount, key[1])) for key, direction, amount in legs]  # type: ignore[arg-type]

    def _label_legs(
        self, cur: str, annotator: int, price: int, fee: int
    ) -> list[tuple[tuple[str, str], str, int]]:
        legs: list[tuple[tuple[str, str], str, int]] = []
        if price + fee:
            legs.append((self.budget[cur], "debit", price + fee))
        if price:
            legs.append((self.payable[(annotator, cur)], "credit", price))
        if fee:
            legs.append((self.fees[cur], "credit", fee))
        return legs

    def _place(
        self, kind: str, legs: list[tuple[tuple[str, str], str, int]], expires_in: int | None, **extra: Any
    ) -> Any:
        debited = [(key, amount) for key, direction, amount in legs if direction == "debit"]
        short = any(
            self.kinds[key] == "liability"
            and key not in self.clearing.values()
            and self._expected(key)["available"] < amount
            for key, amount in debited
        )
        expires_at = self.now + timedelta(minutes=expires_in) if expires_in else None
        key = f"{kind}-{next(_key)}"
        if short:
            with pytest.raises(InsufficientFunds):
                ledger.place_hold(
                    self.session,
                    idempotency_key=key,
                    kind=kind,
                    reference=key,
                    legs=self._legs(legs),
                    expires_at=expires_at,
                )
            self.session.commit()
            event(f"{kind}: insufficient funds")
            return multiple()
        hold = ledger.place_hold(
            self.session,
            idempotency_key=key,
            kind=kind,
            reference=key,
            legs=self._legs(legs),
            expires_at=expires_at,
        )
        self.session.commit()
        self.holds[hold.id] = {
            "legs": legs,
            "status": "pending",
            "expires_at": expires_at,
            "posting": None,
            **extra,
        }
        event(f"{kind}: held")
        return hold.id

    # rules --------------------------------------------------------------------------------------------------

    @initialize(eur=st.integers(min_value=0, max_value=600), jpy=st.integers(min_value=0, max_value=600))
    def open_budgets(self, eur: int, jpy: int) -> None:
        for cur, amount in (("EUR", eur), ("JPY", jpy)):
            if amount:
                self.fund(cur, amount)

    @rule(cur=st.sampled_from(["EUR", "JPY"]), amount=st.integers(min_value=1, max_value=400))
    def fund(self, cur: str, amount: int) -> None:
        legs = [(self.funding[cur], "debit", amount), (self.budget[cur], "credit", amount)]
        ledger.post_transaction(
            self.session,
            idempotency_key=f"fund-{next(_key)}",
            kind="funding",
            reference="p",
            legs=self._legs(legs),
        )
        self.session.commit()
        self._post_model(legs)

    @rule(
        target=label_holds,
        cur=st.sampled_from(["EUR", "JPY"]),
        annotator=st.sampled_from([1, 2]),
        price=st.integers(min_value=0, max_value=40),
        fee=st.integers(min_value=0, max_value=10),
        expires_in=st.one_of(st.none(), st.integers(min_value=1, max_value=3)),
    )
    def lease(self, cur: str, annotator: int, price: int, fee: int, expires_in: int | None) -> Any:
        legs = self._label_legs(cur, annotator, price, fee)
        return self._place(
            "label_payment", legs, expires_in, cur=cur, annotator=annotator, price=price, fee=fee
        )

    @rule(hold_id=label_holds, accept=st.booleans(), partial=st.booleans())
    def decide(self, hold_id: int, accept: bool, partial: bool) -> None:
        """Accept (in full or in part; again: a duplicate) or reject a leased label's hold."""
        hold = self.holds[hold_id]
        key = f"accept-{hold_id}"
        if not accept:
            self._void(hold_id)
        elif (
            hold["posting"] is not None
        ):  # a duplicate accept: same key and content, so the first is returned
            posting_id, legs = hold["posting"]
            again = ledger.post_hold(
                self.session, hold_id=hold_id, idempotency_key=key, legs=self._legs(legs)
            )
            assert again.id == posting_id
            event("accept: duplicate returns the first posting")
        else:
            divisor = 2 if partial else 1
            legs = self._label_legs(
                hold["cur"], hold["annotator"], hold["price"] // divisor, hold["fee"] // divisor
            )
            if hold["status"] != "pending":
                with pytest.raises(HoldAlreadyResolved):
                    ledger.post_hold(
                        self.session, hold_id=hold_id, idempotency_key=key, legs=self._legs(legs)
                    )
                event(f"accept: refused, hold already {hold['status']}")
            else:
                posting = ledger.post_hold(
                    self.session, hold_id=hold_id, idempotency_key=key, legs=self._legs(legs)
                )
                assert posting.resolves_hold_id == hold_id
                hold.update(status="posted", posting=(posting.id, legs))
                self._post_model(legs)
                event("accept: posted")
        self.session.commit()

    def _void(self, hold_id: int) -> None:
        hold = self.holds[hold_id]
        if hold["status"] in ("posted", "expired"):
            with pytest.raises(HoldAlreadyResolved):
                ledger.void_hold(self.session, hold_id=hold_id, reason="test")
        else:
            resolution = ledger.void_hold(self.session, hold_id=hold_id, reason="test")
            assert resolution.status == "voided"
            event("void: voided" if hold["status"] == "pending" else "void: again, the first void returned")
            hold["status"] = "voided"
        self.session.commit()

    @precondition(lambda self: any(self._expected(key)["available"] > 0 for key in self.payable.values()))
    @rule(
        target=payout_holds,
        data=st.data(),
        share=st.integers(min_value=1, max_value=120),
        expires_in=st.one_of(st.none(), st.integers(min_value=1, max_value=3)),
    )
    def request_payout(self, data: st.DataObject, share: int, expires_in: int | None) -> Any:
        """Hold part of a payable for a transfer (a share above 100% asks for more than there is)."""
        funded = [key for key in self.payable.values() if self._expected(key)["available"] > 0]
        payable = data.draw(st.sampled_from(funded))
        amount = max(1, self._expected(payable)["available"] * share // 100)
        clearing = self.clearing[payable[1]]
        return self._place("payout", [(payable, "debit", amount), (clearing, "credit", amount)], expires_in)

    @rule(hold_id=payout_holds, confirmed=st.booleans())
    def settle_payout(self, hold_id: int, confirmed: bool) -> None:
        """The transfer is confirmed (post the hold) or failed (void it)."""
        hold = self.holds[hold_id]
        if not confirmed:
            self._void(hold_id)
            return
        if hold["status"] == "posted":  # a repeated confirmation: the same (default) key returns the first
            assert ledger.post_hold(self.session, hold_id=hold_id).id == hold["posting"]
            event("payout: confirmed again")
        elif hold["status"] != "pending":
            with pytest.raises(HoldAlreadyResolved):
                ledger.post_hold(self.session, hold_id=hold_id)
        else:
            hold.update(status="posted", posting=ledger.post_hold(self.session, hold_id=hold_id).id)
            self._post_model(hold["legs"])
            event("payout: confirmed")
        self.session.commit()

    @rule(cur=st.sampled_from(["EUR", "JPY"]), minutes=st.integers(min_value=0, max_value=3))
    def tick_and_reconcile(self, cur: str, minutes: int) -> None:
        """Time passes (holds expire) and the transfers made so far are reconciled with the Stripe balance."""
        self.now += timedelta(minutes=minutes)
        due = [
            hold_id
            for hold_id, hold in self.holds.items()
            if hold["status"] == "pending"
            and hold["expires_at"] is not None
            and hold["expires_at"] <= self.now
        ]
        assert ledger.expire_holds(self.session, now=self.now) == len(due)
        for hold_id in due:
            self.holds[hold_id]["status"] = "expired"
        event(f"tick: expired {min(len(due), 2)}+ holds" if due else "tick: nothing due")
        owed = self._expected(self.clearing[cur])["posted"]
        if owed > 0:
            legs = [(self.clearing[cur], "debit", owed), (self.stripe[cur], "credit", owed)]
            ledger.post_transaction(
                self.session,
                idempotency_key=f"reconcile-{next(_key)}",
                kind="reconciliation",
                reference="r",
                legs=self._legs(legs),
            )
            self._post_model(legs)
            event("reconciled")
        self.session.commit()

    # invariants ---------------------------------------------------------------------------------------------

    @invariant()
    def balances_match_the_model(self) -> None:
        for key, actual in ledger.balances(self.session, accounts=self.kinds).items():
            expected = self._expected(key)
            assert {
                "posted": actual.posted.amount,
                "pending_debits": actual.pending_debits.amount,
                "pending_credits": actual.pending_credits.amount,
                "available": actual.available.amount,
            } == expected, key
            if key in self.budget.values() or key in self.payable.values():
                assert actual.available.amount >= 0, key

    @invariant()
    def ledger_is_consistent(self) -> None:
        # sums to zero per currency, each transaction balanced, each hold resolved at most once and never beyond
        # what it reserved, cached balances equal to their entries, no no-overdraft account below zero
        assert ledger.check_integrity(self.session) == []


def test_ledger_state_machine(engine: Engine) -> None:
    machine = type("BoundLedgerMachine", (LedgerMachine,), {"engine": engine})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=10,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
