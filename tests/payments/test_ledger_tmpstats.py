import collections, cProfile, pstats
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
import tests.payments.test_ledger_properties as m

def test_stats(engine):
    counts = collections.Counter()
    m.event = lambda e: counts.update([e])
    machine = type("B", (m.LedgerMachine,), {"engine": engine})
    pr = cProfile.Profile(); pr.enable()
    run_state_machine_as_test(machine, settings=settings(max_examples=12, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)))
    pr.disable()
    print(dict(counts))
    pstats.Stats(pr).sort_stats("cumulative").print_stats(35)
