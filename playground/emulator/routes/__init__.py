"""The REST routes, grouped by what they touch; `rest.Rest` records, checks and dispatches to them.

Interactions and channels share `Messages`, so a message written through an interaction token
and one written through a channel route obey the same Discord rules.
"""
