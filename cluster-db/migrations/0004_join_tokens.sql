-- Join tokens (health-monitor's join endpoint): one use each, expiring.
-- Only the SHA-256 of a token's secret is stored, so a copy of the database
-- (a backup, a replica) cannot be used to join. A used or expired row is
-- kept as the record of who joined with it.
CREATE TABLE aurora.join_tokens (
    id              text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    secret_sha256   text NOT NULL CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
    role            text CHECK (role IS NULL OR role IN ('backup', 'compute')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    used_by         text
);
