"""Message formats, ack parsing, retry timing and config validation."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from risklib.core.escalation import (
    EscalationConfig,
    RetryPolicy,
    backoff_s,
    email_html,
    format_email,
    format_sms,
    parse_ack,
    reply_code,
)
from risklib.config import load_escalation_config as load_config
from risklib.core.escalation._format import GSM7_BASIC, Member, format_sms_each, short_hash, short_hash_each
from risklib.errors import ConfigError

ACCOUNT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)


def _members(ids, value=0.1234):
    return [Member(f"{a}:drawdown:e1", a, "drawdown", 3, value, 0.1, "HALTED") for a in ids]


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(ACCOUNT, min_size=1, max_size=300),
    level=st.integers(1, 5),
    kind=st.sampled_from(["first", "update", "escalation", "repeat"]),
    rule=st.text(min_size=1, max_size=40),
    value=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_sms_always_fits_one_gsm7_segment_and_keeps_the_reply_code(ids, level, kind, rule, value):
    # Arrange
    code = reply_code("g-" + "".join(ids))
    # Act
    text = format_sms(kind, level, rule, _members(ids, value), code, tier=2)
    # Assert
    assert len(text) <= 160
    assert set(text) <= GSM7_BASIC
    assert text.endswith(f"Reply {code} to ack")


MEMBER = st.builds(
    Member,
    incident_key=ACCOUNT,
    account_id=st.one_of(ACCOUNT, st.sampled_from(["A1", "ACC-000042", "x" * 200, "tab\there", "new\nline", "cr\rhere"])),
    rule=st.just("drawdown"),
    level=st.integers(1, 5),
    metric_value=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    threshold=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    trading_mode=st.one_of(st.none(), st.sampled_from(["", "HALTED", "REDUCE_ONLY", "Ünïcode"])),
)


@settings(max_examples=300, deadline=None)
@given(
    members=st.lists(MEMBER, min_size=1, max_size=20),
    level=st.integers(1, 5),
    kind=st.sampled_from(["first", "update", "escalation", "repeat", "resolved"]),
    rule=st.one_of(st.sampled_from(["drawdown", "var_95"]), st.text(min_size=1, max_size=40)),
    tier=st.integers(1, 4),
    max_chars=st.sampled_from([160, 70, 20, 9, 11, 12]),  # some cut just after a space
)
@example(  # "L1 INFO " is cut at 8 characters: the trailing space goes
    members=[Member("k", "A1", "drawdown", 1, 0.5, 0.1, None)], level=1, kind="first", rule="drawdown", tier=1, max_chars=9
)
def test_dashboard_lines_made_in_one_pass_are_each_members_own_sms_text(members, level, kind, rule, tier, max_chars):
    # Act
    batch = format_sms_each(kind, level, rule, members, tier=tier, max_chars=max_chars)
    # Assert: what the planner stores per member is exactly the one-member SMS text
    assert batch == [format_sms(kind, level, rule, [m], None, tier=tier, max_chars=max_chars) for m in members]


@given(prefix=st.lists(st.one_of(ACCOUNT, st.integers(), st.booleans()), max_size=4),
       last=st.lists(st.one_of(ACCOUNT, st.integers()), max_size=10), n=st.sampled_from([16, 24]))
def test_keys_made_in_one_pass_equal_each_members_own_key(prefix, last, n):
    # Act / Assert: the outbox's ids and dedup keys are stored; a batch must make the same ones
    assert short_hash_each(prefix, last, n=n) == [short_hash(*prefix, x, n=n) for x in last]


def test_sms_lists_accounts_while_they_fit_and_counts_the_rest():
    # Arrange
    ids = [f"ACC{i:05d}" for i in range(1000)]
    # Act
    text = format_sms("first", 3, "drawdown", _members(ids), "4821A")
    # Assert
    assert text.startswith("L3 CRITICAL drawdown: 1000 accts, worst 0.1234: ACC00000,ACC00001")
    shown = text.split(": ", 2)[2].split(" +")[0].split(",")
    rest = int(text.split(" +")[1].split(".")[0])
    assert len(shown) + rest == 1000


@pytest.mark.parametrize(
    ("text", "code"),
    [("ACK 4821A", "4821A"), ("ack 4821a", "4821A"), ("  Ack:4821A. ", "4821A"), ("ACK4821A", "4821A"),
     ("ACK 482A", None), ("OK 4821A", None), ("ACK 4821A please", None), ("", None)],
)
def test_parse_ack(text, code):
    assert parse_ack(text) == code


def test_reply_code_avoids_codes_already_in_use():
    # Arrange
    first = reply_code("g-abc")
    # Act
    second = reply_code("g-abc", taken={first})
    # Assert
    assert first != second and len(second) == 5 and second[:4].isdigit() and second[4].isalpha()


def test_email_has_numbers_link_and_html_table():
    # Arrange
    members = _members(["A1", "A2"])
    # Act
    subject, text = format_email("first", 3, "drawdown", members, "4821A", dashboard_url="https://risk.example.com/i/{incident_key}")
    html = email_html(text)
    # Assert
    assert subject == "[RISK L3 CRITICAL] drawdown on 2 accounts"
    assert "A1 | drawdown | 3 | 0.1234 | 0.1 | HALTED" in text
    assert '<a href="https://risk.example.com/i/A1:drawdown:e1">' in html
    assert "<td>0.1234</td>" in html and "4821A" in html


def test_backoff_doubles_and_honours_retry_after():
    # Arrange
    pol = RetryPolicy(base_s=1.0, jitter=0.0, max_backoff_s=300.0)
    # Act
    waits = [backoff_s(a, pol, key="n") for a in (1, 2, 3, 20)]
    honoured = backoff_s(1, pol, key="n", retry_after_s=7.0)
    clamped = backoff_s(1, pol.model_copy(update={"max_retry_after_s": 10.0}), key="n", retry_after_s=99999.0)
    # Assert
    assert waits == [1.0, 2.0, 4.0, 300.0]
    assert honoured == 7.0 and clamped == 10.0


@settings(max_examples=100, deadline=None)
@given(attempt=st.integers(1, 50), key=st.text(max_size=10), ra=st.one_of(st.none(), st.floats(0, 1e6)))
def test_backoff_is_never_shorter_than_retry_after(attempt, key, ra):
    pol = RetryPolicy()
    wait = backoff_s(attempt, pol, key=key, retry_after_s=ra)
    assert wait > 0
    if ra:
        assert wait >= min(ra, pol.max_retry_after_s)


def test_shipped_defaults_equal_the_built_in_defaults():
    assert load_config() == EscalationConfig()


def test_unknown_key_is_refused_naming_it(tmp_path):
    # Arrange
    f = tmp_path / "e.toml"
    f.write_text("[escalation]\ninhibit_from_levle = 4\n")
    # Act / Assert
    with pytest.raises(ConfigError, match=r"e.toml: escalation.inhibit_from_levle=4: Extra inputs are not permitted"):
        load_config(f)


def test_unknown_team_in_a_tier_is_refused(tmp_path):
    # Arrange
    f = tmp_path / "e.toml"
    f.write_text('[escalation.levels.1]\nname = "info"\nchannels = ["email"]\ntiers = [["riks"]]\n')
    # Act / Assert
    with pytest.raises(ConfigError, match=r"levels=\[1\]: must define exactly levels 1..5"):
        load_config(f)
    with pytest.raises(ValueError, match=r"levels.1.tiers\[0\]='riks': unknown team"):
        EscalationConfig(levels=EscalationConfig().levels | {1: EscalationConfig().levels[1].model_copy(update={"tiers": (("riks",),)})})


def test_bad_phone_number_is_refused(tmp_path):
    # Arrange
    f = tmp_path / "e.toml"
    f.write_text('[escalation.teams]\nrisk = [{ name = "X", phone = "5550101" }]\n')
    # Act / Assert
    with pytest.raises(ConfigError, match=r"escalation.teams.risk.0.phone='5550101': String should match pattern"):
        load_config(f)


def test_config_is_frozen():
    cfg = EscalationConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.inhibit_from_level = 1  # type: ignore[misc]


def test_operators_with_their_own_tokens_are_read_from_the_config_and_the_environment(tmp_path):
    # Arrange
    from risklib.adapters.notifiers import load_credentials

    f = tmp_path / "e.toml"
    f.write_text('[escalation.credentials]\noperators = [\n'
                 '  { name = "alice", authority_level = 1, token_env = "TOK_ALICE" },\n'
                 '  { name = "carol", authority_level = 3, token_env = "TOK_CAROL" },\n]\n')
    # Act
    creds = load_credentials(load_config(f), {"TOK_ALICE": "a-secret-token"}, prefect=False)
    # Assert: carol's variable is unset, so she has no token; alice's is a secret like the others
    assert [(name, level) for _, name, level in creds.operator_tokens] == [("alice", 1)]
    assert "a-secret-token" in creds.secrets() and "a-secret-token" not in repr(creds)


def test_an_operator_listed_twice_is_refused(tmp_path):
    f = tmp_path / "e.toml"
    f.write_text('[escalation.credentials]\noperators = [\n'
                 '  { name = "alice", authority_level = 1, token_env = "TOK_A" },\n'
                 '  { name = "alice", authority_level = 5, token_env = "TOK_B" },\n]\n')
    with pytest.raises(ConfigError, match=r"operators: name must be distinct"):
        load_config(f)
