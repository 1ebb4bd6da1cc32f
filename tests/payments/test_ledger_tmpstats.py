import collections, functools, time
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
import tests.payments.test_ledger_properties as m


def test_stats(engine):
    counts = collections.Counter()
    m.event = lambda e: counts.update([e])
    machine = type("B", (m.LedgerMachine,), {"engine": engine})
    for name in ["fund", "lease", "decide", "request_payout", "settle_payout", "tick_and_reconcile"]:
        f = getattr(m.LedgerMachine, name)
        inner = f.hypothesis_stateful_rule.function

        def wrap(inner=inner, name=name):
            @functools.wraps(inner)
            def w(self, *a, **k):
                counts.update(["RULE " + name])
                return inner(self, *a, **k)

            return w

        object.__setattr__(f.hypothesis_stateful_rule, "function", wrap())
    t = time.time()
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=20, stateful_step_count=20, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )
    print(time.time() - t)
    print(sorted(counts.items()))
