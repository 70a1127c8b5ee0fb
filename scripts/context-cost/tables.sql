-- Tables of the context cost probe: the same 20,000 rows three times, under the
-- installed context's policy (items), under the naive policy on a GUC (items_naive), and
-- without RLS (items_plain). Run by the superuser after the runtime schema is installed.
SET ROLE tenancy_owner;
CREATE TABLE items (tenant_id uuid NOT NULL, id bigint NOT NULL, payload text NOT NULL, PRIMARY KEY (tenant_id, id));
SELECT tenancy.make_tenant_table('items');
CREATE TABLE items_plain (LIKE items INCLUDING ALL);
GRANT SELECT ON items_plain TO tenancy_app;
CREATE TABLE items_naive (LIKE items INCLUDING ALL);
ALTER TABLE items_naive ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY naive ON items_naive USING (tenant_id = current_setting('app.tenant_id')::uuid);
GRANT SELECT ON items_naive TO tenancy_app;
RESET ROLE;
INSERT INTO items SELECT ('00000000-0000-0000-0000-' || lpad(t::text, 12, '0'))::uuid, i, 'payload ' || i
  FROM generate_series(1, 20) t, generate_series(1, 1000) i;
INSERT INTO items_plain SELECT * FROM items;
INSERT INTO items_naive SELECT * FROM items;
ANALYZE;
