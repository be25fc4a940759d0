-- The cluster contract, version 1: node registry, health reports, cluster
-- state (epoch + primary), the event log and the change counter dns-sync polls.
CREATE SCHEMA IF NOT EXISTS aurora;

-- One row per node of the fleet. Names are DNS labels because every name is
-- served by dns-sync as <name>.<zone>; the VPN address is unique because two
-- nodes behind one address break both the mesh and DNS.
CREATE TABLE aurora.nodes (
    name            text PRIMARY KEY
                    CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    role            text NOT NULL CHECK (role IN ('lead', 'backup', 'compute')),
    vpn_ip          inet NOT NULL UNIQUE CHECK (masklen(vpn_ip) = CASE family(vpn_ip) WHEN 4 THEN 32 ELSE 128 END),
    wg_public_key   text CHECK (wg_public_key ~ '^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$'),
    wg_endpoint     text CHECK (length(wg_endpoint) <= 255),
    labels          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(labels) = 'object'),
    gpus            jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(gpus) = 'array'),
    versions        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(versions) = 'object'),
    registered_at   timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The latest health report of each node (health-monitor upserts it).
CREATE TABLE aurora.health (
    node            text PRIMARY KEY REFERENCES aurora.nodes(name) ON DELETE CASCADE,
    status          text NOT NULL CHECK (status IN ('passing', 'warning', 'critical')),
    checks          jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(checks) = 'array'),
    reported_at     timestamptz NOT NULL DEFAULT now()
);

-- Exactly one row: the cluster epoch and the node holding the primary.
CREATE TABLE aurora.cluster (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch           bigint NOT NULL CHECK (epoch >= 0),
    primary_node    text CHECK (primary_node IS NULL OR primary_node ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    changed_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO aurora.cluster (singleton, epoch, primary_node) VALUES (true, 0, NULL);

-- The epoch never goes backwards, whoever writes the row: a stale primary
-- replaying an old promotion must fail loudly, not roll the fleet back.
CREATE FUNCTION aurora.cluster_epoch_monotonic() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.epoch < OLD.epoch THEN
        RAISE EXCEPTION 'aurora.cluster epoch may not decrease (% -> %)', OLD.epoch, NEW.epoch
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER cluster_epoch_monotonic BEFORE UPDATE ON aurora.cluster
    FOR EACH ROW EXECUTE FUNCTION aurora.cluster_epoch_monotonic();
CREATE RULE cluster_no_delete AS ON DELETE TO aurora.cluster DO INSTEAD NOTHING;

-- Append-only log of what happened to the fleet.
CREATE TABLE aurora.events (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    node            text NOT NULL,
    kind            text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$'),
    details         jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX events_at ON aurora.events (at DESC);
CREATE RULE events_no_update AS ON UPDATE TO aurora.events DO INSTEAD NOTHING;
CREATE RULE events_no_delete AS ON DELETE TO aurora.events DO INSTEAD NOTHING;

-- A counter that moves whenever something DNS serves changes: a node row,
-- the cluster row, or a node's health status (not every report: reports
-- arrive every few seconds and would defeat the point of a cheap poll).
-- dns-sync polls `SELECT version FROM aurora.changes` once a second; it works
-- on hot standbys, where LISTEN/NOTIFY does not.
CREATE TABLE aurora.changes (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version         bigint NOT NULL,
    changed_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO aurora.changes (singleton, version) VALUES (true, 1);

CREATE FUNCTION aurora.bump_change_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE aurora.changes SET version = version + 1, changed_at = now();
    RETURN NULL;
END $$;
CREATE TRIGGER nodes_changed AFTER INSERT OR UPDATE OR DELETE ON aurora.nodes
    FOR EACH STATEMENT EXECUTE FUNCTION aurora.bump_change_version();
CREATE TRIGGER cluster_changed AFTER UPDATE ON aurora.cluster
    FOR EACH STATEMENT EXECUTE FUNCTION aurora.bump_change_version();
-- Row-level: a statement-level INSERT trigger would also fire for the
-- INSERT ... ON CONFLICT DO UPDATE of every routine report.
CREATE TRIGGER health_inserted AFTER INSERT OR DELETE ON aurora.health
    FOR EACH ROW EXECUTE FUNCTION aurora.bump_change_version();
CREATE TRIGGER health_status_changed AFTER UPDATE ON aurora.health
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION aurora.bump_change_version();
