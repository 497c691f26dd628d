"""The texts the classifier matches: TLS configuration failures, server FATALs, messages.

Pure data for :mod:`taskcore._classify`, which holds the logic (and the SQLSTATE tables).
Fragments are lower case and matched as substrings of the lowered driver text; reasons are
what an error may say instead of that text (never the text itself). A kind is named by its
``Kind`` value ("disconnect", "rejected", ...), which ``_classify`` turns into the enum.
"""

from __future__ import annotations

from typing import Literal

KindName = Literal["disconnect", "backpressure", "conflict", "rejected", "permanent"]

AUTH = "authentication failed: check the user name and password in DATABASE_URL"
OLD_SCHEMA = (
    "the tasks table was created by an older taskcore and lacks a column; taskcore has no "
    "migrations: recreate the table (or add the column by hand)"
)
IDLE_IN_TRANSACTION = (
    "the transaction sat idle longer than idle_in_transaction_session_timeout and the server "
    "ended the session (not re-run: the same unit would idle as long again)"
)
TLS_SETTING = (
    "TLS: DATABASE_URL has an invalid TLS setting (sslmode, sslnegotiation, sslcertmode, "
    "channel_binding or ssl_min/max_protocol_version)"
)
TLS_CA = "TLS: the server's certificate is not signed by the CA in sslrootcert (or has expired)"
TLS_HOST = "TLS: the server's certificate does not match the host name"
TLS_ROOT_MISSING = "TLS: the root certificate file named by sslrootcert does not exist"
TLS_VERSION = "TLS: client and server share no TLS protocol version (ssl_min/max_protocol_version)"
TLS_CIPHER = "TLS: client and server share no cipher suite"
TLS_CLIENT_CERT = "TLS: the server refused the client certificate (sslcert/sslkey)"
TLS_CLIENT_FILES = (
    "TLS: the client certificate or key (sslcert/sslkey) is missing, unreadable, too widely "
    "readable, or the two do not match"
)
TLS_CHANNEL_BINDING_AUTH = (
    "TLS: channel_binding=require, but the server authenticated without channel binding "
    "(an authentication method other than SCRAM, or a pooler that cannot bind)"
)

# TLS failures that configuration causes, checked before every other text: libpq prefixes them
# with the same "connection to server ... failed" as transient errors, a root certificate's
# "does not exist" must not read as an unknown database, and no retry can fix any of them.
# Real drops of an established TLS link ("SSL connection has been closed unexpectedly",
# "SSL SYSCALL error", other "SSL error"s) are not here: they stay disconnects below.
TLS_RULES: tuple[tuple[str, str], ...] = (
    # fe-secure-openssl.c: the CA file; verify_cb keeps OpenSSL's verdict.
    ("certificate verify failed", TLS_CA),
    ("root certificate file", TLS_ROOT_MISSING),  # '... "%s" does not exist', 'could not read'
    (
        "could not get home directory to locate root certificate file",
        "TLS: sslmode=verify-ca/verify-full needs sslrootcert (no home directory to look in)",
    ),
    (
        "could not load system root certificate paths",
        "TLS: the system's root certificates cannot be loaded (sslrootcert=system)",
    ),
    # fe-secure-common.c: verify-full's host-name check.
    ("does not match host name", TLS_HOST),
    ("could not get server's host name from server certificate", TLS_HOST),
    ("host name must be specified for a verified ssl connection", TLS_HOST),
    ("ssl certificate's name", TLS_HOST),  # "contains embedded null", "entry is missing"
    ("ssl certificate's address entry is missing", TLS_HOST),
    ("certificate contains ip address with invalid length", TLS_HOST),
    ("certificate could not be obtained", "TLS: the server sent no certificate"),
    # fe-auth.c: channel binding (SCRAM-SHA-256-PLUS).
    ("server authenticated client without channel binding", TLS_CHANNEL_BINDING_AUTH),
    ("not supported by server's authentication request", TLS_CHANNEL_BINDING_AUTH),
    (
        "server did not offer an authentication method that supports channel binding",
        TLS_CHANNEL_BINDING_AUTH,
    ),
    (
        "channel binding is required, but client does not support it",
        "TLS: channel_binding=require, but this libpq cannot do channel binding",
    ),
    (
        "channel binding required, but ssl not in use",
        "TLS: channel_binding=require needs an encrypted connection (sslmode=require or stricter)",
    ),
    (
        "scram-sha-256-plus authentication over a non-ssl connection",
        "TLS: the server offered channel binding over an unencrypted link (TLS stripped?)",
    ),
    ("channel binding", "TLS: channel binding failed: check channel_binding and sslmode"),
    # Client certificate and key files (initialize_SSL).
    ("certificate file", TLS_CLIENT_FILES),  # "could not open/read certificate file"
    ("private key file", TLS_CLIENT_FILES),  # missing, not regular, group/world access
    ("private ssl key", TLS_CLIENT_FILES),
    ("ssl engine", TLS_CLIENT_FILES),
    # Settings libpq refuses before connecting (connectOptions2).
    ("does not support any ssl protocol version", TLS_VERSION),  # libpq's hint line
    ("ssl protocol version", TLS_SETTING),  # invalid value or range; could not set
    ('invalid "ssl', TLS_SETTING),  # libpq 17: invalid "sslmode" value: "x"
    ("invalid ssl", TLS_SETTING),  # older: invalid sslmode value: "x"
    ('invalid "channel_binding"', TLS_SETTING),
    ("invalid channel_binding", TLS_SETTING),
    ("when ssl support is not compiled in", "TLS: this libpq was built without TLS support"),
    (
        "may not be used with sslrootcert=system",
        "TLS: sslrootcert=system needs sslmode=verify-full",
    ),
    (
        "may not be used with sslnegotiation=direct",
        "TLS: sslnegotiation=direct needs sslmode=require or stricter",
    ),
    ("server does not support ssl", "TLS: the server does not accept TLS, but sslmode requires it"),
    # OpenSSL's reasons for a refused handshake ("SSL error: <reason>"): configuration.
    ("unsupported protocol", TLS_VERSION),
    ("no protocols available", TLS_VERSION),
    ("alert protocol version", TLS_VERSION),
    ("wrong version number", TLS_VERSION),
    ("wrong ssl version", TLS_VERSION),
    ("unknown protocol", TLS_VERSION),
    ("version too low", TLS_VERSION),
    ("version too high", TLS_VERSION),
    ("no shared cipher", TLS_CIPHER),
    ("no cipher match", TLS_CIPHER),
    ("no ciphers available", TLS_CIPHER),
    ("alert handshake failure", TLS_CIPHER),
    ("certificate required", TLS_CLIENT_CERT),
    ("connection requires a valid client certificate", TLS_CLIENT_CERT),  # server, clientcert
    ("certificate authentication failed", TLS_CLIENT_CERT),  # server, auth method "cert"
    ("alert unknown ca", TLS_CLIENT_CERT),
    ("alert bad certificate", TLS_CLIENT_CERT),
    ("alert certificate", TLS_CLIENT_CERT),  # expired, revoked, unknown
    ("alert unsupported certificate", TLS_CLIENT_CERT),
    ("alert access denied", TLS_CLIENT_CERT),
    ("unrecognized name", "TLS: the server does not serve the host name sent (SNI)"),
    ("key too small", "TLS: a certificate key is too weak for this OpenSSL's security level"),
    ("md too weak", "TLS: a certificate signature is too weak for this OpenSSL's security level"),
)

# Server FATALs that close the connection. libpq reports them as text with no SQLSTATE when
# the link dies with them (psycopg2 then raises OperationalError, pgcode None), so the code is
# read back from the message (errcodes from PostgreSQL's own ereport calls). The first match
# wins: the dropped-database detail refines "conflict with recovery".
FATAL_TEXTS: tuple[tuple[str, str], ...] = (
    ("user was connected to a database that must be dropped", "57P04"),
    ("terminating connection due to conflict with recovery", "40001"),
    ("terminating connection due to administrator command", "57P01"),
    ("terminating connection due to unexpected postmaster exit", "57P01"),
    ("terminating connection due to immediate shutdown command", "57P01"),
    ("terminating connection because of crash of another server process", "57P02"),
    ("terminating connection due to idle-in-transaction timeout", "25P03"),
    ("terminating connection due to idle-session timeout", "57P05"),
    ("terminating connection due to transaction timeout", "25P04"),
    ("the database system is shutting down", "57P03"),
    ("the database system is starting up", "57P03"),
    ("the database system is not yet accepting connections", "57P03"),
    ("the database system is not accepting connections", "57P03"),
    ("the database system is in recovery mode", "57P03"),
    ("sorry, too many clients already", "53300"),
    ("remaining connection slots are reserved", "53300"),
)

# Message fragments, matched case-insensitively. Connect-time errors carry no SQLSTATE (libpq
# reports them as text) and Neon's proxy reports everything as XX000, so text is all there is.
# Order matters: permanent causes are checked first, because libpq prefixes them with the same
# "connection to server ... failed" text that transient ones have.
MESSAGE_RULES: tuple[tuple[str, KindName, str], ...] = (
    ("password authentication failed", "rejected", AUTH),
    ("authentication failed", "rejected", AUTH),
    (
        "no pg_hba.conf entry",
        "rejected",
        "the server does not accept this user/database/client address (pg_hba.conf)",
    ),
    ("does not exist", "rejected", "the database or role named in DATABASE_URL does not exist"),
    ("temporary failure in name resolution", "disconnect", "DNS lookup failed temporarily"),
    ("name or service not known", "rejected", "the host in DATABASE_URL is unknown"),
    ("nodename nor servname", "rejected", "the host in DATABASE_URL is unknown"),
    ("could not translate host name", "rejected", "the host in DATABASE_URL is unknown"),
    ("endpoint is disabled", "rejected", "the Neon endpoint is disabled"),
    ("could not be found", "rejected", "the Neon project, branch or endpoint does not exist"),
    ("cannot be found", "rejected", "the Neon project, branch or endpoint does not exist"),
    ("quota", "rejected", "a Neon quota is exhausted (or the endpoint is under maintenance)"),
    ("active endpoints limit", "rejected", "the Neon limit of active computes is reached"),
    (
        "limit of concurrently active endpoints",
        "rejected",
        "the Neon limit of active computes is reached",
    ),
    (
        "endpoint id is not specified",
        "rejected",
        "the server needs the endpoint id (SNI): use libpq >= 14 or options=endpoint%3D<id>",
    ),
    ("is not allowed", "rejected", "the server's IP allow list refuses this client"),
    (
        "unsupported startup parameter",
        "rejected",
        "the pooled endpoint refuses startup options: remove options= or use the direct endpoint",
    ),
    ("connection is insecure", "rejected", "the server requires TLS: set sslmode=require"),
    ("invalid connection option", "rejected", "DATABASE_URL carries an option libpq rejects"),
    ("invalid dsn", "rejected", "DATABASE_URL is not a valid connection string"),
    ("invalid integer value", "rejected", "DATABASE_URL carries an invalid number"),
    ("unable to open database file", "rejected", "the SQLite file cannot be opened or created"),
    ("no such table", "permanent", "the tasks table does not exist: run taskcore.init_db()"),
    ("no such column", "permanent", OLD_SCHEMA),
    ("has no column named", "permanent", OLD_SCHEMA),
    ("constraint failed", "permanent", "the database refused the change (constraint violation)"),
    # Back-pressure: the Neon proxy's rate limiter, PgBouncer limits, max_connections.
    ("too many connection", "backpressure", "the server is limiting new connections"),
    ("failed to acquire permit", "backpressure", "the server is limiting new connections"),
    ("no more connections allowed", "backpressure", "the pooler has no free client slots"),
    (
        "query_wait_timeout",
        "backpressure",
        "the pooler queue timed out: the server is overloaded",
    ),
    ("database is locked", "backpressure", "the SQLite file is locked by another writer"),
    # Transient: cold starts, restarts, suspends, dropped links.
    ("couldn't connect to compute node", "disconnect", "the Neon compute is waking up"),
    ("could not connect to compute node", "disconnect", "the Neon compute is waking up"),
    ("control plane request failed", "disconnect", "the Neon control plane did not answer"),
    ("the database system is", "disconnect", "the server is starting up or shutting down"),
    ("not yet accepting connections", "disconnect", "the server is starting up"),
    ("pgbouncer cannot connect to server", "disconnect", "the pooler cannot reach the server"),
    ("server login has been failing", "disconnect", "the pooler cannot log in to the server"),
    ("terminating connection", "disconnect", "the server ended the connection"),
    ("closed the connection", "disconnect", "the server closed the connection"),
    ("connection has been closed unexpectedly", "disconnect", "the connection was closed"),
    ("ssl syscall error", "disconnect", "the connection was lost"),
    ("ssl error", "disconnect", "the connection was lost"),
    ("eof detected", "disconnect", "the connection was lost"),
    ("early eof", "disconnect", "the connection was lost"),
    ("connection not open", "disconnect", "the connection was lost"),
    ("connection already closed", "disconnect", "the connection was lost"),
    ("could not receive data", "disconnect", "the connection was lost"),
    ("could not send data", "disconnect", "the connection was lost"),
    ("connection reset", "disconnect", "the connection was reset"),
    ("connection refused", "disconnect", "the server refused the connection (down or waking)"),
    ("timeout expired", "disconnect", "connecting timed out (a cold start can take seconds)"),
    ("timed out", "disconnect", "the network timed out"),
    ("network is unreachable", "disconnect", "the network is unreachable"),
    ("no route to host", "disconnect", "the network is unreachable"),
    ("could not connect to server", "disconnect", "the server could not be reached"),
)
