-- The text of every recorded app migration, so that provisioning in any process brings a
-- new tenant to the fleet's version: a control plane started before `tenancy migrate`
-- applied newer migrations reads them here at each provision, instead of provisioning at
-- the version it loaded at start. NULL for rows recorded before this column existed (the
-- next `tenancy migrate` or provision that knows the text fills it in). The text must
-- hash to the recorded checksum, so the ledger cannot hold a text other than the one
-- applied.
ALTER TABLE tenancy_catalog.app_migrations ADD COLUMN sql text;
ALTER TABLE tenancy_catalog.app_migrations ADD CONSTRAINT app_migrations_sql_matches_checksum
    CHECK (sql IS NULL OR encode(sha256(convert_to(sql, 'UTF8')), 'hex') = checksum);
