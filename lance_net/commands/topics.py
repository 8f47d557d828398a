"""`lance-net topics`: create, list, get, delete topics and set their retention.

Owns the command line of topic administration; the requests are lance_net.client.Admin's.
"""
from __future__ import annotations

import click

from lance_store.clikit import emit_json, handle_errors, human_bytes, table

from lance_net.client import Admin
from lance_net.client.cliopts import client_options, run_command


def _topic_ref(text: str):
    """A topic name; `#<id>` names a topic by its id."""
    if text.startswith("#") and text[1:].isdigit():
        return int(text[1:])
    return text


async def _with_admin(endpoint, options, action):
    async with Admin(endpoint, options) as admin:
        return await action(admin)


def _retention_text(retention: dict | None) -> str:
    retention = retention or {}
    age = retention.get("max_age_secs") or 0
    size = retention.get("max_bytes") or 0
    parts = []
    if age:
        parts.append(f"{age} s")
    if size:
        parts.append(human_bytes(size))
    return ", ".join(parts) or "unlimited"


def _show(topics: list[dict], as_json: bool, title: str) -> None:
    if as_json:
        emit_json(topics)
        return
    table(title, ["id", "name", "created_at", "epoch", "retention"],
          [[t.get("id"), t.get("name"), t.get("created_at"), t.get("topic_epoch"),
            _retention_text(t.get("retention"))] for t in topics])


@click.group("topics")
def command() -> None:
    """Create, list, inspect and delete topics (a topic is named, or `#<id>`)."""


@command.command("create")
@click.argument("name")
@click.option("--max-age-secs", type=click.IntRange(0), default=None,
              help="Remove segments older than this (0: no limit).")
@click.option("--max-bytes", type=click.IntRange(0), default=None,
              help="Keep at most this many bytes (0: no limit).")
@click.option("--json", "as_json", is_flag=True, help="Print the topic as JSON.")
@client_options
@handle_errors
def create(name, max_age_secs, max_bytes, as_json, endpoint, options):
    """Create NAME (an existing topic of that name is returned as it is)."""
    topic = run_command(_with_admin(endpoint, options, lambda a: a.create_topic(
        name, max_age_secs=max_age_secs, max_bytes=max_bytes)))
    if as_json:
        emit_json(topic)
    else:
        click.echo(f"topic {topic['name']} (id {topic['id']}), retention "
                   f"{_retention_text(topic.get('retention'))}")


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of topics.")
@client_options
@handle_errors
def list_(as_json, endpoint, options):
    """List every topic."""
    topics = run_command(_with_admin(endpoint, options, lambda a: a.list_topics()))
    _show(sorted(topics, key=lambda t: t.get("id", 0)), as_json, "topics")


@command.command("get")
@click.argument("topic")
@click.option("--offsets", is_flag=True, help="Also ask for the low and high watermarks.")
@click.option("--json", "as_json", is_flag=True, help="Print the topic as JSON.")
@client_options
@handle_errors
def get(topic, offsets, as_json, endpoint, options):
    """Show one topic."""
    async def action(admin: Admin) -> dict:
        info = dict(await admin.get_topic(_topic_ref(topic)))
        if offsets:
            reply = await admin.list_offsets(int(info["id"]), 0)
            info["low_watermark"], info["high_watermark"] = reply.low, reply.high
        return info

    info = run_command(_with_admin(endpoint, options, action))
    if as_json:
        emit_json(info)
        return
    _show([info], False, f"topic {info.get('name')}")
    if offsets:
        click.echo(f"offsets: low {info['low_watermark']}, high {info['high_watermark']}")


@command.command("delete")
@click.argument("topic")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help='Print {"deleted": id}.')
@client_options
@handle_errors
def delete(topic, yes, as_json, endpoint, options):
    """Delete a topic and all its records."""
    if not yes:
        click.confirm(f"delete topic {topic} and all its records?", abort=True, err=True)
    deleted = run_command(_with_admin(endpoint, options,
                                      lambda a: a.delete_topic(_topic_ref(topic))))
    if as_json:
        emit_json({"deleted": deleted})
    else:
        click.echo(f"deleted topic {topic} (id {deleted})")


@command.command("retention")
@click.argument("topic")
@click.option("--max-age-secs", type=click.IntRange(0), required=True,
              help="Remove segments older than this (0: no limit).")
@click.option("--max-bytes", type=click.IntRange(0), required=True,
              help="Keep at most this many bytes (0: no limit).")
@click.option("--json", "as_json", is_flag=True, help="Print the topic as JSON.")
@client_options
@handle_errors
def retention(topic, max_age_secs, max_bytes, as_json, endpoint, options):
    """Set a topic's retention limits."""
    info = run_command(_with_admin(endpoint, options, lambda a: a.set_retention(
        _topic_ref(topic), max_age_secs=max_age_secs, max_bytes=max_bytes)))
    if as_json:
        emit_json(info)
    else:
        click.echo(f"topic {info.get('name')}: retention {_retention_text(info.get('retention'))}")
