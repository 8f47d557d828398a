"""`lance-dr`: ship a data directory to a target, verify the copy, list, restore, warm-start, drill.

Owns the command group; each command lives in its own module here and is a thin
layer over the library (lance_dr.ship, .verify, .restore, .drill, .warmstart).
"""
from __future__ import annotations

import click

from .common import EPILOG
from .drill import drill_command
from .listing import list_command
from .restore import restore_command
from .ship import ship_command
from .verify import verify_command
from .warm_start import warm_start_command


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lance", prog_name="lance-dr")
def main() -> None:
    """LANCE disaster recovery: copies of a data directory that can be verified and restored.

    A target is named in lance.toml ([dr.targets.NAME] url = "...") or given as
    a URL: rsync://host[:port]/module/path or host:/path (the rsync binary), a
    path or file:// (a local folder), or any fsspec URL (s3://, memory://, ...).

    \b
    Examples:
      lance-dr ship --to region-b --data-dir /var/lib/lance
      lance-dr ship --to s3://backups/lance --watch
      lance-dr verify --target region-b --since-last
      lance-dr list --target region-b
      lance-dr restore --from region-b --to /var/lib/lance-new --at 2024-05-01T12:00:00Z
      lance-dr drill --from region-b
    """


for command in (ship_command, verify_command, list_command, restore_command, warm_start_command,
                drill_command):
    main.add_command(command)

if __name__ == "__main__":
    main()
