"""The `lance-net` subcommands, one module per command, each exposing a click command `command`.

`lance_net.cli` loads them by name only when asked, so one command's imports never slow another.
"""
