"""config/symbols.yaml: pairs to capture, grouped into workers, with errors people can act on."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from workers.errors import ConfigError
from workers.symbols import (
    RESERVED_NAMES,
    WorkerSpec,
    create_from_example,
    find_worker,
    first_use,
    load_file,
    load_symbols,
    parse_file,
    parse_symbols,
    this_host,
)

PATH = Path("/etc/tick-capture/symbols.yaml")

EXAMPLE = """\
symbols:            # each one its own worker, named in lowercase: btcusdt, ethusdt
  - BTCUSDT
  - ETHUSDT
groups:             # one worker per group, one combined connection, for quiet pairs
  alts: [SOLUSDT, XRPUSDT, 1000SATSUSDT]
"""


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_symbols(text, PATH)
    return str(info.value)


# -- the shape of a good file ----------------------------------------------------------------

def test_example_file_gives_one_worker_per_symbol_and_one_per_group():
    workers = parse_symbols(EXAMPLE, PATH)

    assert workers == [
        WorkerSpec("btcusdt", ("BTCUSDT",), 2, False),
        WorkerSpec("ethusdt", ("ETHUSDT",), 3, False),
        WorkerSpec("alts", ("SOLUSDT", "XRPUSDT", "1000SATSUSDT"), 5, True),
    ]


def test_bare_symbol_workers_are_named_in_lowercase():
    names = [w.name for w in parse_symbols("symbols: [BTCUSDT, DOGEUSDT]\n", PATH)]

    assert names == ["btcusdt", "dogeusdt"]


def test_group_keeps_its_own_name_and_symbol_order():
    (group,) = parse_symbols("groups:\n  quiet_pairs-1: [XRPUSDT, SOLUSDT]\n", PATH)

    assert group.name == "quiet_pairs-1"
    assert group.symbols == ("XRPUSDT", "SOLUSDT")
    assert group.is_group


def test_lowercase_symbols_are_accepted_and_uppercased_as_binance_writes_them():
    workers = parse_symbols("symbols:\n  - btcusdt\ngroups:\n  alts: [solusdt, XrpUsdt]\n", PATH)

    assert [w.symbols for w in workers] == [("BTCUSDT",), ("SOLUSDT", "XRPUSDT")]
    assert workers[0].name == "btcusdt"


@pytest.mark.parametrize("symbol", ["1000SATSUSDT", "1000000BOBUSDT", "XRPDOWNUSDT", "BTCUSDC"])
def test_symbols_with_leading_digits_and_long_names_are_accepted(symbol):
    (worker,) = parse_symbols(f"symbols: [{symbol}]\n", PATH)

    assert worker.symbols == (symbol,)
    assert worker.name == symbol.lower()


def test_non_ascii_symbol_is_accepted_in_a_group_and_kept_as_written():
    (group,) = parse_symbols("groups:\n  cn: [这是测试币456]\n", PATH)

    assert group.symbols == ("这是测试币456",)


def test_non_ascii_symbol_cannot_be_a_bare_worker_and_the_error_says_use_a_group():
    message = config_error("symbols:\n  - 这是测试币456\n")

    assert message.startswith(f"{PATH}:2:")
    assert "groups:" in message


def test_symbols_only_or_groups_only_are_both_enough():
    assert [w.name for w in parse_symbols("symbols: [BTCUSDT]\n", PATH)] == ["btcusdt"]
    assert [w.name for w in parse_symbols("groups:\n  alts: [SOLUSDT]\n", PATH)] == ["alts"]


def test_empty_symbols_section_is_fine_when_groups_exist():
    workers = parse_symbols("symbols:\ngroups:\n  alts: [SOLUSDT]\n", PATH)

    assert [w.name for w in workers] == ["alts"]


def test_the_symbols_file_shipped_in_the_repository_is_valid():
    workers = load_symbols()

    assert workers
    assert all(w.name == w.name.lower() and w.symbols for w in workers)


def test_a_group_of_any_size_is_one_worker():
    symbols = "".join(f"    - S{i:04d}USDT\n" for i in range(2500))

    (group,) = parse_symbols("groups:\n  big:\n" + symbols, PATH)

    assert len(group.symbols) == 2500  # stream_plan spreads it over three connections


# -- errors name the file, the 1-based line and the fix ---------------------------------------

@pytest.mark.parametrize("bad", ["BTC-USDT", "btc usdt", "BTC/USDT", "BTC_USDT", "B"])
def test_bad_symbol_names_file_line_and_fix(bad):
    text = f"symbols:\n  - BTCUSDT\n  - ETHUSDT\n  - {bad}\n"

    message = config_error(text)

    assert message.startswith(f"{PATH}:4: ")
    assert repr(bad) in message
    assert "e.g. BTCUSDT" in message  # the fix: how a symbol is written


def test_bad_symbol_inside_a_flow_list_names_the_line_of_that_list():
    message = config_error("symbols:\n  - BTCUSDT\ngroups:\n  alts: [SOLUSDT, SOL-USDT]\n")

    assert message.startswith(f"{PATH}:4: ")
    assert "'SOL-USDT'" in message


def test_a_mapping_where_a_symbol_should_be_names_the_line():
    message = config_error("symbols:\n  - BTCUSDT\n  - {name: ETHUSDT}\n")

    assert message.startswith(f"{PATH}:3: ")
    assert "BTCUSDT" in message  # shows what a symbol looks like


def test_symbol_listed_under_two_workers_names_both_lines():
    text = "symbols:\n  - BTCUSDT\ngroups:\n  alts:\n    - SOLUSDT\n    - btcusdt\n"

    message = config_error(text)

    assert message.startswith(f"{PATH}:6: ")
    assert "BTCUSDT" in message
    assert "line 2" in message
    assert "one place" in message


def test_symbol_listed_twice_across_two_groups_names_both_lines():
    text = "groups:\n  a: [SOLUSDT]\n  b:\n    - XRPUSDT\n    - SOLUSDT\n"

    message = config_error(text)

    assert message.startswith(f"{PATH}:5: ")
    assert "line 2" in message


def test_invalid_yaml_names_the_offending_line():
    message = config_error("symbols:\n  - BTCUSDT\n - ETHUSDT\n")

    assert message.startswith(f"{PATH}:3: ")
    assert "not valid YAML" in message
    assert "indentation" in message


def test_tab_indentation_names_the_line():
    message = config_error("symbols:\n\t- BTCUSDT\n")

    assert message.startswith(f"{PATH}:2: ")


def test_unknown_top_level_key_is_refused_with_the_known_ones():
    message = config_error("symbols:\n  - BTCUSDT\nsymbol:\n  - ETHUSDT\n")

    assert message.startswith(f"{PATH}:3: ")
    assert "'symbol'" in message
    assert "'symbols'" in message and "'groups'" in message


def test_a_section_given_twice_is_refused():
    message = config_error("symbols: [BTCUSDT]\nsymbols: [ETHUSDT]\n")

    assert message.startswith(f"{PATH}:2: ")
    assert "twice" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file_is_refused_with_what_to_put_in_it(text):
    message = config_error(text)

    assert message.startswith(f"{PATH}: ")
    assert "empty" in message
    assert "symbols:" in message


def test_file_with_no_symbols_at_all_is_refused():
    message = config_error("symbols:\n")

    assert str(PATH) in message
    assert "no symbols" in message


def test_top_level_list_instead_of_mapping_is_refused():
    message = config_error("- BTCUSDT\n")

    assert message.startswith(f"{PATH}:1: ")
    assert "symbols:" in message


@pytest.mark.parametrize("group", ["alts: []", "alts:"])
def test_empty_group_is_refused_on_its_line(group):
    message = config_error(f"symbols: [BTCUSDT]\ngroups:\n  {group}\n  more: [SOLUSDT]\n")

    assert message.startswith(f"{PATH}:3: ")
    assert "'alts' has no symbols" in message


@pytest.mark.parametrize("name", ['"alts:1"', "Alts", "ALTS", '"my alts"', "-alts", '"a/b"'])
def test_group_name_unusable_as_a_supervisor_program_name_is_refused(name):
    message = config_error(f"symbols: [BTCUSDT]\ngroups:\n  {name}: [SOLUSDT]\n")

    assert message.startswith(f"{PATH}:3: ")
    assert "lowercase letters, digits, '-' or '_'" in message


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_reserved_name_is_refused(name):
    message = config_error(f"groups:\n  {name}: [SOLUSDT]\n")

    assert message.startswith(f"{PATH}:2: ")
    assert "reserved" in message
    assert "rename" in message


def test_group_named_like_a_bare_symbol_worker_is_refused():
    message = config_error("symbols: [BTCUSDT]\ngroups:\n  btcusdt: [SOLUSDT]\n")

    assert message.startswith(f"{PATH}:3: ")
    assert "already used on line 1" in message


def test_groups_that_is_not_a_mapping_is_refused():
    message = config_error("symbols: [BTCUSDT]\ngroups:\n  - SOLUSDT\n")

    assert message.startswith(f"{PATH}:3: ")
    assert "'groups' must map" in message


# -- loading from disk and finding a worker ----------------------------------------------------

def test_load_symbols_reads_the_given_file(tmp_path):
    path = tmp_path / "symbols.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")

    assert [w.name for w in load_symbols(path)] == ["btcusdt", "ethusdt", "alts"]


def test_load_symbols_errors_carry_the_real_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("symbols:\n  - BTC-USDT\n", encoding="utf-8")

    with pytest.raises(ConfigError, match=rf"^{path}:2: "):
        load_symbols(path)


def test_missing_file_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError) as info:
        load_symbols(path)

    assert str(path) in str(info.value)
    assert "--config" in str(info.value)


def test_find_worker_matches_names_case_insensitively():
    workers = parse_symbols(EXAMPLE, PATH)

    assert find_worker(workers, "BTCUSDT", PATH).symbols == ("BTCUSDT",)
    assert find_worker(workers, "alts", PATH).is_group


def test_find_worker_unknown_name_lists_the_known_ones():
    workers = parse_symbols(EXAMPLE, PATH)

    with pytest.raises(ConfigError) as info:
        find_worker(workers, "dogeusdt", PATH)

    message = str(info.value)
    assert str(PATH) in message
    assert "'dogeusdt'" in message
    assert "btcusdt, ethusdt, alts" in message


# -- your list is yours: created from the tracked example, never tracked itself --------------

REPO = Path(__file__).resolve().parents[2]


def test_the_tracked_example_is_a_good_symbols_file():
    assert [w.name for w in load_symbols(REPO / "config" / "symbols.example.yaml",
                                         create=False)] == ["btcusdt", "ethusdt"]


def test_a_missing_symbols_file_is_created_from_the_example_on_first_use(tmp_path):
    example = (REPO / "config" / "symbols.example.yaml").read_text()
    (tmp_path / "symbols.example.yaml").write_text(example)
    path = tmp_path / "symbols.yaml"

    assert [w.name for w in load_symbols(path, create=True)] == ["btcusdt", "ethusdt"]
    assert path.read_text() == example
    path.write_text("symbols: [SOLUSDT]\n")  # the user's own list is never replaced
    assert not create_from_example(path)
    assert [w.name for w in load_symbols(path, create=True)] == ["solusdt"]


def test_a_missing_symbols_file_after_first_use_says_how_to_create_it(tmp_path):
    (tmp_path / "symbols.example.yaml").write_text(EXAMPLE)
    path = tmp_path / "symbols.yaml"

    with pytest.raises(ConfigError) as info:
        load_symbols(path, create=False)
    assert f"cp {tmp_path / 'symbols.example.yaml'} {path}" in str(info.value)
    assert not path.exists()


def test_first_use_is_before_any_worker_was_rendered(tmp_path):
    assert first_use(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "workers.conf").write_text("")  # scripts/run on a fresh clone
    assert first_use(tmp_path)
    (tmp_path / "run" / "workers.conf").write_text("[program:btcusdt]\n")
    assert not first_use(tmp_path)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs git and the repository")
def test_editing_your_symbols_file_leaves_a_clone_clean(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    assert not (clone / "config" / "symbols.yaml").exists()  # not tracked
    path = clone / "config" / "symbols.yaml"
    load_symbols(path, create=True)  # what the first start does
    path.write_text("symbols:\n  - SOLUSDT\ngroups:\n  alts: [XRPUSDT, DOGEUSDT]\n")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, check=True,
                            capture_output=True, text=True)
    assert status.stdout == ""


# -- shards: 'hosts:' says which hosts (CAPTURE_HOST) run which workers -----------------------

SHARDED = """\
symbols:
  - BTCUSDT
  - ETHUSDT
groups:
  alts: [SOLUSDT, XRPUSDT]
  alt-2: [DOGEUSDT]
hosts:
  host-a: [btcusdt, alts]
  host-b: [btcusdt, alt-*]
  host-c: []
"""


def shares(text: str) -> dict:
    file = parse_file(text, PATH)
    return {h: [w.name for w in file.share(h)] for h in file.hosts}


def test_a_file_without_hosts_runs_every_worker_on_every_host():
    file = parse_file(EXAMPLE, PATH)

    assert not file.sharded
    assert file.share("any-host") == file.workers == parse_symbols(EXAMPLE, PATH)
    assert file.elsewhere("any-host") == []
    assert all(w.hosts == () for w in file.workers)


def test_each_host_runs_its_workers_plus_those_listed_under_no_host():
    assert shares(SHARDED) == {
        "host-a": ["btcusdt", "ethusdt", "alts"],  # ethusdt: listed under no host, so everywhere
        "host-b": ["btcusdt", "ethusdt", "alt-2"],  # alt-* is alt-2 (alts has no '-')
        "host-c": ["ethusdt"],
    }


def test_a_busy_pair_on_two_hosts_and_the_quiet_tail_on_one():
    file = parse_file(SHARDED, PATH)

    assert [w.hosts for w in file.workers] == [("host-a", "host-b"), (), ("host-a",),
                                               ("host-b",)]
    assert [w.name for w in file.elsewhere("host-a")] == ["alt-2"]
    assert parse_file(SHARDED, PATH).hosts == {"host-a": 8, "host-b": 9, "host-c": 10}


def test_worker_entries_under_a_host_are_case_insensitive_like_worker_names():
    assert shares("symbols: [BTCUSDT, ETHUSDT]\nhosts:\n  a: [BTCUSDT]\n") == {
        "a": ["btcusdt", "ethusdt"]}


def test_hosts_do_not_change_the_workers_or_their_symbols():
    plain = parse_symbols(SHARDED.split("hosts:")[0], PATH)
    sharded = parse_symbols(SHARDED, PATH)

    assert [(w.name, w.symbols, w.line, w.is_group) for w in sharded] == [
        (w.name, w.symbols, w.line, w.is_group) for w in plain]


@pytest.mark.parametrize("text", ["hosts:\n", "hosts: {}\n"])
def test_an_empty_hosts_section_means_no_shards(text):
    file = parse_file("symbols: [BTCUSDT]\n" + text, PATH)

    assert not file.sharded and [w.name for w in file.share("x")] == ["btcusdt"]


def test_a_host_the_sharded_file_does_not_name_is_refused_with_the_fix():
    file = parse_file(SHARDED, PATH)

    with pytest.raises(ConfigError) as info:
        file.share("ip-10-0-0-5")
    message = str(info.value)
    assert message.startswith(f"{PATH}:7: this host (CAPTURE_HOST=ip-10-0-0-5) is not under "
                              "'hosts:', which names host-a, host-b, host-c: ")
    assert "set CAPTURE_HOST" in message and "'ip-10-0-0-5: []'" in message


@pytest.mark.parametrize("hosts,line,needle", [
    ("  a: [dogeusdt]\n", 5, "'dogeusdt' (under host 'a') is not a worker of this file: name a "
                             "worker (btcusdt, alts) or add the pair"),
    ("  a: [SOLUSDT]\n", 5, "'SOLUSDT' (under host 'a') is in group 'alts': a host runs whole "
                            "workers, so name the group (alts)"),
    ("  a: [memes-*]\n", 5, "'memes-*' (under host 'a') matches no worker of this file: the "
                            "workers are btcusdt, alts"),
    ("  'host a': [btcusdt]\n", 5, "host name 'host a' is not usable: use the host's "
                                   "CAPTURE_HOST"),
    ("  a: []\n  b: []\n  a: [alts]\n", 7, "host 'a' appears twice (first on line 5): merge "
                                           "the two lists"),
    ("  a: btcusdt\n", 5, "host 'a' must list worker names, e.g. [btcusdt, alts]"),
    ("  a:\n    - {btcusdt: 1}\n", 6, "expected a worker name or glob under host 'a' here"),
    ("  - a\n", 5, "'hosts' must map a host name (its CAPTURE_HOST) to a list of workers"),
])
def test_a_bad_hosts_section_names_file_line_and_fix(hosts, line, needle):
    message = config_error("symbols: [BTCUSDT]\ngroups:\n  alts: [SOLUSDT]\nhosts:\n" + hosts)

    assert message.startswith(f"{PATH}:{line}: "), message
    assert needle in message, message


def test_find_worker_starts_any_worker_of_the_file_whatever_its_hosts():
    workers = parse_symbols(SHARDED, PATH)

    assert find_worker(workers, "alt-2", PATH).hosts == ("host-b",)  # not host-a's, still found


def test_the_commented_hosts_example_of_the_tracked_example_is_valid():
    text = (REPO / "config" / "symbols.example.yaml").read_text()
    uncommented = re.sub(r"^# ?(groups:|hosts:|  \S)", r"\1", text, flags=re.M)

    file = parse_file(uncommented, PATH)

    assert file.sharded and set(file.hosts) >= {"host-a", "host-b"}
    assert {w.name for w in file.share("host-a")} > {w.name for w in file.share("host-b")}


def test_load_file_reads_hosts_and_load_symbols_all_workers(tmp_path):
    path = tmp_path / "symbols.yaml"
    path.write_text(SHARDED)

    assert load_file(path, create=False).hosts == {"host-a": 8, "host-b": 9, "host-c": 10}
    assert [w.name for w in load_symbols(path, create=False)] == [
        "btcusdt", "ethusdt", "alts", "alt-2"]


def test_this_host_is_capture_host_and_a_bad_one_is_a_config_error():
    assert this_host({"CAPTURE_HOST": "host-a", "INFLUXDB_URL": "not a url"}) == "host-a"
    with pytest.raises(ConfigError, match="CAPTURE_HOST"):
        this_host({"CAPTURE_HOST": "host a"})
