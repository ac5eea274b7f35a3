"""The side-by-side benchmark behind ``scripts/bench``: wgactors against the reference
wireguard-go, in network namespaces.

As root it builds the lab of ``actors.lab.pair``: two network namespaces joined by an underlay
veth pair (10.88.0.1/24 <-> 10.88.0.2/24) and a plain veth pair at MTU 1280 (10.89.0.1/24 <->
10.89.0.2/24), and measures these cases (the registry ``cases.CASES``):

1. ``veth``: no tunnel at all, over the plain pair: the ceiling of this machine, so every
   other figure can be read as a share of it;
2. ``reference``: wireguard-go in both namespaces (tunnel 10.99.0.1 <-> 10.99.0.2, MTU 1280);
3. ``wgactors``: ``scripts/wgactors up`` in namespace a, wireguard-go in b;
4. ``wgactors-single``: the same with ``--single-threaded``;
5. ``wgactors-spread`` and ``wgactors-single-spread`` (only when named in ``--cases``): the
   two modes with ``WGACTORS_CPUS=all``, threads placed by the kernel instead of all on one CPU
   (the default, ``actors.placement``);
6. with ``--baseline CHECKOUT``, each chosen wgactors case's twin ``CASE@base``
   (``wgactors@base``, ``wgactors-single@base``...): the same flavour with the daemon run
   through that checkout's ``scripts/wgactors``, so a change and the commit before it are
   measured in the same rounds, and a table gives this tree's medians over the baseline's.

Each of ``--rounds`` rounds runs every case once, round-robin, so that machine noise hits all
cases alike; every case run starts fresh tunnel ends and measures, from namespace a:

* iperf3 TCP upload and download (``-t SECONDS``, the receiver's bits per second);
* UDP packets per second with small packets (``iperf3 -u -l 64 -b 0``, upload; the packets
  the receiver got, per second);
* ping latency (``ping -c 20 -i 0.05``, average rtt), idle and while a TCP upload runs;
* the a end's peak RSS (VmHWM), CPU time (utime + stime, as % of one core over the wall time
  of the measurements) and context switches (voluntary + involuntary, summed over
  ``/proc/PID/task/*/status``) per 1000 packets through its interface (rx + tx counters).

``--pin`` puts the peer's side (wireguard-go in b and the iperf3 server) on one half of the
usable CPUs and the side under test (the a end and the iperf3 client) on the other half.

It prints the median of the rounds with min and max, the ratios to the reference and to the
plain veth, and PASS/MISS for each target. Everything it created is removed on the way out,
also on Ctrl-C or SIGTERM; no traffic leaves its own namespaces.

One job per module, each readable alone: ``cases`` (the registry and ``--cases``),
``measure`` (one case, once: the measurements and counters), ``orchestrate`` (the rounds:
start, measure, stop each case), ``stats`` (medians, ratios, targets, the baseline
comparison), ``report`` (tables, machine, JSON), ``hub`` (``--peers``: wgactors as a hub),
``hubload`` (``--hub-load K``: K live peers under load, per ``--workers`` value) and ``cli``
(the options and one run). ``--workers`` adds a case per worker count (``wgactors-wN``);
``--reference PATH`` runs that wireguard-go binary for the reference case and the peer.
Measurements that are not a tunnel case (an in-process per-packet cost, a many-peer run) plug
in as their own option and section next to the case table; a new tunnel flavour is one more
``cases.register_case`` call.
"""
