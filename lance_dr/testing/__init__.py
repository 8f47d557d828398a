"""Test support that ships with the package: the target conformance suite and
real loopback servers (an rsync daemon, an S3-compatible server) to run it against.
"""
