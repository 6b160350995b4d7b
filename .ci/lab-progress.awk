# Filters "go test -v" output of the NAT lab for make test: the one
# "natlab:" line per scenario as it happens, skip reasons, failures with
# their logs, and the summary; everything else (RUN lines, passing tests'
# logs) is dropped.
/^natlab: / || /^(ok|FAIL|PASS)/ { print; fflush(); next }
/^ *--- (FAIL|SKIP)/ || /^panic:/ { print; fflush(); keep = 1; next }
keep && /^[ \t]/ { print; fflush(); next }
{ keep = 0 }
