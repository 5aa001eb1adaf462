"""A training run that goes on through the kit's upgrade: 1,000 points a second, each logged
once, counted only after log() returned; SIGTERM ends it and writes what it sent."""

import json
import signal
import time

import labstats

stopping = False


def stop(signum, frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
stats = labstats.Stats("runs/upgrade-canary", handle_signals=False, system_metrics=False)
sent, errors, start = 0, [], time.monotonic()
while not stopping:
    try:
        stats.log(step=sent, canary=float(sent))
        sent += 1
    except Exception as exc:  # the logger must never raise into training: counted, said
        errors.append(repr(exc))
    ahead = sent / 1000 - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
stats.close(timeout=60)
spool = stats.pending_spool
with open("canary.json", "w") as out:
    json.dump(
        {
            "run_id": stats.run_id,
            "sent": sent,
            "errors": errors[:20],
            "spool": str(spool) if spool else None,
            "seconds": time.monotonic() - start,
        },
        out,
    )
