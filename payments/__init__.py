"""The bank: money, a double-entry ledger, holds, payouts and reconciliation.

It knows accounts, amounts and opaque references (``annotator:17``, ``label:9912``), never tasks or labels.
"""
