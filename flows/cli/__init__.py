"""The `stylebatch` command line: main.py parses and dispatches, one module per family of commands.

Exit codes, one meaning each: 0 nothing failed, 1 some pair failed, 2 the run could not start
(usage, an unreadable manifest, no weights, an unwritable output root, no Prefect API), 130 and
143 (128 + the signal) a Ctrl-C or SIGTERM stopped the run: its running pairs were checkpointed
and reported `interrupted`, for `stylebatch rerun` (flows/stops.py).
"""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
