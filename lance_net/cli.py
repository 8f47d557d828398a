"""`lance-net`: the broker and its clients on the command line.

Owns the command group only; each subcommand lives in lance_net/commands/<name>.py and is
imported when it runs (or when --help lists it), so a missing one fails alone, with its name.
"""
from __future__ import annotations

import importlib

import click

# name -> module exposing a click command named `command`
COMMANDS = {
    "serve": "lance_net.commands.serve",
    "produce": "lance_net.commands.produce",
    "consume": "lance_net.commands.consume",
    "topics": "lance_net.commands.topics",
    "status": "lance_net.commands.status",
    "bench": "lance_net.commands.bench",
    "chaos": "lance_net.commands.chaos",
}


def _unavailable(name: str, module: str, reason: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True},
                   help=f"(unavailable: {module} {reason})", add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def missing(args):
        raise click.ClickException(f"'lance-net {name}' is not available: {module} {reason}")

    return missing


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module_name = COMMANDS.get(name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # a dependency of the command is missing: show the real error
            return _unavailable(name, module_name, "is not installed")
        command = getattr(module, "command", None)
        if not isinstance(command, click.Command):
            return _unavailable(name, module_name, "defines no click command named `command`")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lance", prog_name="lance-net")
def main() -> None:
    """LANCE network layer: run a broker, produce, consume, administer topics."""


if __name__ == "__main__":
    main()
