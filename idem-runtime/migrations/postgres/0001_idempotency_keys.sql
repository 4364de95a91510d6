-- The idempotency table (docs/contract.md, "Records"). `{table}` and `{name}` are filled in by the store
-- with its validated table name. Every migration here is idempotent: `migrate()` runs them all,
-- in file order, inside one transaction that holds an advisory lock on the table's name.
--
-- response_status: NULL = IN_PROGRESS, -1 = FAILED_STORAGE, 100..599 = COMPLETED.
-- acquired: how the current claim was taken ('new', 'abandoned', 'failed_storage'), so that a
-- claim statement can tell its caller what it took over.
CREATE TABLE IF NOT EXISTS {table} (
    scope               text        NOT NULL DEFAULT '',
    handler             text        NOT NULL,
    idempotency_key     text        NOT NULL,
    request_fingerprint text        NOT NULL,
    response_status     integer,
    response_headers    text,
    response_body       bytea,
    owner_token         text        NOT NULL,
    acquired            text        NOT NULL DEFAULT 'new',
    locked_until        timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    PRIMARY KEY (scope, handler, idempotency_key),
    CONSTRAINT "{name}_response_status_check" CHECK (
        response_status IS NULL OR response_status = -1 OR response_status BETWEEN 100 AND 599
    ),
    CONSTRAINT "{name}_acquired_check" CHECK (acquired IN ('new', 'abandoned', 'failed_storage'))
);

CREATE INDEX IF NOT EXISTS "{name}_expires_at_idx" ON {table} (expires_at);
