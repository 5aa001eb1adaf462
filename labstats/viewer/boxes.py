"""The Boxes page: each training box, its GPUs and who uses them, its runs and its link.

Each viewer source is a training box; what its box agent (labstats.ops.agent) keeps in the
box's Redis master reaches the web box through replication:

- ``ls:box:<source>``: a hash of the latest sample (``at``, ``interval``, ``host``,
  ``agent_version``, ``state``: a JSON object of CPU, memory, disks, GPUs with their processes'
  users and runs, the box's running runs);
- ``ls:box:<source>:history``: a capped stream of flat numbers, drawn here as sparklines.

A training box is not fully trusted: every field is read within a size bound (HSTRLEN first),
every value is taken only in the type the contract gives it, texts are cut, lists capped, and
everything is shown escaped. The link state is the replica's own ROLE; a source whose Redis
cannot be reached is said to be down, as the runs list says it. The page asks GET
/boxes/state every few seconds (static/boxes.js) and draws its answer in place.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import redis
from flask import Blueprint, get_template_attribute, jsonify, render_template, url_for

from labstats.format.run_record import RUNNING, STALLED
from labstats.ops import health
from labstats.reader import UNREACHABLE, LabstatsError, short
from labstats.viewer.data import sources
from labstats.viewer.openapi import declare, page_errors

bp = Blueprint("boxes", __name__)

POLL_SECONDS = 5  # how often the page asks again (the agent samples every 10 s)
# The most bytes of each field of the box's hash that are read (HSTRLEN first): a state of
# 8 GPUs with their processes is a few KiB.
FIELD_BYTES = {"at": 64, "interval": 64, "host": 1024, "agent_version": 256, "state": 256 * 1024}
MAX_TEXT = 200  # characters of any text shown (a GPU's name, a disk's path, a user)
MAX_GPUS = 64
MAX_PROCESSES = 32  # per GPU
MAX_DISKS = 16
MAX_RUNS = 100  # running runs listed per box
MAX_RUNS_PER_OWNER = 20  # of them, one owner's
HISTORY_POINTS = 180  # the history's newest samples drawn (30 minutes at 10 s)
HISTORY_BYTES = 8 << 20  # the history is left out when its newest samples would be more than this
NO_AGENT = "no box agent data (the agent runs on training boxes from this release)"
_GPU_FIELD = re.compile(r"^gpu(\d{1,2})_util_percent$")


@bp.get("/boxes")
@declare("The training boxes: GPUs and who uses them, CPU, memory, disks, runs, link (HTML)",
         responses=page_errors())  # fmt: skip
def boxes_page():
    """Each training box (each source) with its GPUs (use, memory, temperature, power, and
    the run and user on each), CPU, memory, disks, running runs, link state and how fresh
    its data is; the page follows them every few seconds."""
    return render_template("boxes.html", boxes=read_boxes(), poll=POLL_SECONDS)


@bp.get("/boxes/state")
@declare("The training boxes as the Boxes page shows them (JSON): per box, its state and its cards' HTML")
def boxes_state():
    """Per source: ``box`` (what the page shows, read within bounds: ``reachable``,
    ``link``, ``agent``, ``runs``, ``history``) and ``html``, the page's card of it."""
    boxes = read_boxes()
    cards = get_template_attribute("_box_cards.html", "box_cards")
    return jsonify({"boxes": boxes, "html": str(cards(boxes)), "poll": POLL_SECONDS})


def read_boxes() -> list[dict[str, Any]]:
    """Every source's box, each read on its own (one down says so and hides no other)."""
    return [read_box(name, source) for name, source in sorted(sources().items())]


def read_box(name: str, source) -> dict[str, Any]:
    """One training box as the page shows it; never raises for what the box holds."""
    box: dict[str, Any] = {"source": name, "reachable": True, "error": None, "link": None, "agent": None,
                           "agent_error": None, "runs": [], "history": {}}  # fmt: skip
    try:
        lab = source.lab
        client, keys = lab.redis, lab.keys
        box["link"] = _link(client)
        raw = _bounded_fields(client, keys.box(name))
        box["agent"], box["agent_error"] = _agent(raw)
        box["history"] = _history(client, keys.box_history(name), box["agent"])
        box["runs"] = _running_runs(name, lab)  # last: the runs' records are their owners' writing
    except UNREACHABLE as exc:
        box.update(reachable=False, error=f"source {name} cannot be read right now ({short(exc)})")
    except redis.RedisError as exc:  # a refusal (an ACL without a command): said, not a 500
        box.update(error=f"source {name} answered with an error ({short(exc)})")
    except (LabstatsError, ValueError, TypeError, KeyError) as exc:  # a run record not written by labstats
        box.update(error=f"source {name} holds what cannot be read ({short(exc)})")
    if box["agent"] is None and box["agent_error"] is None and box["reachable"]:
        box["agent_error"] = NO_AGENT
    for run in box["runs"]:
        run["url"] = url_for("pages.run_page", source=name, run_id=run["id"])
    names = {run["id"]: run["name"] for run in box["runs"]}
    for gpu in (box["agent"] or {}).get("gpus", []):
        for process in gpu["processes"]:
            run_id = process["run"]
            process["url"] = url_for("pages.run_page", source=name, run_id=run_id) if run_id else None
            process["run_name"] = names.get(run_id) or run_id  # its name when the box's reader lists it
    return box


# ---- the link: the replica's ROLE ---------------------------------------------------------


def _link(client: redis.Redis) -> dict[str, Any]:
    """The replica's link to its training box's master, as ROLE says it."""
    try:
        role = client.execute_command("ROLE")
    except redis.ResponseError as exc:  # ROLE refused to this user: the rest still shows
        return {"up": None, "text": f"unknown ({short(exc)})"}
    kind = _decoded(role[0]) if role else ""
    if kind == "slave" and len(role) >= 5:
        state = _decoded(role[3])
        master = f"{_decoded(role[1])[:MAX_TEXT]}:{_decoded(role[2])[:16]}"
        text = "connected" if state == "connected" else f"down ({state or 'no state'})"
        return {"up": state == "connected", "text": text, "master": master, "offset": _int(role[4])}
    if kind == "master":
        # A store read directly (one laptop, a test): there is no link to lose.
        return {"up": True, "text": "this is the box's own Redis (no replication)", "master": None}
    return {"up": None, "text": f"unknown (ROLE says {kind[:32]!r})"}


def _decoded(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# ---- the agent's state ----------------------------------------------------------------------


def _bounded_fields(client: redis.Redis, key: str) -> dict[str, bytes | None]:
    """The box hash's fields, each only when within its bound (else None)."""
    fields = list(FIELD_BYTES)
    pipe = client.pipeline(transaction=False)
    for field in fields:
        pipe.hstrlen(key, field)
    lengths = pipe.execute()
    wanted = [f for f, n in zip(fields, lengths, strict=True) if 0 < n <= FIELD_BYTES[f]]
    found = dict(zip(wanted, client.hmget(key, wanted), strict=True)) if wanted else {}
    out: dict[str, bytes | None] = {f: found.get(f) for f in fields}
    out["_too_large"] = ",".join(
        f for f, n in zip(fields, lengths, strict=True) if n > FIELD_BYTES[f]
    ).encode()
    out["_any"] = b"1" if any(lengths) else b""
    return out


def _agent(raw: dict[str, bytes | None]) -> tuple[dict[str, Any] | None, str | None]:
    """The agent's sample as the page shows it, and why it cannot be shown (None, None: no
    agent data at all)."""
    if not raw.get("_any"):
        return None, None
    problems = []
    if raw.get("_too_large"):
        problems.append(f"left out as too large: {raw['_too_large'].decode()}")
    at = _float_text(raw.get("at"))
    interval = _float_text(raw.get("interval"))
    now = time.time()
    agent: dict[str, Any] = {
        "at": at,
        "age": None if at is None else max(0.0, now - at),
        "interval": interval,
        "host": _text(_decoded(raw["host"]) if raw.get("host") else None),
        "agent_version": _text(_decoded(raw["agent_version"]) if raw.get("agent_version") else None, 64),
    }
    # How far the newest sample is behind its schedule: replication lag plus any pause of
    # the agent (ROLE gives no lag to this user; the sample's own clock does).
    agent["lag"] = None if agent["age"] is None else max(0.0, agent["age"] - (interval or 0.0))
    state: Any = {}
    if raw.get("state"):
        try:
            state = json.loads(raw["state"])
        except (ValueError, UnicodeDecodeError, RecursionError):
            problems.append("its state is not JSON")
            state = {}
    if not isinstance(state, dict):
        problems.append("its state is not a JSON object")
        state = {}
    agent.update(_state(state))
    agent["problems"] = problems
    return agent, None


def _state(state: dict) -> dict[str, Any]:
    """The state's fields in the contract's types only (anything else is left out)."""
    memory_used, memory_total = _int(state.get("memory_used_bytes")), _int(state.get("memory_total_bytes"))
    return {
        "cpu_percent": _float(state.get("cpu_percent")),
        "cpu_count": _int(state.get("cpu_count")),
        "memory_used_bytes": memory_used,
        "memory_total_bytes": memory_total,
        "memory_available_bytes": _int(state.get("memory_available_bytes")),
        "memory_text": _used_of(memory_used, memory_total),
        "disks": [_disk(d) for d in _list(state.get("disks"), MAX_DISKS) if isinstance(d, dict)],
        "gpu_status": _text(state.get("gpu_status"), 500),
        "host_status": _text(state.get("host_status"), 500),  # the agent's, when psutil failed
        "gpus": [_gpu(g) for g in _list(state.get("gpus"), MAX_GPUS) if isinstance(g, dict)],
        "runs": [r for r in (_text(r, 128) for r in _list(state.get("runs"), MAX_RUNS)) if r],
    }


def _disk(disk: dict) -> dict[str, Any]:
    free, total = _int(disk.get("free_bytes")), _int(disk.get("total_bytes"))
    used = total - free if free is not None and total is not None else None
    return {"path": _text(disk.get("path"), MAX_TEXT), "free_bytes": free, "total_bytes": total,
            "percent": _percent(used, total), "text": _used_of(used, total)}  # fmt: skip


def _gpu(gpu: dict) -> dict[str, Any]:
    used, total = _int(gpu.get("memory_used_bytes")), _int(gpu.get("memory_total_bytes"))
    processes = [p for p in _list(gpu.get("processes"), MAX_PROCESSES) if isinstance(p, dict)]
    return {
        "index": _int(gpu.get("index")),
        "name": _text(gpu.get("name"), MAX_TEXT),
        "uuid": _text(gpu.get("uuid"), 100),
        "util_percent": _float(gpu.get("util_percent")),
        "memory_used_bytes": used,
        "memory_total_bytes": total,
        "memory_percent": _percent(used, total),
        "memory_text": _used_of(used, total),
        "power_watts": _float(gpu.get("power_watts")),
        "temperature_celsius": _float(gpu.get("temperature_celsius")),
        "processes": [
            {
                "pid": _int(p.get("pid")),
                "user": _text(p.get("user"), 64),
                "run": _text(p.get("run"), 128) or None,
            }
            for p in processes
        ],
    }


def _running_runs(name: str, lab) -> list[dict[str, Any]]:
    """The box's running (and stalled) runs as its reader sees them, newest first: at most
    MAX_RUNS_PER_OWNER of each owner read. Every training user may mark thousands of its own
    runs running; reading them all at each poll (every 5 s an open page) cost 2 s of CPU for
    20,000, and the newest would hide everyone else's."""
    ids = health.newest_per_owner(lab.index.candidates(None, None, RUNNING), MAX_RUNS_PER_OWNER)
    found = [r for r in lab._load(ids) if not r.trashed and r.status in (RUNNING, STALLED)]  # noqa: SLF001
    found.sort(key=lambda r: str(r.id), reverse=True)
    return [{"id": r.id, "name": _text(r.display_name, MAX_TEXT), "status": r.status, "owner": r.owner or ""}
            for r in found[:MAX_RUNS]]  # fmt: skip


# ---- the history: sparklines ----------------------------------------------------------------


def _history(client: redis.Redis, key: str, agent: dict[str, Any] | None) -> dict[str, Any]:
    """The newest samples of the box's history as sparklines: {label: {points, last}} with
    points an SVG polyline's (0..100 wide, 0..24 high, 100 % at the top). Left out when the
    stream is missing or its newest samples would be too large to read."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(key)
    pipe.memory_usage(key, samples=5)
    length, memory = pipe.execute(raise_on_error=False)
    if not isinstance(length, int) or length == 0:
        return {}
    if isinstance(memory, int) and memory / length * min(length, HISTORY_POINTS) > HISTORY_BYTES:
        return {}
    entries = client.xrevrange(key, count=HISTORY_POINTS)
    entries.reverse()
    total_memory = (agent or {}).get("memory_total_bytes")
    lines: dict[str, list[float]] = {}
    for _, fields in entries:
        if not isinstance(fields, dict):
            continue
        for raw_name, raw_value in list(fields.items())[: 4 * MAX_GPUS + 16]:
            label = _history_label(_decoded(raw_name)[:64])
            value = _float_text(raw_value if isinstance(raw_value, bytes) and len(raw_value) < 64 else None)
            if label is None or value is None:
                continue
            if label == "memory":
                if not total_memory:
                    continue
                value = 100.0 * value / total_memory
            lines.setdefault(label, []).append(min(100.0, max(0.0, value)))
    return {
        label: {"points": _polyline(values), "last": values[-1]} for label, values in sorted(lines.items())
    }


def _history_label(field: str) -> str | None:
    """The sparkline a history field is drawn in (percent fields only), or None."""
    if field == "cpu_percent":
        return "cpu"
    if field == "memory_used_bytes":
        return "memory"
    found = _GPU_FIELD.match(field)
    return f"gpu{int(found.group(1))}" if found and int(found.group(1)) < MAX_GPUS else None


def _polyline(values: list[float]) -> str:
    if len(values) == 1:
        values = values * 2
    step = 100.0 / (len(values) - 1)
    return " ".join(f"{k * step:.1f},{24 - 24 * v / 100:.1f}" for k, v in enumerate(values))


# ---- values in the contract's types ---------------------------------------------------------


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    """An int of the state (a float that is a whole number too: 1.0e11 bytes is a count)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value) if -(2**63) <= value < 2**63 else None


def _float_text(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        return ""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _list(value: Any, limit: int) -> list:
    return value[:limit] if isinstance(value, list) else []


def _percent(part: int | None, whole: int | None) -> float | None:
    if part is None or not whole or whole <= 0:
        return None
    return min(100.0, max(0.0, 100.0 * part / whole))


def _used_of(used: int | None, total: int | None) -> str:
    """ "12.5 of 80.0 GiB" (or what of it is known)."""
    if used is None and total is None:
        return ""
    if total is None:
        return _bytes(used)
    if used is None:
        return f"? of {_bytes(total)}"
    return f"{_bytes(used)} of {_bytes(total)}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "?"
    for size, label in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(value) >= size:
            return f"{value / size:.1f} {label}"
    return f"{value} B"
