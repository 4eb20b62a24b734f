"""The federation's roles: each reacts to the round's state on a `RoundChannel`, never to
another role. The same classes run in a simulation (every role in one process, stepped in turn
on the in-memory channel or the embedded chain) and in a deployment (one role per process)."""
