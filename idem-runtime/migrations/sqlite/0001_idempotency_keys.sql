-- The idempotency table (docs/contract.md, "Records"). `{table}` and `{name}` are filled in by the store
-- with its validated table name. Every migration here is idempotent: `migrate()` runs them all,
-- in file order, inside one `BEGIN IMMEDIATE` transaction.
--
-- response_status: NULL = IN_PROGRESS, -1 = FAILED_STORAGE, 100..599 = COMPLETED.
-- acquired: how the current claim was taken ('new', 'abandoned', 'failed_storage').
-- Times are the database clock in Unix milliseconds (`unixepoch('subsec') * 1000`);
-- `datetime(expires_at / 1000, 'unixepoch')` shows one as text.
CREATE TABLE IF NOT EXISTS {table} (
    scope               TEXT    NOT NULL DEFAULT '',
    handler             TEXT    NOT NULL,
    idempotency_key     TEXT    NOT NULL,
    request_fingerprint TEXT    NOT NULL,
    response_status     INTEGER,
    response_headers    TEXT,
    response_body       BLOB,
    owner_token         TEXT    NOT NULL,
    acquired            TEXT    NOT NULL DEFAULT 'new',
    locked_until        INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    PRIMARY KEY (scope, handler, idempotency_key),
    CHECK (response_status IS NULL OR response_status = -1 OR response_status BETWEEN 100 AND 599),
    CHECK (acquired IN ('new', 'abandoned', 'failed_storage'))
);

CREATE INDEX IF NOT EXISTS "{name}_expires_at_idx" ON {table} (expires_at);
