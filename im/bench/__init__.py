"""``imctl bench`` / ``make bench``: the benchmark of the suite beside a bare relay.

Scenarios (each selectable): ``connections`` (authenticated connections held on one
connector, RSS per connection), ``direct`` (1:1 throughput and latency), ``group``
(fan-out to the connected members of one group), ``login`` (logins/s against argon2
alone, token verifications/s). A bare relay (``im.bench.relay``) runs in the same run
as the baseline, driven by the same load generator (``im.bench.loadgen``, separate
processes, the project's client library over real sockets).

Every messaging run also reports the servers' CPU per delivered message, and the run
starts with the idle servers' CPU; ``direct`` adds open-loop runs of the suite at half
its own max and beyond it (overload: Sends refused with BUSY, undelivered messages).
The output's "Method" text says what each number counts.

Running it::

    make bench                                  # all scenarios, standalone, < 5 min
    imctl bench direct --pairs 50 --duration 20  # one scenario, other sizes
    imctl bench direct --pairs 50 --rate 1000 --no-half-max --no-overload  # one fixed rate
    imctl bench --distributed                   # the local cluster (dev-services up)
    imctl bench --gateway http://host:8080 direct   # a suite that is already running

Results: a table per scenario on stdout, ``bench-results/<stamp>-<id>/bench.json`` and
``latency.png`` (only when matplotlib can be imported; it is not a dependency).

Open files: every connection is a file descriptor in the connector, in the relay and
in a generator process. The bench raises RLIMIT_NOFILE (soft to hard, and the hard
limit too when it runs as root, up to fs.nr_open) for itself, the suite and relay it
starts, and its generator processes. Elsewhere raise the hard limit first, e.g.
``ulimit -Hn 1048576`` (root), ``LimitNOFILE=`` in a systemd unit, or ``nofile`` in
/etc/security/limits.conf. Beyond ~28k connections to one listening port the kernel
runs out of ephemeral ports for one source address (net.ipv4.ip_local_port_range);
the bench then spreads connections over source addresses 127.0.0.1, 127.0.0.2, ...
"""

from im.bench.options import SCENARIO_NAMES, add_bench_arguments

__all__ = ["SCENARIO_NAMES", "add_bench_arguments", "main"]


def main(args):  # type: ignore[no-untyped-def]
    """Run ``imctl bench`` with parsed arguments (see ``add_bench_arguments``)."""
    from im.bench.runner import main_from_args

    return main_from_args(args)
