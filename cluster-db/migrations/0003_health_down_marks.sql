-- A node that stops reporting is marked down in the database, not only
-- judged down by each reader's clock. dns-sync drops down nodes from the
-- multi-record names; without a row change the SOA serial would stay put
-- while the answers changed, and a secondary mirroring the zone by serial
-- would never notice. Every health-monitor marks stale reports (an
-- idempotent UPDATE that is a no-op almost always), and a node's own next
-- report clears its mark; both edges move `aurora.changes.version`.
ALTER TABLE aurora.health ADD COLUMN down_since timestamptz;
CREATE TRIGGER health_down_changed AFTER UPDATE ON aurora.health
    FOR EACH ROW WHEN (OLD.down_since IS DISTINCT FROM NEW.down_since)
    EXECUTE FUNCTION aurora.bump_change_version();
