-- The PostgreSQL outbox of a fleet (see postgres.go). One row per
-- notification; one row per channel for its delivery lease and the state
-- that must survive a change of owner (pacing, pause, failures in a row).

CREATE SEQUENCE vega_outbox_seq;

CREATE TABLE vega_outbox (
    seq             bigint      PRIMARY KEY,         -- order of acceptance
    id              text        NOT NULL UNIQUE,     -- 16 hex digits of seq + 16 random hex digits
    tenant          text        NOT NULL,
    channel         text        NOT NULL,
    idem_key        text,                            -- NULL: no idempotency key
    fingerprint     bytea       NOT NULL,            -- the content, for the idempotency check
    text            bytea       NOT NULL,            -- UTF-8 as submitted (bytea: text cannot hold NUL)
    payload         bytea,                           -- a JSON object as submitted, or NULL
    state           smallint    NOT NULL,            -- 1 pending, 2 delivered, 3 dead
    pos             bigint      NOT NULL,            -- place in the channel's queue (from vega_outbox_seq)
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    queued_at       timestamptz NOT NULL,            -- accepted or re-driven; MaxAge counts from here
    next_attempt_at timestamptz,
    finished_at     timestamptz
);

-- Idempotency across the fleet: one notification per (tenant, key).
CREATE UNIQUE INDEX vega_outbox_idem ON vega_outbox (tenant, idem_key) WHERE idem_key IS NOT NULL;
-- Each channel's queue, in order.
CREATE INDEX vega_outbox_queue ON vega_outbox (channel, pos) WHERE state = 1;
-- Retention: finished records by finish time.
CREATE INDEX vega_outbox_finished ON vega_outbox (finished_at) WHERE state <> 1;

CREATE TABLE vega_outbox_channel (
    channel      text        PRIMARY KEY,
    owner        text,                               -- the replica delivering the channel; NULL: none
    epoch        bigint      NOT NULL DEFAULT 0,     -- +1 at every change of owner (fences stale owners)
    expires_at   timestamptz,                        -- the owner's lease ends (database clock)
    paused_until timestamptz,                        -- Retry-After or backoff
    pace_tat     timestamptz,                        -- pacing: when the token bucket is full again
    failures     integer     NOT NULL DEFAULT 0,     -- failed attempts in a row (backoff grows with it)
    last_error   text        NOT NULL DEFAULT ''
);
