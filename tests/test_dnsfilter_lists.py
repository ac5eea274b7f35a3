"""DnsFilter's block lists (issue 23): a hosts file, together with `block` and `block_file`, and
lines that are not names refused at load with the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors import Packet, build
from actors.contrib.dnsfilter import DnsFilter
from actors.pipeline_file import PipelineFileError, load_pipeline
from actors.testing import run

HOSTS = """\
# a block list in hosts format
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
255.255.255.255 broadcasthost
0.0.0.0 0.0.0.0
0.0.0.0 ads.example tracker.example   # two names on a line
127.0.0.1 loop.example
:: six.example
192.0.2.7 printer.example
fe80::1%lo0 localhost
"""


def query(name: str) -> Packet:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    message = bytes.fromhex("1234 0100 0001 0000 0000 0000") + labels + b"\0\0\1\0\1"
    return build.udp("10.0.0.1", "10.0.0.2", 5000, 53, message)


def blocked_names(result_of: DnsFilter) -> set[bytes]:
    return set(result_of.blocked)


def test_hosts_file_blocks_the_names_sent_to_a_sink(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    stage = DnsFilter(hosts_file=hosts)
    assert blocked_names(stage) == {
        b"ads.example",
        b"tracker.example",
        b"loop.example",
        b"six.example",
    }
    names = ["www.ads.example", "tracker.example", "six.example", "printer.example", "localhost"]
    result = run(DnsFilter, [query(n) for n in names], hosts_file=hosts)
    assert len(result.replies) == 3
    assert [p.dst_port for p in result.passed] == [53, 53]  # printer and localhost pass


def test_block_block_file_and_hosts_file_add_up(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("0.0.0.0 a.example\n")
    (tmp_path / "list").write_text("# one a line\nb.example\n\n")
    pipe = tmp_path / "p.toml"
    pipe.write_text(
        '[[outbound]]\nuse = "dnsfilter"\n'
        'options = { block = ["c.example"], block_file = "list", hosts_file = "hosts" }\n'
    )
    _, (entry,) = load_pipeline(pipe)
    result = run(DnsFilter, [query(f"{x}.example") for x in "abcd"], **entry.options)
    assert len(result.replies) == 3 and len(result.passed) == 1


@pytest.mark.parametrize(
    ("option", "text", "message"),
    [
        ("block_file", "ok.example\nads.example tracker.example\n", ":2: one name per line"),
        ("block_file", "ok.example\n*.example\n", ":2: '*.example' is not a domain name"),
        ("block_file", "a/b.example\n", ":1: 'a/b.example' is not a domain name"),
        ("hosts_file", "0.0.0.0 fine.example\nads.example\n", ":2: 'ads.example' is not an"),
        ("hosts_file", "0.0.0.0\n", ":1: 0.0.0.0 is followed by no name"),
        ("hosts_file", "0.0.0.0 bad..example\n", ":1: 'bad..example' is not a domain name"),
    ],
)
def test_a_line_that_is_not_a_name_is_refused_at_load(
    tmp_path: Path, option: str, text: str, message: str
) -> None:
    (tmp_path / "list").write_text(text)
    pipe = tmp_path / "p.toml"
    pipe.write_text(f'[[outbound]]\nuse = "dnsfilter"\noptions = {{ {option} = "list" }}\n')
    with pytest.raises(PipelineFileError) as info:
        load_pipeline(pipe)
    line = str(info.value)
    assert f"{option} {tmp_path / 'list'}{message}" in line, line
    assert "\n" not in line
