"""The harness itself: the PostgreSQL target is reachable, fresh, and really checks passwords."""

from __future__ import annotations

from contextlib import closing
from urllib.parse import urlsplit

import psycopg2
import pytest

from _pgserver import APP_DB, APP_PASSWORD, APP_USER, PgTarget

pytestmark = pytest.mark.postgres


def test_admin_connection_reaches_the_fresh_test_database(pg: PgTarget) -> None:
    """admin_connect() is a superuser, autocommit connection to taskcore_test owned by the app."""
    with closing(pg.admin_connect()) as conn, conn.cursor() as cur:
        assert conn.autocommit
        cur.execute(
            "SELECT current_database(), pg_get_userbyid(datdba), current_setting('is_superuser')"
            " FROM pg_database WHERE datname = current_database()"
        )
        assert cur.fetchone() == (APP_DB, APP_USER, "on")
        cur.execute("SHOW server_version_num")
        assert cur.fetchone() == (str(pg.server_version),)
    assert pg.server_version >= 120000


def test_app_url_logs_in_as_the_app_role(pg: PgTarget) -> None:
    """The app URL carries the percent-encoded password and logs in as taskcore_app."""
    parts = urlsplit(pg.url)
    assert (parts.scheme, parts.hostname, parts.port) == ("postgresql", pg.host, pg.port)
    assert APP_PASSWORD not in pg.url  # "!" must be encoded
    with closing(psycopg2.connect(pg.url, connect_timeout=10)) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, current_database()")
        assert cur.fetchone() == (APP_USER, APP_DB)


def test_wrong_password_is_refused_over_tcp(pg: PgTarget) -> None:
    """With password auth enforced, a wrong password gets 'password authentication failed'."""
    if not pg.password_auth_enforced:
        pytest.skip("this server trusts every password (TEST_DATABASE_URL with trust auth)")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host=pg.host,
            port=pg.port,
            dbname=pg.dbname,
            user=pg.user,
            password="Wr0ng-" + pg.password,
            connect_timeout=10,
        )


def test_embedded_server_is_tuned_for_tests(pg: PgTarget) -> None:
    """The embedded server listens on loopback only, has room for pools, skips fsync."""
    if not pg.embedded:
        pytest.skip("settings of an external TEST_DATABASE_URL server are not ours")
    assert pg.password_auth_enforced
    with closing(pg.admin_connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT current_setting('listen_addresses'), current_setting('max_connections'),"
            " current_setting('fsync'), current_setting('synchronous_commit')"
        )
        assert cur.fetchone() == ("127.0.0.1", "200", "off", "off")
