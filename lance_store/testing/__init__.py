"""Test suites that ship with the package: every implementation of an interface runs one.

`backends` holds the write backend suite; an implementation's tests subclass it and supply fixtures.
`ports` hands out loopback ports for the servers tests start.
"""
