"""Billing: project funding, budget holds for leases, payment for accepted labels, budgets and earnings."""
