import time, sys, resource
import numpy as np
from routing.generate import generate_instance
from routing.arrays import instance_arrays
from routing.exact import solve_exact
from routing.guided import solve_guided, GuidedOptions
n_t, n_a = int(sys.argv[1]), int(sys.argv[2]); k = int(sys.argv[3]); exact = sys.argv[4] == "1"
inst = generate_instance(n_t, n_a, seed=1)
arr = instance_arrays(inst)
def summary(sol):
    return len(sol.tasks), int(arr.task_priority[sol.tasks].sum()), int(arr.annotator_price[sol.annotators].sum())
if exact:
    t=time.time(); e = solve_exact(arr); print("exact", time.time()-t, e.status, summary(e), {k:v for k,v in e.stats.items()})
import routing.guided as G
t=time.time(); g = solve_guided(arr, GuidedOptions(k=k, sample_cells=int(sys.argv[5]))); print("guided", time.time()-t, g.status, summary(g))
for k2, v in g.stats.items():
    if k2 != "round_log": print(" ", k2, v)
for r in g.stats["round_log"]: print("  ", r)
import sys as _s; _s.stdout.flush()
print("maxrss MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)
