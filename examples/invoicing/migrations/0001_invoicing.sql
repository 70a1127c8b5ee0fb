-- The invoicing example's tables, in their own schema. Run as tenancy_owner.
-- Every table is a tenant table: composite primary key (tenant_id, id), unique keys and
-- foreign keys that include tenant_id, then tenancy.make_tenant_table() for RLS.
CREATE SCHEMA invoicing;
GRANT USAGE ON SCHEMA invoicing TO tenancy_app;

CREATE TABLE invoicing.customers (
    tenant_id  uuid NOT NULL,
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email      text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 320),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
);

CREATE TABLE invoicing.invoices (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    customer_id uuid NOT NULL,
    number      text NOT NULL CHECK (length(number) BETWEEN 1 AND 40),
    status      text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'sent', 'paid', 'void')),
    currency    text NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    sent_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, number),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES invoicing.customers (tenant_id, id)
);
CREATE INDEX invoices_customer_idx ON invoicing.invoices (tenant_id, customer_id);

CREATE TABLE invoicing.line_items (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    invoice_id       uuid NOT NULL,
    description      text NOT NULL CHECK (length(description) BETWEEN 1 AND 500),
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoicing.invoices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX line_items_invoice_idx ON invoicing.line_items (tenant_id, invoice_id);

-- What the "send invoice" job did (one row per job: the job is idempotent).
CREATE TABLE invoicing.deliveries (
    tenant_id  uuid NOT NULL,
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    invoice_id uuid NOT NULL,
    job_id     uuid NOT NULL,
    recipient  text NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, job_id),
    FOREIGN KEY (tenant_id, invoice_id) REFERENCES invoicing.invoices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX deliveries_invoice_idx ON invoicing.deliveries (tenant_id, invoice_id);

SELECT tenancy.make_tenant_table('invoicing.customers');
SELECT tenancy.make_tenant_table('invoicing.invoices');
SELECT tenancy.make_tenant_table('invoicing.line_items');
SELECT tenancy.make_tenant_table('invoicing.deliveries');
