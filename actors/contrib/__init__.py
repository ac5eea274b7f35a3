"""Ready-made stages for the pipeline file, written against the public :class:`actors.Stage` API.

They double as worked examples of that API: options validated in ``__init__``, resources opened
in ``on_start``, whole batches handled in ``process_batch``, figures reported by
``stats_extra``.

- ``actors.contrib.pcap:PcapWriter`` writes every packet to a classic pcap file (raw IP link
  type) that Wireshark and tshark read, and passes it on.
- ``actors.contrib.firewall:Firewall`` allows, drops or rejects (TCP reset, ICMP unreachable)
  packets by ordered rules on protocol, source and destination networks and ports; the first
  matching rule wins.
- ``actors.contrib.dnsfilter:DnsFilter`` answers DNS queries for blocked names with NXDOMAIN
  itself, on the outbound path, and passes the rest.
- ``actors.contrib.flowstats:FlowStats`` counts packets and bytes per flow in a bounded table and
  shows the top talkers in ``wgactors status``.
- ``actors.contrib.mssclamp:MssClamp`` lowers the MSS option of TCP SYNs and SYN-ACKs to fit the
  tunnel's MTU, on either path, IPv4 and IPv6.

Nothing is imported here: a pipeline file names the module it needs, and only that one loads.
"""
