# tests/unit/test_approvals_cli.py — `dbguard approvals …` on a sqlite store: list / show /
# approve / deny / watch --once, as tables and --json; `--as` proved by $DBGUARD_SECRET; exit
# statuses (0 ok, 1 refused: wrong secret, self-approval, missing role, already decided,
# expired; 2 usage); decisions journaled with the configured key (journal verify passes);
# webhooks received by a local HTTP server, and an unreachable one not blocking a decision;
# the `approvals.webhooks` configuration key.
from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from dbguard import cli_approvals
from dbguard.approvals import ApprovalRequest, ApprovalStatus, ApprovalStore, BlastRadius, WebhookNotifier
from dbguard.cli import main
from dbguard.config import ConfigError, parse_config
from dbguard.journal import ApprovalEventKind, ChainHasher, now_us
from dbguard.journal.store_sqlite import SqliteJournalStore

KEY = "an hmac key of at least sixteen bytes"
CONFIG = """\
listeners:
  - {{name: app-pg, protocol: postgres, listen: 127.0.0.1:0, upstream: postgresql://svc:pw@127.0.0.1:5432/app}}
identities:
  - {{name: copilot, kind: agent, secret: copilot-secret, roles: [readers]}}
  - {{name: alice, kind: human, secret: alice-secret, roles: [dba]}}
  - {{name: bob, kind: human, secret: bob-secret, roles: [developers]}}
store: sqlite:///{db}
journal: {{hmac_key: "{key}"}}
approvals: {{timeout: 5m{hooks}}}
"""


class Hooks:
    """A local webhook endpoint recording every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        received = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                self.send_response(200)
                self.end_headers()
                with received.arrived:
                    received.bodies.append(body)
                    received.arrived.notify_all()

            def log_message(self, *args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.bodies) >= count, timeout)
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_approvals, "_out", Console(highlight=False, soft_wrap=True, width=250))
    monkeypatch.delenv("DBGUARD_SECRET", raising=False)
    monkeypatch.delenv("DBGUARD_JOURNAL_KEY", raising=False)


def write_config(tmp_path: Path, webhooks: list[str] | None = None) -> Path:
    hooks = ", webhooks: [" + ", ".join(f'"{u}"' for u in webhooks) + "]" if webhooks else ""
    path = tmp_path / "dbguard.yaml"
    path.write_text(CONFIG.format(db=(tmp_path / "dbguard.db").as_posix(), key=KEY, hooks=hooks))
    return path


def request(**changes: Any) -> ApprovalRequest:
    from dataclasses import replace

    base = ApprovalRequest(
        identity="copilot", identity_kind="agent", roles=("readers",),
        sql="delete from orders where created_at < now() - interval '1 year'", session_id="s-0001",
        statement_seq=3, client_address="10.0.0.5:51234", listener="app-pg", database="app", protocol="postgres",
        rule_ids=("hold-deletes",), approvers=("dba",), tables=("public.orders",), intent="archive old orders",
        blast_radius=BlastRadius(1200, 1187, "counted in a rolled-back transaction"),
    )
    return replace(base, **changes)


def proxy_queue(tmp_path: Path) -> ApprovalStore:
    """The proxy's side of the queue (journaling with the same key)."""
    return ApprovalStore(SqliteJournalStore(tmp_path / "dbguard.db"), hasher=ChainHasher(KEY.encode()),
                         owns_store=True)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["approvals", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def pending(tmp_path: Path, cfg: Path) -> ApprovalRequest:
    with proxy_queue(tmp_path) as q:
        return q.create(request())


def test_list_and_show(capsys: pytest.CaptureFixture[str], cfg: Path, pending: ApprovalRequest) -> None:
    code, out, _ = run(capsys, "list", "-c", str(cfg), "--json")
    assert code == 0
    requests = json.loads(out)["requests"]
    assert [r["id"] for r in requests] == [pending.id]
    assert requests[0]["status"] == "pending"
    assert requests[0]["blast_radius"] == {"estimated_rows": 1200, "exact_rows": 1187,
                                           "note": "counted in a rolled-back transaction"}
    code, out, _ = run(capsys, "list", "-c", str(cfg))
    assert code == 0
    assert pending.id in out
    assert "copilot" in out
    assert "1187" in out
    code, out, _ = run(capsys, "show", pending.id, "-c", str(cfg), "--json")
    assert code == 0
    shown = json.loads(out)["request"]
    assert shown["intent"] == "archive old orders"
    assert shown["sql_formatted"].startswith("DELETE FROM orders")
    code, out, _ = run(capsys, "show", pending.id, "-c", str(cfg))
    assert code == 0
    for expected in ("copilot (agent)", "archive old orders", "s-0001, statement 3", "10.0.0.5:51234",
                     "app via listener app-pg", "hold-deletes", "roles dba", "public.orders",
                     "exact 1187", "DELETE FROM orders", "pending"):
        assert expected in out, expected
    code, _, err = run(capsys, "show", "ap_nosuchthing", "-c", str(cfg))
    assert code == 2
    assert "no approval request" in err


def test_list_with_store_only_and_an_empty_queue(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "dbguard.db"
    SqliteJournalStore(db).close()  # a store with a journal but no queue yet
    code, out, _ = run(capsys, "list", "--store", f"sqlite:///{db}")
    assert code == 0
    assert "no pending approval requests" in out
    code, _, err = run(capsys, "list", "--store", f"sqlite:///{tmp_path / 'missing.db'}")
    assert code == 2
    assert "missing.db" in err


def test_approve_as_an_approver(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                cfg: Path, pending: ApprovalRequest, tmp_path: Path) -> None:
    monkeypatch.setenv("DBGUARD_SECRET", "alice-secret")
    code, out, _ = run(capsys, "approve", pending.id, "--as", "alice", "--reason", "ticket 42", "-c", str(cfg),
                       "--json")
    assert code == 0
    decided = json.loads(out)
    assert decided["ok"] is True
    assert decided["request"]["status"] == "approved"
    assert decided["request"]["decided_by"] == "alice"
    assert decided["request"]["reason"] == "ticket 42"
    code, _, err = run(capsys, "approve", pending.id, "--as", "alice", "-c", str(cfg))
    assert code == 1
    assert "already approved by alice" in err
    code, out, _ = run(capsys, "list", "--all", "-c", str(cfg))
    assert "approved" in out
    with proxy_queue(tmp_path) as q:
        assert q.consume(pending.id).status is ApprovalStatus.USED
    # the journal has both events, chained with the configured key
    code = main(["journal", "verify", "-c", str(cfg)])
    assert code == 0
    assert "2 events verified" in capsys.readouterr().out
    code = main(["journal", "tail", "-n", "5", "-c", str(cfg), "--json"])
    out, _ = capsys.readouterr()
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert [(e["event"], e["by"]) for e in events if e["kind"] == "approval"] == [
        ("requested", "copilot"), ("approved", "alice")]


def test_deny_needs_a_reason_and_is_journaled(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                              cfg: Path, pending: ApprovalRequest) -> None:
    monkeypatch.setenv("DBGUARD_SECRET", "alice-secret")
    with pytest.raises(SystemExit) as e:
        main(["approvals", "deny", pending.id, "--as", "alice", "-c", str(cfg)])
    assert e.value.code == 2
    capsys.readouterr()
    code, _, err = run(capsys, "deny", pending.id, "--as", "alice", "--reason", "  ", "-c", str(cfg))
    assert code == 2
    assert "--reason" in err
    code, out, _ = run(capsys, "deny", pending.id, "--as", "alice", "--reason", "not on a Friday", "-c", str(cfg))
    assert code == 0
    assert "denied" in out
    assert "not on a Friday" in out


@pytest.mark.parametrize(("who", "secret", "expected"), [
    ("alice", "wrong", "unknown identity or wrong secret"),
    ("mallory", "anything", "unknown identity or wrong secret"),
    ("copilot", "copilot-secret", "cannot decide on it"),
    ("bob", "bob-secret", "needs an approver with role dba"),
])
def test_refused_decisions_exit_1(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cfg: Path,
                                  pending: ApprovalRequest, tmp_path: Path, who: str, secret: str,
                                  expected: str) -> None:
    monkeypatch.setenv("DBGUARD_SECRET", secret)
    code, _, err = run(capsys, "approve", pending.id, "--as", who, "-c", str(cfg))
    assert code == 1
    assert expected in err
    with proxy_queue(tmp_path) as q:
        assert q.get(pending.id).status is ApprovalStatus.PENDING


def test_an_expired_request_cannot_be_approved(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                               cfg: Path, tmp_path: Path) -> None:
    with proxy_queue(tmp_path) as q:
        old = q.create(request(), now=now_us() - 600_000_000)  # asked 10 minutes ago, timeout 5m
    monkeypatch.setenv("DBGUARD_SECRET", "alice-secret")
    code, out, err = run(capsys, "approve", old.id, "--as", "alice", "-c", str(cfg), "--json")
    assert code == 1
    assert json.loads(out)["refusal"] == "expired"
    assert "expired" in err
    assert "nothing was approved" in err
    code, out, _ = run(capsys, "list", "--status", "expired", "-c", str(cfg), "--json")
    assert [r["id"] for r in json.loads(out)["requests"]] == [old.id]


def test_approve_without_a_secret_and_without_a_terminal(capsys: pytest.CaptureFixture[str], cfg: Path,
                                                         pending: ApprovalRequest,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, _, err = run(capsys, "approve", pending.id, "--as", "alice", "-c", str(cfg))
    assert code == 2
    assert "DBGUARD_SECRET" in err


def test_approve_needs_the_configuration_s_identities(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       pending: ApprovalRequest,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBGUARD_SECRET", "alice-secret")
    monkeypatch.chdir(tmp_path / "..")
    code, _, err = run(capsys, "approve", pending.id, "--as", "alice", "--store",
                       f"sqlite:///{tmp_path / 'dbguard.db'}", "-c", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "config" in err


def test_watch_once(capsys: pytest.CaptureFixture[str], cfg: Path, pending: ApprovalRequest) -> None:
    code, out, _ = run(capsys, "watch", "--once", "-c", str(cfg), "--json")
    assert code == 0
    assert [r["id"] for r in json.loads(out)["requests"]] == [pending.id]
    code, out, _ = run(capsys, "watch", "--once", "-c", str(cfg))
    assert code == 0
    assert pending.id in out
    assert "approvals approve ID --as NAME" in out


def test_watch_commands(cfg: Path, pending: ApprovalRequest, tmp_path: Path) -> None:
    """The actions typed in the live view go through the same queue rules."""
    from dbguard.config import load_config

    config = load_config(cfg)
    alice, copilot = config.identity("alice"), config.identity("copilot")
    assert alice is not None
    assert copilot is not None
    with proxy_queue(tmp_path) as q:
        assert "cannot decide" in cli_approvals._watch_command(q, copilot, f"a {pending.id}")
        assert "reason is required" in cli_approvals._watch_command(q, alice, f"d {pending.id}")
        assert cli_approvals._watch_command(q, alice, f"d {pending.id} too risky").startswith("denied")
        assert "already denied" in cli_approvals._watch_command(q, alice, f"a {pending.id}")
        assert cli_approvals._watch_command(q, alice, "x").startswith("? ")


# -- webhooks ------------------------------------------------------------------------------------


def test_webhooks_on_request_and_decision(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path, hooks: Hooks) -> None:
    cfg = write_config(tmp_path, [hooks.url])
    with ApprovalStore(SqliteJournalStore(tmp_path / "dbguard.db"), hasher=ChainHasher(KEY.encode()),
                       notifier=WebhookNotifier([hooks.url]), owns_store=True) as proxy:
        created = proxy.create(request())
    requested = hooks.wait_for(1)[0]
    assert requested["event"] == "requested"
    assert requested["request"]["id"] == created.id
    assert created.id in requested["text"]
    assert "copilot" in requested["text"]
    assert "1187 rows" in requested["text"]
    monkeypatch.setenv("DBGUARD_SECRET", "alice-secret")
    code, _, _ = run(capsys, "approve", created.id, "--as", "alice", "--reason", "ok", "-c", str(cfg))
    assert code == 0
    approved = hooks.wait_for(2)[1]  # the CLI waited for its POST before exiting
    assert approved["event"] == "approved"
    assert approved["request"]["decided_by"] == "alice"
    assert "approved by *alice*" in approved["text"]


def test_an_unreachable_webhook_never_blocks_a_decision(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notifier = WebhookNotifier([f"http://127.0.0.1:{port}/T0/secret-token"], timeout=1.0)
    with ApprovalStore(SqliteJournalStore(tmp_path / "dbguard.db"), notifier=notifier, owns_store=True) as q:
        r = q.create(request())
        assert q.approve(r.id, "alice", ("dba",)).status is ApprovalStatus.APPROVED
    notifier.flush()
    failures = [rec for rec in caplog.records if rec.getMessage() == "approvals.webhook_failed"]
    assert len(failures) == 2
    assert all("secret-token" not in str(vars(rec)) for rec in failures)


def test_summary_text_for_each_event() -> None:
    from dataclasses import replace

    from dbguard.approvals import summary_text

    r = request(id="ap_abcdefghij", created_us=now_us(), expires_us=now_us() + 1)
    assert "dbguard approvals approve ap_abcdefghij" in summary_text(ApprovalEventKind.REQUESTED, r)
    denied = replace(r, status=ApprovalStatus.DENIED, decided_by="alice", reason="no")
    assert summary_text(ApprovalEventKind.DENIED, denied).startswith(":no_entry: dbguard: ap_abcdefghij denied")
    assert "expired" in summary_text(ApprovalEventKind.EXPIRED, replace(r, status=ApprovalStatus.EXPIRED))


# -- configuration -------------------------------------------------------------------------------

MINIMAL = """\
listeners:
  - {name: a, protocol: postgres, listen: 127.0.0.1:0, upstream: postgresql://u:p@127.0.0.1:5432/app}
"""


def test_config_webhooks(tmp_path: Path) -> None:
    cfg = parse_config(MINIMAL + "approvals: {webhooks: [https://hooks.slack.com/services/T0/B0/xyz, "
                                 "http://127.0.0.1:8080/hook]}\n", tmp_path / "dbguard.yaml")
    assert [w.reveal() for w in cfg.approvals.webhooks] == ["https://hooks.slack.com/services/T0/B0/xyz",
                                                            "http://127.0.0.1:8080/hook"]
    assert cfg.approvals.webhooks[0] in cfg.secrets()
    assert parse_config(MINIMAL, tmp_path / "dbguard.yaml").approvals.webhooks == ()


@pytest.mark.parametrize("bad", ["ftp://example.com/x", "hooks.slack.com/services/x", "http:///nohost",
                                 "http://example.com:99999/x"])
def test_config_webhooks_must_be_http_urls(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(MINIMAL + f"approvals: {{webhooks: ['{bad}']}}\n", tmp_path / "dbguard.yaml")
    assert "approvals.webhooks[0]" in str(e.value)
    assert "http" in str(e.value)
    assert bad not in str(e.value)  # a webhook URL is a secret
