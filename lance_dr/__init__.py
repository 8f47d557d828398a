"""LANCE disaster-recovery toolkit: ship, verify, restore and warm-start segment files.

Built on lance_store read-only opens; never re-parses segment bytes itself.
"""
