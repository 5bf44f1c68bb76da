#!/usr/bin/env bash
# `make run`: the django-q2 worker and the development server side by side. When either of them
# exits, or this script gets Ctrl-C / SIGTERM / SIGHUP, both are stopped with all their children.
#
# Each runs in its own process group (job control) and is stopped group by group, so no child is
# left behind. qcluster gets SIGINT first, the signal it shuts down cleanly on: a SIGTERM to its
# whole group kills the sentinel (which keeps SIGTERM's default action) while the parent waits for
# it on a lock, and the parent then hangs forever. runserver gets SIGTERM first: it has nothing to
# drain, and SIGINT does nothing when make was started with SIGINT ignored (`make run &`, nohup).
# Whatever is left after STOP_TIMEOUT seconds gets SIGTERM, then SIGKILL after as long again.
#
# Environment: PY (python of the virtualenv), PORT (8000), STOP_TIMEOUT (10 seconds); it sets
# DEFAULT_SITE_URL (this server's address), which settings use when SITE_URL is not set.
set -uo pipefail

PY=${PY:-.venv/bin/python}
PORT=${PORT:-8000}
STOP_TIMEOUT=${STOP_TIMEOUT:-10}
# Links in notifications point at this server unless SITE_URL (in the environment or .env) says otherwise.
export DEFAULT_SITE_URL=http://127.0.0.1:$PORT
groups=()       # process group ids
first_signal=() # the signal each group is asked to stop with first

alive() {  # any process left in one of the groups? Zombies do not count: an orphaned child is
           # reaped by init, which in a container may take its time (or never come).
    if ! command -v ps >/dev/null 2>&1; then
        # A slim image without procps: ask the kernel about each group (zombies then count, so a
        # stop may wait out its timeouts, but it never skips the signals).
        local g
        for g in "${groups[@]}"; do kill -0 -- "-$g" 2>/dev/null && return 0; done
        return 1
    fi
    ps -A -o pgid= -o stat= | awk -v groups=" ${groups[*]} " '
        index(groups, " " $1 " ") && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

signal_groups() {  # $1: signal, or "first" for each group's own first signal
    local i
    for i in "${!groups[@]}"; do
        kill "-$([ "$1" = first ] && echo "${first_signal[$i]}" || echo "$1")" -- "-${groups[$i]}" 2>/dev/null
    done
}

stop_all() {
    trap '' INT TERM HUP  # a second Ctrl-C must not cut the clean-up short
    local sig waited
    for sig in first TERM KILL; do
        alive || break
        [ "$sig" = first ] || echo "run.sh: still running after ${STOP_TIMEOUT}s, sending SIG$sig" >&2
        signal_groups "$sig"
        for ((waited = 0; waited < STOP_TIMEOUT * 10; waited++)); do
            alive || break
            sleep 0.1
        done
    done
    wait 2>/dev/null
}

on_signal() {  # $1: the exit status a shell reports for that signal
    stop_all
    exit "$1"
}

trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

set -m  # own process group per background job, so a group can be signalled as a whole
# stdin from /dev/null as before: a background group reading the terminal would be stopped (SIGTTIN).
"$PY" manage.py qcluster </dev/null &
worker=$!
groups+=("$worker") first_signal+=(INT)
"$PY" manage.py runserver "127.0.0.1:$PORT" </dev/null &
server=$!
groups+=("$server") first_signal+=(TERM)
set +m

until "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/login/', timeout=2)" 2>/dev/null; do
    if ! kill -0 "$server" 2>/dev/null; then
        echo "run.sh: the web server did not start (is port $PORT in use?)" >&2
        stop_all
        exit 1
    fi
    sleep 1
done
echo ""
echo "LeadOps is up on http://127.0.0.1:$PORT/  (Ctrl-C stops the server and the worker)"
"$PY" manage.py seed_demo --print-logins
echo ""

# Whichever exits first (a crash, a `kill` of one of them) takes the other one down. Polled, not
# `wait -n`: that misses a job which ended before it was called (say, while the logins printed).
while kill -0 "$worker" 2>/dev/null && kill -0 "$server" 2>/dev/null; do
    sleep 0.5
done
if kill -0 "$server" 2>/dev/null; then wait "$worker"; else wait "$server"; fi
status=$?
stop_all
exit "$status"
