"""ledger guards: append-only ledger tables and balanced transactions, enforced by PostgreSQL itself

Hand-written (autogenerate does not see triggers). On PostgreSQL:

- `ledger_refuse_change()`: BEFORE UPDATE OR DELETE row triggers on `ledger_accounts`, `ledger_transactions` and
  `ledger_entries`. Nothing in the ledger is ever changed: a hold's resolution is a new transaction, a correction is
  a new transaction. (`ledger_balances`, a cache, is updated; TRUNCATE, used by test fixtures, is not guarded.)
- `ledger_check_balanced()`: a DEFERRABLE INITIALLY DEFERRED constraint trigger after each inserted entry; at
  commit it refuses a transaction whose debits and credits differ in some currency, whoever wrote the rows.

SQLite has neither deferred triggers nor a second writer: there the service's own checks and
`payments.ledger.check_integrity` hold the line.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_TABLES = ("ledger_accounts", "ledger_transactions", "ledger_entries")


def _is_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _is_postgresql():
        return
    op.execute(
        """
        CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation',
                      HINT = 'post a new transaction (a reversal or a hold resolution) instead';
        END
        $$
        """
    )
    for table in APPEND_ONLY_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
    op.execute(
        """
        CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            unbalanced record;
        BEGIN
            SELECT currency,
                   sum(CASE direction WHEN 'debit' THEN amount_minor ELSE -amount_minor END) AS difference
              INTO unbalanced
              FROM ledger_entries
             WHERE transaction_id = NEW.transaction_id
             GROUP BY currency
            HAVING sum(CASE direction WHEN 'debit' THEN amount_minor ELSE -amount_minor END) <> 0
             LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'ledger transaction % does not balance in %: debits - credits = %',
                    NEW.transaction_id, unbalanced.currency, unbalanced.difference
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced()"
    )


def downgrade() -> None:
    if not _is_postgresql():
        return
    op.execute("DROP TRIGGER IF EXISTS ledger_entries_balanced ON ledger_entries")
    op.execute("DROP FUNCTION IF EXISTS ledger_check_balanced()")
    for table in APPEND_ONLY_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    op.execute("DROP FUNCTION IF EXISTS ledger_refuse_change()")
