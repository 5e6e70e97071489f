# Asserts that the egress connection log has lines matching every filter (used by egress.yml).
#
#   python3 logcheck.py [--min N] [--wait SECONDS] FILTER...
#
# FILTER: FIELD=VALUE (equal), FIELD~=TEXT (contains), FIELD^=PREFIX (starts with). Values are
# compared as text (JSON booleans as true/false). Lines are flushed as they are judged, so the log
# is re-read until --wait runs out. Matching lines are printed; on failure the log tail is.
import json
import os
import sys
import time

LOG = os.environ.get("EGRESS_LOG", "/var/log/egress/connections.jsonl")


def text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def parse_filter(arg):
    key, sep, value = arg.partition("=")
    if not sep or not key:
        sys.exit(f"logcheck: not a filter: {arg!r}")
    if key.endswith("~"):
        return key[:-1], "contains", value
    if key.endswith("^"):
        return key[:-1], "prefix", value
    return key, "equal", value


def matches(event, filters):
    for key, how, want in filters:
        if key not in event:
            return False
        have = text(event[key])
        if how == "equal" and have != want:
            return False
        if how == "contains" and want not in have:
            return False
        if how == "prefix" and not have.startswith(want):
            return False
    return True


def read_events():
    events = []
    try:
        with open(LOG, encoding="utf-8") as log:
            for line in log:
                try:
                    events.append((line.rstrip("\n"), json.loads(line)))
                except ValueError:
                    pass
    except FileNotFoundError:
        pass
    return events


def main(argv):
    minimum, wait, filters = 1, 10.0, []
    args = iter(argv)
    for arg in args:
        if arg == "--min":
            minimum = int(next(args))
        elif arg == "--wait":
            wait = float(next(args))
        else:
            filters.append(parse_filter(arg))
    if not filters:
        sys.exit("logcheck: no filter given")
    wanted = " ".join(argv)
    deadline = time.monotonic() + wait
    while True:
        events = read_events()
        found = [line for line, event in events if isinstance(event, dict) and matches(event, filters)]
        if len(found) >= minimum or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if len(found) >= minimum:
        print(f"{len(found)} line(s) in {LOG} match {wanted}:")
        for line in found[:20]:
            print(f"  {line}")
        return 0
    print(f"::error title=egress log::{len(found)} line(s) in {LOG} match {wanted} (need {minimum})")
    print(f"last lines of {LOG} ({len(events)} in all):")
    for line, _ in events[-30:]:
        print(f"  {line}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
