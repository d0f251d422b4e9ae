"""Listing or revoking keys never creates a service database: a mistyped --db is an error naming it."""

from __future__ import annotations

from typer.testing import CliRunner

from imgsteal.cli import app

runner = CliRunner()


def test_list_and_revoke_on_a_missing_db_fail_and_create_nothing(tmp_path):
    typo = tmp_path / "sub" / "imgstel-api.sqlite"
    for args in (["keys", "list", "--db", str(typo)], ["keys", "revoke", "--name", "alice", "--db", str(typo)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert f"no service database at {typo}" in result.output and "keys create" in result.output
        assert not typo.exists() and not typo.parent.exists()


def test_create_makes_the_db_and_list_then_reads_it(tmp_path):
    db = tmp_path / "api.sqlite"
    assert runner.invoke(app, ["keys", "create", "--name", "alice", "--db", str(db)]).exit_code == 0
    listed = runner.invoke(app, ["keys", "list", "--db", str(db)])
    assert listed.exit_code == 0 and "alice" in listed.output
    revoked = runner.invoke(app, ["keys", "revoke", "--name", "alice", "--db", str(db)])
    assert revoked.exit_code == 0 and "revoked 'alice'" in revoked.output
