-- Replication state the primary's repl-manager publishes for the fleet:
-- which standby the primary waits for, and since when it degraded to
-- asynchronous replication (Patroni's non-strict synchronous mode). A backup
-- that was out of sync may not be promoted automatically until it has
-- caught up again, so failover reads this.
CREATE TABLE aurora.replication (
    singleton           boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    primary_node        text CHECK (primary_node IS NULL OR primary_node ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    epoch               bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    sync_standby        text CHECK (sync_standby IS NULL OR sync_standby ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    sync_mode           text NOT NULL DEFAULT 'async' CHECK (sync_mode IN ('sync', 'async', 'blocked')),
    degraded_since      timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
INSERT INTO aurora.replication (singleton) VALUES (true);
CREATE RULE replication_no_delete AS ON DELETE TO aurora.replication DO INSTEAD NOTHING;
