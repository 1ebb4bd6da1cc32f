from routing import *
inst = eval(open('/tmp/bad_instance.txt').read())
for m in ("flow", "guided", "cpsat"):
    try:
        r = solve(inst, method=m, objective="production"); print(m, r.assignments, r.priority_total, r.cost_total)
    except Exception as e: print(m, "ERR", e)
